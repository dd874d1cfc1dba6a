import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Keeps a private node reachable through volunteer relays: it learns relay candidates (peers
/// whose identify lists the hop protocol: connected ones, and those the DHT or the peer store
/// brought), measures their round-trip time, reserves on the best `desiredRelays`, refreshes
/// before expiry, replaces a relay that disappears, and sets the node's extra advertised
/// addresses to the relayed ones (so its signed peer record and presence follow).
public final class AutoRelay: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var desiredRelays = 2
        /// Refresh a reservation this long before it expires (go-libp2p: 2 min).
        public var refreshMargin: Duration = .seconds(120)
        /// How often to look at the reservations.
        public var tick: Duration = .seconds(5)
        /// After a failed reservation, leave that candidate alone this long (go-libp2p: 1 h).
        public var failureBackoff: Duration = .seconds(3600)
        /// Candidates measured per round (their RTT decides).
        public var candidatesPerRound = 4
        public init() {}
    }

    public enum Mode: String, Sendable {
        /// Reserve only while AutoNAT says private.
        case auto
        /// Always keep reservations (a node known to be behind NAT).
        case always
        case off
    }

    let node: Node
    let client: RelayClient
    let configuration: Configuration
    let logger: Logger
    private struct State {
        var mode: Mode
        var active = false
        var candidates: [PeerID: [Multiaddr]] = [:]
        var backoff: [PeerID: Date] = [:]
        var rtt: [PeerID: Duration] = [:]
        var task: Task<Void, Never>?
        var inRound = false
    }
    private let state: NIOLockedValueBox<State>

    public init(node: Node, client: RelayClient, mode: Mode, configuration: Configuration = Configuration(), logger: Logger) {
        self.node = node
        self.client = client
        self.configuration = configuration
        self.logger = logger
        self.state = NIOLockedValueBox(State(mode: mode, active: mode == .always))
        subscription = node.events.subscribe { [weak self] event in
            guard let self else { return }
            switch event {
            case .peerIdentified(let c, let info): self.identified(c, info)
            case .reachabilityChanged(let r) where self.followsReachability: self.reachabilityChanged(r)
            default: break
            }
        }
    }

    private var subscription: EventSubscription?
    private let following = NIOLockedValueBox(false)
    private var followsReachability: Bool { following.withLockedValue { $0 } }

    private func identified(_ c: Connection, _ info: IdentifyInfo) {
        guard let peer = c.remotePeer, !c.isLimited else { return }
        state.withLockedValue { s in
            if info.protocols.contains(CircuitRelay.hopProtocolID) {
                s.candidates[peer] = info.listenAddrs.filter { $0.tcpEndpoint != nil }
            } else {
                s.candidates[peer] = nil  // it stopped volunteering
            }
        }
        // A new candidate while short of relays: look now rather than at the next tick.
        if info.protocols.contains(CircuitRelay.hopProtocolID) && client.reservations.count < configuration.desiredRelays {
            node.swarm.tasks.spawn { await self.round() }
        }
    }

    /// Follows reachability (mode `auto`): reserve while private, release when public.
    public func reachabilityChanged(_ r: AutoNAT.ReachabilityTracker.Reachability) {
        let change = state.withLockedValue { s -> Bool? in
            guard s.mode == .auto else { return nil }
            let want = r == .private
            defer { s.active = want }
            return s.active != want ? want : nil
        }
        guard let change else { return }
        logger.notice(change ? "auto-relay: private, reserving relay slots" : "auto-relay: public, releasing relay slots")
        if !change { release() }
    }

    /// Mode `auto`: reachability comes from `nat`.
    public func followReachability(of nat: NATService) {
        following.withLockedValue { $0 = true }
    }

    public var candidates: [PeerID] { state.withLockedValue { Array($0.candidates.keys) } }

    public func start() {
        let task = Task { [weak self] in
            while !Task.isCancelled {
                guard let self else { return }
                await self.round()
                try? await Task.sleep(for: self.configuration.tick)
            }
        }
        state.withLockedValue { $0.task = task }
    }

    public func stop() async {
        let task = state.withLockedValue { s -> Task<Void, Never>? in defer { s.task = nil }; return s.task }
        task?.cancel()
        await task?.value
    }

    private func release() {
        for r in client.reservations { client.forget(r.relay) }
        publishAddresses()
    }

    /// One pass: drop reservations whose relay is gone, refresh those about to expire, and fill
    /// the free places with the fastest candidates.
    func round() async {
        // One round at a time (ticks and identify both start them).
        guard state.withLockedValue({ s in
            guard s.active, !s.inRound else { return false }
            s.inRound = true
            return true
        }) else { return }
        defer { state.withLockedValue { $0.inRound = false } }
        var changed = false
        let now = Date()
        for r in client.reservations {
            let conn = node.swarm.directConnection(to: r.relay)
            if conn == nil || r.expires <= now {
                logger.notice("auto-relay: lost relay \(r.relay)")
                client.forget(r.relay)
                state.withLockedValue { s in s.backoff[r.relay] = now.addingTimeInterval(configuration.tick.timeInterval * 2) }
                changed = true
            } else if let conn, r.expires.timeIntervalSince(now) < configuration.refreshMargin.timeInterval {
                do {
                    try await client.reserve(on: conn)
                    changed = true
                } catch {
                    logger.warning("auto-relay: refresh on \(r.relay) failed: \(error)")
                    client.forget(r.relay)
                    changed = true
                }
            }
        }
        let held = Set(client.reservations.map(\.relay))
        if held.count < configuration.desiredRelays {
            let candidates = state.withLockedValue { s in
                s.candidates.filter { !held.contains($0.key) && (s.backoff[$0.key] ?? .distantPast) <= now && $0.key != node.peerID }
            }
            // Measure up to candidatesPerRound (connecting where needed), fastest first.
            var measured: [(PeerID, Connection, Duration)] = []
            for (peer, addrs) in candidates.shuffled().prefix(configuration.candidatesPerRound) {
                do {
                    let conn = try await connection(to: peer, addrs)
                    let rtt = try await node.ping(conn, count: 1)[0]
                    measured.append((peer, conn, rtt))
                    state.withLockedValue { $0.rtt[peer] = rtt }
                } catch {
                    logger.info("auto-relay: candidate \(peer) unreachable: \(error)")
                    state.withLockedValue { s in s.backoff[peer] = now.addingTimeInterval(configuration.failureBackoff.timeInterval) }
                }
            }
            for (peer, conn, rtt) in measured.sorted(by: { $0.2 < $1.2 }) {
                guard client.reservations.count < configuration.desiredRelays else { break }
                do {
                    try await client.reserve(on: conn)
                    logger.notice("auto-relay: reserved on \(peer)", metadata: ["rtt_ms": "\(rtt)"])
                    changed = true
                } catch {
                    logger.info("auto-relay: reservation on \(peer) failed: \(error)")
                    state.withLockedValue { s in s.backoff[peer] = now.addingTimeInterval(configuration.failureBackoff.timeInterval) }
                }
            }
        }
        if changed { publishAddresses() }
    }

    private func connection(to peer: PeerID, _ addrs: [Multiaddr]) async throws -> Connection {
        var options = DialOptions()
        options.addresses = addrs
        options.allowRelayed = false  // a relay is reached directly
        options.useRouting = false
        return try await node.dialer.connect(to: peer, options).connection
    }

    /// The node advertises its relayed addresses (its peer record and presence follow).
    private func publishAddresses() {
        let addrs = client.reservations.sorted { $0.relay < $1.relay }.flatMap(\.addresses)
        node.setExtraAddresses(addrs)
        logger.info("auto-relay: relayed addresses now \(addrs.map(\.description).joined(separator: " "))")
    }
}
