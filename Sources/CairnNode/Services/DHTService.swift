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
    public struct Configuration: Sendable {
        public var kademlia = KademliaConfiguration()
        public var republishInterval: Duration = .seconds(20 * 60)
        public var tickInterval: Duration = .seconds(1)
        public var sweepInterval: Duration = .seconds(5 * 60)
        public var snapshotInterval: Duration = .seconds(60)
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
    private let behaviour: NIOLockedValueBox<KademliaBehaviour>
    private let waiters = NIOLockedValueBox<[QueryID: CheckedContinuation<(QueryResult, QueryStats), Never>]>([:])
    private let finishedEarly = NIOLockedValueBox<[QueryID: (QueryResult, QueryStats)]>([:])
    private let timer = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let limiter: NIOLockedValueBox<PeerRateLimiter>

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
        self.behaviour = NIOLockedValueBox(KademliaBehaviour(local: node.peerID, store: store, configuration: configuration.kademlia, now: clock()))
        self.limiter = NIOLockedValueBox(PeerRateLimiter(rate: configuration.requestRate, burst: configuration.requestBurst))
        if configuration.kademlia.mode == .server {
            node.swarm.handle(configuration.kademlia.protocolID) { [weak self] stream in
                guard let self else { throw StreamError.connectionClosed("DHT service is gone") }
                try await self.serve(stream)
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
        if mode == .server {
            node.swarm.handle(protocolID) { [weak self] stream in
                guard let self else { throw StreamError.connectionClosed("DHT service is gone") }
                try await self.serve(stream)
            }
        } else {
            node.swarm.unhandle(protocolID)
        }
        logger.notice("DHT mode is now \(mode)")  // identify push follows the protocol change
    }
    public var routingTable: RoutingTable { behaviour.withLockedValue { $0.routingTable } }

    /// Starts the timers and restores the saved routing table.
    public func start() {
        behaviour.withLockedValue { $0.localAddresses = node.listenAddresses }
        if let snapshots, let saved = try? snapshots.loadRouting(), !saved.isEmpty {
            behaviour.withLockedValue { b in b.restore(saved.map { ($0.0, $0.1) }, now: self.now()) }
            logger.info("restored routing table", metadata: ["peers": "\(saved.count)"])
        }
        let t = Task { [weak self] in
            let clock = self?.now ?? { Date() }
            var lastSweep = clock(), lastSnapshot = clock()
            while !Task.isCancelled {
                try? await Task.sleep(for: self?.configuration.tickInterval ?? .seconds(1))
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
        if info.protocols.contains(protocolID) {
            perform(behaviour.withLockedValue { $0.peerSeen(peer, addresses: addrs, now: self.now()) })
        } else {
            behaviour.withLockedValue { $0.peerGone(peer) }
        }
    }

    func usableAddresses(_ addrs: [Multiaddr], peer: PeerID) -> [Multiaddr] {
        addrs.map { $0.withoutTrailingPeerID }.filter { $0.tcpEndpoint != nil && !$0.isUnspecifiedIP }
    }

    // MARK: Serving

    func serve(_ stream: MuxedStream) async throws {
        guard let peer = stream.connection.remotePeer else { return }
        let addrs = stream.connection.remoteAddress.map { [$0] } ?? []
        // A stream may carry several requests in turn (go-libp2p reuses streams).
        while true {
            let bytes: [UInt8]
            do { bytes = try await stream.readLengthPrefixed(maxLength: KadMessage.maxMessageSize) } catch StreamError.unexpectedEOF { break }
            guard limiter.withLockedValue({ $0.allow(peer, now: self.now()) }) else {
                logger.warning("DHT request rate limit exceeded; resetting the stream", metadata: ["peer": "\(peer)"])
                stream.reset()
                return
            }
            let request: KadMessage
            do { request = try KadMessage.decode(bytes) } catch {
                logger.info("refused a malformed DHT request: \(error)", metadata: ["peer": "\(peer)"])
                stream.reset()
                return
            }
            let response = behaviour.withLockedValue { $0.handleRequest(request, from: peer, addresses: addrs, now: self.now()) }
            switch response {
            case .respond(let m):
                try await stream.writeLengthPrefixed(m.encode())
            case .noResponse:
                continue
            case .reject(let why):
                logger.info("refused a DHT request: \(why)", metadata: ["peer": "\(peer)", "type": "\(request.kind)"])
                stream.reset()
                return
            }
        }
        await stream.closeWrite()
    }

    // MARK: Carrying out actions

    func perform(_ actions: [KadAction]) {
        for a in actions {
            switch a {
            case .request(let q, let peer, let addrs, let message):
                node.swarm.tasks.spawn { [weak self] in await self?.send(q, to: peer, addresses: addrs, message) }
            case .finished(let q, let result, let stats):
                if let c = waiters.withLockedValue({ $0.removeValue(forKey: q) }) {
                    c.resume(returning: (result, stats))
                } else {
                    finishedEarly.withLockedValue { $0[q] = (result, stats) }
                }
            case .checkLiveness(let peer, let addrs):
                node.swarm.tasks.spawn { [weak self] in
                    guard let self else { return }
                    let alive = (try? await self.request(peer, addrs, KadMessage(kind: .ping))) != nil
                    self.behaviour.withLockedValue { $0.livenessChecked(peer, alive: alive, now: self.now()) }
                }
            }
        }
    }

    private func send(_ q: QueryID, to peer: PeerID, addresses: [Multiaddr], _ message: KadMessage) async {
        do {
            let response = try await withTimeout(.seconds(configuration.kademlia.lookup.requestTimeout)) {
                try await self.request(peer, addresses, message)
            }
            perform(behaviour.withLockedValue { $0.responseReceived(q, from: peer, response: response, now: self.now()) })
        } catch {
            if case DHTError.invalidResponse = error {
                logger.info("DHT response rejected: \(error)", metadata: ["peer": "\(peer)", "type": "\(message.kind)"])
            } else {
                logger.debug("DHT request failed: \(error)", metadata: ["peer": "\(peer)", "type": "\(message.kind)"])
            }
            let unreachable = node.swarm.connections(to: peer).isEmpty
            perform(behaviour.withLockedValue { $0.requestFailed(q, peer: peer, unreachable: unreachable, now: self.now()) })
        }
    }

    /// One request on a fresh stream; nil response for ADD_PROVIDER (no reply expected).
    func request(_ peer: PeerID, _ addresses: [Multiaddr], _ message: KadMessage) async throws -> KadMessage? {
        let connection = try await connect(peer, addresses)
        let stream = try await connection.openStream([protocolID])
        try await stream.writeLengthPrefixed(message.encode())
        if message.kind == .addProvider {
            await stream.closeWrite()
            return nil
        }
        let bytes = try await stream.readLengthPrefixed(maxLength: KadMessage.maxMessageSize)
        await stream.closeWrite()
        let response: KadMessage
        do { response = try KadMessage.decode(bytes) } catch {
            stream.reset()
            throw DHTError.invalidResponse("\(error)")
        }
        guard response.kind == message.kind else { throw DHTError.invalidResponse("type \(response.kind) for \(message.kind)") }
        return response
    }

    func connect(_ peer: PeerID, _ addresses: [Multiaddr]) async throws -> Connection {
        // The addresses the DHT knows, direct only; never routing (that would be the DHT again).
        var options = DialOptions()
        options.addresses = Array(addresses.filter { $0.tcpEndpoint != nil }.prefix(4))
        options.usePeerStore = false
        options.useRouting = false
        return try await node.dialer.connect(to: peer, options).connection
    }

    // MARK: Peer routing

    /// The peer's addresses: its signed presence record when it has one, else what the closest
    /// peers say of it (libp2p peer routing: a FIND_NODE lookup towards its ID).
    public func findPeer(_ peer: PeerID) async throws -> RoutedAddresses {
        if let record = try? await resolve(peer) {
            return RoutedAddresses(addresses: record.addresses, source: .presenceRecord(seq: record.seq))
        }
        let closest = try await findClosest(to: peer)
        guard let found = closest.first(where: { $0.id == peer }), !found.addresses.isEmpty else { throw DHTError.notFound }
        return RoutedAddresses(addresses: found.addresses, source: .peerRouting)
    }

    // MARK: Queries

    private func run(_ start: (inout KademliaBehaviour, Date) throws -> (QueryID, [KadAction])) async throws -> (QueryResult, QueryStats) {
        let (q, actions) = try behaviour.withLockedValue { b in
            b.localAddresses = node.listenAddresses
            return try start(&b, self.now())
        }
        return await withCheckedContinuation { c in
            if let done = finishedEarly.withLockedValue({ $0.removeValue(forKey: q) }) {
                c.resume(returning: done)
            } else {
                waiters.withLockedValue { $0[q] = c }
            }
            perform(actions)
        }
    }

    /// Joins the DHT: connects to `peers` (and identifies them), then looks up our own ID and
    /// refreshes the buckets. Returns how many bootstrap peers answered.
    @discardableResult
    public func bootstrap(_ peers: [Multiaddr]) async throws -> Int {
        var connected = 0
        for addr in peers {
            do {
                let conn = try await node.dial(addr)
                _ = try await node.identify(conn)
                connected += 1
                logger.info("bootstrap peer connected", metadata: ["peer": "\(conn.remotePeer!)"])
            } catch {
                logger.warning("bootstrap peer \(addr) failed: \(error)")
            }
        }
        guard routingTable.count > 0 else { throw DHTError.noPeers }
        let (result, stats) = try await run { b, now in b.findNode(b.local, now: now) }
        if case .closestPeers(let closest) = result {
            logger.info("joined the DHT", metadata: ["closest": "\(closest.count)", "requests": "\(stats.requests)", "table": "\(routingTable.count)"])
        }
        perform(behaviour.withLockedValue { $0.bootstrap(now: self.now()) })
        return connected
    }

    public func findClosest(to peer: PeerID) async throws -> [KadPeer] {
        let (result, _) = try await run { b, now in b.findNode(peer, now: now) }
        guard case .closestPeers(let peers) = result else { return [] }
        return peers
    }

    public func getValue(_ key: [UInt8]) async throws -> DHTRecord? {
        let (result, _) = try await run { b, now in b.getValue(key, now: now) }
        guard case .value(let r) = result else { return nil }
        return r
    }

    /// Stores a value on the k closest peers; returns (acknowledged, attempted).
    public func putValue(_ key: [UInt8], _ value: [UInt8]) async throws -> (Int, Int) {
        let (result, _) = try await run { b, now in try b.putValue(key: key, value: value, now: now) }
        guard case .stored(let acks, let attempted) = result else { return (0, 0) }
        return (acks, attempted)
    }

    public func provide(_ key: [UInt8]) async throws -> (Int, Int) {
        let (result, _) = try await run { b, now in try b.addProvider(key: key, now: now) }
        guard case .stored(let acks, let attempted) = result else { return (0, 0) }
        return (acks, attempted)
    }

    public func providers(_ key: [UInt8]) async throws -> [ProviderRecord] {
        let (result, _) = try await run { b, now in b.getProviders(key, now: now) }
        guard case .providers(let ps) = result else { return [] }
        return ps
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
