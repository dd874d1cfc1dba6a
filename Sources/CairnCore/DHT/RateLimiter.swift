import Foundation

/// A token bucket per peer: `rate` requests a second on average, bursts of up to `burst`.
/// Sans-I/O: time comes in with each call. Tracks at most `maxPeers` peers, forgetting the ones
/// whose buckets are full again (idle) when it must.
public struct PeerRateLimiter: Sendable {
    public var rate: Double
    public var burst: Double
    public var maxPeers: Int
    var buckets: [PeerID: (tokens: Double, last: Date)] = [:]

    public init(rate: Double = 20, burst: Double = 40, maxPeers: Int = 10_000) {
        self.rate = rate
        self.burst = burst
        self.maxPeers = maxPeers
    }

    /// Whether `peer` may make one more request now (and takes a token if so).
    public mutating func allow(_ peer: PeerID, now: Date) -> Bool {
        var (tokens, last) = buckets[peer] ?? (burst, now)
        tokens = min(burst, tokens + max(0, now.timeIntervalSince(last)) * rate)
        guard tokens >= 1 else {
            buckets[peer] = (tokens, now)
            return false
        }
        buckets[peer] = (tokens - 1, now)
        if buckets.count > maxPeers { forgetIdle(now: now) }
        return true
    }

    mutating func forgetIdle(now: Date) {
        buckets = buckets.filter { min(burst, $0.value.tokens + now.timeIntervalSince($0.value.last) * rate) < burst }
        if buckets.count > maxPeers {
            // Still too many active peers: keep the most recent half.
            let keep = buckets.sorted { $0.value.last > $1.value.last }.prefix(maxPeers / 2)
            buckets = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
        }
    }

    public var trackedPeers: Int { buckets.count }
}
