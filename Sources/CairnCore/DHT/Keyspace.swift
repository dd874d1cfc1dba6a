import CairnCrypto

/// A point in the Kademlia keyspace: SHA-256 of a key's bytes (of the binary peer ID for peers),
/// compared by XOR distance (libp2p kad-dht). Stored as four big-endian words so distance and
/// comparison cost no allocation.
public struct DHTKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    public init(hashing key: [UInt8]) { self.init(raw: SHA256.hash(key)) }
    public init(peer: PeerID) { self.init(hashing: peer.bytes) }

    init(raw: [UInt8]) {
        precondition(raw.count == 32)
        func word(_ i: Int) -> UInt64 { raw[i..<i + 8].reduce(0) { $0 << 8 | UInt64($1) } }
        (w0, w1, w2, w3) = (word(0), word(8), word(16), word(24))
    }

    init(_ w0: UInt64, _ w1: UInt64, _ w2: UInt64, _ w3: UInt64) { (self.w0, self.w1, self.w2, self.w3) = (w0, w1, w2, w3) }

    public var bytes: [UInt8] {
        [w0, w1, w2, w3].flatMap { w in (0..<8).map { UInt8(truncatingIfNeeded: w >> (56 - 8 * UInt64($0))) } }
    }

    public func distance(to o: DHTKey) -> DHTKey { DHTKey(w0 ^ o.w0, w1 ^ o.w1, w2 ^ o.w2, w3 ^ o.w3) }

    /// Number of leading bits shared with `other` (256 when equal).
    public func commonPrefixLength(with o: DHTKey) -> Int {
        let d = distance(to: o)
        if d.w0 != 0 { return d.w0.leadingZeroBitCount }
        if d.w1 != 0 { return 64 + d.w1.leadingZeroBitCount }
        if d.w2 != 0 { return 128 + d.w2.leadingZeroBitCount }
        if d.w3 != 0 { return 192 + d.w3.leadingZeroBitCount }
        return 256
    }

    /// Orders distances as 256-bit unsigned integers.
    public static func < (a: DHTKey, b: DHTKey) -> Bool { (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3) }

    public var description: String { Hex.encode(bytes.prefix(6)) }
}
