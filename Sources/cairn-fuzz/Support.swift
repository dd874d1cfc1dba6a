import CairnCore
import CairnCrypto
import Foundation
import NIOCore

/// A broken invariant: print what and where, then abort so libFuzzer records the input as a crash.
func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
           file: StaticString = #fileID, line: UInt = #line) {
    if !condition() {
        FileHandle.standardError.write(Data("cairn-fuzz invariant violated (\(file):\(line)): \(message())\n".utf8))
        abort()
    }
}

/// Reads a fuzz input as a script: bytes, small integers and length-prefixed chunks. Running out
/// of input yields zeros and empty chunks, so every input is a valid script.
struct FuzzInput {
    let bytes: [UInt8]
    var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { offset >= bytes.count }
    var remaining: Int { max(0, bytes.count - offset) }

    mutating func byte() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func u16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }

    mutating func u32() -> UInt32 { UInt32(u16()) << 16 | UInt32(u16()) }

    mutating func take(_ n: Int) -> [UInt8] {
        let n = min(max(0, n), remaining)
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }

    /// A chunk: one length byte (0–254; 255 means a two-byte length follows), then that many bytes.
    mutating func chunk() -> [UInt8] {
        let l = byte()
        return take(l == 255 ? Int(u16()) : Int(l))
    }

    mutating func rest() -> [UInt8] { take(remaining) }
}

/// The chunk encoding `FuzzInput.chunk()` reads, for seed writers.
func encodeChunk(_ b: [UInt8]) -> [UInt8] {
    if b.count < 255 { return [UInt8(b.count)] + b }
    let n = min(b.count, 65535)
    return [255, UInt8(n >> 8), UInt8(n & 0xff)] + b.prefix(n)
}

/// Fixed identities, so that runs are reproducible and seeds can carry valid signatures.
enum Fixed {
    static func seed(_ tag: UInt8) -> [UInt8] { (0..<32).map { UInt8(truncatingIfNeeded: Int($0) &* 7 &+ Int(tag)) } }
    static let keyA = PrivateKey(ed25519: try! Ed25519PrivateKey(seed: seed(1)))
    static let keyB = PrivateKey(ed25519: try! Ed25519PrivateKey(seed: seed(2)))
    static let staticA = try! X25519PrivateKey(rawRepresentation: seed(3))
    static let ephemeralA = try! X25519PrivateKey(rawRepresentation: seed(4))
    static let staticB = try! X25519PrivateKey(rawRepresentation: seed(5))
    static let ephemeralB = try! X25519PrivateKey(rawRepresentation: seed(6))
    static let peerA = keyA.peerID
    static let peerB = keyB.peerID
    /// "Now" for validity checks: 2026-01-01T00:00:00Z.
    static let now = Date(timeIntervalSince1970: 1_767_225_600)
}

/// Whether every address re-encodes within the binary limit: Unix paths received without their
/// leading "/" gain one byte when normalised, so a path at the limit cannot round-trip. Round-trip
/// checks skip such messages (a documented edge, not a crash).
func reencodable(_ addrs: [Multiaddr]) -> Bool {
    addrs.allSatisfy { $0.bytes.count <= Multiaddr.maxBinaryLength }
}

extension ByteBuffer {
    var bytes: [UInt8] { Array(readableBytesView) }
}

/// Splits `bytes` into pieces whose sizes come from `sizes` (cycled; 0 means 1), for checks that a
/// streaming decoder gives the same answer however its input is cut.
func split(_ bytes: [UInt8], sizes: [UInt8]) -> [[UInt8]] {
    var out: [[UInt8]] = []
    var i = 0, k = 0
    while i < bytes.count {
        let s = sizes.isEmpty ? bytes.count : max(1, Int(sizes[k % sizes.count]))
        k += 1
        out.append(Array(bytes[i..<min(bytes.count, i + s)]))
        i += s
    }
    return out
}
