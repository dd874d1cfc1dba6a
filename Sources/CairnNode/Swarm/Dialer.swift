import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A source of a peer's addresses beyond the caller and the peer store: the DHT (its signed
/// presence record, or libp2p peer routing).
public protocol PeerRouting: AnyObject, Sendable {
    func findPeer(_ peer: PeerID) async throws -> RoutedAddresses
}

/// Addresses a routing source found for a peer, and how.
public struct RoutedAddresses: Sendable {
    public enum Source: Sendable, Equatable, CustomStringConvertible {
        /// The peer's own signed presence record (verified), with its seq.
        case presenceRecord(seq: UInt64)
        /// The closest peers' view of it (FIND_NODE): unsigned hints.
        case peerRouting
        public var description: String {
            switch self {
            case .presenceRecord(let seq): return "presence record seq \(seq)"
            case .peerRouting: return "peer routing"
            }
        }
    }
    public var addresses: [Multiaddr]
    public var source: Source
    public init(addresses: [Multiaddr], source: Source) {
        self.addresses = addresses
        self.source = source
    }
}

/// How to reach a peer (`Dialer.connect`).
public struct DialOptions: Sendable {
    public enum PortUse: Sendable {
        /// From the listen port (SO_REUSEPORT): what a hole punch needs.
        case listenPort
        /// From an ephemeral port: a failed SYN leaves no NAT state on the listen port's 4-tuples.
        case ephemeral
    }
    /// Addresses to try first (the peer store's and routing's follow).
    public var addresses: [Multiaddr] = []
    /// The security role on the new connection (a hole punch fixes it; otherwise the initiator).
    public var role: SecureConnectionMachine.Role = .initiator
    public var portUse: PortUse = .listenPort
    /// Bounds each direct address's TCP connect.
    public var connectTimeout: Duration = .seconds(5)
    /// Direct addresses are dialed best first (`AddressRanking`); the next one starts this long
    /// after the previous one (at once when it failed), the first to connect wins (RFC 8305's
    /// connection attempt delay). Zero: one at a time, each to its end.
    public var attemptDelay: Duration = .milliseconds(250)
    /// Bounds the whole dial (every address, routing included).
    public var timeout: Duration = .seconds(60)
    /// Whether a relayed (limited) connection is an acceptable result.
    public var allowRelayed = true
    /// Skip the direct addresses: go through a relay (and let hole punching upgrade it).
    public var relayedOnly = false
    /// Add the peer store's addresses after the caller's.
    public var usePeerStore = true
    /// Ask routing (the DHT) when the caller and the peer store know no address that works.
    public var useRouting = true
    /// Return an existing connection when there is one (and share a dial already in flight).
    /// Off: always a new connection (dial-backs, hole punches).
    public var reuseExisting = true
    /// With a relayed result: how long to wait for the peer to upgrade it to a direct one.
    public var waitForUpgrade: Duration = .zero
    /// Before dialing, wait up to this long for a confirmed external address (what a hole punch
    /// offers the peer), when we have none yet.
    public var waitForExternalAddress: Duration = .zero
    public init() {}
}

public struct DialFailure: Sendable, CustomStringConvertible {
    public var address: Multiaddr
    public var reason: String
    public var description: String { "\(address): \(reason)" }
}

/// What `Dialer.connect` got, and how.
public struct DialOutcome: Sendable {
    public enum Path: Sendable, Equatable, CustomStringConvertible {
        /// A connection that already existed (a direct one when there was one).
        case existing
        /// A new direct connection.
        case direct
        /// Relayed, and it stays so (`whyRelayed` says why).
        case relayed
        /// Relayed at first, then direct: by hole punch, connection reversal or the peer's dial.
        case upgraded(HolePunchService.Method?)
        public var description: String {
            switch self {
            case .existing: return "existing"
            case .direct: return "direct"
            case .relayed: return "relayed"
            case .upgraded: return "upgraded"
            }
        }
    }
    /// The connection new streams should use.
    public var connection: Connection
    public var path: Path
    /// The relayed connection we had first (upgraded or relayed paths).
    public var relayedConnection: Connection?
    /// Addresses that failed, with their reasons.
    public var failures: [DialFailure]
    /// Where the addresses came from, when routing was asked.
    public var routed: RoutedAddresses?
    /// From the call to the first usable connection.
    public var elapsed: Duration
    /// From the relayed connection to the direct one (as the hole-punch side measured it).
    public var upgradeElapsed: Duration?
    /// Why the connection stays relayed (`.relayed`).
    public var whyRelayed: String?
}

public enum DialError: Error, CustomStringConvertible {
    case noAddresses(PeerID)
    case unreachable(PeerID, [DialFailure])
    case relayedNotAllowed(PeerID, [DialFailure])
    case timedOut(PeerID)

    public var description: String {
        switch self {
        case .noAddresses(let p): return "no known address for \(p) (caller, peer store and routing had none)"
        case .unreachable(let p, let f):
            return "could not reach \(p) at any of its \(f.count) addresses:\n  " + f.map(\.description).joined(separator: "\n  ")
        case .relayedNotAllowed(let p, let f):
            return "only relayed addresses for \(p), and a relayed connection was not acceptable"
                + (f.isEmpty ? "" : ":\n  " + f.map(\.description).joined(separator: "\n  "))
        case .timedOut(let p): return "dialing \(p) timed out"
        }
    }
}

/// The one way to reach a peer by ID: addresses from the caller, the peer store and routing;
/// direct addresses first, then relayed ones; concurrent calls for one peer share one dial.
public final class Dialer: Sendable {
    let swarm: Swarm
    let peerStore: PeerStore?
    let logger: Logger
    private struct State {
        var inFlight: [FlightKey: Flight] = [:]
        var routing: [any PeerRouting] = []
        var externalAddresses: @Sendable () -> [Multiaddr] = { [] }
        var observedIPs: @Sendable () -> [[UInt8]] = { [] }
    }
    private let state = NIOLockedValueBox(State())
    /// Dials actually started (coalesced calls count once).
    private let dialsStarted = NIOLockedValueBox(0)

    init(swarm: Swarm, peerStore: PeerStore?, logger: Logger) {
        self.swarm = swarm
        self.peerStore = peerStore
        self.logger = logger
        let punches = self.punches
        subscription = swarm.events.subscribe { event in
            guard case .holePunchFinished(let o) = event else { return }
            punches.withLockedValue { p in
                if p[o.peer] == nil, p.count >= 1024, let oldest = p.min(by: { $0.value.at < $1.value.at }) { p[oldest.key] = nil }
                p[o.peer] = o
            }
        }
    }

    private let subscription: EventSubscription
    /// The latest hole-punch outcome per peer (bounded), to explain an existing relayed connection.
    private let punches = NIOLockedValueBox<[PeerID: HolePunchService.Outcome]>([:])

    func lastPunch(_ peer: PeerID) -> HolePunchService.Outcome? { punches.withLockedValue { $0[peer] } }

    /// Adds a routing source (the DHT registers itself).
    public func addRouting(_ routing: any PeerRouting) { state.withLockedValue { $0.routing.append(routing) } }

    /// Where `waitForExternalAddress` looks (the NAT service sets it).
    public func setExternalAddressSource(_ source: @escaping @Sendable () -> [Multiaddr]) {
        state.withLockedValue { $0.externalAddresses = source }
    }

    public var dialCount: Int { dialsStarted.withLockedValue { $0 } }

    /// Connects to `peer`. With `reuseExisting` (the default), an existing connection is returned
    /// and concurrent calls share one dial (the first caller's options apply).
    public func connect(to peer: PeerID, _ options: DialOptions = DialOptions()) async throws -> DialOutcome {
        let started = ContinuousClock.now
        if options.reuseExisting, let c = swarm.bestConnection(to: peer), options.allowRelayed || !c.isLimited {
            if !c.isLimited || options.waitForUpgrade == .zero {
                return DialOutcome(connection: c, path: .existing, failures: [], elapsed: ContinuousClock.now - started)
            }
            // Relayed already: never a second circuit. Its upgrade was decided (say why) or is
            // still to come (wait for it).
            var outcome = DialOutcome(connection: c, path: .relayed, relayedConnection: c, failures: [], elapsed: ContinuousClock.now - started)
            if let punch = lastPunch(peer), case .relayed(let reason) = punch.result {
                outcome.whyRelayed = "\(reason)"
                return outcome
            }
            await waitForUpgrade(of: &outcome, peer: peer, events: swarm.events.stream(), within: options.waitForUpgrade)
            return outcome
        }
        guard options.reuseExisting else { return try await run(peer, options) }
        // Dials that may ask routing and dials that may not are kept apart: routing (the DHT)
        // dials peers itself, the target among them, and must not wait for its own caller.
        let key = FlightKey(peer: peer, routing: options.useRouting)
        let (flight, isNew) = state.withLockedValue { s -> (Flight, Bool) in
            if let f = s.inFlight[key] { return (f, false) }
            let f = Flight()
            s.inFlight[key] = f
            return (f, true)
        }
        if isNew {
            // The shared dial runs as one of the swarm's tasks: shutdown cancels it and waits
            // for it before the event loops go away.
            let started = swarm.tasks.spawn { [self] in
                let r: Result<DialOutcome, Error>
                do { r = .success(try await self.run(peer, options)) } catch { r = .failure(error) }
                state.withLockedValue { s in if s.inFlight[key] === flight { s.inFlight[key] = nil } }
                flight.result.settle(r)
            }
            if !started {
                state.withLockedValue { s in if s.inFlight[key] === flight { s.inFlight[key] = nil } }
                flight.result.settle(.failure(SwarmError.shutDown))
            }
        }
        // Each caller waits on its own terms: a cancelled caller stops waiting at once.
        let mine = OneShot<Result<DialOutcome, Error>>()
        let relay = Task { mine.settle(await flight.result.wait()) }
        defer { relay.cancel() }
        let result = await withTaskCancellationHandler { await mine.wait() } onCancel: {
            mine.settle(.failure(CancellationError()))
        }
        return try result.get()
    }

    private struct FlightKey: Hashable {
        let peer: PeerID
        let routing: Bool
    }

    /// One dial shared by every caller that asked for the peer while it ran.
    private final class Flight: @unchecked Sendable {
        let result = OneShot<Result<DialOutcome, Error>>()
    }

    private func run(_ peer: PeerID, _ options: DialOptions) async throws -> DialOutcome {
        dialsStarted.withLockedValue { $0 += 1 }
        let limit = options.timeout
        do {
            return try await withTimeout(limit) {
                try await self.attempt(peer, options)
            }
        } catch StreamError.timeout {
            throw DialError.timedOut(peer)
        }
    }

    private func attempt(_ peer: PeerID, _ options: DialOptions) async throws -> DialOutcome {
        let started = ContinuousClock.now
        if options.waitForExternalAddress > .zero, state.withLockedValue({ $0.externalAddresses })().isEmpty {
            // Until the vote confirms an address (an event), or the wait is over.
            let confirmed = OneShot<Bool>()
            let sub = swarm.events.subscribe { if case .externalAddressConfirmed = $0 { confirmed.settle(true) } }
            if !state.withLockedValue({ $0.externalAddresses })().isEmpty { confirmed.settle(true) }
            _ = await confirmed.wait(timeout: options.waitForExternalAddress, fallback: false)
            sub.cancel()
        }
        var failures: [DialFailure] = []
        var tried: Set<Multiaddr> = []
        var routed: RoutedAddresses?
        // Candidates: the caller's, then the peer store's; routing only if those give nothing.
        var candidates = options.addresses
        if options.usePeerStore, let stored = try? peerStore?.peer(peer) { candidates += stored.addresses }
        if let o = try await tryAddresses(candidates, peer, options, &failures, &tried, started: started, routed: nil) { return o }
        if options.useRouting {
            for source in state.withLockedValue({ $0.routing }) {
                do {
                    let found = try await source.findPeer(peer)
                    routed = found
                    if let o = try await tryAddresses(found.addresses, peer, options, &failures, &tried, started: started, routed: found) { return o }
                } catch {
                    logger.debug("routing found no address for \(peer): \(error)")
                }
            }
        }
        if tried.isEmpty {
            if routed != nil { throw DialError.unreachable(peer, failures) }
            throw DialError.noAddresses(peer)
        }
        throw DialError.unreachable(peer, failures)
    }

    /// What address ranking knows of us: interface addresses and the IPs we are observed at.
    public func rankingContext() -> AddressRanking.Context {
        let local = swarm.listenAddresses.compactMap { $0.tcpEndpoint?.ip }
        let external = state.withLockedValue { $0.externalAddresses }().compactMap { $0.tcpEndpoint?.ip }
        return AddressRanking.Context(localIPs: local, externalIPs: external + state.withLockedValue { $0.observedIPs }())
    }

    /// Where ranking learns the IPs peers observe us at beyond the confirmed ones (the NAT service).
    public func setObservedIPSource(_ source: @escaping @Sendable () -> [[UInt8]]) {
        state.withLockedValue { $0.observedIPs = source }
    }

    /// Direct addresses best first and staggered (`attemptDelay`), then (if acceptable) relayed ones.
    private func tryAddresses(_ addrs: [Multiaddr], _ peer: PeerID, _ options: DialOptions, _ failures: inout [DialFailure],
                              _ tried: inout Set<Multiaddr>, started: ContinuousClock.Instant, routed: RoutedAddresses?) async throws -> DialOutcome? {
        let fresh = addrs.map { $0.withoutTrailingPeerID }.filter { tried.insert($0).inserted }
        let direct = options.relayedOnly ? [] : AddressRanking.rank(fresh.filter { $0.tcpEndpoint != nil && !$0.isUnspecifiedIP }, rankingContext())
        let relayed = fresh.filter(\.isRelayed)
        if !direct.isEmpty {
            try Task.checkCancellation()
            let (connection, failed) = await raceDirect(direct, peer, options)
            failures += failed
            if let connection {
                return DialOutcome(connection: connection, path: .direct, failures: failures, routed: routed, elapsed: ContinuousClock.now - started)
            }
        }
        guard options.allowRelayed else {
            if !relayed.isEmpty && direct.isEmpty { throw DialError.relayedNotAllowed(peer, failures) }
            return nil
        }
        for a in relayed {
            try Task.checkCancellation()
            // Hear about the upgrade from the moment the relayed connection can exist.
            let events = options.waitForUpgrade > .zero ? swarm.events.stream() : nil
            do {
                let c = try await swarm.dial(a.appending(.p2p(peer)))
                var outcome = DialOutcome(connection: c, path: .relayed, relayedConnection: c, failures: failures, routed: routed,
                                          elapsed: ContinuousClock.now - started)
                if let events { await waitForUpgrade(of: &outcome, peer: peer, events: events, within: options.waitForUpgrade) }
                return outcome
            } catch {
                failures.append(DialFailure(address: a, reason: "\(error)"))
            }
        }
        return nil
    }

    private enum AttemptEvent: Sendable {
        /// Time to start the next address.
        case next
        /// An attempt connected first (the connection is in the race's box).
        case won
        case failed(Multiaddr, String)
    }

    /// Dials `addresses` in order, each `attemptDelay` after the previous (or as soon as every
    /// attempt so far failed); the first connection wins and is returned at once. Attempts still
    /// running are not waited for (a connect in flight cannot be cancelled): they finish as swarm
    /// tasks, and any that connect anyway are closed. Returns the winner and the failures (in the
    /// order they came).
    private func raceDirect(_ addresses: [Multiaddr], _ peer: PeerID, _ options: DialOptions) async -> (Connection?, [DialFailure]) {
        let swarm = self.swarm
        let delay = options.attemptDelay
        let (events, sink) = AsyncStream<AttemptEvent>.makeStream()
        // The one decision: who won (a dial task claims it), or that nobody may any more.
        let race = NIOLockedValueBox<(decided: Bool, winner: Connection?)>((false, nil))
        var next = 0
        var running = 0
        var failures: [DialFailure] = []
        func launch() {
            let a = addresses[next]
            next += 1
            running += 1
            let started = swarm.tasks.spawn {
                do {
                    let c = try await swarm.dial(a.appending(.p2p(peer)), role: options.role, fromListenPort: options.portUse == .listenPort,
                                                 connectTimeout: options.connectTimeout)
                    let first = race.withLockedValue { r -> Bool in
                        guard !r.decided else { return false }
                        r = (true, c)
                        return true
                    }
                    if first { sink.yield(.won) } else { await c.close() }  // a slower attempt that connected anyway
                } catch {
                    sink.yield(.failed(a, "\(error)"))
                }
            }
            if !started { sink.yield(.failed(a, "\(SwarmError.shutDown)")) }
            if next < addresses.count && delay > .zero {
                swarm.tasks.spawn {
                    try? await Task.sleep(for: delay)
                    sink.yield(.next)
                }
            }
        }
        launch()
        var won = false
        loop: for await event in events {
            switch event {
            case .next:
                if next < addresses.count { launch() }
            case .won:
                won = true
                break loop
            case .failed(let a, let why):
                running -= 1
                failures.append(DialFailure(address: a, reason: why))
                if next < addresses.count && (delay == .zero || running == 0) {
                    launch()
                } else if running == 0 && next >= addresses.count {
                    break loop
                }
            }
        }
        sink.finish()
        // Nobody may win after this; a winner we are not returning (we were cancelled) is closed.
        let winner = race.withLockedValue { r -> Connection? in
            defer { r = (true, nil) }
            return r.winner
        }
        if won { return (winner, failures) }
        if let winner { await winner.close() }
        return (nil, failures)
    }

    /// Waits (on the event stream, no polling) for a direct connection to the peer and the
    /// hole-punch outcome that explains it, or for the outcome that says it stays relayed.
    private func waitForUpgrade(of outcome: inout DialOutcome, peer: PeerID, events: AsyncStream<NodeEvent>, within: Duration) async {
        let result = OneShot<(Connection?, HolePunchService.Outcome?)>()
        let watcher = Task {
            var direct: Connection? = swarm.directConnection(to: peer)
            var directSeenAt: ContinuousClock.Instant? = direct == nil ? nil : .now
            var grace: Task<Void, Never>?
            if let d = direct {
                // Already direct: give the hole-punch side its moment to say how, no longer.
                grace = Task { try? await Task.sleep(for: .seconds(1)); result.settle((d, nil)) }
            }
            defer { grace?.cancel() }
            for await e in events {
                switch e {
                case .connectionEstablished(let c) where c.remotePeer == peer && !c.isLimited:
                    direct = direct ?? c
                    if directSeenAt == nil {
                        directSeenAt = .now
                        // The hole-punch side notes how a moment after the connection is up.
                        let d = direct
                        grace = Task { try? await Task.sleep(for: .seconds(1)); result.settle((d, nil)) }
                    }
                case .holePunchFinished(let o) where o.peer == peer:
                    if case .direct = o.result {
                        result.settle((direct ?? swarm.directConnection(to: peer), o))
                    } else if direct == nil {
                        result.settle((nil, o))
                    }
                default: break
                }
                if result.isSettled { break }
            }
        }
        defer { watcher.cancel() }
        let (direct, punch) = await result.wait(timeout: within, fallback: (nil, nil))
        if let d = direct ?? swarm.directConnection(to: peer) {
            outcome.connection = d
            var method: HolePunchService.Method?
            if let punch, case .direct(let how, _) = punch.result { method = how }
            outcome.path = .upgraded(method)
            outcome.upgradeElapsed = punch?.elapsed
            return
        }
        if let punch, case .relayed(let reason) = punch.result {
            outcome.whyRelayed = "\(reason)"
        } else {
            outcome.whyRelayed = "the peer did not start a hole punch within \(within)"
        }
    }
}


extension TimeAmount {
    /// The configuration's one time type is `Duration`; NIO's timers take this.
    public init(_ d: Duration) {
        self = .nanoseconds(d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000)
    }
}

extension Duration {
    public init(_ t: TimeAmount) { self = .nanoseconds(t.nanoseconds) }
}

extension Duration {
    /// Seconds, for `Date` arithmetic.
    public var timeInterval: TimeInterval { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
