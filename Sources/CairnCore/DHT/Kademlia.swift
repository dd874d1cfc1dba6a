import CairnCrypto
import Foundation

/// Configuration of the Kademlia behaviour.
public struct KademliaConfiguration: Sendable {
    public enum Mode: Sendable, Equatable { case server, client }

    public var protocolID = "/ipfs/kad/1.0.0"
    /// A server answers requests and announces the protocol; a client only asks. The swarm can
    /// switch this when reachability is known.
    public var mode: Mode = .server
    public var routing = RoutingTable.Configuration()
    public var lookup = Lookup.Configuration()
    public var refreshInterval: TimeInterval = 600
    public var providerTTL: TimeInterval = 48 * 3600
    public var validator = RecordValidator()
    /// Buckets deeper than this are not refreshed with random keys (finding a key with a longer
    /// common prefix costs 2^depth hashes, and such buckets are nearly empty anyway).
    public var maxRefreshDepth = 15
    /// Liveness in the routing table: a peer whose request a lookup gave up on (its hard timeout)
    /// is demoted (last in line for lookups and answers, first to be evicted) until it is heard
    /// from again. (One that could not be reached at all is evicted either way.) Off only to
    /// measure what it is worth.
    public var demoteUnresponsive = true

    public init() {}
}

public struct QueryID: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public var description: String { "q\(raw)" }
}

public struct QueryStats: Sendable, Equatable {
    public var requests = 0
    public var failures = 0
    /// Hops to the closest peer that answered: 1 when a peer from our own table was closest.
    public var hops = 0
    public var started: Date
    public var finished: Date?

    public init(started: Date) { self.started = started }
}

public enum QueryResult: Sendable, Equatable {
    case closestPeers([KadPeer])
    /// The best (highest seq) valid record found, if any.
    case value(DHTRecord?)
    case providers([ProviderRecord])
    /// A PUT_VALUE or ADD_PROVIDER: how many of the closest peers acknowledged it.
    case stored(acks: Int, attempted: Int)
}

public enum KadAction: Sendable, Equatable {
    /// Send `message` to `peer` and report back with `responseReceived` or `requestFailed`.
    case request(QueryID, peer: PeerID, addresses: [Multiaddr], message: KadMessage)
    case finished(QueryID, QueryResult, QueryStats)
    /// The bucket is full: check whether `peer` is alive, then call `livenessChecked`.
    case checkLiveness(PeerID, [Multiaddr])
}

/// What to do with a received request.
public enum KadResponse: Sendable, Equatable {
    case respond(KadMessage)
    /// A valid request that has no reply (ADD_PROVIDER).
    case noResponse
    /// Refuse: reset the stream and log the reason.
    case reject(String)
}

/// The Kademlia DHT as a behaviour that never does I/O: it serves requests against a `DHTStore`,
/// keeps the routing table, runs iterative queries and asks its owner (a real swarm, or the
/// simulator) to send requests. Time comes in with every call.
public struct KademliaBehaviour: Sendable {
    public let local: PeerID
    public var configuration: KademliaConfiguration
    public private(set) var routingTable: RoutingTable
    public let store: any DHTStore
    /// Our own addresses, given to peers in provider records.
    public var localAddresses: [Multiaddr] = []

    enum Kind: Sendable {
        case findNode(key: [UInt8])
        case getValue(key: [UInt8])
        case getProviders(key: [UInt8])
        case putValue(DHTRecord)
        case addProvider(key: [UInt8])
        case refresh(bucket: Int)
    }

    struct Query: Sendable {
        var kind: Kind
        var lookup: Lookup
        var storing: (outstanding: [PeerID: Date], acks: Int, attempted: Int)?
        var best: DHTRecord?
        var providers: [PeerID: ProviderRecord] = [:]
        var stats: QueryStats
    }

    var queries: [QueryID: Query] = [:]
    var nextQuery: UInt64 = 1
    /// The self-lookup of a bootstrap still running: bucket refreshes wait for it.
    var bootstrapQuery: QueryID?
    /// Round trips of our requests: the lookups' soft and hard timeouts follow them.
    public private(set) var rtt = RTTEstimator()
    var timeouts: Lookup.Timeouts { rtt.timeouts(configuration.lookup) }

    /// Randomness (bucket-refresh keys), seeded: the simulator passes its seed so a run repeats;
    /// a node seeds from the system's generator.
    var random: DeterministicRandom

    public init(local: PeerID, store: any DHTStore, configuration: KademliaConfiguration = KademliaConfiguration(), now: Date = Date(),
                randomSeed: UInt64 = UInt64.random(in: .min ... .max)) {
        self.random = DeterministicRandom(seed: randomSeed)
        self.local = local
        self.store = store
        self.configuration = configuration
        self.routingTable = RoutingTable(local: local, configuration: configuration.routing, now: now)
    }

    public var activeQueries: Int { queries.count }

    // MARK: Routing table

    /// A peer that speaks the DHT in server mode was seen (identify, or it answered us).
    public mutating func peerSeen(_ peer: PeerID, addresses: [Multiaddr], now: Date) -> [KadAction] {
        switch routingTable.update(peer, addresses: addresses, now: now) {
        case .pendingLivenessCheck(let oldest):
            return [.checkLiveness(oldest, routingTable.entry(oldest)?.addresses ?? [])]
        default:
            return []
        }
    }

    public mutating func livenessChecked(_ peer: PeerID, alive: Bool, now: Date) {
        routingTable.livenessChecked(peer, alive: alive, now: now)
    }

    /// A peer left the DHT (it stopped announcing the protocol, or requests to it failed).
    public mutating func peerGone(_ peer: PeerID) { routingTable.remove(peer) }

    /// Replaces the routing table's contents (restoring a snapshot).
    public mutating func restore(_ entries: [(PeerID, [Multiaddr])], now: Date) {
        for (p, a) in entries { _ = routingTable.update(p, addresses: a, now: now) }
    }

    func closerPeers(to key: DHTKey, excluding: PeerID?) -> [KadPeer] {
        routingTable.closest(to: key, count: configuration.routing.k + 1)
            .filter { $0.peer != excluding }
            .prefix(configuration.routing.k)
            .map { KadPeer(id: $0.peer, addresses: $0.addresses) }
    }

    // MARK: Serving

    /// Answers a request from `peer`: the routing table's part, then the store's.
    public mutating func handleRequest(_ request: KadMessage, from peer: PeerID, addresses: [Multiaddr], now: Date) -> KadResponse {
        guard configuration.mode == .server else { return .reject("not a DHT server") }
        return storage.complete(request, tableReply: tableReply(to: request, from: peer), from: peer, addresses: addresses, now: now)
    }

    /// The routing table's part of an answer (closer peers); nil when the table has nothing to
    /// say (PUT_VALUE, ADD_PROVIDER). A driver that keeps the behaviour behind a lock calls this
    /// under it and `KademliaStorage.complete` outside it, so no store I/O happens under the lock.
    ///
    /// FIND_NODE answers as go-libp2p-kad-dht does: for our own ID, us; otherwise the closest
    /// peers, plus the target itself when we are connected to it (`connected` gives its
    /// addresses) and it is not the requester.
    public func tableReply(to request: KadMessage, from peer: PeerID,
                           connected: (PeerID) -> [Multiaddr]? = { _ in nil }) -> KadMessage? {
        let target = DHTKey(hashing: request.key)
        switch request.kind {
        case .ping: return KadMessage(kind: .ping)
        case .findNode:
            guard let id = try? PeerID(bytes: request.key) else {
                return KadMessage(kind: .findNode, key: request.key, closerPeers: closerPeers(to: target, excluding: peer))
            }
            if id == local {
                return KadMessage(kind: .findNode, key: request.key, closerPeers: [KadPeer(id: local, addresses: localAddresses)])
            }
            var closer = closerPeers(to: target, excluding: peer)
            if id != peer, !closer.contains(where: { $0.id == id }), let addrs = connected(id), !addrs.isEmpty {
                closer.append(KadPeer(id: id, addresses: addrs, connected: true))
            }
            return KadMessage(kind: .findNode, key: request.key, closerPeers: closer)
        case .getValue, .getProviders:
            return KadMessage(kind: request.kind, key: request.key, closerPeers: closerPeers(to: target, excluding: peer))
        case .putValue, .addProvider: return nil
        }
    }

    /// The records and providers part of the behaviour: the store, the validator, the TTLs.
    public var storage: KademliaStorage {
        KademliaStorage(store: store, validator: configuration.validator, providerTTL: configuration.providerTTL)
    }

    /// Validates and stores a value unless a stored record wins over it.
    public func storeValidated(key: [UInt8], value: [UInt8], now: Date) throws {
        try storage.storeValidated(key: key, value: value, now: now)
    }

    // MARK: Queries

    /// Finds the peers closest to `target` (and the target itself when it answers).
    public mutating func findNode(_ target: PeerID, now: Date) -> (QueryID, [KadAction]) {
        startQuery(.findNode(key: target.bytes), target: DHTKey(peer: target), now: now)
    }

    /// Finds the peers closest to an arbitrary key.
    public mutating func findClosest(key: [UInt8], now: Date) -> (QueryID, [KadAction]) {
        startQuery(.findNode(key: key), target: DHTKey(hashing: key), now: now)
    }

    public mutating func getValue(_ key: [UInt8], now: Date) -> (QueryID, [KadAction]) {
        getValue(key, local: try? store.record(forKey: key, now: now), now: now)
    }

    /// `getValue` with our own record (if any) read beforehand by the caller: our store counts
    /// as one answer.
    public mutating func getValue(_ key: [UInt8], local: DHTRecord?, now: Date) -> (QueryID, [KadAction]) {
        let id = QueryID(raw: nextQuery)
        var (qid, actions) = startQuery(.getValue(key: key), target: DHTKey(hashing: key), now: now)
        precondition(qid == id)
        if let r = local, queries[qid] != nil { queries[qid]!.best = r }
        if queries[qid] == nil, let i = actions.firstIndex(where: { if case .finished = $0 { return true }; return false }),
           case .finished(let q, _, let stats) = actions[i] {
            actions[i] = .finished(q, .value(local), stats)
        }
        return (qid, actions)
    }

    public mutating func getProviders(_ key: [UInt8], now: Date) -> (QueryID, [KadAction]) {
        getProviders(key, local: (try? store.providers(forKey: key, now: now, limit: KadMessage.maxPeers)) ?? [], now: now)
    }

    /// `getProviders` with our own providers of the key read beforehand by the caller.
    public mutating func getProviders(_ key: [UInt8], local: [ProviderRecord], now: Date) -> (QueryID, [KadAction]) {
        var (qid, actions) = startQuery(.getProviders(key: key), target: DHTKey(hashing: key), now: now)
        if queries[qid] != nil {
            for p in local { queries[qid]!.providers[p.provider] = p }
        } else if let i = actions.firstIndex(where: { if case .finished = $0 { return true }; return false }),
                  case .finished(let q, _, let stats) = actions[i] {
            actions[i] = .finished(q, .providers(local), stats)
        }
        return (qid, actions)
    }

    /// Validates, stores locally (as a server) and replicates a record to the k closest peers.
    public mutating func putValue(key: [UInt8], value: [UInt8], now: Date) throws -> (QueryID, [KadAction]) {
        if configuration.mode == .server { try storeValidated(key: key, value: value, now: now) }
        return try replicateValue(key: key, value: value, now: now)
    }

    /// `putValue` without the local store (a driver stores first, outside its lock).
    public mutating func replicateValue(key: [UInt8], value: [UInt8], now: Date) throws -> (QueryID, [KadAction]) {
        let record = try configuration.validator.validate(key: key, value: value, now: now)
        return startQuery(.putValue(record), target: DHTKey(hashing: key), now: now)
    }

    /// Announces this node as a provider of `key` to the k closest peers.
    public mutating func addProvider(key: [UInt8], now: Date) throws -> (QueryID, [KadAction]) {
        if configuration.mode == .server { try storage.addLocalProvider(key: key, provider: local, addresses: localAddresses, now: now) }
        return try announceProvider(key: key, now: now)
    }

    /// `addProvider` without the local store.
    public mutating func announceProvider(key: [UInt8], now: Date) throws -> (QueryID, [KadAction]) {
        guard key.count <= KadMessage.maxKeyLength else { throw KadMessageError.keyTooLong(key.count) }
        return startQuery(.addProvider(key: key), target: DHTKey(hashing: key), now: now)
    }

    /// Looks up our own ID, then refreshes every bucket: what a node does on joining. The
    /// refreshes start when the self-lookup has finished, from the table it filled: started at
    /// once, they would all begin at the one or few peers known (a burst of requests to the
    /// bootstrap peer, past its per-peer stream limits).
    public mutating func bootstrap(now: Date) -> [KadAction] {
        for i in 0...min(configuration.maxRefreshDepth, 255) { routingTable.markRefreshed(bucket: i, now: .distantPast) }
        let (id, actions) = findNode(local, now: now)
        guard queries[id] != nil else { return actions + refreshBuckets(now: now, force: true) }
        bootstrapQuery = id
        return actions
    }

    private mutating func startQuery(_ kind: Kind, target: DHTKey, now: Date) -> (QueryID, [KadAction]) {
        let id = QueryID(raw: nextQuery)
        nextQuery += 1
        let seeds = routingTable.closest(to: target, count: configuration.lookup.k).map { ($0.peer, $0.addresses) }
        let needed: Int
        switch kind {
        case .findNode, .refresh: needed = configuration.lookup.beta
        case .getValue, .getProviders, .putValue, .addProvider: needed = configuration.lookup.k
        }
        var q = Query(kind: kind, lookup: Lookup(target: target, seeds: seeds, local: local, configuration: configuration.lookup,
                                                 answersNeeded: needed),
                      stats: QueryStats(started: now))
        q.lookup.timeouts = timeouts
        let first = q.lookup.start(now: now)
        queries[id] = q
        q = queries[id]!
        return (id, process(id, first, now))
    }

    func requestMessage(for kind: Kind) -> KadMessage {
        switch kind {
        case .findNode(let key): return KadMessage(kind: .findNode, key: key)
        case .getValue(let key): return KadMessage(kind: .getValue, key: key)
        case .getProviders(let key): return KadMessage(kind: .getProviders, key: key)
        case .putValue(let r): return KadMessage(kind: .findNode, key: r.key)
        case .addProvider(let key): return KadMessage(kind: .findNode, key: key)
        case .refresh: return KadMessage(kind: .findNode, key: [])  // key set by the caller
        }
    }

    private var refreshKeys: [QueryID: [UInt8]] = [:]

    /// Turns lookup actions into requests; when the lookup is done, moves to the storing phase or
    /// finishes.
    private mutating func process(_ id: QueryID, _ lookupActions: [Lookup.Action], _ now: Date) -> [KadAction] {
        guard var q = queries[id] else { return [] }
        var out: [KadAction] = []
        for a in lookupActions {
            switch a {
            case .query(let peer, let addrs):
                var msg = requestMessage(for: q.kind)
                if case .refresh = q.kind { msg.key = refreshKeys[id] ?? [] }
                q.stats.requests += 1
                out.append(.request(id, peer: peer, addresses: addrs, message: msg))
            case .finished:
                let closest = q.lookup.closestResponded
                q.stats.hops = closest.first?.hop ?? 0
                switch q.kind {
                case .putValue(let record):
                    let targets = closest.prefix(configuration.routing.k)
                    q.storing = (Dictionary(uniqueKeysWithValues: targets.map { ($0.peer, now) }), 0, targets.count)
                    for t in targets {
                        q.stats.requests += 1
                        out.append(.request(id, peer: t.peer, addresses: t.addresses,
                                            message: KadMessage(kind: .putValue, key: record.key, recordValue: record.value)))
                    }
                case .addProvider(let key):
                    let targets = closest.prefix(configuration.routing.k)
                    q.storing = (Dictionary(uniqueKeysWithValues: targets.map { ($0.peer, now) }), 0, targets.count)
                    let me = KadPeer(id: local, addresses: localAddresses)
                    for t in targets {
                        q.stats.requests += 1
                        out.append(.request(id, peer: t.peer, addresses: t.addresses,
                                            message: KadMessage(kind: .addProvider, key: key, providerPeers: [me])))
                    }
                default:
                    break
                }
            }
        }
        queries[id] = q
        if q.lookup.isFinished && (q.storing == nil || q.storing!.outstanding.isEmpty) {
            out.append(finish(id, now))
            if id == bootstrapQuery {
                bootstrapQuery = nil
                out += refreshBuckets(now: now, force: true)
            }
        }
        return out
    }

    private mutating func finish(_ id: QueryID, _ now: Date) -> KadAction {
        var q = queries.removeValue(forKey: id)!
        refreshKeys[id] = nil
        q.stats.finished = now
        let closest = q.lookup.closestResponded.map { KadPeer(id: $0.peer, addresses: $0.addresses) }
        let result: QueryResult
        switch q.kind {
        case .findNode, .refresh: result = .closestPeers(closest)
        case .getValue: result = .value(q.best)
        case .getProviders: result = .providers(Array(q.providers.values))
        case .putValue, .addProvider: result = .stored(acks: q.storing?.acks ?? 0, attempted: q.storing?.attempted ?? 0)
        }
        return .finished(id, result, q.stats)
    }

    /// `peer` answered a request of query `id`. `response` is nil for requests without a reply
    /// (ADD_PROVIDER), once the request was delivered.
    public mutating func responseReceived(_ id: QueryID, from peer: PeerID, response: KadMessage?, now: Date) -> [KadAction] {
        guard var q = queries[id] else { return [] }
        var out: [KadAction] = []
        if var storing = q.storing {
            guard storing.outstanding.removeValue(forKey: peer) != nil else { return [] }
            if case .putValue(let r) = q.kind {
                if response?.kind == .putValue, response?.key == r.key { storing.acks += 1 }
            } else {
                storing.acks += 1
            }
            q.storing = storing
            queries[id] = q
            if storing.outstanding.isEmpty { out.append(finish(id, now)) }
            return out
        }
        guard let response else { return requestFailed(id, peer: peer, unreachable: false, now: now) }
        if let sent = q.lookup.sentAt(peer) { rtt.sample(now.timeIntervalSince(sent)) }
        q.lookup.timeouts = timeouts
        // A peer that answers is a DHT server: it belongs in the routing table.
        let addrs = q.lookup.candidates.first { $0.peer == peer }?.addresses ?? []
        out += peerSeen(peer, addresses: addrs, now: now)
        switch q.kind {
        case .getValue(let key):
            if let value = response.recordValue, let r = try? configuration.validator.validate(key: key, value: value, now: now) {
                if let best = q.best {
                    if configuration.validator.shouldReplace(existing: best, with: r) { q.best = r }
                } else {
                    q.best = r
                }
            }
        case .getProviders(let key):
            for p in response.providerPeers where q.providers[p.id] == nil {
                q.providers[p.id] = ProviderRecord(key: key, provider: p.id, addresses: p.addresses,
                                                   expiresAt: now.addingTimeInterval(configuration.providerTTL))
            }
        default:
            break
        }
        let closer = response.closerPeers.map { ($0.id, $0.addresses) }
        let actions = q.lookup.received(from: peer, closer: closer, now: now)
        queries[id] = q
        return out + process(id, actions, now)
    }

    /// A request of query `id` to `peer` failed. `unreachable` says the peer could not be reached
    /// at all (dial failure, timeout): only then is it dropped from the routing table — a peer
    /// that refused one request (stream reset, bad answer) stays.
    public mutating func requestFailed(_ id: QueryID, peer: PeerID, unreachable: Bool = true, now: Date) -> [KadAction] {
        if unreachable { routingTable.remove(peer) }
        guard var q = queries[id] else { return [] }
        q.stats.failures += 1
        if var storing = q.storing {
            guard storing.outstanding.removeValue(forKey: peer) != nil else { return [] }
            q.storing = storing
            queries[id] = q
            return storing.outstanding.isEmpty ? [finish(id, now)] : []
        }
        q.lookup.timeouts = timeouts
        let actions = q.lookup.failed(peer, now: now)
        queries[id] = q
        return process(id, actions, now)
    }

    /// Time passes: request timeouts and bucket refresh.
    public mutating func tick(now: Date) -> [KadAction] {
        var out: [KadAction] = []
        // In query order: a dictionary's order differs between instances, and the simulator
        // must repeat exactly for one seed.
        for id in queries.keys.sorted(by: { $0.raw < $1.raw }) {
            guard var q = queries[id] else { continue }
            if var storing = q.storing {
                let late = storing.outstanding.filter { now.timeIntervalSince($0.value) >= timeouts.hard }
                for (p, _) in late { storing.outstanding[p] = nil; q.stats.failures += 1 }
                q.storing = storing
                queries[id] = q
                if storing.outstanding.isEmpty { out.append(finish(id, now)) }
                continue
            }
            q.lookup.timeouts = timeouts
            // Requests this tick gives up on (past the hard timeout): their peers are demoted in
            // the routing table at once, long before a transport timeout would evict them.
            if configuration.demoteUnresponsive {
                for c in q.lookup.candidates {
                    if case .inFlight(let since) = c.state, now.timeIntervalSince(since) >= q.lookup.timeouts.hard {
                        routingTable.demote(c.peer)
                    }
                }
            }
            let actions = q.lookup.tick(now: now)
            queries[id] = q
            out += process(id, actions, now)
        }
        out += refreshBuckets(now: now, force: false)
        return out
    }

    /// The next time `tick` has work for a query (a request's soft or hard timeout); the owner
    /// ticks then (the bucket refresh only needs its periodic tick).
    public func nextDeadline(after now: Date) -> Date? {
        var next: Date?
        for q in queries.values {
            var d: Date?
            if let storing = q.storing {
                d = storing.outstanding.values.min().map { $0.addingTimeInterval(timeouts.hard) }
            } else {
                d = q.lookup.nextDeadline(after: now)
            }
            if let d, next == nil || d < next! { next = d }
        }
        return next
    }

    private mutating func refreshBuckets(now: Date, force: Bool) -> [KadAction] {
        guard routingTable.count > 0, bootstrapQuery == nil else { return [] }
        var out: [KadAction] = []
        let due = routingTable.bucketsNeedingRefresh(now: now, interval: configuration.refreshInterval)
        for i in due where i <= configuration.maxRefreshDepth {
            routingTable.markRefreshed(bucket: i, now: now)
            guard let key = randomPeerKey(inBucket: i) else { continue }
            let id = QueryID(raw: nextQuery)
            refreshKeys[id] = key
            out += startQuery(.refresh(bucket: i), target: DHTKey(hashing: key), now: now).1
        }
        _ = force
        return out
    }

    /// A random peer-ID-shaped key whose hash falls in bucket `i` (found by trying: 2^(i+1)
    /// hashes expected, so only shallow buckets are refreshed this way).
    mutating func randomPeerKey(inBucket i: Int) -> [UInt8]? {
        var key: [UInt8] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20] + [UInt8](repeating: 0, count: 32)
        for _ in 0..<(1 << min(i + 4, 20)) {
            for w in 0..<4 {
                let r = random.next()
                for b in 0..<8 { key[6 + w * 8 + b] = UInt8(truncatingIfNeeded: r >> (8 * UInt64(b))) }
            }
            if routingTable.localKey.commonPrefixLength(with: DHTKey(hashing: key)) == i { return key }
        }
        return nil
    }
}

/// SplitMix64: a small seeded generator (not for keys or nonces; for choices that a simulation
/// must be able to repeat).
public struct DeterministicRandom: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

/// The store's part of a DHT server: records (validated, never rolled back) and providers. The
/// store is safe to use from any thread; nothing here touches the routing table.
public struct KademliaStorage: Sendable {
    public let store: any DHTStore
    public let validator: RecordValidator
    public let providerTTL: TimeInterval

    public init(store: any DHTStore, validator: RecordValidator, providerTTL: TimeInterval) {
        self.store = store
        self.validator = validator
        self.providerTTL = providerTTL
    }

    /// Completes the answer to `request` from the table's part (`tableReply`).
    public func complete(_ request: KadMessage, tableReply: KadMessage?, from peer: PeerID, addresses: [Multiaddr], now: Date) -> KadResponse {
        switch request.kind {
        case .ping, .findNode:
            return tableReply.map { .respond($0) } ?? .reject("no answer")
        case .getValue:
            var reply = tableReply ?? KadMessage(kind: .getValue, key: request.key)
            do {
                if let r = try store.record(forKey: request.key, now: now) { reply.recordValue = r.value }
            } catch {
                return .reject("store: \(error)")
            }
            return .respond(reply)
        case .putValue:
            guard let value = request.recordValue else { return .reject("PUT_VALUE without a record") }
            do {
                try storeValidated(key: request.key, value: value, now: now)
            } catch {
                return .reject("PUT_VALUE refused: \(error)")
            }
            return .respond(request)
        case .addProvider:
            let own = request.providerPeers.filter { $0.id == peer }
            guard !own.isEmpty else { return .reject("ADD_PROVIDER lists no provider matching the sender") }
            let addrs = own[0].addresses.isEmpty ? addresses : own[0].addresses
            do {
                try store.addProvider(ProviderRecord(key: request.key, provider: peer, addresses: addrs,
                                                     expiresAt: now.addingTimeInterval(providerTTL)))
            } catch {
                return .reject("store: \(error)")
            }
            return .noResponse
        case .getProviders:
            var reply = tableReply ?? KadMessage(kind: .getProviders, key: request.key)
            do {
                reply.providerPeers = try store.providers(forKey: request.key, now: now, limit: KadMessage.maxPeers)
                    .map { KadPeer(id: $0.provider, addresses: $0.addresses) }
            } catch {
                return .reject("store: \(error)")
            }
            return .respond(reply)
        }
    }

    /// Validates and stores a value unless a stored record wins over it.
    public func storeValidated(key: [UInt8], value: [UInt8], now: Date) throws {
        let record = try validator.validate(key: key, value: value, now: now)
        if let existing = try store.record(forKey: key, now: now), !validator.shouldReplace(existing: existing, with: record) {
            if existing.value == record.value { return }
            throw RecordError.staleSequence(stored: existing.seq, offered: record.seq)
        }
        try store.putRecord(record)
    }

    public func addLocalProvider(key: [UInt8], provider: PeerID, addresses: [Multiaddr], now: Date) throws {
        guard key.count <= KadMessage.maxKeyLength else { throw KadMessageError.keyTooLong(key.count) }
        try store.addProvider(ProviderRecord(key: key, provider: provider, addresses: addresses, expiresAt: now.addingTimeInterval(providerTTL)))
    }
}
