#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum MultiaddrError: Error, Equatable, Sendable, CustomStringConvertible {
    case empty
    case mustStartWithSlash
    case unknownProtocol(String)
    case unknownProtocolCode(UInt64)
    case missingValue(String)
    case invalidValue(protocol: String, value: String)
    case truncated(String)
    case tooLong(Int)

    public var description: String {
        switch self {
        case .empty: return "empty multiaddr"
        case .mustStartWithSlash: return "multiaddr must start with '/'"
        case .unknownProtocol(let p): return "unknown multiaddr protocol '\(p)'"
        case .unknownProtocolCode(let c): return "unknown multiaddr protocol code \(c)"
        case .missingValue(let p): return "multiaddr protocol '\(p)' needs a value"
        case .invalidValue(let p, let v): return "invalid value '\(v)' for multiaddr protocol '\(p)'"
        case .truncated(let p): return "multiaddr bytes truncated in '\(p)'"
        case .tooLong(let n): return "multiaddr of \(n) bytes exceeds the limit"
        }
    }
}

/// One protocol of a multiaddr with its value.
public enum MultiaddrComponent: Hashable, Sendable {
    case ip4([UInt8])
    case ip6([UInt8])
    case ip6zone(String)
    case tcp(UInt16)
    case udp(UInt16)
    case dns(String)
    case dns4(String)
    case dns6(String)
    case dnsaddr(String)
    case p2p(PeerID)
    case p2pCircuit
    case quic
    case quicV1
    case ws
    case wss
    /// A Unix domain socket path (absolute; the control API of a daemon). In text it takes the
    /// rest of the address: `/unix/tmp/p2pd.sock`.
    case unix(String)

    enum Kind: CaseIterable {
        case ip4, ip6, ip6zone, tcp, udp, dns, dns4, dns6, dnsaddr, p2p, p2pCircuit, quic, quicV1, ws, wss, unix

        var code: UInt64 {
            switch self {
            case .ip4: return 4
            case .tcp: return 6
            case .ip6: return 41
            case .ip6zone: return 42
            case .dns: return 53
            case .dns4: return 54
            case .dns6: return 55
            case .dnsaddr: return 56
            case .udp: return 273
            case .p2pCircuit: return 290
            case .p2p: return 421
            case .quic: return 460
            case .quicV1: return 461
            case .ws: return 477
            case .wss: return 478
            case .unix: return 400
            }
        }

        var name: String {
            switch self {
            case .ip4: return "ip4"
            case .ip6: return "ip6"
            case .ip6zone: return "ip6zone"
            case .tcp: return "tcp"
            case .udp: return "udp"
            case .dns: return "dns"
            case .dns4: return "dns4"
            case .dns6: return "dns6"
            case .dnsaddr: return "dnsaddr"
            case .p2p: return "p2p"
            case .p2pCircuit: return "p2p-circuit"
            case .quic: return "quic"
            case .quicV1: return "quic-v1"
            case .ws: return "ws"
            case .wss: return "wss"
            case .unix: return "unix"
            }
        }

        /// Size of the binary value: nil for length-prefixed values.
        var fixedSize: Int? {
            switch self {
            case .ip4: return 4
            case .ip6: return 16
            case .tcp, .udp: return 2
            case .p2pCircuit, .quic, .quicV1, .ws, .wss: return 0
            case .ip6zone, .dns, .dns4, .dns6, .dnsaddr, .p2p, .unix: return nil
            }
        }

        static func named(_ name: String) -> Kind? {
            if name == "ipfs" { return .p2p }  // legacy alias
            return allCases.first { $0.name == name }
        }

        static func coded(_ code: UInt64) -> Kind? { allCases.first { $0.code == code } }
    }

    var kind: Kind {
        switch self {
        case .ip4: return .ip4
        case .ip6: return .ip6
        case .ip6zone: return .ip6zone
        case .tcp: return .tcp
        case .udp: return .udp
        case .dns: return .dns
        case .dns4: return .dns4
        case .dns6: return .dns6
        case .dnsaddr: return .dnsaddr
        case .p2p: return .p2p
        case .p2pCircuit: return .p2pCircuit
        case .quic: return .quic
        case .quicV1: return .quicV1
        case .ws: return .ws
        case .wss: return .wss
        case .unix: return .unix
        }
    }

    public var protocolName: String { kind.name }

    /// The value in text form, or nil for protocols without a value.
    public var textValue: String? {
        switch self {
        case .ip4(let b): return IPAddressText.format(b)
        case .ip6(let b): return IPAddressText.format(b)
        case .tcp(let p), .udp(let p): return String(p)
        case .ip6zone(let s), .dns(let s), .dns4(let s), .dns6(let s), .dnsaddr(let s): return s
        case .p2p(let id): return id.base58
        case .unix(let path): return String(decoding: path.utf8.dropFirst(), as: UTF8.self)  // the "/" byte
        case .p2pCircuit, .quic, .quicV1, .ws, .wss: return nil
        }
    }

    var valueBytes: [UInt8] {
        switch self {
        case .ip4(let b), .ip6(let b): return b
        case .tcp(let p), .udp(let p): return [UInt8(p >> 8), UInt8(p & 0xff)]
        case .ip6zone(let s), .dns(let s), .dns4(let s), .dns6(let s), .dnsaddr(let s): return Array(s.utf8)
        case .p2p(let id): return id.bytes
        case .unix(let path): return Array(path.utf8)
        case .p2pCircuit, .quic, .quicV1, .ws, .wss: return []
        }
    }

    static func parse(kind: Kind, text: String) throws(MultiaddrError) -> MultiaddrComponent {
        let bad = MultiaddrError.invalidValue(protocol: kind.name, value: text)
        switch kind {
        case .ip4:
            guard let b = IPAddressText.parse4(text) else { throw bad }
            return .ip4(b)
        case .ip6:
            guard let b = IPAddressText.parse6(text) else { throw bad }
            return .ip6(b)
        case .tcp, .udp:
            guard !text.isEmpty, text.utf8.count <= 5, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                  let v = UInt16(text) else { throw bad }
            return kind == .tcp ? .tcp(v) : .udp(v)
        case .ip6zone, .dns, .dns4, .dns6, .dnsaddr:
            guard !text.isEmpty, !text.utf8.contains(0x2f) else { throw bad }
            return try fromString(kind: kind, text)
        case .p2p:
            guard let id = try? PeerID(string: text) else { throw bad }
            return .p2p(id)
        case .unix:
            return try unixPath(Array(text.utf8), kind: kind)
        case .p2pCircuit, .quic, .quicV1, .ws, .wss:
            return try fromBytes(kind: kind, [])
        }
    }

    static func fromString(kind: Kind, _ s: String) throws(MultiaddrError) -> MultiaddrComponent {
        switch kind {
        case .ip6zone: return .ip6zone(s)
        case .dns: return .dns(s)
        case .dns4: return .dns4(s)
        case .dns6: return .dns6(s)
        case .dnsaddr: return .dnsaddr(s)
        default: throw .invalidValue(protocol: kind.name, value: s)
        }
    }

    static func fromBytes(kind: Kind, _ b: [UInt8]) throws(MultiaddrError) -> MultiaddrComponent {
        let bad = MultiaddrError.invalidValue(protocol: kind.name, value: Hex.encode(b))
        switch kind {
        case .ip4: return .ip4(b)
        case .ip6: return .ip6(b)
        case .tcp: return .tcp(UInt16(b[0]) << 8 | UInt16(b[1]))
        case .udp: return .udp(UInt16(b[0]) << 8 | UInt16(b[1]))
        case .ip6zone, .dns, .dns4, .dns6, .dnsaddr:
            guard !b.isEmpty, !b.contains(0x2f), let s = String(validating: b, as: UTF8.self) else { throw bad }
            return try fromString(kind: kind, s)
        case .p2p:
            guard let id = try? PeerID(bytes: b) else { throw bad }
            return .p2p(id)
        case .p2pCircuit: return .p2pCircuit
        case .quic: return .quic
        case .quicV1: return .quicV1
        case .ws: return .ws
        case .wss: return .wss
        case .unix: return try unixPath(b, kind: kind)
        }
    }

    /// A Unix socket path, made absolute: py-multiaddr writes it without the leading slash.
    static func unixPath(_ b: [UInt8], kind: Kind) throws(MultiaddrError) -> MultiaddrComponent {
        guard !b.isEmpty, b.count <= 1024, let s = String(validating: b, as: UTF8.self), !s.contains("\0") else {
            throw .invalidValue(protocol: kind.name, value: Hex.encode(b))
        }
        // Exactly one leading "/" byte and no trailing ones (a socket path never ends in "/"), so
        // text and binary stay one-to-one: "/unix/a//" was the path "/a/", printed "/unix/a/",
        // read back as "/a"; "/unix///a" was "//a", printed "/unix//a", read back as "/a"; and a
        // path starting with a combining mark grew a "/" at each re-decoding (cairn-fuzz).
        let inner = b.drop(while: { $0 == 0x2f })
        let trimmed = inner.prefix(inner.count - inner.reversed().prefix(while: { $0 == 0x2f }).count)
        guard !trimmed.isEmpty else { throw .invalidValue(protocol: kind.name, value: s) }
        return .unix("/" + String(decoding: trimmed, as: UTF8.self))
    }
}

/// A multiaddr (multiformats/multiaddr): a sequence of protocol components, with text and binary
/// codecs. Unknown protocols and malformed values are rejected with a `MultiaddrError`.
public struct Multiaddr: Hashable, Sendable, CustomStringConvertible {
    /// Hard limit on the binary size of a multiaddr accepted from the wire.
    public static let maxBinaryLength = 1024

    public var components: [MultiaddrComponent]

    public init(components: [MultiaddrComponent]) { self.components = components }

    public init(_ string: String) throws(MultiaddrError) {
        guard !string.isEmpty else { throw .empty }
        guard string.utf8.first == 0x2f else { throw .mustStartWithSlash }
        // Split at "/" bytes, not Characters: a "/" followed by a combining mark is one Character
        // but still a separator (as for go-multiaddr), and printing must read back (cairn-fuzz).
        var parts = string.utf8.split(separator: 0x2f, omittingEmptySubsequences: false).dropFirst().map { String(decoding: $0, as: UTF8.self) }
        if parts.last == "" { parts.removeLast() }  // one trailing slash is tolerated
        guard !parts.isEmpty else { throw .empty }
        var comps: [MultiaddrComponent] = []
        var i = 0
        while i < parts.count {
            let name = parts[i]
            guard let kind = MultiaddrComponent.Kind.named(name) else {
                throw name.isEmpty ? .invalidValue(protocol: "", value: string) : .unknownProtocol(name)
            }
            i += 1
            if kind == .unix {
                // A path: the rest of the address.
                guard i < parts.count else { throw .missingValue(kind.name) }
                comps.append(try MultiaddrComponent.parse(kind: kind, text: parts[i...].joined(separator: "/")))
                break
            }
            if kind.fixedSize == 0 {
                comps.append(try MultiaddrComponent.parse(kind: kind, text: ""))
                continue
            }
            guard i < parts.count else { throw .missingValue(kind.name) }
            comps.append(try MultiaddrComponent.parse(kind: kind, text: parts[i]))
            i += 1
        }
        self.components = comps
    }

    public init(bytes: [UInt8]) throws(MultiaddrError) {
        guard !bytes.isEmpty else { throw .empty }
        guard bytes.count <= Self.maxBinaryLength else { throw .tooLong(bytes.count) }
        var r = ByteReader(bytes)
        var comps: [MultiaddrComponent] = []
        while !r.isAtEnd {
            let code: UInt64
            do { code = try r.readVarint() } catch { throw .truncated("protocol code") }
            guard let kind = MultiaddrComponent.Kind.coded(code) else { throw .unknownProtocolCode(code) }
            let size: Int
            if let fixed = kind.fixedSize {
                size = fixed
            } else {
                do {
                    let n = try r.readVarint()
                    guard n <= UInt64(Self.maxBinaryLength) else { throw MultiaddrError.truncated(kind.name) }
                    size = Int(n)
                } catch { throw .truncated(kind.name) }
            }
            guard let value = r.readBytes(size) else { throw .truncated(kind.name) }
            comps.append(try MultiaddrComponent.fromBytes(kind: kind, value))
        }
        self.components = comps
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        for c in components {
            out += Varint.encode(c.kind.code)
            let v = c.valueBytes
            if c.kind.fixedSize == nil { out += Varint.encode(v.count) }
            out += v
        }
        return out
    }

    public var description: String {
        components.map { c in
            if let v = c.textValue { return "/\(c.protocolName)/\(v)" }
            return "/\(c.protocolName)"
        }.joined()
    }

    /// The peer ID of the last `/p2p` component, if any.
    public var peerID: PeerID? {
        for c in components.reversed() { if case .p2p(let id) = c { return id } }
        return nil
    }

    public func appending(_ c: MultiaddrComponent) -> Multiaddr { Multiaddr(components: components + [c]) }

    /// The address with a trailing `/p2p/<id>` removed.
    public var withoutTrailingPeerID: Multiaddr {
        guard case .p2p? = components.last else { return self }
        return Multiaddr(components: Array(components.dropLast()))
    }

    /// Whether the address is relayed (contains `/p2p-circuit`).
    public var isRelayed: Bool { components.contains(.p2pCircuit) }

    /// The IP address and port of a TCP or UDP address (`tcpEndpoint` or `udpEndpoint`).
    public var ipPortEndpoint: (ip: [UInt8], port: UInt16)? { tcpEndpoint ?? udpEndpoint }

    /// The IP address and UDP port, for addresses of the form /ip4|ip6/…/udp/… exactly.
    public var udpEndpoint: (ip: [UInt8], port: UInt16)? {
        guard components.count == 2 else { return nil }
        switch (components[0], components[1]) {
        case (.ip4(let b), .udp(let p)), (.ip6(let b), .udp(let p)): return (b, p)
        default: return nil
        }
    }

    /// The IP address and TCP port, for addresses of the form /ip4|ip6/…/tcp/… (optionally /p2p/…).
    public var tcpEndpoint: (ip: [UInt8], port: UInt16)? {
        guard components.count >= 2 else { return nil }
        let ip: [UInt8]
        switch components[0] {
        case .ip4(let b), .ip6(let b): ip = b
        default: return nil
        }
        guard case .tcp(let port) = components[1] else { return nil }
        let rest = components.dropFirst(2)
        guard rest.isEmpty || (rest.count == 1 && { if case .p2p = rest.first! { return true }; return false }()) else { return nil }
        return (ip, port)
    }
}

/// IP address text conversion through the C library (inet_pton/inet_ntop), which is strict.
public enum IPAddressText {
    public static func parse4(_ s: String) -> [UInt8]? {
        var addr = in_addr()
        guard inet_pton(AF_INET, s, &addr) == 1 else { return nil }
        return withUnsafeBytes(of: &addr) { Array($0) }
    }

    public static func parse6(_ s: String) -> [UInt8]? {
        var addr = in6_addr()
        guard inet_pton(AF_INET6, s, &addr) == 1 else { return nil }
        return withUnsafeBytes(of: &addr) { Array($0) }
    }

    public static func format(_ b: [UInt8]) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        let family = b.count == 4 ? AF_INET : AF_INET6
        _ = b.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buf, socklen_t(buf.count)) }
        return String(cString: buf)
    }
}
