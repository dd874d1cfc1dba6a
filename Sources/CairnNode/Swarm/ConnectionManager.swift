import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers

/// go-libp2p's connection manager semantics: when more than `high` peers are connected, the
/// lowest-valued ones are disconnected until `low` remain. A peer's value is the sum of its tags'
/// weights; peers whose connection is younger than `grace`, and peers the host protects (relays
/// we hold reservations on, peers with reservations on us, hole-punched connections, connections
/// carrying streams), are never trimmed. `trim()` applies the same rule on demand.
public final class ConnectionManager: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Trim automatically when more than `high` peers are connected.
        public var enabled = false
        public var low = 160
        public var high = 192
        public var grace: Duration = .seconds(20)
        public init() {}
    }

    let swarm: Swarm
    public let configuration: Configuration
    let logger: Logger
    private struct State {
        var tags: [PeerID: [String: Int]] = [:]
        var since: [PeerID: ContinuousClock.Instant] = [:]
        var trimming = false
        var protectors: [@Sendable () -> Set<PeerID>] = []
        var trimmed = 0
    }
    private let state = NIOLockedValueBox(State())
    private var subscription: EventSubscription?

    init(swarm: Swarm, configuration: Configuration, logger: Logger) {
        self.swarm = swarm
        self.configuration = configuration
        self.logger = logger
        subscription = swarm.events.subscribe { [weak self] event in
            guard let self else { return }
            switch event {
            case .connectionEstablished(let c):
                guard let p = c.remotePeer else { return }
                let over = self.state.withLockedValue { s -> Bool in
                    if s.since[p] == nil { s.since[p] = .now }
                    return s.since.count > self.configuration.high
                }
                if over && self.configuration.enabled { swarm.tasks.spawn { await self.trim() } }
            case .connectionClosed(let c, _):
                guard let p = c.remotePeer, swarm.connections(to: p).isEmpty else { return }
                _ = self.state.withLockedValue { $0.since.removeValue(forKey: p) }
            default: break
            }
        }
    }

    /// Streams that do not make a connection "in use" (the node's own short exchanges, and
    /// streams still negotiating).
    static let housekeeping: Set<String> = [IdentifyInfo.protocolID, IdentifyInfo.pushProtocolID, Ping.protocolID,
                                             AutoNAT.protocolID, "/ipfs/kad/1.0.0", "/ipfs/lan/kad/1.0.0", "?"]

    public func tag(_ peer: PeerID, _ tag: String, weight: Int) { state.withLockedValue { $0.tags[peer, default: [:]][tag] = weight } }

    public func untag(_ peer: PeerID, _ tag: String) {
        state.withLockedValue { s in
            s.tags[peer]?[tag] = nil
            if s.tags[peer]?.isEmpty == true { s.tags[peer] = nil }
        }
    }

    public func tags(of peer: PeerID) -> [String: Int] { state.withLockedValue { $0.tags[peer] ?? [:] } }

    /// Adds a source of peers that must never be trimmed (the host adds its relays and punches).
    public func addProtection(_ peers: @escaping @Sendable () -> Set<PeerID>) { state.withLockedValue { $0.protectors.append(peers) } }

    /// Peers disconnected by trimming so far.
    public var trimmedCount: Int { state.withLockedValue { $0.trimmed } }

    /// Disconnects the lowest-valued unprotected peers outside their grace period until `low`
    /// peers remain (or no candidate is left).
    public func trim() async {
        guard state.withLockedValue({ s in defer { s.trimming = true }; return !s.trimming }) else { return }
        defer { state.withLockedValue { $0.trimming = false } }
        let peers = Set(swarm.connections.compactMap(\.remotePeer))
        guard peers.count > configuration.low else { return }
        let (tags, since, protectors) = state.withLockedValue { ($0.tags, $0.since, $0.protectors) }
        var protected = Set<PeerID>()
        for p in protectors { protected.formUnion(p()) }
        let now = ContinuousClock.now
        var candidates: [(PeerID, Int)] = []
        for p in peers where !protected.contains(p) {
            if let t = since[p], now - t < configuration.grace { continue }
            var busy = false
            for c in swarm.connections(to: p) {
                let protocols = await c.openStreamProtocols()
                if protocols.contains(where: { !Self.housekeeping.contains($0) }) { busy = true }
            }
            if busy { continue }
            candidates.append((p, tags[p]?.values.reduce(0, +) ?? 0))
        }
        candidates.sort { $0.1 < $1.1 }
        let excess = peers.count - configuration.low
        for (p, value) in candidates.prefix(excess) {
            logger.info("connection manager: trimming \(p)", metadata: ["value": "\(value)", "connected": "\(peers.count)", "low": "\(configuration.low)"])
            for c in swarm.connections(to: p) { await c.close() }
            state.withLockedValue { $0.trimmed += 1 }
        }
    }
}
