import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

public enum DHTError: Error, CustomStringConvertible {
    case noPeers
    case cancelled
    case invalidResponse(String)
    case notFound

    public var description: String {
        switch self {
        case .noPeers: return "the routing table is empty: give --bootstrap peers"
        case .cancelled: return "DHT service stopped"
        case .invalidResponse(let s): return "invalid DHT response: \(s)"
        case .notFound: return "not found"
        }
    }
}

/// Runs the Kademlia behaviour on a real node: serves `/ipfs/kad/1.0.0` in server mode, sends
/// the behaviour's requests over streams, feeds answers and failures back, learns DHT servers
/// from identify, and keeps time (request timeouts, bucket refresh, presence republishing,
/// expiry sweeps, routing snapshots). The behaviour itself never sees a socket.
public final class DHTService: @unchecked Sendable, PeerRouting {
    public enum AddressScope: String, Sendable {
        case any
        /// Public addresses only (the WAN DHT).
        case publicOnly
        /// Private, link-local and loopback addresses only (the LAN DHT).
        case privateOnly

        func admits(_ a: Multiaddr) -> Bool {
            guard let (ip, _) = a.tcpEndpoint else { return self == .any }
            switch self {
            case .any: return true
            case .publicOnly: return IPScope(ip).isPublic
            case .privateOnly: return !IPScope(ip).isPublic
            }
        }
    }

    public struct Configuration: Sendable {
        public var kademlia = KademliaConfiguration()
        public var republishInterval: Duration = .seconds(20 * 60)
        public var tickInterval: Duration = .seconds(1)
        public var sweepInterval: Duration = .seconds(5 * 60)
        public var snapshotInterval: Duration = .seconds(60)
        /// More protocol IDs served on the same table (kubo's LAN DHT, `/ipfs/lan/kad/1.0.0`,
        /// beside `/ipfs/kad/1.0.0`): the wire format is the same; requests we send propose the
        /// main protocol first and use whichever the peer speaks.
        public var additionalProtocols: [String] = []
        /// Which peers this table admits, by their addresses (kubo's dual DHT: the WAN table only
        /// peers with public addresses, the LAN table only peers with private or loopback ones).
        public var addressScope: AddressScope = .any
        /// Per-peer limit on requests served: average rate and burst.
        public var requestRate: Double = 20
        public var requestBurst: Double = 40
        public init() {}
    }

    public let node: Node
    public let configuration: Configuration
    let store: any DHTStore
    let snapshots: SQLiteDHTStore?
    let logger: Logger
    let behaviour: NIOLockedValueBox<KademliaBehaviour>
    let waiters = NIOLockedValueBox<[QueryID: CheckedContinuation<(QueryResult, QueryStats), Never>]>([:])
    let finishedEarly = NIOLockedValueBox<[QueryID: (QueryResult, QueryStats)]>([:])
    private let timer = NIOLockedValueBox<Task<Void, Never>?>(nil)
    /// Records and providers: used outside the behaviour's lock (SQLite I/O never under it).
    let storage: KademliaStorage
    /// Answers inbound requests (server mode).
    let server: DHTServer

    /// The DHT's clock (records' expiry, the routing table's ages); injectable for tests.
    let now: @Sendable () -> Date

    public init(node: Node, store: any DHTStore, configuration: Configuration = Configuration(), logger: Logger,
                clock: @escaping @Sendable () -> Date = { Date() }) {
        self.now = clock
        self.node = node
        self.configuration = configuration
        self.store = store
        self.snapshots = store as? SQLiteDHTStore
        self.logger = logger
        let behaviour = NIOLockedValueBox(KademliaBehaviour(local: node.peerID, store: store, configuration: configuration.kademlia, now: clock()))
        self.behaviour = behaviour
        self.storage = behaviour.withLockedValue { $0.storage }
        let connectedAddresses: @Sendable (PeerID) -> [Multiaddr]? = { [weak node] id in
            // What we know of a connected peer: its identify, else the connection's address.
            guard let node, let c = node.swarm.directConnection(to: id) else { return nil }
            let said = node.identifyService.lastInfo(from: id)?.listenAddrs.filter { $0.tcpEndpoint != nil } ?? []
            return said.isEmpty ? c.remoteAddress.map { [$0] } : said
        }
        self.server = DHTServer(storage: storage, rate: configuration.requestRate, burst: configuration.requestBurst, clock: clock, logger: logger,
                                events: node.swarm.events) {
            request, peer in
            // Only the routing table's part under the lock; the store's part follows outside it.
            let connected = request.kind == .findNode ? (try? PeerID(bytes: request.key)).flatMap { connectedAddresses($0) } : nil
            return behaviour.withLockedValue { b in
                b.configuration.mode == .server ? .some(b.tableReply(to: request, from: peer) { _ in connected }) : nil
            }
        }
        if configuration.kademlia.mode == .server {
            for p in [configuration.kademlia.protocolID] + configuration.additionalProtocols {
                node.swarm.handle(p, service: "dht") { [server] stream in try await server.serve(stream) }
            }
        }
        subscription = node.events.subscribe { [weak self] event in
            switch event {
            case .peerIdentified(let conn, let info): self?.identified(conn, info)
            case .localAddressesChanged: self?.addressesChanged()
            default: break
            }
        }
        node.dialer.addRouting(self)
    }

    private var subscription: EventSubscription?
    private let presence = NIOLockedValueBox<(task: Task<Void, Never>?, followChanges: Bool)>((nil, false))

    public var protocolID: String { configuration.kademlia.protocolID }
    /// Every protocol ID this DHT speaks, the main one first.
    public var protocolIDs: [String] { [configuration.kademlia.protocolID] + configuration.additionalProtocols }

    public var mode: KademliaConfiguration.Mode { behaviour.withLockedValue { $0.configuration.mode } }

    /// Switches between server and client mode (following reachability): a server answers and
    /// announces the protocol; a client does neither. Peers learn of it by identify push.
    public func setMode(_ mode: KademliaConfiguration.Mode) {
        let changed = behaviour.withLockedValue { b -> Bool in
            guard b.configuration.mode != mode else { return false }
            b.configuration.mode = mode
            return true
        }
        guard changed else { return }
        for p in protocolIDs {
            if mode == .server {
                node.swarm.handle(p, service: "dht") { [server] stream in try await server.serve(stream) }
            } else {
                node.swarm.unhandle(p)
            }
        }
        logger.notice("DHT mode is now \(mode)")  // identify push follows the protocol change
    }
    public var routingTable: RoutingTable { behaviour.withLockedValue { $0.routingTable } }

    /// Starts the timers and restores the saved routing table.
    public func start() {
        behaviour.withLockedValue { $0.localAddresses = node.advertisedAddresses }
        if let snapshots, let saved = try? snapshots.loadRouting(), !saved.isEmpty {
            behaviour.withLockedValue { b in b.restore(saved.map { ($0.0, $0.1) }, now: self.now()) }
            logger.info("restored routing table", metadata: ["peers": "\(saved.count)"])
        }
        let t = Task { [weak self] in
            let clock = self?.now ?? { Date() }
            var lastSweep = clock(), lastSnapshot = clock()
            while !Task.isCancelled {
                // Every tickInterval, and sooner when a lookup has a deadline (a request's soft or
                // hard timeout, from measured round trips: often well under a second).
                var wait = self?.configuration.tickInterval ?? .seconds(1)
                if let self, let next = self.behaviour.withLockedValue({ $0.nextDeadline(after: clock()) }) {
                    let until = Duration.milliseconds(Int64(max(0.01, next.timeIntervalSince(clock())) * 1000))
                    if until < wait { wait = until }
                }
                try? await Task.sleep(for: wait)
                guard let self else { return }
                let now = self.now()
                self.perform(self.behaviour.withLockedValue { $0.tick(now: now) })
                if now.timeIntervalSince(lastSweep) >= self.configuration.sweepInterval.timeInterval {
                    lastSweep = now
                    if let n = try? self.store.sweepExpired(now: now), n > 0 { self.logger.info("swept expired DHT entries", metadata: ["rows": "\(n)"]) }
                }
                if now.timeIntervalSince(lastSnapshot) >= self.configuration.snapshotInterval.timeInterval {
                    lastSnapshot = now
                    self.saveSnapshot()
                }
            }
        }
        timer.withLockedValue { $0 = t }
    }

    public func stop() {
        timer.withLockedValue { $0?.cancel(); $0 = nil }
        presence.withLockedValue { $0.task?.cancel(); $0 = (nil, false) }
        saveSnapshot()
        let pending = waiters.withLockedValue { w -> [CheckedContinuation<(QueryResult, QueryStats), Never>] in
            defer { w = [:] }
            return Array(w.values)
        }
        for c in pending { c.resume(returning: (.closestPeers([]), QueryStats(started: self.now()))) }
    }

    func saveSnapshot() {
        guard let snapshots else { return }
        let entries = behaviour.withLockedValue { $0.routingTable.allEntries }.map { ($0.peer, $0.addresses, $0.lastSeen) }
        do { try snapshots.saveRouting(entries) } catch { logger.error("saving the routing table failed: \(error)") }
    }

    // MARK: Learning peers

    private func identified(_ connection: Connection, _ info: IdentifyInfo) {
        guard let peer = connection.remotePeer else { return }
        let addrs = usableAddresses(info.listenAddrs, peer: peer)
        // A peer of the other table's scope (a LAN peer for the WAN DHT) is not ours.
        if info.protocols.contains(where: protocolIDs.contains), configuration.addressScope == .any || !addrs.isEmpty {
            perform(behaviour.withLockedValue { $0.peerSeen(peer, addresses: addrs, now: self.now()) })
        } else {
            behaviour.withLockedValue { $0.peerGone(peer) }
        }
    }

    func usableAddresses(_ addrs: [Multiaddr], peer: PeerID) -> [Multiaddr] {
        addrs.map { $0.withoutTrailingPeerID }.filter { $0.tcpEndpoint != nil && !$0.isUnspecifiedIP && configuration.addressScope.admits($0) }
    }

    /// Publishes this node's presence record (a freshly signed PeerRecord) under /cairn/peer/<id>.
    public func publishPresence() async throws -> (Int, Int) {
        let envelope = node.renewSignedPeerRecord()
        return try await putValue(RecordValidator.presenceKey(node.peerID), envelope.bytes)
    }

    /// Republishes presence every `republishInterval` until the task is cancelled, and at once
    /// whenever the node's advertised addresses change (a relay reservation came or went).
    @discardableResult
    public func keepPresencePublished() -> Task<Void, Never> {
        let task = Task { [weak self] in
            while !Task.isCancelled {
                guard let self else { return }
                do {
                    let (acks, attempted) = try await self.publishPresence()
                    self.logger.info("published presence", metadata: ["acks": "\(acks)", "of": "\(attempted)"])
                } catch {
                    self.logger.warning("publishing presence failed: \(error)")
                }
                try? await Task.sleep(for: self.configuration.republishInterval)
            }
        }
        presence.withLockedValue { $0.task?.cancel(); $0 = (task, true) }
        return task
    }

    /// While presence is kept published, an address change (a relay reservation came or went, an
    /// external address was confirmed) republishes at once.
    private func addressesChanged() {
        guard presence.withLockedValue({ $0.followChanges }) else { return }
        node.swarm.tasks.spawn { [weak self] in
            guard let self else { return }
            do {
                let (acks, attempted) = try await self.publishPresence()
                self.logger.info("addresses changed: published presence", metadata: ["acks": "\(acks)", "of": "\(attempted)"])
            } catch {
                self.logger.warning("publishing presence after an address change failed: \(error)")
            }
        }
    }

    /// Resolves a peer ID to its verified current addresses (its presence record).
    public func resolve(_ peer: PeerID) async throws -> PeerRecord {
        guard let r = try await getValue(RecordValidator.presenceKey(peer)), case .presence(let record) = r.kind else {
            throw DHTError.notFound
        }
        return record
    }
}
