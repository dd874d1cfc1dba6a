import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Upgrades relayed connections to direct ones (DCUtR over TCP simultaneous open), carrying out
/// `DCUtR.Initiator` / `DCUtR.Responder`. On an inbound relayed connection this node (B) first
/// tries connection reversal — dialing the peer's public addresses — and otherwise runs the
/// exchange; as A it answers and dials on SYNC. When a direct connection appears, new streams
/// should use it (`Swarm.bestConnection`), and the swarm's keep-alive rule closes the relayed one
/// once idle. Every outcome is kept per peer, with its reason, and emitted as
/// `holePunchFinished` (for `cairn dial`, the dialer and the connectivity matrix).
public final class HolePunchService: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Attempts per upgrade (the spec: 3).
        public var maxAttempts = 3
        /// How long one attempt's dials may take (go-libp2p: 5 s).
        public var attemptTimeout: Duration = .seconds(5)
        /// How long connection reversal (dialing the peer's public listen addresses before any
        /// punch) may take. Short: a reachable address answers within a round trip, while one
        /// behind a stateful firewall (a global IPv6 address) never does, and the punch that
        /// follows dials those addresses again anyway. Measured in the IPv6 lab: with 5 s every
        /// punch between two firewalled IPv6 hosts took 5.0 s; with 1 s, about 1 s.
        public var reversalTimeout: Duration = .seconds(1)
        /// Waiting for the peer's next message; a stalled peer is dropped after this.
        public var readTimeout: Duration = .seconds(15)
        /// Offer and dial private addresses too (labs on one LAN, loopback tests).
        public var allowPrivateAddresses = false
        /// Hole-punch dials leave from the listen port (what NATs need). Off only on one host
        /// (loopback), where our dial and the peer's would otherwise claim the same 4-tuple.
        public var dialFromListenPort = true
        public init() {}
    }

    public typealias Method = DCUtR.Method
    public typealias StayRelayed = DCUtR.StayRelayed

    /// Our part in the upgrade.
    public enum Role: String, Sendable, Equatable {
        /// B: the inbound side of the relayed connection, which starts the upgrade.
        case initiator
        /// A: the side that dialed through the relay, which answers.
        case responder
        /// The peer reached us before either side's exchange decided.
        case either
    }

    public struct Outcome: Sendable {
        public typealias Result = DCUtR.UpgradeResult
        public var peer: PeerID
        public var role: Role
        public var result: Result
        /// From the relayed connection's establishment to the direct one's (nil if none).
        public var elapsed: Duration?
        public var at: Date
    }

    let node: Node
    let nat: NATService?
    public let configuration: Configuration
    let logger: Logger
    private struct State {
        var outcomes: [PeerID: Outcome] = [:]
        var running: Set<PeerID> = []
        var relayedSince: [UInt64: ContinuousClock.Instant] = [:]
        var dialsStarted = 0
        var inFlight: Set<String> = []
        /// Relayed connections whose upgrade was started (bounded like `relayedSince`).
        var upgraded: Set<UInt64> = []
        /// Dial rounds a peer started on each relayed connection, across its streams.
        var dialRounds: [UInt64: Int] = [:]
    }
    private let state = NIOLockedValueBox(State())

    public init(node: Node, nat: NATService?, configuration: Configuration = Configuration(), logger: Logger) {
        self.node = node
        self.nat = nat
        self.configuration = configuration
        self.logger = logger
        node.swarm.handle(DCUtR.protocolID, service: "holepunch") { [weak self] stream in
            guard let self else { throw StreamError.connectionClosed("hole punching is gone") }
            try await self.serve(stream)
        }
        subscription = node.events.subscribe { [weak self] event in
            guard let self else { return }
            switch event {
            case .connectionEstablished(let c) where c.isLimited:
                self.state.withLockedValue { s in
                    // Kept after the connection closes (an outcome may be noted a moment later);
                    // bounded by dropping the oldest.
                    if s.relayedSince.count >= 4096, let oldest = s.relayedSince.min(by: { $0.value < $1.value }) {
                        s.relayedSince[oldest.key] = nil
                        s.upgraded.remove(oldest.key)
                        s.dialRounds[oldest.key] = nil
                    }
                    s.relayedSince[c.id] = .now
                }
            case .connectionEstablished(let c):
                if let peer = c.remotePeer { self.directConnectionAppeared(to: peer) }
            case .peerIdentified(let c, let info) where c.isLimited && c.direction == .inbound:
                // Once per relayed connection (identify pushes do not start it again).
                guard let peer = c.remotePeer, self.state.withLockedValue({ $0.upgraded.insert(c.id).inserted }) else { return }
                self.node.swarm.tasks.spawn { await self.upgrade(c, peer: peer, theirListenAddrs: info.listenAddrs) }
            default: break
            }
        }
    }

    var subscription: EventSubscription?
    /// Outcomes kept (one per peer).
    static let maxOutcomes = 1024

    static func flightKey(_ peer: PeerID, _ a: Multiaddr) -> String { "\(peer) \(a)" }

    public func outcome(for peer: PeerID) -> Outcome? { state.withLockedValue { $0.outcomes[peer] } }
    public var outcomes: [Outcome] { state.withLockedValue { Array($0.outcomes.values) } }
    /// Hole-punch dials started so far (bounded per attempt by `DCUtR.maxDialsPerAttempt`).
    public var dialsStarted: Int { state.withLockedValue { $0.dialsStarted } }

    /// The addresses we offer: voted external ones (TCP), our listen addresses that are public
    /// themselves (a global IPv6 address behind a stateful firewall: no NAT, the punch opens the
    /// firewall), plus with `allowPrivateAddresses` every listen address; never loopback or
    /// private ones otherwise.
    func ourAddresses() -> [Multiaddr] {
        var candidates = (nat?.externalAddresses ?? []).filter { $0.tcpEndpoint != nil }
        candidates += node.listenAddresses.filter { $0.tcpEndpoint.map { IPScope($0.ip).isPublic } ?? false }
        if configuration.allowPrivateAddresses { candidates += node.listenAddresses }
        return DCUtR.dialable(candidates, allowPrivate: configuration.allowPrivateAddresses).kept
    }

    private func hasDirect(to peer: PeerID) -> Bool { (node.swarm.directConnection(to: peer) != nil) }

    private func record(_ peer: PeerID, role: Role, _ result: Outcome.Result, relayed: Connection?) {
        let elapsed: Duration? = {
            guard case .direct = result, let relayed else { return nil }
            return state.withLockedValue { $0.relayedSince[relayed.id] }.map { ContinuousClock.now - $0 }
        }()
        let outcome = Outcome(peer: peer, role: role, result: result, elapsed: elapsed, at: Date())
        state.withLockedValue { s in
            // Bounded: peers seen over relays are cheap to make; the oldest outcome goes first.
            if s.outcomes[peer] == nil, s.outcomes.count >= Self.maxOutcomes, let oldest = s.outcomes.min(by: { $0.value.at < $1.value.at }) {
                s.outcomes[oldest.key] = nil
            }
            s.outcomes[peer] = outcome
        }
        switch result {
        case .direct(let how, let attempts):
            logger.notice("direct connection to \(peer) by \(how.rawValue)", metadata: ["attempts": "\(attempts)", "elapsed": "\(elapsed.map { "\($0)" } ?? "?")"])
        case .relayed(let reason):
            logger.notice("staying relayed with \(peer): \(reason)")
        }
        node.events.emit(.holePunchFinished(outcome))
    }

    /// No outcome for the peer yet, or only a relayed one: a direct connection is news.
    private func lacksDirectOutcome(_ peer: PeerID) -> Bool {
        guard case .direct? = outcome(for: peer)?.result else { return true }
        return false
    }

    /// A direct connection exists while relayed ones do: note how, from our side, when no
    /// exchange of ours is deciding it (the swarm's keep-alive rule closes the relayed ones once idle).
    private func directConnectionAppeared(to peer: PeerID) {
        let relayed = node.swarm.connections(to: peer).filter(\.isLimited)
        guard !relayed.isEmpty else { return }
        let upgrading = state.withLockedValue { $0.running.contains(peer) }
        if !upgrading, lacksDirectOutcome(peer) {
            // The peer reached us directly (its punch or its reversal): note it from our side.
            record(peer, role: .either, .direct(how: .peersDial, attempts: 0), relayed: relayed.first)
        }
    }

    // MARK: B: the inbound side of the relayed connection

    func upgrade(_ relayed: Connection, peer: PeerID, theirListenAddrs: [Multiaddr]) async {
        guard state.withLockedValue({ $0.running.insert(peer).inserted }) else { return }
        defer { _ = state.withLockedValue { $0.running.remove(peer) } }
        // The decisions are the machine's (`DCUtR.Upgrade`); this loop only carries them out.
        var machine = DCUtR.Upgrade(theirListenAddrs: theirListenAddrs, ourAddresses: ourAddresses(),
                                    maxAttempts: configuration.maxAttempts, allowPrivate: configuration.allowPrivateAddresses)
        var stream: MuxedStream?
        defer { stream?.reset() }
        var actions = machine.start(hasDirect: hasDirect(to: peer))
        while !actions.isEmpty {
            var next: [DCUtR.Upgrade.Action] = []
            for action in actions {
                switch action {
                case .dial(let addrs, let role, let delay, let purpose):
                    if delay > .zero { try? await Task.sleep(for: delay) }
                    // Our dial's connection, or the peer's dial arriving meanwhile: either is direct.
                    var connected = hasDirect(to: peer)
                    if !connected {
                        let within = purpose == .reversal ? min(configuration.reversalTimeout, configuration.attemptTimeout) : configuration.attemptTimeout
                        connected = await dialAny(peer, addrs, role: role == .initiator ? .initiator : .responder, within: within) != nil
                            || hasDirect(to: peer)
                    }
                    next += machine.dialed(connected: connected, now: .now)
                case .openExchange:
                    do {
                        stream = try await relayed.openStream([DCUtR.protocolID])
                        next += machine.exchangeOpened(now: .now)
                    } catch {
                        next += machine.exchangeFailed("\(error)", hasDirect: hasDirect(to: peer))
                    }
                case .send(let m):
                    do {
                        guard let stream else { throw StreamError.connectionClosed("no exchange stream") }
                        try await stream.writeLengthPrefixed(DCUtR.encode(m))
                        if case .connect = m { next += machine.received(try await readMessage(stream), now: .now) }
                    } catch {
                        next += machine.exchangeFailed("\(error)", hasDirect: hasDirect(to: peer))
                    }
                case .finished(let result):
                    record(peer, role: .initiator, result, relayed: relayed)
                }
            }
            actions = next
        }
    }

    // MARK: A: the side that dialed through the relay

    func serve(_ stream: MuxedStream) async throws {
        guard let peer = stream.connection.remotePeer else { return }
        guard stream.connection.isLimited else {
            logger.info("dcutr: refused over a direct connection", metadata: ["peer": "\(peer)"])
            stream.reset()
            return
        }
        var machine = DCUtR.Responder(ourAddresses: ourAddresses(), allowPrivate: configuration.allowPrivateAddresses)
        let relayed = stream.connection
        while true {
            let message: DCUtR.Message
            do {
                message = try await readMessage(stream)
            } catch StreamError.unexpectedEOF {
                return
            } catch where hasDirect(to: peer) {
                return  // the initiator is done with the stream: the punch worked
            } catch {
                logger.info("dcutr: \(error)", metadata: ["peer": "\(peer)"])
                if outcome(for: peer) == nil { record(peer, role: .responder, .relayed(reason: .streamError("\(error)")), relayed: relayed) }
                stream.reset()
                return
            }
            let actions = machine.received(message)
            if case .awaitingSync(let theirs) = machine.state {
                // From now on the initiator may dial us: its SYN can reach our listener before
                // SYNC reaches us (a full-cone NAT lets it in). That connection is the punched
                // one, and we are its Noise initiator all the same.
                node.swarm.expectInbound(from: theirs, role: .initiator,
                                         until: .now() + TimeAmount(configuration.readTimeout + configuration.attemptTimeout))
            }
            for action in actions {
                switch action {
                case .send(let m):
                    try await stream.writeLengthPrefixed(DCUtR.encode(m))
                case .dial(let addrs, _):
                    // A peer may not make us dial without end: as many rounds as an initiator
                    // may use, and none while our dials of the previous one still run.
                    let round = state.withLockedValue { s -> Int in
                        s.dialRounds[relayed.id, default: 0] += 1
                        return s.dialRounds[relayed.id]!
                    }
                    if machine.rounds > configuration.maxAttempts || round > configuration.maxAttempts {
                        logger.info("dcutr: more than \(configuration.maxAttempts) rounds; refusing", metadata: ["peer": "\(peer)"])
                        record(peer, role: .responder, .relayed(reason: .gaveUp("the peer asked for more than \(configuration.maxAttempts) rounds")), relayed: relayed)
                        stream.reset()
                        return
                    }
                    if state.withLockedValue({ $0.running.contains(peer) }) {
                        logger.info("dcutr: SYNC while our previous dials still run; not dialing again", metadata: ["peer": "\(peer)"])
                        continue
                    }
                    guard !addrs.isEmpty else {
                        logger.info("dcutr: the peer offered no usable address; not dialing", metadata: ["peer": "\(peer)"])
                        record(peer, role: .responder, .relayed(reason: .peerOfferedNoAddress), relayed: relayed)
                        continue
                    }
                    // Dial now, while the initiator waits RTT/2; keep reading for its retries.
                    let rounds = machine.rounds
                    state.withLockedValue { _ = $0.running.insert(peer) }
                    node.swarm.tasks.spawn { [self] in
                        defer { _ = state.withLockedValue { $0.running.remove(peer) } }
                        if await dialAny(peer, addrs, role: .initiator) != nil {
                            record(peer, role: .responder, .direct(how: .holePunch, attempts: rounds), relayed: relayed)
                        } else if !hasDirect(to: peer) {
                            record(peer, role: .responder, .relayed(reason: .dialsFailed(addrs)), relayed: relayed)
                        }
                    }
                case .giveUp(let reason):
                    logger.info("dcutr: \(reason)", metadata: ["peer": "\(peer)"])
                    record(peer, role: .responder, .relayed(reason: .gaveUp(reason)), relayed: relayed)
                    stream.reset()
                    return
                }
            }
        }
    }

    // MARK: Shared

    private func readMessage(_ stream: MuxedStream) async throws -> DCUtR.Message {
        let bytes = try await withTimeout(configuration.readTimeout) {
            try await stream.readLengthPrefixed(maxLength: DCUtR.maxMessageSize)
        }
        let (m, skipped) = try DCUtR.decode(bytes)
        if skipped > 0 { logger.info("dcutr: skipped \(skipped) unparseable addresses") }
        return m
    }

    /// Dials every address at once (from the listen port, with `role`) and returns as soon as a
    /// direct connection to the peer exists — ours, or the peer's dial arriving — or when the
    /// attempt's time is up. Dials still in their handshake finish (or time out) on their own.
    private func dialAny(_ peer: PeerID, _ addrs: [Multiaddr], role: SecureConnectionMachine.Role, within: Duration? = nil) async -> Connection? {
        guard !addrs.isEmpty else { return nil }
        let dialer = node.dialer
        let logger = self.logger
        var options = DialOptions()
        options.role = role
        options.portUse = configuration.dialFromListenPort ? .listenPort : .ephemeral
        options.reuseExisting = false  // a fresh connection: the punch's, with its role
        options.usePeerStore = false
        options.useRouting = false
        options.allowRelayed = false
        // A shortened attempt (reversal) gives its sockets up with it: a SYN still pending would
        // claim the 4-tuple the punch is about to use.
        if let within { options.connectTimeout = min(options.connectTimeout, within) }
        if let direct = node.swarm.directConnection(to: peer) { return direct }
        // A dial still in flight from the previous attempt keeps its 4-tuple (and its SYN
        // retransmissions may yet meet the peer's): wait for it rather than dial that address again.
        let fresh = state.withLockedValue { s -> [Multiaddr] in
            let new = addrs.filter { !s.inFlight.contains(Self.flightKey(peer, $0)) }
            for a in new { s.inFlight.insert(Self.flightKey(peer, a)) }
            s.dialsStarted += new.count
            return new
        }
        // Settled by the first of: our dial's connection (it counts even if the peer closes it at
        // once), the peer's dial arriving (an event), every dial of this attempt failing, the deadline.
        let result = OneShot<Connection?>()
        let sub = node.events.subscribe { event in
            if case .connectionEstablished(let c) = event, c.remotePeer == peer, !c.isLimited { result.settle(c) }
        }
        defer { sub.cancel() }
        if let direct = node.swarm.directConnection(to: peer) {
            // The peer's dial won meanwhile: ours are not started; forget them.
            state.withLockedValue { s in for a in fresh { s.inFlight.remove(Self.flightKey(peer, a)) } }
            return direct
        }
        let failures = NIOLockedValueBox(0)
        let base = options
        for a in fresh {
            node.swarm.tasks.spawn { [weak self] in
                do {
                    var o = base
                    o.addresses = [a]
                    result.settle(try await dialer.connect(to: peer, o).connection)
                } catch {
                    logger.debug("dcutr: dial failed: \(error)", metadata: ["addr": "\(a)"])
                    let all = failures.withLockedValue { $0 += 1; return $0 }
                    if all == fresh.count && fresh.count == addrs.count { result.settle(nil) }
                }
                _ = self?.state.withLockedValue { $0.inFlight.remove(Self.flightKey(peer, a)) }
            }
        }
        return await result.wait(timeout: within ?? configuration.attemptTimeout, fallback: nil)
    }
}

