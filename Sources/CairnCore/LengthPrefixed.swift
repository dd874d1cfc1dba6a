/// Decoder for uvarint-length-prefixed messages (identify, kad-dht, relay, …) with a hard limit:
/// a length above `maxLength` is refused as soon as it is read, before any body is buffered.
public struct LengthPrefixedDecoder: Sendable {
    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        case tooLarge(length: UInt64, limit: Int)
        case malformedLength

        public var description: String {
            switch self {
            case .tooLarge(let l, let m): return "message of \(l) bytes exceeds the limit of \(m)"
            case .malformedLength: return "malformed length prefix"
            }
        }
    }

    public let maxLength: Int
    var buffer: [UInt8] = []
    var offset = 0

    public init(maxLength: Int) { self.maxLength = maxLength }

    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if offset > 0 && offset == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            offset = 0
        }
        buffer.append(contentsOf: bytes)
    }

    public var bufferedBytes: Int { buffer.count - offset }

    /// The next complete message, or nil when more bytes are needed.
    public mutating func next() throws(Failure) -> [UInt8]? {
        let length: UInt64, n: Int
        do { (length, n) = try Varint.decode(buffer[offset...]) } catch {
            if case .truncated = error { return nil }
            throw .malformedLength
        }
        guard length <= UInt64(maxLength) else { throw .tooLarge(length: length, limit: maxLength) }
        guard buffer.count - offset >= n + Int(length) else { return nil }
        let start = offset + n
        offset = start + Int(length)
        return Array(buffer[start..<offset])
    }

    /// Bytes received beyond the last complete message.
    public mutating func takeRemainder() -> [UInt8] {
        defer { buffer = []; offset = 0 }
        return Array(buffer[offset...])
    }

    public static func frame(_ message: [UInt8]) -> [UInt8] { Varint.encode(message.count) + message }
}
