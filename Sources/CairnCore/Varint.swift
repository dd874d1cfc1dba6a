/// Unsigned varints as specified by multiformats/unsigned-varint: at most 9 bytes (63 bits) and
/// minimally encoded. Used by multiaddr, multihash, multistream-select and length-prefixed messages.
public enum Varint {
    public static let maxBytes = 9

    public enum DecodeError: Error, Equatable, Sendable {
        case truncated
        case overlong      // more than 9 bytes, or a value past 63 bits
        case notMinimal    // a trailing zero byte that a minimal encoder would not emit
    }

    public static func encode(_ value: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(10)
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
        return out
    }

    public static func encode(_ value: Int) -> [UInt8] { encode(UInt64(value)) }

    /// Decodes a varint at the start of `bytes`. Returns the value and how many bytes it used.
    /// A `truncated` error means more bytes may complete it; the others are fatal.
    public static func decode<C: Collection>(_ bytes: C) throws(DecodeError) -> (value: UInt64, length: Int) where C.Element == UInt8 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var count = 0
        for byte in bytes {
            count += 1
            if count > maxBytes { throw .overlong }
            value |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 {
                if byte == 0 && count > 1 { throw .notMinimal }
                return (value, count)
            }
            shift += 7
        }
        throw .truncated
    }
}

/// A cursor over a byte array for decoding binary formats with explicit failure on truncation.
struct ByteReader {
    let bytes: [UInt8]
    private(set) var offset: Int = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { offset >= bytes.count }
    var remaining: Int { bytes.count - offset }

    mutating func readVarint() throws(Varint.DecodeError) -> UInt64 {
        let (v, n) = try Varint.decode(bytes[offset...])
        offset += n
        return v
    }

    mutating func readBytes(_ n: Int) -> [UInt8]? {
        guard n >= 0, n <= remaining else { return nil }
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }
}
