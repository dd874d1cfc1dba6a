import Foundation

/// Where a routing-table entry's addresses place it, for the address-diversity limit: the IPv4 /24
/// (or IPv6 /48) of its first IP address. Loopback addresses are exempt (a local mesh or test
/// shares 127.0.0.0/24 and has no Sybil to fear from the wider network).
public struct NetworkGroup: Hashable, Sendable {
    /// The family (4 or 6) in the top byte, then the prefix's bytes: no allocation, cheap to
    /// compare and to count in a table.
    let packed: UInt64

    public init?(_ addrs: [Multiaddr]) {
        for a in addrs {
            switch a.components.first {
            case .ip4(let b)?:
                if b[0] == 127 { return nil }
                self.packed = 4 << 56 | UInt64(b[0]) << 16 | UInt64(b[1]) << 8 | UInt64(b[2]); return
            case .ip6(let b)?:
                if b == [UInt8](repeating: 0, count: 15) + [1] { return nil }
                self.packed = b[0..<6].reduce(UInt64(6)) { $0 << 8 | UInt64($1) }; return
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
        public private(set) var addresses: [Multiaddr]
        public var lastSeen: Date
        /// A lookup gave up on its request since it was last heard from: it comes after every
        /// responsive peer in `closest` and is the first candidate for eviction.
        public internal(set) var unresponsive = false
        /// Computed once per change of addresses (the diversity limit reads it on every update).
        private(set) var group: NetworkGroup?

        init(peer: PeerID, key: DHTKey, addresses: [Multiaddr], lastSeen: Date) {
            self.peer = peer
            self.key = key
            self.addresses = addresses
            self.lastSeen = lastSeen
            self.group = NetworkGroup(addresses)
        }

        mutating func setAddresses(_ a: [Multiaddr]) {
            addresses = a
            group = NetworkGroup(a)
        }
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
    /// Buckets 0...n; the deeper ones (all empty) are not stored: a table holds about
    /// log2(network / k) + 1 buckets, not 256 (the simulator keeps 100,000 tables).
    var buckets: [Bucket]
    /// When the table was made: the last refresh of a bucket not stored yet.
    let created: Date
    /// Entries per network group over the whole table (for `maxPerGroupPerTable`).
    var groupCounts: [NetworkGroup: Int] = [:]
    public private(set) var count = 0

    public init(local: PeerID, configuration: Configuration = Configuration(), now: Date = Date()) {
        self.localKey = DHTKey(peer: local)
        self.configuration = configuration
        self.created = now
        self.buckets = [Bucket(lastRefreshed: now)]
    }

    public var allEntries: [Entry] { buckets.flatMap { $0.entries } }

    func bucketIndex(_ key: DHTKey) -> Int { min(255, localKey.commonPrefixLength(with: key)) }

    /// Stores buckets up to `i`.
    mutating func ensureBucket(_ i: Int) {
        while buckets.count <= i { buckets.append(Bucket(lastRefreshed: created)) }
    }

    func lastRefreshed(_ i: Int) -> Date { i < buckets.count ? buckets[i].lastRefreshed : created }

    public func contains(_ peer: PeerID) -> Bool { entry(peer) != nil }

    public func entry(_ peer: PeerID) -> Entry? {
        let i = bucketIndex(DHTKey(peer: peer))
        return i < buckets.count ? buckets[i].entries.first { $0.peer == peer } : nil
    }

    private func groupCount(_ g: NetworkGroup, in entries: [Entry]) -> Int { entries.lazy.filter { $0.group == g }.count }
    private func tableGroupCount(_ g: NetworkGroup) -> Int { groupCounts[g] ?? 0 }

    /// Bookkeeping of an entry entering (+1) or leaving (-1) the table.
    private mutating func counted(_ e: Entry, _ delta: Int) {
        count += delta
        guard let g = e.group else { return }
        let n = (groupCounts[g] ?? 0) + delta
        groupCounts[g] = n > 0 ? n : nil
    }

    /// A peer was seen (it answered, or it queried us as a DHT server).
    public mutating func update(_ peer: PeerID, addresses: [Multiaddr], now: Date = Date()) -> UpdateResult {
        let key = DHTKey(peer: peer)
        guard key != localKey else { return .rejectedSelf }
        let i = bucketIndex(key)
        ensureBucket(i)
        var b = buckets[i]
        buckets[i] = Bucket(lastRefreshed: b.lastRefreshed)  // b is the only reference while it changes
        defer { buckets[i] = b }
        if let j = b.entries.firstIndex(where: { $0.peer == peer }) {
            var e = b.entries.remove(at: j)
            e.lastSeen = now
            e.unresponsive = false
            if !addresses.isEmpty && addresses != e.addresses {
                counted(e, -1)
                e.setAddresses(addresses)
                counted(e, 1)
            }
            b.entries.append(e)
            return .updated
        }
        let entry = Entry(peer: peer, key: key, addresses: addresses, lastSeen: now)
        if let g = entry.group {
            if let m = configuration.maxPerGroupPerBucket, groupCount(g, in: b.entries) >= m { return .rejectedDiversity }
            if let m = configuration.maxPerGroupPerTable, tableGroupCount(g) >= m { return .rejectedDiversity }
        }
        if b.entries.count < configuration.k {
            b.entries.append(entry)
            counted(entry, 1)
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
        if i < buckets.count, buckets[i].pendingCheck == peer { buckets[i].pendingCheck = nil }
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
        guard i < buckets.count else { return nil }
        guard let j = buckets[i].entries.firstIndex(where: { $0.peer == peer }) else {
            buckets[i].replacements.removeAll { $0.peer == peer }
            return nil
        }
        counted(buckets[i].entries.remove(at: j), -1)
        while let r = buckets[i].replacements.popLast() {
            if let g = r.group, let m = configuration.maxPerGroupPerTable, tableGroupCount(g) >= m { continue }
            if let g = r.group, let m = configuration.maxPerGroupPerBucket, groupCount(g, in: buckets[i].entries) >= m { continue }
            buckets[i].entries.append(r)
            counted(r, 1)
            return r.peer
        }
        return nil
    }

    /// The `count` known peers closest to `key`, nearest first; peers marked unresponsive only
    /// after every responsive one (they fill the answer when too few others are known).
    public func closest(to key: DHTKey, count: Int) -> [Entry] {
        // Distances with the entry's position (no reference counting while sorting).
        var scored: [(unresponsive: Bool, distance: DHTKey, bucket: Int32, index: Int32)] = []
        scored.reserveCapacity(self.count)
        for (i, b) in buckets.enumerated() {
            for (j, e) in b.entries.enumerated() { scored.append((e.unresponsive, e.key.distance(to: key), Int32(i), Int32(j))) }
        }
        scored.sort { $0.unresponsive != $1.unresponsive ? !$0.unresponsive : $0.distance < $1.distance }
        return scored.prefix(count).map { buckets[Int($0.bucket)].entries[Int($0.index)] }
    }

    /// A lookup gave up on `peer`'s request: it goes to the front of its bucket (the next to be
    /// checked and evicted when a newcomer needs room) and is marked unresponsive until heard from.
    public mutating func demote(_ peer: PeerID) {
        let i = bucketIndex(DHTKey(peer: peer))
        guard i < buckets.count, let j = buckets[i].entries.firstIndex(where: { $0.peer == peer }) else { return }
        var e = buckets[i].entries.remove(at: j)
        e.unresponsive = true
        buckets[i].entries.insert(e, at: 0)
    }

    /// Buckets (by index) not refreshed for `interval`, up to the deepest non-empty one.
    public func bucketsNeedingRefresh(now: Date, interval: TimeInterval) -> [Int] {
        let deepest = buckets.lastIndex { !$0.entries.isEmpty } ?? 0
        return (0...min(255, deepest + 1)).filter { now.timeIntervalSince(lastRefreshed($0)) >= interval }
    }

    public mutating func markRefreshed(bucket i: Int, now: Date) {
        ensureBucket(i)
        buckets[i].lastRefreshed = now
    }

}
