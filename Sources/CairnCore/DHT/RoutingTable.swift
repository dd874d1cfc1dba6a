import Foundation

/// Where a routing-table entry's addresses place it, for the address-diversity limit: the IPv4 /24
/// (or IPv6 /48) of its first IP address. Loopback addresses are exempt (a local mesh or test
/// shares 127.0.0.0/24 and has no Sybil to fear from the wider network).
public struct NetworkGroup: Hashable, Sendable {
    let prefix: [UInt8]

    public init?(_ addrs: [Multiaddr]) {
        for a in addrs {
            switch a.components.first {
            case .ip4(let b)?:
                if b[0] == 127 { return nil }
                self.prefix = Array(b.prefix(3)); return
            case .ip6(let b)?:
                if b == [UInt8](repeating: 0, count: 15) + [1] { return nil }
                self.prefix = Array(b.prefix(6)); return
            default: continue
            }
        }
        return nil
    }
}

/// Kademlia k-buckets over XOR distance with a replacement cache per bucket, a liveness check of
/// the least-recently-seen entry before any eviction, and an address-diversity limit. Sans-I/O:
/// the owner does the pinging and reports the outcome.
public struct RoutingTable: Sendable {
    public struct Configuration: Sendable {
        public var k = 20
        public var replacementCacheSize = 20
        /// At most this many peers of one IPv4 /24 (IPv6 /48) per bucket; nil disables.
        public var maxPerGroupPerBucket: Int? = 2
        /// At most this many peers of one group in the whole table; nil disables.
        public var maxPerGroupPerTable: Int? = 10
        public init() {}
    }

    public struct Entry: Sendable, Equatable {
        public let peer: PeerID
        public let key: DHTKey
        public var addresses: [Multiaddr]
        public var lastSeen: Date
        var group: NetworkGroup? { NetworkGroup(addresses) }
    }

    public enum UpdateResult: Sendable, Equatable {
        case added
        case updated
        /// The bucket is full: the candidate waits in the replacement cache while the owner checks
        /// whether `leastRecentlySeen` is alive (`livenessChecked`).
        case pendingLivenessCheck(leastRecentlySeen: PeerID)
        case rejectedDiversity
        case rejectedSelf
    }

    struct Bucket: Sendable {
        var entries: [Entry] = []        // least recently seen first
        var replacements: [Entry] = []   // most recent last
        var lastRefreshed: Date
        var pendingCheck: PeerID?
    }

    public let localKey: DHTKey
    public let configuration: Configuration
    var buckets: [Bucket]

    public init(local: PeerID, configuration: Configuration = Configuration(), now: Date = Date()) {
        self.localKey = DHTKey(peer: local)
        self.configuration = configuration
        self.buckets = Array(repeating: Bucket(lastRefreshed: now), count: 256)
    }

    public var count: Int { buckets.reduce(0) { $0 + $1.entries.count } }
    public var allEntries: [Entry] { buckets.flatMap { $0.entries } }

    func bucketIndex(_ key: DHTKey) -> Int { min(255, localKey.commonPrefixLength(with: key)) }

    public func contains(_ peer: PeerID) -> Bool {
        let i = bucketIndex(DHTKey(peer: peer))
        return buckets[i].entries.contains { $0.peer == peer }
    }

    public func entry(_ peer: PeerID) -> Entry? {
        buckets[bucketIndex(DHTKey(peer: peer))].entries.first { $0.peer == peer }
    }

    private func groupCount(_ g: NetworkGroup, in entries: [Entry]) -> Int { entries.lazy.filter { $0.group == g }.count }

    /// A peer was seen (it answered, or it queried us as a DHT server).
    public mutating func update(_ peer: PeerID, addresses: [Multiaddr], now: Date = Date()) -> UpdateResult {
        let key = DHTKey(peer: peer)
        guard key != localKey else { return .rejectedSelf }
        let i = bucketIndex(key)
        var b = buckets[i]
        defer { buckets[i] = b }
        if let j = b.entries.firstIndex(where: { $0.peer == peer }) {
            var e = b.entries.remove(at: j)
            e.lastSeen = now
            if !addresses.isEmpty { e.addresses = addresses }
            b.entries.append(e)
            return .updated
        }
        let entry = Entry(peer: peer, key: key, addresses: addresses, lastSeen: now)
        if let g = entry.group {
            if let m = configuration.maxPerGroupPerBucket, groupCount(g, in: b.entries) >= m { return .rejectedDiversity }
            if let m = configuration.maxPerGroupPerTable, groupCount(g, in: allEntries) >= m { return .rejectedDiversity }
        }
        if b.entries.count < configuration.k {
            b.entries.append(entry)
            return .added
        }
        b.replacements.removeAll { $0.peer == peer }
        b.replacements.append(entry)
        if b.replacements.count > configuration.replacementCacheSize { b.replacements.removeFirst() }
        let oldest = b.entries[0].peer
        b.pendingCheck = oldest
        return .pendingLivenessCheck(leastRecentlySeen: oldest)
    }

    /// The outcome of a liveness check: a live peer is kept (and refreshed); a dead one is evicted
    /// and the most recent replacement takes its place. Returns the promoted peer, if any.
    @discardableResult
    public mutating func livenessChecked(_ peer: PeerID, alive: Bool, now: Date = Date()) -> PeerID? {
        let i = bucketIndex(DHTKey(peer: peer))
        if buckets[i].pendingCheck == peer { buckets[i].pendingCheck = nil }
        if alive {
            _ = update(peer, addresses: [], now: now)
            return nil
        }
        return remove(peer)
    }

    /// Removes a peer; the most recent replacement (within the diversity limits) takes its place.
    @discardableResult
    public mutating func remove(_ peer: PeerID) -> PeerID? {
        let i = bucketIndex(DHTKey(peer: peer))
        guard let j = buckets[i].entries.firstIndex(where: { $0.peer == peer }) else {
            buckets[i].replacements.removeAll { $0.peer == peer }
            return nil
        }
        buckets[i].entries.remove(at: j)
        while let r = buckets[i].replacements.popLast() {
            if let g = r.group, let m = configuration.maxPerGroupPerTable, groupCount(g, in: allEntries) >= m { continue }
            if let g = r.group, let m = configuration.maxPerGroupPerBucket, groupCount(g, in: buckets[i].entries) >= m { continue }
            buckets[i].entries.append(r)
            return r.peer
        }
        return nil
    }

    /// The `count` known peers closest to `key`, nearest first.
    public func closest(to key: DHTKey, count: Int) -> [Entry] {
        var scored: [(DHTKey, Entry)] = []
        scored.reserveCapacity(self.count)
        for b in buckets where !b.entries.isEmpty {
            for e in b.entries { scored.append((e.key.distance(to: key), e)) }
        }
        scored.sort { $0.0 < $1.0 }
        return scored.prefix(count).map { $0.1 }
    }

    /// Buckets (by index) not refreshed for `interval`, up to the deepest non-empty one.
    public func bucketsNeedingRefresh(now: Date, interval: TimeInterval) -> [Int] {
        let deepest = buckets.lastIndex { !$0.entries.isEmpty } ?? 0
        return (0...min(255, deepest + 1)).filter { now.timeIntervalSince(buckets[$0].lastRefreshed) >= interval }
    }

    public mutating func markRefreshed(bucket i: Int, now: Date) { buckets[i].lastRefreshed = now }

}
