import CairnCrypto

// STUN (RFC 8489, Session Traversal Utilities for NAT) as sans-I/O code: the message codec, the
// Binding server's decisions and the Binding client's checks. No sockets here; CairnNode's
// STUNServer and STUNClient carry the datagrams.
//
// Only what a public reflexive-address service needs is implemented: the Binding method, the
// address attributes, SOFTWARE, ERROR-CODE, UNKNOWN-ATTRIBUTES and FINGERPRINT. No credentials
// are used, so MESSAGE-INTEGRITY is neither produced nor checked (a client that insists on it
// will reject our answers, which is its right).

/// Constants of the STUN wire format.
public enum STUN {
    public static let magicCookie: UInt32 = 0x2112_A442
    public static let headerLength = 20
    public static let transactionIDLength = 12
    /// The largest datagram accepted or produced. RFC 8489 §6.1 asks for messages that fit the
    /// path MTU without fragmentation; 1280 is the IPv6 minimum MTU, and a Binding exchange needs
    /// far less. Larger datagrams are refused unread.
    public static let maxDatagramSize = 1280
    /// FINGERPRINT is the CRC-32 of the message up to the attribute, XORed with this ("STUN").
    public static let fingerprintXOR: UInt32 = 0x5354_554E
    /// Most attribute types listed in one UNKNOWN-ATTRIBUTES (after removing repeats), so an
    /// error response stays smaller than the request that caused it.
    public static let maxUnknownAttributesListed = 16
    /// SOFTWARE holds fewer than 128 characters, at most 763 bytes of UTF-8 (RFC 8489 §14.14).
    public static let maxSoftwareBytes = 763

    public enum Method {
        public static let binding: UInt16 = 0x001
    }

    /// Attribute types (RFC 8489 §18.3). 0x0000–0x7FFF are comprehension-required.
    public enum AttributeType {
        public static let mappedAddress: UInt16 = 0x0001
        public static let username: UInt16 = 0x0006
        public static let messageIntegrity: UInt16 = 0x0008
        public static let errorCode: UInt16 = 0x0009
        public static let unknownAttributes: UInt16 = 0x000A
        public static let realm: UInt16 = 0x0014
        public static let nonce: UInt16 = 0x0015
        public static let messageIntegritySHA256: UInt16 = 0x001C
        public static let passwordAlgorithm: UInt16 = 0x001D
        public static let userhash: UInt16 = 0x001E
        public static let xorMappedAddress: UInt16 = 0x0020
        public static let passwordAlgorithms: UInt16 = 0x8002
        public static let alternateDomain: UInt16 = 0x8003
        public static let software: UInt16 = 0x8022
        public static let alternateServer: UInt16 = 0x8023
        public static let fingerprint: UInt16 = 0x8028

        public static func isComprehensionRequired(_ type: UInt16) -> Bool { type < 0x8000 }

        /// The comprehension-required types this implementation understands: those RFC 8489
        /// itself defines. Extensions (ICE's PRIORITY and USE-CANDIDATE, RFC 5780's
        /// CHANGE-REQUEST, TURN's attributes) are unknown here and get a 420 in a request.
        /// The credential attributes are understood in the sense that a server without
        /// credentials knows to ignore them.
        public static let understoodRequired: Set<UInt16> = [
            mappedAddress, username, messageIntegrity, errorCode, unknownAttributes, realm, nonce,
            messageIntegritySHA256, passwordAlgorithm, userhash, xorMappedAddress,
        ]
    }

    /// CRC-32 (ISO-HDLC / IEEE 802.3: reflected polynomial 0xEDB88320, initial value and final
    /// XOR 0xFFFFFFFF), as FINGERPRINT uses. An error check, not cryptography.
    public static func crc32<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc = crc32Table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8)
        }
        return crc ^ 0xFFFF_FFFF
    }

    static let crc32Table: [UInt32] = (0..<256).map { i in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }
}

/// Why a datagram is not an acceptable STUN message. Each malformation has its own case.
public enum STUNError: Error, Equatable, Sendable, CustomStringConvertible {
    case tooShort(Int)
    case tooLong(Int)
    /// The first two bits of a STUN message are zero; other protocols sharing the port (RTP,
    /// DTLS, …) differ here.
    case notSTUN(firstByte: UInt8)
    case badMagicCookie(UInt32)
    case lengthNotMultipleOf4(Int)
    /// The header's length does not account for exactly the rest of the datagram.
    case lengthMismatch(declared: Int, available: Int)
    case attributeOverrun(type: UInt16, length: Int, offset: Int)
    case badFingerprint(expected: UInt32, received: UInt32)
    case attributeAfterFingerprint(UInt16)
    case malformedAttribute(type: UInt16, String)

    public var description: String {
        func hex(_ v: UInt16) -> String { "0x" + String(v, radix: 16, uppercase: true) }
        switch self {
        case .tooShort(let n): return "STUN datagram of \(n) bytes is shorter than the 20-byte header"
        case .tooLong(let n): return "STUN datagram of \(n) bytes exceeds \(STUN.maxDatagramSize)"
        case .notSTUN(let b): return "first byte 0x\(String(b, radix: 16)) has a top bit set: not STUN"
        case .badMagicCookie(let c): return "magic cookie 0x\(String(c, radix: 16)) is not 0x2112a442"
        case .lengthNotMultipleOf4(let n): return "STUN message length \(n) is not a multiple of 4"
        case .lengthMismatch(let d, let a): return "STUN message length \(d) but \(a) bytes follow the header"
        case .attributeOverrun(let t, let l, let o): return "STUN attribute \(hex(t)) of \(l) bytes at offset \(o) runs past the message"
        case .badFingerprint(let e, let r): return "FINGERPRINT 0x\(String(r, radix: 16)) should be 0x\(String(e, radix: 16))"
        case .attributeAfterFingerprint(let t): return "STUN attribute \(hex(t)) follows FINGERPRINT"
        case .malformedAttribute(let t, let why): return "STUN attribute \(hex(t)) malformed: \(why)"
        }
    }
}

/// A transport address: the IP (4 or 16 bytes, network order) and port.
public struct STUNEndpoint: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var ip: [UInt8]
    public var port: UInt16

    public init(ip: [UInt8], port: UInt16) {
        self.ip = ip
        self.port = port
    }

    /// Parses dotted-quad or IPv6 text; nil if it is neither.
    public init?(ip text: String, port: UInt16) {
        guard let b = IPAddressText.parse4(text) ?? IPAddressText.parse6(text) else { return nil }
        self.init(ip: b, port: port)
    }

    public var isIPv4: Bool { ip.count == 4 }
    public var ipText: String { IPAddressText.format(ip) }

    /// An IPv4-mapped IPv6 address (::ffff:a.b.c.d, as a dual-stack socket reports IPv4 peers)
    /// as plain IPv4; anything else unchanged.
    public var unmapped: STUNEndpoint {
        guard ip.count == 16, ip[0..<10].allSatisfy({ $0 == 0 }), ip[10] == 0xFF, ip[11] == 0xFF else { return self }
        return STUNEndpoint(ip: Array(ip[12..<16]), port: port)
    }

    public var description: String { isIPv4 ? "\(ipText):\(port)" : "[\(ipText)]:\(port)" }
}

/// One STUN message: type, transaction ID and attributes in order.
public struct STUNMessage: Equatable, Sendable {
    public enum Class: UInt8, Sendable {
        case request = 0, indication = 1, successResponse = 2, errorResponse = 3
    }

    public struct Attribute: Equatable, Sendable {
        public var type: UInt16
        /// The value without padding.
        public var value: [UInt8]
        public init(type: UInt16, value: [UInt8]) {
            self.type = type
            self.value = value
        }
    }

    /// 12-bit method.
    public var method: UInt16
    public var messageClass: Class
    public var transactionID: [UInt8]
    /// Attributes as received. FINGERPRINT, once checked, is not kept here; attributes that
    /// followed MESSAGE-INTEGRITY (other than FINGERPRINT and MESSAGE-INTEGRITY-SHA256) are
    /// dropped, as RFC 8489 §14.5 says they must be ignored.
    public var attributes: [Attribute]
    /// Whether the decoded message carried a (valid) FINGERPRINT.
    public var hadFingerprint = false

    public init(method: UInt16 = STUN.Method.binding, messageClass: Class, transactionID: [UInt8], attributes: [Attribute] = []) {
        precondition(transactionID.count == STUN.transactionIDLength, "a STUN transaction ID is 12 bytes")
        precondition(method <= 0x0FFF, "a STUN method is 12 bits")
        self.method = method
        self.messageClass = messageClass
        self.transactionID = transactionID
        self.attributes = attributes
    }

    // MARK: Message type

    /// The 14-bit message type: method bits M11–M0 interleaved with class bits C1 C0
    /// (M11..M7 C1 M6..M4 C0 M3..M0).
    public static func messageType(method: UInt16, class c: Class) -> UInt16 {
        let cls = UInt16(c.rawValue)
        return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2)
            | ((cls & 1) << 4) | ((cls & 2) << 7)
    }

    static func split(messageType t: UInt16) -> (method: UInt16, class: Class) {
        let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
        let cls = ((t & 0x0010) >> 4) | ((t & 0x0100) >> 7)
        return (method, Class(rawValue: UInt8(cls))!)
    }

    // MARK: Encoding

    /// The wire bytes, attributes padded to 4 bytes with zeros; with `fingerprint`, a
    /// FINGERPRINT attribute is appended last.
    public func encode(fingerprint: Bool = true) -> [UInt8] {
        var body: [UInt8] = []
        for a in attributes {
            precondition(a.value.count <= 0xFFFF, "STUN attribute value too long")
            Self.append16(a.type, to: &body)
            Self.append16(UInt16(a.value.count), to: &body)
            body += a.value
            body += [UInt8](repeating: 0, count: (4 - a.value.count % 4) % 4)
        }
        let length = body.count + (fingerprint ? 8 : 0)
        precondition(length <= 0xFFFF, "STUN message too long")
        var out: [UInt8] = []
        out.reserveCapacity(STUN.headerLength + length)
        Self.append16(Self.messageType(method: method, class: messageClass), to: &out)
        Self.append16(UInt16(length), to: &out)
        Self.append32(STUN.magicCookie, to: &out)
        out += transactionID
        out += body
        if fingerprint {
            let crc = STUN.crc32(out) ^ STUN.fingerprintXOR
            Self.append16(STUN.AttributeType.fingerprint, to: &out)
            Self.append16(4, to: &out)
            Self.append32(crc, to: &out)
        }
        return out
    }

    static func append16(_ v: UInt16, to out: inout [UInt8]) {
        out.append(UInt8(v >> 8))
        out.append(UInt8(v & 0xFF))
    }

    static func append32(_ v: UInt32, to out: inout [UInt8]) {
        out.append(UInt8(v >> 24))
        out.append(UInt8((v >> 16) & 0xFF))
        out.append(UInt8((v >> 8) & 0xFF))
        out.append(UInt8(v & 0xFF))
    }

    static func read16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
    static func read32(_ b: [UInt8], _ i: Int) -> UInt32 {
        UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
    }

    // MARK: Decoding

    /// Decodes one datagram, strictly: the whole datagram must be exactly one message, every
    /// attribute must fit, and a FINGERPRINT, if present, must be last and correct.
    public init(decoding datagram: [UInt8]) throws(STUNError) {
        let n = datagram.count
        guard n <= STUN.maxDatagramSize else { throw .tooLong(n) }
        guard n >= STUN.headerLength else { throw .tooShort(n) }
        guard datagram[0] & 0xC0 == 0 else { throw .notSTUN(firstByte: datagram[0]) }
        let cookie = Self.read32(datagram, 4)
        guard cookie == STUN.magicCookie else { throw .badMagicCookie(cookie) }
        let length = Int(Self.read16(datagram, 2))
        guard length % 4 == 0 else { throw .lengthNotMultipleOf4(length) }
        guard length == n - STUN.headerLength else { throw .lengthMismatch(declared: length, available: n - STUN.headerLength) }

        let (method, cls) = Self.split(messageType: Self.read16(datagram, 0))
        var attributes: [Attribute] = []
        var afterIntegrity = false
        var fingerprintSeen = false
        var offset = STUN.headerLength
        while offset < n {
            // The length checks above leave a multiple of 4 bytes, so a 4-byte header fits.
            let type = Self.read16(datagram, offset)
            let valueLength = Int(Self.read16(datagram, offset + 2))
            if fingerprintSeen { throw .attributeAfterFingerprint(type) }
            let padded = (valueLength + 3) & ~3
            guard offset + 4 + padded <= n else { throw .attributeOverrun(type: type, length: valueLength, offset: offset) }
            let value = Array(datagram[(offset + 4)..<(offset + 4 + valueLength)])
            switch type {
            case STUN.AttributeType.fingerprint:
                guard valueLength == 4 else { throw .malformedAttribute(type: type, "FINGERPRINT is \(valueLength) bytes, not 4") }
                let expected = STUN.crc32(datagram[0..<offset]) ^ STUN.fingerprintXOR
                let received = Self.read32(value, 0)
                guard expected == received else { throw .badFingerprint(expected: expected, received: received) }
                fingerprintSeen = true
            case STUN.AttributeType.messageIntegrity, STUN.AttributeType.messageIntegritySHA256:
                if !afterIntegrity || type == STUN.AttributeType.messageIntegritySHA256 {
                    attributes.append(Attribute(type: type, value: value))
                }
                afterIntegrity = true
            default:
                if !afterIntegrity { attributes.append(Attribute(type: type, value: value)) }
            }
            offset += 4 + padded
        }
        self.method = method
        self.messageClass = cls
        self.transactionID = Array(datagram[8..<20])
        self.attributes = attributes
        self.hadFingerprint = fingerprintSeen
    }

    // MARK: Attributes

    /// The value of the first attribute of `type` (later repeats are ignored, RFC 8489 §14).
    public func value(of type: UInt16) -> [UInt8]? { attributes.first { $0.type == type }?.value }

    /// Comprehension-required attribute types this implementation does not understand, without
    /// repeats, in order of appearance.
    public var unknownComprehensionRequired: [UInt16] {
        var seen = Set<UInt16>(), out: [UInt16] = []
        for a in attributes where STUN.AttributeType.isComprehensionRequired(a.type)
            && !STUN.AttributeType.understoodRequired.contains(a.type) && seen.insert(a.type).inserted {
            out.append(a.type)
        }
        return out
    }

    /// XOR-MAPPED-ADDRESS, decoded; nil if absent.
    public func xorMappedAddress() throws(STUNError) -> STUNEndpoint? {
        guard let v = value(of: STUN.AttributeType.xorMappedAddress) else { return nil }
        return try Self.decodeAddress(v, type: STUN.AttributeType.xorMappedAddress, xorWith: transactionID)
    }

    /// MAPPED-ADDRESS (what RFC 3489 servers send), decoded; nil if absent.
    public func mappedAddress() throws(STUNError) -> STUNEndpoint? {
        guard let v = value(of: STUN.AttributeType.mappedAddress) else { return nil }
        return try Self.decodeAddress(v, type: STUN.AttributeType.mappedAddress, xorWith: nil)
    }

    /// SOFTWARE as text (invalid UTF-8 is replaced, not refused: it is only informative).
    public func software() throws(STUNError) -> String? {
        guard let v = value(of: STUN.AttributeType.software) else { return nil }
        guard v.count <= STUN.maxSoftwareBytes else {
            throw .malformedAttribute(type: STUN.AttributeType.software, "\(v.count) bytes exceed \(STUN.maxSoftwareBytes)")
        }
        return String(decoding: v, as: UTF8.self)
    }

    /// ERROR-CODE as (code, reason phrase).
    public func errorCode() throws(STUNError) -> (code: Int, reason: String)? {
        guard let v = value(of: STUN.AttributeType.errorCode) else { return nil }
        guard v.count >= 4 else { throw .malformedAttribute(type: STUN.AttributeType.errorCode, "\(v.count) bytes, need 4") }
        let cls = Int(v[2] & 0x07), number = Int(v[3])
        guard (3...6).contains(cls), number < 100 else {
            throw .malformedAttribute(type: STUN.AttributeType.errorCode, "code \(cls)\(number) out of range")
        }
        return (cls * 100 + number, String(decoding: v[4...], as: UTF8.self))
    }

    /// UNKNOWN-ATTRIBUTES as a list of types.
    public func unknownAttributesList() throws(STUNError) -> [UInt16]? {
        guard let v = value(of: STUN.AttributeType.unknownAttributes) else { return nil }
        guard v.count % 2 == 0 else { throw .malformedAttribute(type: STUN.AttributeType.unknownAttributes, "odd length \(v.count)") }
        return stride(from: 0, to: v.count, by: 2).map { Self.read16(v, $0) }
    }

    // MARK: Attribute builders

    /// An address attribute value: 0, family (1 = IPv4, 2 = IPv6), port, address; with a
    /// transaction ID, XORed as XOR-MAPPED-ADDRESS requires (port and IPv4 address with the
    /// cookie, an IPv6 address with the cookie and then the transaction ID).
    public static func encodeAddress(_ e: STUNEndpoint, xorWith transactionID: [UInt8]?) -> [UInt8] {
        precondition(e.ip.count == 4 || e.ip.count == 16, "an IP address is 4 or 16 bytes")
        var out: [UInt8] = [0, e.ip.count == 4 ? 1 : 2]
        if let tid = transactionID {
            append16(e.port ^ UInt16(STUN.magicCookie >> 16), to: &out)
            out += zip(e.ip, xorPad(tid)).map { $0 ^ $1 }
        } else {
            append16(e.port, to: &out)
            out += e.ip
        }
        return out
    }

    static func decodeAddress(_ v: [UInt8], type: UInt16, xorWith tid: [UInt8]?) throws(STUNError) -> STUNEndpoint {
        guard v.count >= 4 else { throw .malformedAttribute(type: type, "\(v.count) bytes, too short for an address") }
        let ipLength: Int
        switch v[1] {
        case 1: ipLength = 4
        case 2: ipLength = 16
        default: throw .malformedAttribute(type: type, "address family \(v[1]) is neither 1 (IPv4) nor 2 (IPv6)")
        }
        guard v.count == 4 + ipLength else {
            throw .malformedAttribute(type: type, "\(v.count) bytes for an address of family \(v[1])")
        }
        var port = read16(v, 2)
        var ip = Array(v[4...])
        if let tid {
            port ^= UInt16(STUN.magicCookie >> 16)
            ip = zip(ip, xorPad(tid)).map { $0 ^ $1 }
        }
        return STUNEndpoint(ip: ip, port: port)
    }

    /// The magic cookie followed by the transaction ID: the 16 bytes an address is XORed with.
    static func xorPad(_ tid: [UInt8]) -> [UInt8] {
        var pad: [UInt8] = []
        append32(STUN.magicCookie, to: &pad)
        return pad + tid
    }

    static func errorCodeValue(_ code: Int, _ reason: String) -> [UInt8] {
        [0, 0, UInt8(code / 100), UInt8(code % 100)] + Array(reason.utf8.prefix(127))
    }

    static func softwareValue(_ s: String) -> [UInt8] { Array(s.utf8.prefix(STUN.maxSoftwareBytes)) }
}

// MARK: - Server

/// Why the server did not answer a datagram with a success response.
public enum STUNRejectReason: String, CaseIterable, Sendable, CustomStringConvertible {
    case tooShort, tooLong, notSTUN, badMagicCookie, lengthNotMultipleOf4, lengthMismatch
    case attributeOverrun, badFingerprint, attributeAfterFingerprint, malformedAttribute
    /// A well-formed request with comprehension-required attributes we do not know: 420.
    case unknownAttributes
    /// A well-formed request for a method other than Binding: 400.
    case unsupportedMethod
    /// Responses and indications (a Binding indication is a keep-alive): nothing to answer.
    case notARequest
    /// A sender address that is not IPv4 or IPv6 (cannot happen with UDP sockets).
    case unusableSource

    public init(_ error: STUNError) {
        switch error {
        case .tooShort: self = .tooShort
        case .tooLong: self = .tooLong
        case .notSTUN: self = .notSTUN
        case .badMagicCookie: self = .badMagicCookie
        case .lengthNotMultipleOf4: self = .lengthNotMultipleOf4
        case .lengthMismatch: self = .lengthMismatch
        case .attributeOverrun: self = .attributeOverrun
        case .badFingerprint: self = .badFingerprint
        case .attributeAfterFingerprint: self = .attributeAfterFingerprint
        case .malformedAttribute: self = .malformedAttribute
        }
    }

    public var description: String { rawValue }
}

/// What the server did with each datagram, by outcome and by rejection reason.
public struct STUNServerStats: Equatable, Sendable, CustomStringConvertible {
    /// Binding success responses sent.
    public var answered = 0
    /// Error responses sent (400, 420).
    public var refused = 0
    /// Datagrams dropped without an answer.
    public var ignored = 0
    public var rejections: [STUNRejectReason: Int] = [:]

    public init() {}

    public func count(_ reason: STUNRejectReason) -> Int { rejections[reason, default: 0] }

    public var description: String {
        let r = rejections.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key)=\($0.value)" }
        return "answered=\(answered) refused=\(refused) ignored=\(ignored)" + (r.isEmpty ? "" : " " + r.joined(separator: " "))
    }
}

/// The decisions of a STUN Binding server, without the socket: each datagram in, a reply (or
/// nothing) out. Malformed datagrams are dropped, as RFC 8489 §6.3 says; well-formed requests
/// that cannot be served get an error response with the reason; every rejection is counted.
public struct STUNServerLogic: Sendable {
    public struct Rejection: Equatable, Sendable, CustomStringConvertible {
        public var reason: STUNRejectReason
        public var detail: String
        public var description: String { "\(reason): \(detail)" }
    }

    public enum Outcome: Equatable, Sendable {
        /// A Binding success response carrying the sender's address.
        case answer([UInt8])
        /// An error response (the request was understood well enough to refuse it).
        case refuse([UInt8], Rejection)
        /// Nothing is sent.
        case ignore(Rejection)

        /// The datagram to send back to the sender, if any.
        public var reply: [UInt8]? {
            switch self {
            case .answer(let b), .refuse(let b, _): return b
            case .ignore: return nil
            }
        }

        public var rejection: Rejection? {
            switch self {
            case .answer: return nil
            case .refuse(_, let r), .ignore(let r): return r
            }
        }
    }

    /// SOFTWARE sent in every response; nil sends none.
    public var software: String?
    public private(set) var stats = STUNServerStats()

    public init(software: String? = "cairn") {
        self.software = software
    }

    /// Handles one datagram received from `source` (the address the socket reported).
    public mutating func handle(_ datagram: [UInt8], from source: STUNEndpoint) -> Outcome {
        let outcome = decide(datagram, from: source.unmapped)
        switch outcome {
        case .answer: stats.answered += 1
        case .refuse(_, let r):
            stats.refused += 1
            stats.rejections[r.reason, default: 0] += 1
        case .ignore(let r):
            stats.ignored += 1
            stats.rejections[r.reason, default: 0] += 1
        }
        return outcome
    }

    private func decide(_ datagram: [UInt8], from source: STUNEndpoint) -> Outcome {
        guard source.ip.count == 4 || source.ip.count == 16 else {
            return .ignore(Rejection(reason: .unusableSource, detail: "sender IP of \(source.ip.count) bytes"))
        }
        let message: STUNMessage
        do {
            message = try STUNMessage(decoding: datagram)
        } catch {
            return .ignore(Rejection(reason: STUNRejectReason(error), detail: error.description))
        }
        guard message.messageClass == .request else {
            return .ignore(Rejection(reason: .notARequest, detail: "\(message.messageClass) for method \(message.method)"))
        }
        guard message.method == STUN.Method.binding else {
            let r = Rejection(reason: .unsupportedMethod, detail: "method 0x\(String(message.method, radix: 16)) is not Binding")
            return .refuse(errorResponse(to: message, code: 400, reason: "Bad Request", unknown: []), r)
        }
        let unknown = message.unknownComprehensionRequired
        if !unknown.isEmpty {
            let listed = Array(unknown.prefix(STUN.maxUnknownAttributesListed))
            let r = Rejection(reason: .unknownAttributes,
                              detail: "unknown comprehension-required " + listed.map { "0x" + String($0, radix: 16) }.joined(separator: ","))
            return .refuse(errorResponse(to: message, code: 420, reason: "Unknown Attribute", unknown: listed), r)
        }
        var attributes = [STUNMessage.Attribute(type: STUN.AttributeType.xorMappedAddress,
                                                value: STUNMessage.encodeAddress(source, xorWith: message.transactionID))]
        if let software { attributes.append(.init(type: STUN.AttributeType.software, value: STUNMessage.softwareValue(software))) }
        let response = STUNMessage(method: STUN.Method.binding, messageClass: .successResponse,
                                   transactionID: message.transactionID, attributes: attributes)
        return .answer(response.encode(fingerprint: true))
    }

    private func errorResponse(to request: STUNMessage, code: Int, reason: String, unknown: [UInt16]) -> [UInt8] {
        var attributes = [STUNMessage.Attribute(type: STUN.AttributeType.errorCode, value: STUNMessage.errorCodeValue(code, reason))]
        if !unknown.isEmpty {
            var v: [UInt8] = []
            for t in unknown { STUNMessage.append16(t, to: &v) }
            attributes.append(.init(type: STUN.AttributeType.unknownAttributes, value: v))
        }
        if let software { attributes.append(.init(type: STUN.AttributeType.software, value: STUNMessage.softwareValue(software))) }
        return STUNMessage(method: request.method, messageClass: .errorResponse,
                           transactionID: request.transactionID, attributes: attributes).encode(fingerprint: true)
    }
}

// MARK: - Client

public enum STUNClientError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(STUNError)
    /// A well-formed message for another transaction.
    case transactionMismatch
    /// A request or indication where a response was expected.
    case notAResponse
    case unexpectedMethod(UInt16)
    case errorResponse(code: Int, reason: String)
    /// The response carries comprehension-required attributes we do not understand, which
    /// fails the transaction (RFC 8489 §6.3.3).
    case unknownComprehensionRequired([UInt16])
    case noMappedAddress

    /// Whether the datagram should just be dropped while waiting for the real answer: it may be
    /// stray, stale or forged, and says nothing about this transaction.
    public var isIgnorable: Bool {
        switch self {
        case .malformed, .transactionMismatch, .notAResponse: return true
        case .unexpectedMethod, .errorResponse, .unknownComprehensionRequired, .noMappedAddress: return false
        }
    }

    public var description: String {
        switch self {
        case .malformed(let e): return e.description
        case .transactionMismatch: return "STUN response for another transaction"
        case .notAResponse: return "STUN message is not a response"
        case .unexpectedMethod(let m): return "STUN response for method 0x\(String(m, radix: 16)), not Binding"
        case .errorResponse(let c, let r): return "STUN server answered \(c) \(r)"
        case .unknownComprehensionRequired(let t): return "STUN response has unknown attributes \(t.map { "0x" + String($0, radix: 16) })"
        case .noMappedAddress: return "STUN response carries no mapped address"
        }
    }
}

/// One Binding transaction, client side: the request to send and the check of what comes back.
/// Retransmission is the caller's (the same request bytes, same transaction ID).
public struct STUNClientLogic: Sendable {
    public let transactionID: [UInt8]
    public var software: String?

    /// A transaction with a fresh random ID (RFC 8489 §6: uniformly random, 96 bits).
    public init(software: String? = nil) {
        self.init(transactionID: secureRandomBytes(STUN.transactionIDLength), software: software)
    }

    public init(transactionID: [UInt8], software: String? = nil) {
        precondition(transactionID.count == STUN.transactionIDLength, "a STUN transaction ID is 12 bytes")
        self.transactionID = transactionID
        self.software = software
    }

    /// The Binding request, with FINGERPRINT.
    public func request() -> [UInt8] {
        var attributes: [STUNMessage.Attribute] = []
        if let software { attributes.append(.init(type: STUN.AttributeType.software, value: STUNMessage.softwareValue(software))) }
        return STUNMessage(messageClass: .request, transactionID: transactionID, attributes: attributes).encode(fingerprint: true)
    }

    /// The mapped address from a Binding success response to this transaction: from
    /// XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from servers that send only that.
    public func parseResponse(_ datagram: [UInt8]) throws(STUNClientError) -> STUNEndpoint {
        let m: STUNMessage
        do { m = try STUNMessage(decoding: datagram) } catch { throw .malformed(error) }
        guard m.transactionID == transactionID else { throw .transactionMismatch }
        guard m.messageClass == .successResponse || m.messageClass == .errorResponse else { throw .notAResponse }
        guard m.method == STUN.Method.binding else { throw .unexpectedMethod(m.method) }
        if m.messageClass == .errorResponse {
            let ec: (code: Int, reason: String)?
            do { ec = try m.errorCode() } catch { throw .malformed(error) }
            throw .errorResponse(code: ec?.code ?? 0, reason: ec?.reason ?? "error response without ERROR-CODE")
        }
        let unknown = m.unknownComprehensionRequired
        guard unknown.isEmpty else { throw .unknownComprehensionRequired(unknown) }
        let address: STUNEndpoint?
        do {
            if let x = try m.xorMappedAddress() { address = x } else { address = try m.mappedAddress() }
        } catch {
            throw .malformed(error)
        }
        guard let address else { throw .noMappedAddress }
        return address
    }
}
