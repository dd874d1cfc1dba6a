import Foundation

/// Round trips of DHT requests, smoothed as TCP does (RFC 6298: SRTT and RTTVAR): it sets how
/// long a lookup waits on one request before it stops counting on it.
public struct RTTEstimator: Sendable, Equatable {
    public private(set) var srtt: TimeInterval?
    public private(set) var rttvar: TimeInterval = 0
    public private(set) var samples = 0

    public init() {}

    public mutating func sample(_ rtt: TimeInterval) {
        guard rtt >= 0 else { return }
        samples += 1
        guard let s = srtt else {
            srtt = rtt
            rttvar = rtt / 2
            return
        }
        rttvar = 0.75 * rttvar + 0.25 * abs(s - rtt)
        srtt = 0.875 * s + 0.125 * rtt
    }

    /// The soft and hard timeouts for the next requests, within the configuration's bounds.
    public func timeouts(_ c: Lookup.Configuration) -> Lookup.Timeouts {
        guard c.adaptiveTimeouts else { return Lookup.Timeouts(soft: c.requestTimeout, hard: c.requestTimeout) }
        guard let srtt else { return Lookup.Timeouts(soft: c.maxSoftTimeout, hard: c.requestTimeout) }
        let soft = min(max(srtt + 2 * rttvar, c.minSoftTimeout), c.maxSoftTimeout)
        let hard = min(max(srtt + 4 * rttvar, c.minHardTimeout), c.requestTimeout)
        return Lookup.Timeouts(soft: soft, hard: max(soft, hard))
    }
}

/// An iterative Kademlia lookup as a sans-I/O state machine: it asks for the peers closest to a
/// target, α requests at a time, and ends when the k closest peers it knows that answer in time
/// have all answered. A request older than the soft timeout stops taking one of the α slots and
/// stops counting among the k closest (its answer still counts while the lookup runs), so a dead
/// peer does not hold the lookup up; one older than the hard timeout has failed. The owner sends the queries and reports answers, failures and the time
/// (`tick` at `nextDeadline`).
public struct Lookup: Sendable {
    public struct Configuration: Sendable {
        public var alpha = 3
        public var k = 20
        /// How many of the closest peers must answer before a lookup that only looks for peers
        /// (FIND_NODE) ends: go-libp2p-kad-dht's resiliency β. Lookups that store (PUT_VALUE,
        /// ADD_PROVIDER) or collect (GET_VALUE, GET_PROVIDERS) wait for the k closest.
        public var beta = 3
        /// The longest a request may take (and the timeout while no round trip was measured).
        public var requestTimeout: TimeInterval = 10
        /// Timeouts from measured round trips (`RTTEstimator`) within these bounds; off, every
        /// request has `requestTimeout` for both.
        public var adaptiveTimeouts = true
        public var minSoftTimeout: TimeInterval = 0.25
        public var maxSoftTimeout: TimeInterval = 1
        public var minHardTimeout: TimeInterval = 0.75
        /// Candidates kept at most (the farthest are dropped): bounds memory against floods.
        public var maxCandidates = 200
        /// Disjoint paths (S/Kademlia): the seeds are dealt round-robin to d paths, a peer learned
        /// from an answer joins its answerer's path unless another path knows it already, and
        /// each path runs as a lookup of its own (α in flight, its closest must answer); the
        /// lookup ends when every path has. A few Sybil peers on one path cannot then hide the
        /// target from the others. 1 is the plain lookup.
        public var disjointPaths = 1
        public init() {}
    }

    /// After `soft` a request no longer takes an α slot; after `hard` it has failed.
    public struct Timeouts: Sendable, Equatable {
        public var soft: TimeInterval
        public var hard: TimeInterval
        public init(soft: TimeInterval, hard: TimeInterval) {
            self.soft = soft
            self.hard = hard
        }
    }

    public enum State: Sendable, Equatable { case waiting, inFlight(since: Date), responded, failed }

    public struct Candidate: Sendable {
        public let peer: PeerID
        public let distance: DHTKey
        public var addresses: [Multiaddr]
        public var state: State
        /// 1 for seeds; n+1 for a peer learned from an answer at hop n.
        public let hop: Int
        /// The disjoint path it belongs to (0 in a plain lookup).
        public let path: Int
    }

    public enum Action: Sendable, Equatable {
        case query(PeerID, [Multiaddr])
        case finished
    }

    public let target: DHTKey
    public let configuration: Configuration
    /// The closest peers that must have answered before the lookup ends (β or k).
    public let answersNeeded: Int
    let local: PeerID?
    public private(set) var candidates: [Candidate] = []  // nearest first
    public private(set) var isFinished = false
    public private(set) var queriesSent = 0
    /// Set by the owner before each call (from its `RTTEstimator`); fixed ones by default.
    public var timeouts: Timeouts

    public init(target: DHTKey, seeds: [(PeerID, [Multiaddr])], local: PeerID? = nil, configuration: Configuration = Configuration(),
                answersNeeded: Int? = nil) {
        self.target = target
        self.configuration = configuration
        self.answersNeeded = min(max(answersNeeded ?? configuration.k, 1), configuration.k)
        self.local = local
        self.timeouts = Timeouts(soft: configuration.requestTimeout, hard: configuration.requestTimeout)
        let paths = max(1, configuration.disjointPaths)
        for (i, (p, a)) in seeds.enumerated() { insert(p, a, hop: 1, path: i % paths) }
    }

    private mutating func insert(_ peer: PeerID, _ addrs: [Multiaddr], hop: Int, path: Int) {
        if peer == local { return }
        if let i = candidates.firstIndex(where: { $0.peer == peer }) {
            if candidates[i].addresses.isEmpty { candidates[i].addresses = addrs }
            return
        }
        let d = DHTKey(peer: peer).distance(to: target)
        let at = candidates.firstIndex { d < $0.distance } ?? candidates.count
        guard at < configuration.maxCandidates else { return }
        candidates.insert(Candidate(peer: peer, distance: d, addresses: addrs, state: .waiting, hop: hop, path: path), at: at)
        if candidates.count > configuration.maxCandidates { candidates.removeLast() }
    }

    /// The k closest peers that answered, nearest first.
    public var closestResponded: [Candidate] {
        Array(candidates.lazy.filter { $0.state == .responded }.prefix(configuration.k))
    }

    public var inFlightCount: Int { candidates.lazy.filter { if case .inFlight = $0.state { return true }; return false }.count }

    /// When the request to `peer` was sent, while it is in flight (its round trip, once answered).
    public func sentAt(_ peer: PeerID) -> Date? {
        guard let c = candidates.first(where: { $0.peer == peer }), case .inFlight(let since) = c.state else { return nil }
        return since
    }

    /// The next time after `now` that `tick` has something to do: a request reaching its soft
    /// timeout (a slot frees) or its hard one (it fails).
    public func nextDeadline(after now: Date) -> Date? {
        guard !isFinished else { return nil }
        var next: Date?
        for c in candidates {
            guard case .inFlight(let since) = c.state else { continue }
            let soft = since.addingTimeInterval(timeouts.soft)
            let d = soft > now ? soft : since.addingTimeInterval(timeouts.hard)
            if next == nil || d < next! { next = d }
        }
        return next
    }

    public mutating func start(now: Date = Date()) -> [Action] { advance(now) }

    /// `peer` answered with `closer` peers.
    public mutating func received(from peer: PeerID, closer: [(PeerID, [Multiaddr])], now: Date = Date()) -> [Action] {
        guard let i = candidates.firstIndex(where: { $0.peer == peer }), case .inFlight = candidates[i].state else { return advance(now) }
        candidates[i].state = .responded
        let hop = candidates[i].hop + 1, path = candidates[i].path
        for (p, a) in closer { insert(p, a, hop: hop, path: path) }
        return advance(now)
    }

    /// `peer` failed (unreachable, error, bad answer).
    public mutating func failed(_ peer: PeerID, now: Date = Date()) -> [Action] {
        if let i = candidates.firstIndex(where: { $0.peer == peer }), case .inFlight = candidates[i].state {
            candidates[i].state = .failed
        }
        return advance(now)
    }

    /// Time passes: requests past their timeout count as failed.
    public mutating func tick(now: Date) -> [Action] {
        for i in candidates.indices {
            if case .inFlight(let since) = candidates[i].state, now.timeIntervalSince(since) >= timeouts.hard {
                candidates[i].state = .failed
            }
        }
        return advance(now)
    }

    /// Stops early (for example a value was found).
    public mutating func stop() { isFinished = true }

    private mutating func advance(_ now: Date) -> [Action] {
        guard !isFinished else { return [] }
        var actions: [Action] = []
        var allDone = true
        for path in 0..<max(1, configuration.disjointPaths) {
            let (done, queries) = advance(path: path, now)
            if !done { allDone = false }
            actions += queries
        }
        if allDone {
            isFinished = true
            return [.finished]
        }
        return actions
    }

    /// One path: whether it is done, else the requests that keep its α slots useful.
    private mutating func advance(path: Int, _ now: Date) -> (done: Bool, [Action]) {
        let soft = timeouts.soft
        func counts(_ c: Candidate) -> Bool {
            // Failed peers, and requests past their soft timeout, are not among the peers the
            // lookup waits for (a late answer is still taken while it runs).
            guard c.path == path else { return false }
            switch c.state {
            case .failed: return false
            case .inFlight(let since): return now.timeIntervalSince(since) < soft
            default: return true
            }
        }
        // Done when the closest `answersNeeded` peers that count have all answered.
        var needed = 0
        var allAnswered = true
        for c in candidates where counts(c) {
            needed += 1
            if needed > answersNeeded { break }
            if c.state != .responded { allAnswered = false; break }
        }
        // Too few peers count: wait for the slow ones still in flight rather than end empty-handed
        // (a lone bootstrap peer on a slow link).
        let pathInFlight = candidates.lazy.filter { c in
            guard c.path == path, case .inFlight = c.state else { return false }
            return true
        }.count
        if allAnswered && needed < answersNeeded && pathInFlight > 0 { allAnswered = false }
        if allAnswered { return (true, []) }
        // Keep α requests useful: those past their soft timeout no longer take a slot.
        var inFlight = candidates.lazy.filter {
            guard $0.path == path else { return false }
            if case .inFlight(let since) = $0.state { return now.timeIntervalSince(since) < soft }
            return false
        }.count
        var actions: [Action] = []
        var seen = 0
        for i in candidates.indices where counts(candidates[i]) {
            seen += 1
            if seen > configuration.k || inFlight >= configuration.alpha { break }
            if candidates[i].state == .waiting {
                candidates[i].state = .inFlight(since: now)
                inFlight += 1
                queriesSent += 1
                actions.append(.query(candidates[i].peer, candidates[i].addresses))
            }
        }
        return (false, actions)
    }
}
