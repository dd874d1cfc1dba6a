import CairnCrypto

/// A point in the Kademlia keyspace: SHA-256 of a key's bytes (of the binary peer ID for peers),
/// compared by XOR distance (libp2p kad-dht).
public struct DHTKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let bytes: [UInt8]  // 32 bytes

    public init(hashing key: [UInt8]) { bytes = SHA256.hash(key) }
    public init(peer: PeerID) { self.init(hashing: peer.bytes) }
    init(raw: [UInt8]) {
        precondition(raw.count == 32)
        bytes = raw
    }

    public func distance(to other: DHTKey) -> DHTKey {
        DHTKey(raw: zip(bytes, other.bytes).map { $0 ^ $1 })
    }

    /// Number of leading bits shared with `other` (256 when equal).
    public func commonPrefixLength(with other: DHTKey) -> Int {
        for i in 0..<32 {
            let x = bytes[i] ^ other.bytes[i]
            if x != 0 { return i * 8 + x.leadingZeroBitCount }
        }
        return 256
    }

    /// Orders distances as big-endian unsigned integers.
    public static func < (a: DHTKey, b: DHTKey) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    public var description: String { Hex.encode(bytes.prefix(6)) }

    /// A random key sharing exactly `prefix` leading bits with `self` (for bucket refresh).
    public func randomKey(withCommonPrefix prefix: Int) -> DHTKey {
        precondition(prefix >= 0 && prefix < 256)
        var out = secureRandomBytes(32)
        for bit in 0...prefix {
            let byte = bit / 8, mask = UInt8(0x80) >> UInt8(bit % 8)
            let mine = bytes[byte] & mask
            let want: UInt8 = bit == prefix ? (mine ^ mask) : mine
            out[byte] = (out[byte] & ~mask) | want
        }
        return DHTKey(raw: out)
    }
}
