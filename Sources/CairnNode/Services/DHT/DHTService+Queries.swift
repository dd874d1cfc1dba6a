import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers

/// The query driver: starts the behaviour's queries, sends its requests over streams, feeds
/// answers, failures and timeouts back, and hands results to the callers waiting for them.
extension DHTService {
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

    func send(_ q: QueryID, to peer: PeerID, addresses: [Multiaddr], _ message: KadMessage) async {
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
        let stream = try await connection.openStream(protocolIDs)
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

    func run(_ start: (inout KademliaBehaviour, Date) throws -> (QueryID, [KadAction])) async throws -> (QueryResult, QueryStats) {
        let (q, actions) = try behaviour.withLockedValue { b in
            b.localAddresses = node.advertisedAddresses
            return try start(&b, self.now())
        }
        let started = ContinuousClock.now
        let (result, stats) = await withCheckedContinuation { c in
            if let done = finishedEarly.withLockedValue({ $0.removeValue(forKey: q) }) {
                c.resume(returning: done)
            } else {
                waiters.withLockedValue { $0[q] = c }
            }
            perform(actions)
        }
        let type: String
        switch result {
        case .closestPeers: type = "find_node"
        case .value: type = "get_value"
        case .providers: type = "get_providers"
        case .stored: type = "put"
        }
        node.swarm.events.emit(.dhtQueryFinished(type: type, duration: ContinuousClock.now - started, requests: stats.requests))
        return (result, stats)
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

    /// The peers closest to an arbitrary key (its SHA-256 in the keyspace).
    public func findClosest(key: [UInt8]) async throws -> [KadPeer] {
        let (result, _) = try await run { b, now in b.findClosest(key: key, now: now) }
        guard case .closestPeers(let peers) = result else { return [] }
        return peers
    }

    public func findClosest(to peer: PeerID) async throws -> [KadPeer] {
        let (result, _) = try await run { b, now in b.findNode(peer, now: now) }
        guard case .closestPeers(let peers) = result else { return [] }
        return peers
    }

    public func getValue(_ key: [UInt8]) async throws -> DHTRecord? {
        let local = try? storage.store.record(forKey: key, now: self.now())
        let (result, _) = try await run { b, now in b.getValue(key, local: local, now: now) }
        guard case .value(let r) = result else { return nil }
        return r
    }

    /// Stores a value on the k closest peers; returns (acknowledged, attempted).
    public func putValue(_ key: [UInt8], _ value: [UInt8]) async throws -> (Int, Int) {
        if mode == .server { try storage.storeValidated(key: key, value: value, now: self.now()) }
        let (result, _) = try await run { b, now in try b.replicateValue(key: key, value: value, now: now) }
        guard case .stored(let acks, let attempted) = result else { return (0, 0) }
        return (acks, attempted)
    }

    public func provide(_ key: [UInt8]) async throws -> (Int, Int) {
        if mode == .server {
            let addrs = node.advertisedAddresses
            try storage.addLocalProvider(key: key, provider: node.peerID, addresses: addrs, now: self.now())
        }
        let (result, _) = try await run { b, now in try b.announceProvider(key: key, now: now) }
        guard case .stored(let acks, let attempted) = result else { return (0, 0) }
        return (acks, attempted)
    }

    public func providers(_ key: [UInt8]) async throws -> [ProviderRecord] {
        let local = (try? storage.store.providers(forKey: key, now: self.now(), limit: KadMessage.maxPeers)) ?? []
        let (result, _) = try await run { b, now in b.getProviders(key, local: local, now: now) }
        guard case .providers(let ps) = result else { return [] }
        return ps
    }
}
