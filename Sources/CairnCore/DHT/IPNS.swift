import CairnProto
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SwiftProtobuf

/// IPNS records (IPFS specs `ipns-record`, as kubo 0.22's boxo validates them): a protobuf
/// `IpnsEntry` whose `data` is DAG-CBOR `{Value, Validity, ValidityType, Sequence, TTL}`, signed
/// by the name's key over `"ipns-signature:" || data` (signature V2). The protobuf's own fields
/// repeat the CBOR ones and must match them. Stored in the DHT under `/ipns/<peer-id bytes>`.
public enum IPNS {
    public static let keyPrefix = Array("/ipns/".utf8)
    static let signaturePrefix = Array("ipns-signature:".utf8)
    public static let maxRecordSize = 10 * 1024

    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        case malformed(String)
        case badSignature
        case keyMismatch
        case fieldsDiffer(String)
        case expired
        case tooLarge(Int)

        public var description: String {
            switch self {
            case .malformed(let s): return "malformed IPNS record: \(s)"
            case .badSignature: return "IPNS signature (V2) does not verify"
            case .keyMismatch: return "IPNS record's key is not the name's"
            case .fieldsDiffer(let f): return "IPNS field \(f) differs between protobuf and CBOR"
            case .expired: return "IPNS record expired"
            case .tooLarge(let n): return "IPNS record of \(n) bytes exceeds \(IPNS.maxRecordSize)"
            }
        }
    }

    /// A record that verified.
    public struct Record: Sendable, Equatable {
        public let name: PeerID
        public let value: [UInt8]
        public let sequence: UInt64
        public let validUntil: Date
        /// Caching hint, nanoseconds.
        public let ttl: UInt64
    }

    /// The DHT key of a name: `/ipns/` and the peer ID's bytes.
    public static func key(_ name: PeerID) -> [UInt8] { keyPrefix + name.bytes }

    /// The name of an `/ipns/…` DHT key, if it is one.
    public static func name(ofKey key: [UInt8]) -> PeerID? {
        guard key.count > keyPrefix.count, Array(key.prefix(keyPrefix.count)) == keyPrefix else { return nil }
        return try? PeerID(bytes: Array(key.dropFirst(keyPrefix.count)))
    }

    /// Creates and signs a record for `key`'s own name.
    public static func create(value: [UInt8], sequence: UInt64, validUntil: Date, ttl: Duration, key: PrivateKey) -> [UInt8] {
        let validity = Array(rfc3339(validUntil).utf8)
        let ttlNanos = UInt64(max(0, ttl.components.seconds)) * 1_000_000_000 + UInt64(max(0, ttl.components.attoseconds / 1_000_000_000))
        let data = cborData(value: value, validity: validity, sequence: sequence, ttl: ttlNanos)
        var e = Ipns_Pb_IpnsEntry()
        e.value = Data(value)
        e.validityType = .eol
        e.validity = Data(validity)
        e.sequence = sequence
        e.ttl = ttlNanos
        e.data = Data(data)
        e.signatureV2 = Data(key.sign(signaturePrefix + data))
        return try! [UInt8](e.serializedBytes() as [UInt8])
    }

    /// Verifies a record for `name` (signature V2 with the key the name holds or the record
    /// carries, the protobuf fields against the CBOR, the validity) the way boxo does.
    public static func verify(_ bytes: [UInt8], name: PeerID, now: Date) throws(Failure) -> Record {
        guard bytes.count <= maxRecordSize else { throw .tooLarge(bytes.count) }
        let e: Ipns_Pb_IpnsEntry
        do { e = try Ipns_Pb_IpnsEntry(serializedBytes: bytes, partial: true) } catch { throw .malformed("\(error)") }
        guard e.hasSignatureV2, e.hasData else { throw .malformed("no V2 signature or data") }
        let key: PublicKey
        if let inlined = name.inlinedPublicKey {
            key = inlined
        } else {
            guard e.hasPubKey, let k = try? PublicKey(protobufBytes: [UInt8](e.pubKey)) else { throw .malformed("no public key for a hashed name") }
            key = k
        }
        if e.hasPubKey, let k = try? PublicKey(protobufBytes: [UInt8](e.pubKey)), PeerID(publicKey: k) != name { throw .keyMismatch }
        guard PeerID(publicKey: key) == name else { throw .keyMismatch }
        let data = [UInt8](e.data)
        guard key.isValidSignature([UInt8](e.signatureV2), for: signaturePrefix + data) else { throw .badSignature }
        let fields: CBORFields
        do { fields = try CBORFields(decoding: data) } catch { throw .malformed("data: \(error)") }
        guard let value = fields.bytes["Value"], let validity = fields.bytes["Validity"],
              let validityType = fields.ints["ValidityType"], let sequence = fields.ints["Sequence"], let ttl = fields.ints["TTL"] else {
            throw .malformed("data lacks a field")
        }
        guard [UInt8](e.value) == value else { throw .fieldsDiffer("Value") }
        guard [UInt8](e.validity) == validity else { throw .fieldsDiffer("Validity") }
        guard UInt64(e.validityType.rawValue) == validityType else { throw .fieldsDiffer("ValidityType") }
        guard e.sequence == sequence else { throw .fieldsDiffer("Sequence") }
        guard e.ttl == ttl else { throw .fieldsDiffer("TTL") }
        guard validityType == 0, let eol = parseRFC3339(String(decoding: validity, as: UTF8.self)) else { throw .malformed("validity") }
        guard eol > now else { throw .expired }
        return Record(name: name, value: value, sequence: sequence, validUntil: eol, ttl: ttl)
    }

    // MARK: DAG-CBOR (the five fields, canonical order: length first, then bytes)

    static func cborData(value: [UInt8], validity: [UInt8], sequence: UInt64, ttl: UInt64) -> [UInt8] {
        var out: [UInt8] = [0xa5]
        func head(_ major: UInt8, _ n: UInt64) {
            switch n {
            case 0..<24: out.append(major << 5 | UInt8(n))
            case 24..<256: out += [major << 5 | 24, UInt8(n)]
            case 256..<65536: out += [major << 5 | 25, UInt8(n >> 8), UInt8(n & 0xff)]
            case 65536..<(1 << 32): out.append(major << 5 | 26); for s in [24, 16, 8, 0] { out.append(UInt8((n >> UInt64(s)) & 0xff)) }
            default: out.append(major << 5 | 27); for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8((n >> UInt64(s)) & 0xff)) }
            }
        }
        func text(_ s: String) { head(3, UInt64(s.utf8.count)); out += s.utf8 }
        func bytes(_ b: [UInt8]) { head(2, UInt64(b.count)); out += b }
        text("TTL"); head(0, ttl)
        text("Value"); bytes(value)
        text("Sequence"); head(0, sequence)
        text("Validity"); bytes(validity)
        text("ValidityType"); head(0, 0)
        return out
    }

    /// A map of text keys to byte strings and unsigned integers: all an IPNS record's data
    /// holds (other value types are skipped; nesting and indefinite lengths are refused).
    struct CBORFields {
        var bytes: [String: [UInt8]] = [:]
        var ints: [String: UInt64] = [:]

        enum DecodeError: Error { case truncated, unsupported(UInt8), tooMany }

        init(decoding d: [UInt8]) throws {
            var i = 0
            func head() throws -> (UInt8, UInt64) {
                guard i < d.count else { throw DecodeError.truncated }
                let b = d[i]; i += 1
                let major = b >> 5, info = b & 0x1f
                let n: UInt64
                switch info {
                case 0..<24: n = UInt64(info)
                case 24, 25, 26, 27:
                    let len = 1 << Int(info - 24)
                    guard i + len <= d.count else { throw DecodeError.truncated }
                    n = d[i..<(i + len)].reduce(0) { $0 << 8 | UInt64($1) }
                    i += len
                default: throw DecodeError.unsupported(b)
                }
                return (major, n)
            }
            func take(_ n: UInt64) throws -> [UInt8] {
                guard n <= UInt64(d.count - i) else { throw DecodeError.truncated }
                defer { i += Int(n) }
                return Array(d[i..<(i + Int(n))])
            }
            let (major, count) = try head()
            guard major == 5 else { throw DecodeError.unsupported(major) }
            guard count <= 64 else { throw DecodeError.tooMany }
            for _ in 0..<count {
                let (km, kl) = try head()
                guard km == 3 else { throw DecodeError.unsupported(km) }
                let key = String(decoding: try take(kl), as: UTF8.self)
                let (vm, v) = try head()
                switch vm {
                case 0: ints[key] = v
                case 2, 3: bytes[key] = try take(v)
                default: throw DecodeError.unsupported(vm)
                }
            }
        }
    }

    // MARK: RFC 3339 with nanoseconds, UTC (as go's time.RFC3339Nano writes it)

    static func rfc3339(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        let secs = Int64(t.rounded(.down))
        let nanos = Int64(((t - Double(secs)) * 1e9).rounded(.down))
        var tm = tm()
        var tt = time_t(secs)
        gmtime_r(&tt, &tm)
        let base = String(format: "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
        return nanos > 0 ? base + String(format: ".%09lld", nanos) + "Z" : base + "Z"
    }

    static func parseRFC3339(_ s: String) -> Date? {
        // YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)
        let u = Array(s.utf8)
        guard u.count >= 20, u[4] == 0x2d, u[7] == 0x2d, u[10] == 0x54 || u[10] == 0x74, u[13] == 0x3a, u[16] == 0x3a else { return nil }
        func num(_ r: Range<Int>) -> Int? { Int(String(decoding: u[r], as: UTF8.self)) }
        guard let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10), let h = num(11..<13), let mi = num(14..<16), let se = num(17..<19) else { return nil }
        var i = 19
        var fraction = 0.0
        if i < u.count, u[i] == 0x2e {
            i += 1
            let start = i
            while i < u.count, u[i] >= 0x30, u[i] <= 0x39 { i += 1 }
            guard i > start, let f = Double("0." + String(decoding: u[start..<i], as: UTF8.self)) else { return nil }
            fraction = f
        }
        var offset = 0
        guard i < u.count else { return nil }
        if u[i] == 0x5a || u[i] == 0x7a {
            i += 1
        } else if u[i] == 0x2b || u[i] == 0x2d, i + 6 == u.count, let oh = num((i + 1)..<(i + 3)), let om = num((i + 4)..<(i + 6)) {
            offset = (oh * 3600 + om * 60) * (u[i] == 0x2b ? 1 : -1)
            i += 6
        } else {
            return nil
        }
        guard i == u.count else { return nil }
        var tm = tm()
        tm.tm_year = Int32(y - 1900); tm.tm_mon = Int32(mo - 1); tm.tm_mday = Int32(d)
        tm.tm_hour = Int32(h); tm.tm_min = Int32(mi); tm.tm_sec = Int32(se)
        let t = timegm(&tm)
        return Date(timeIntervalSince1970: Double(t - time_t(offset)) + fraction)
    }
}
