import CairnCore
import CairnCrypto
import Foundation

/// A discrete-event network for the Kademlia behaviour: virtual clock, per-message latency with
/// jitter, message loss, and nodes that go offline without telling anyone (churn). The behaviour
/// runs unchanged: the simulator only carries out its `KadAction`s, as the swarm does for real.
public final class SimNetwork {
    public struct Configuration: Sendable {
        /// One-way latency: base plus uniform jitter, in seconds.
        public var latency: Double = 0.040
        public var jitter: Double = 0.020
        /// Probability that a request or its response is lost (the requester sees a timeout).
        public var loss: Double = 0
        public var kademlia = KademliaConfiguration()
        public var seed: UInt64 = 1
        public init() {
            kademlia.maxRefreshDepth = 10
        }
    }

    public struct Node {
        public var behaviour: KademliaBehaviour
        public var online = true
    }

    enum EventKind {
        case request(from: Int, to: Int, QueryID, KadMessage)
        case response(to: Int, from: Int, QueryID, KadMessage?)
        case failure(to: Int, peer: Int, QueryID)
        case liveness(at: Int, peer: Int)
        /// The node's behaviour has a deadline (a request's soft or hard timeout).
        case tick(Int)
    }

    struct Event: Comparable {
        let time: Double
        let seq: UInt64
        let kind: EventKind
        static func < (a: Event, b: Event) -> Bool { (a.time, a.seq) < (b.time, b.seq) }
        static func == (a: Event, b: Event) -> Bool { a.time == b.time && a.seq == b.seq }
    }

    public let configuration: Configuration
    public private(set) var nodes: [Node] = []
    public private(set) var ids: [PeerID] = []
    /// Each node's address list, made once: every table entry and message shares it (the
    /// simulator's memory is mostly routing-table entries).
    var addressLists: [[Multiaddr]] = []
    var index: [PeerID: Int] = [:]
    var queue = BinaryHeap<Event>()
    var seq: UInt64 = 0
    public private(set) var clock: Double = 0
    var rng: SplitMix64
    public private(set) var messagesDelivered = 0
    /// Results of finished queries, by (node, query).
    var finished: [Int: [QueryID: (QueryResult, QueryStats)]] = [:]
    /// The earliest tick scheduled for each node (later deadlines wait for it).
    var tickAt: [Int: Double] = [:]

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        self.rng = SplitMix64(seed: configuration.seed)
    }

    public var now: Date { Date(timeIntervalSince1970: 1_700_000_000 + clock) }

    static func address(_ i: Int) -> Multiaddr {
        // Spread nodes over distinct /24s so the diversity limit models a real population.
        Multiaddr(components: [.ip4([UInt8(10 + (i >> 16)), UInt8((i >> 8) & 0xff), UInt8(i & 0xff), 1]), .tcp(4001)])
    }

    /// Adds a node (not yet joined).
    @discardableResult
    public func addNode() -> Int {
        // Identities and each node's randomness come from the seed: a run repeats exactly.
        var seed: [UInt8] = []
        for _ in 0..<4 { withUnsafeBytes(of: rng.next().littleEndian) { seed += $0 } }
        let key = PrivateKey(ed25519: try! Ed25519PrivateKey(seed: seed))
        let i = nodes.count
        var b = KademliaBehaviour(local: key.peerID, store: InMemoryDHTStore(), configuration: configuration.kademlia, now: now,
                                  randomSeed: rng.next())
        b.localAddresses = [Self.address(i)]
        addressLists.append(b.localAddresses)
        nodes.append(Node(behaviour: b))
        ids.append(key.peerID)
        index[key.peerID] = i
        return i
    }

    func schedule(_ delay: Double, _ kind: EventKind) {
        seq += 1
        queue.push(Event(time: clock + delay, seq: seq, kind: kind))
    }

    func oneWay() -> Double { configuration.latency + configuration.jitter * rng.nextDouble() }

    /// Carries out a node's actions.
    func perform(_ i: Int, _ actions: [KadAction]) {
        for a in actions {
            switch a {
            case .request(let q, let peer, _, let msg):
                guard let j = index[peer] else { schedule(0, .failure(to: i, peer: -1, q)); continue }
                if !nodes[j].online || rng.nextDouble() < configuration.loss {
                    schedule(configuration.kademlia.lookup.requestTimeout, .failure(to: i, peer: j, q))
                } else {
                    schedule(oneWay(), .request(from: i, to: j, q, msg))
                }
            case .finished(let q, let result, let stats):
                finished[i, default: [:]][q] = (result, stats)
            case .checkLiveness(let peer, _):
                guard let j = index[peer] else { continue }
                schedule(2 * oneWay(), .liveness(at: i, peer: j))
            }
        }
        scheduleTick(i)
    }

    /// Schedules a tick for node `i` at its behaviour's next deadline, unless one comes sooner.
    func scheduleTick(_ i: Int) {
        guard let d = nodes[i].behaviour.nextDeadline(after: now) else { return }
        let t = max(clock, d.timeIntervalSince(now) + clock)
        if let at = tickAt[i], at <= t, at >= clock { return }
        tickAt[i] = t
        seq += 1
        queue.push(Event(time: t, seq: seq, kind: .tick(i)))
    }

    func step(_ e: Event) {
        clock = e.time
        switch e.kind {
        case .request(let from, let to, let q, let msg):
            messagesDelivered += 1
            guard nodes[to].online else { schedule(configuration.kademlia.lookup.requestTimeout, .failure(to: from, peer: to, q)); return }
            // A server learns of a requester only through identify in reality; here every node is a server.
            perform(to, nodes[to].behaviour.peerSeen(ids[from], addresses: addressLists[from], now: now))
            let response = nodes[to].behaviour.handleRequest(msg, from: ids[from], addresses: addressLists[from], now: now)
            switch response {
            case .respond(let m):
                if rng.nextDouble() < configuration.loss {
                    schedule(configuration.kademlia.lookup.requestTimeout, .failure(to: from, peer: to, q))
                } else {
                    schedule(oneWay(), .response(to: from, from: to, q, m))
                }
            case .noResponse:
                schedule(oneWay(), .response(to: from, from: to, q, nil))
            case .reject:
                schedule(oneWay(), .failure(to: from, peer: to, q))
            }
        case .response(let to, let from, let q, let m):
            messagesDelivered += 1
            guard nodes[to].online else { return }
            perform(to, nodes[to].behaviour.responseReceived(q, from: ids[from], response: m, now: now))
        case .failure(let to, let peer, let q):
            guard nodes[to].online else { return }
            let p = peer >= 0 ? ids[peer] : ids[to]
            perform(to, nodes[to].behaviour.requestFailed(q, peer: p, now: now))
        case .liveness(let at, let peer):
            guard nodes[at].online else { return }
            nodes[at].behaviour.livenessChecked(ids[peer], alive: nodes[peer].online, now: now)
        case .tick(let i):
            if tickAt[i] == e.time { tickAt[i] = nil }
            guard nodes[i].online else { return }
            perform(i, nodes[i].behaviour.tick(now: now))
        }
    }

    /// Runs events until `done` holds or the queue is empty.
    public func run(until done: () -> Bool = { false }) {
        while !done(), let e = queue.pop() { step(e) }
    }

    /// Runs the query started by `start` on node `i` to completion; returns its result.
    public func runQuery(on i: Int, _ start: (inout KademliaBehaviour, Date) throws -> (QueryID, [KadAction])) rethrows -> (QueryResult, QueryStats)? {
        let (q, actions) = try start(&nodes[i].behaviour, now)
        perform(i, actions)
        run { finished[i]?[q] != nil }
        return finished[i]?.removeValue(forKey: q)
    }

    /// Node `i` joins through node `via`: it learns `via`, looks itself up and refreshes buckets.
    public func join(_ i: Int, via: Int) {
        join(wave: [(i, via)])
    }

    /// The nodes of one wave join at the same time, each through its own earlier node; runs
    /// until every one of them has finished its lookups.
    func join(wave: [(node: Int, via: Int)]) {
        for (i, via) in wave {
            perform(i, nodes[i].behaviour.peerSeen(ids[via], addresses: addressLists[via], now: now))
            perform(i, nodes[i].behaviour.bootstrap(now: now))
        }
        // Checked every event for one node, every 256 events for a wave (a wave's check walks
        // the nodes still joining).
        let every = wave.count == 1 ? 1 : 256
        var waiting = wave.map(\.node)
        var events = 0
        run {
            events += 1
            guard events % every == 0 || events == 1 else { return false }
            waiting.removeAll { nodes[$0].behaviour.activeQueries == 0 }
            return waiting.isEmpty
        }
        for (i, _) in wave { finished[i] = nil }
    }

    /// Builds a network of `count` nodes, each joining through a random earlier one. Nodes join
    /// in waves that grow with the network (`growth` × the nodes already in it, at least one):
    /// a real network grows by many joins at once, and it keeps the build's virtual time (and so
    /// the periodic bucket refreshes every joined node runs) to about log(count) / growth waves
    /// instead of one join after another.
    public func build(count: Int, growth: Double = 0.02, progress: ((Int) -> Void)? = nil) {
        for _ in 0..<count { addNode() }
        var joined = 1
        var reported = 0
        while joined < count {
            let size = min(count - joined, max(1, Int(Double(joined) * growth)))
            let wave = (joined..<(joined + size)).map { ($0, Int(rng.next() % UInt64(joined))) }
            join(wave: wave)
            joined += size
            if joined * 10 / count > reported { reported = joined * 10 / count; progress?(joined) }
        }
        // The first node learns the network from a lookup of its own.
        if count > 1 { join(0, via: 1) }
    }

    /// Takes a fraction of nodes offline at random (they do not say goodbye).
    public func churn(fraction: Double, sparing: Set<Int> = []) -> [Int] {
        var down: [Int] = []
        for i in nodes.indices where !sparing.contains(i) && rng.nextDouble() < fraction {
            nodes[i].online = false
            down.append(i)
        }
        return down
    }

    public func setOnline(_ i: Int, _ online: Bool) { nodes[i].online = online }
    public func peerID(_ i: Int) -> PeerID { ids[i] }
    public func node(_ i: Int) -> Node { nodes[i] }
    public func randomIndex(online: Bool = true) -> Int {
        while true {
            let i = Int(rng.next() % UInt64(nodes.count))
            if !online || nodes[i].online { return i }
        }
    }
}

typealias SplitMix64 = DeterministicRandom

/// A binary min-heap.
struct BinaryHeap<T: Comparable> {
    private var items: [T] = []
    var isEmpty: Bool { items.isEmpty }
    var count: Int { items.count }

    mutating func push(_ x: T) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if items[i] < items[p] { items.swapAt(i, p); i = p } else { break }
        }
    }

    mutating func pop() -> T? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && items[l] < items[m] { m = l }
            if r < items.count && items[r] < items[m] { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}
