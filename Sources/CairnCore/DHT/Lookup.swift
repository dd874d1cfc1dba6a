import Foundation

/// An iterative Kademlia lookup as a sans-I/O state machine: it asks for the peers closest to a
/// target, α requests at a time, each with a timeout, and ends when the k closest peers it knows
/// have all answered. The owner sends the queries and reports answers, failures and the time.
public struct Lookup: Sendable {
    public struct Configuration: Sendable {
        public var alpha = 3
        public var k = 20
        public var requestTimeout: TimeInterval = 10
        /// Candidates kept at most (the farthest are dropped): bounds memory against floods.
        public var maxCandidates = 200
        public init() {}
    }

    public enum State: Sendable, Equatable { case waiting, inFlight(since: Date), responded, failed }

    public struct Candidate: Sendable {
        public let peer: PeerID
        public let distance: DHTKey
        public var addresses: [Multiaddr]
        public var state: State
        /// 1 for seeds; n+1 for a peer learned from an answer at hop n.
        public let hop: Int
    }

    public enum Action: Sendable, Equatable {
        case query(PeerID, [Multiaddr])
        case finished
    }

    public let target: DHTKey
    public let configuration: Configuration
    let local: PeerID?
    public private(set) var candidates: [Candidate] = []  // nearest first
    public private(set) var isFinished = false
    public private(set) var queriesSent = 0

    public init(target: DHTKey, seeds: [(PeerID, [Multiaddr])], local: PeerID? = nil, configuration: Configuration = Configuration()) {
        self.target = target
        self.configuration = configuration
        self.local = local
        for (p, a) in seeds { insert(p, a, hop: 1) }
    }

    private mutating func insert(_ peer: PeerID, _ addrs: [Multiaddr], hop: Int) {
        if peer == local { return }
        if let i = candidates.firstIndex(where: { $0.peer == peer }) {
            if candidates[i].addresses.isEmpty { candidates[i].addresses = addrs }
            return
        }
        let d = DHTKey(peer: peer).distance(to: target)
        let at = candidates.firstIndex { d < $0.distance } ?? candidates.count
        guard at < configuration.maxCandidates else { return }
        candidates.insert(Candidate(peer: peer, distance: d, addresses: addrs, state: .waiting, hop: hop), at: at)
        if candidates.count > configuration.maxCandidates { candidates.removeLast() }
    }

    /// The k closest peers that answered, nearest first.
    public var closestResponded: [Candidate] {
        Array(candidates.lazy.filter { $0.state == .responded }.prefix(configuration.k))
    }

    public var inFlightCount: Int { candidates.lazy.filter { if case .inFlight = $0.state { return true }; return false }.count }

    public mutating func start(now: Date = Date()) -> [Action] { advance(now) }

    /// `peer` answered with `closer` peers.
    public mutating func received(from peer: PeerID, closer: [(PeerID, [Multiaddr])], now: Date = Date()) -> [Action] {
        guard let i = candidates.firstIndex(where: { $0.peer == peer }), case .inFlight = candidates[i].state else { return advance(now) }
        candidates[i].state = .responded
        let hop = candidates[i].hop + 1
        for (p, a) in closer { insert(p, a, hop: hop) }
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
            if case .inFlight(let since) = candidates[i].state, now.timeIntervalSince(since) >= configuration.requestTimeout {
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
        var inFlight = inFlightCount
        var seen = 0
        var allAnswered = true
        for i in candidates.indices {
            if candidates[i].state == .failed { continue }
            seen += 1
            if seen > configuration.k { break }
            switch candidates[i].state {
            case .waiting:
                allAnswered = false
                if inFlight < configuration.alpha {
                    candidates[i].state = .inFlight(since: now)
                    inFlight += 1
                    queriesSent += 1
                    actions.append(.query(candidates[i].peer, candidates[i].addresses))
                }
            case .inFlight:
                allAnswered = false
            default:
                break
            }
        }
        if allAnswered && inFlight == 0 {
            isFinished = true
            actions.append(.finished)
        }
        return actions
    }
}
