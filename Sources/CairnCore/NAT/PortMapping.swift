import Foundation

/// Port mapping on the local gateway: NAT-PMP (RFC 6886) and PCP (RFC 6887, MAP opcode), both on
/// UDP port 5351 of the gateway. Message codecs with hard size limits, and a sans-I/O client that
/// asks for a mapping, retransmits, renews at half the lifetime, notices a gateway that forgot
/// (its epoch went backwards) and deletes the mapping when stopped. The gateway's claims are
/// reported, never trusted: the owner confirms a mapped address before advertising it.
public enum PortMapping {
    public static let port: UInt16 = 5351

    public enum TransportProtocol: UInt8, Sendable, Equatable { case tcp = 6, udp = 17 }

    public enum DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
        case length(Int)
        case version(UInt8)
        case notAResponse
        case opcode(UInt8)
        case reservedNotZero

        public var description: String {
            switch self {
            case .length(let n): return "port-mapping message of \(n) bytes has the wrong length"
            case .version(let v): return "port-mapping message of version \(v)"
            case .notAResponse: return "port-mapping message is not a response"
            case .opcode(let o): return "port-mapping response has opcode \(o)"
            case .reservedNotZero: return "port-mapping response has non-zero reserved bits"
            }
        }
    }
}

// MARK: - NAT-PMP (RFC 6886)

public enum NATPMP {
    public static let version: UInt8 = 0
    /// The longest NAT-PMP response (a mapping): anything longer is refused unread.
    public static let maxResponseLength = 16

    public enum ResultCode: UInt16, Sendable, Equatable {
        case success = 0, unsupportedVersion = 1, notAuthorized = 2, networkFailure = 3, outOfResources = 4, unsupportedOpcode = 5
    }

    /// Opcode 0: what is the external address?
    public static func externalAddressRequest() -> [UInt8] { [version, 0] }

    /// Opcode 1 (UDP) or 2 (TCP): map `internalPort` for `lifetime` seconds (0 deletes).
    public static func mapRequest(_ proto: PortMapping.TransportProtocol, internalPort: UInt16, suggestedExternalPort: UInt16,
                                  lifetime: UInt32) -> [UInt8] {
        [version, proto == .udp ? 1 : 2, 0, 0] + be16(internalPort) + be16(suggestedExternalPort) + be32(lifetime)
    }

    public enum Response: Sendable, Equatable {
        /// An error answer with only the common header (8 bytes), such as "unsupported version"
        /// from a NAT-PMP gateway asked in PCP.
        case error(opcode: UInt8, result: UInt16, epoch: UInt32)
        case externalAddress(result: UInt16, epoch: UInt32, address: [UInt8])
        case mapping(PortMapping.TransportProtocol, result: UInt16, epoch: UInt32, internalPort: UInt16, externalPort: UInt16, lifetime: UInt32)

        public var result: UInt16 {
            switch self {
            case .error(_, let r, _), .externalAddress(let r, _, _), .mapping(_, let r, _, _, _, _): return r
            }
        }
        public var epoch: UInt32 {
            switch self {
            case .error(_, _, let e), .externalAddress(_, let e, _), .mapping(_, _, let e, _, _, _): return e
            }
        }
    }

    public static func decodeResponse(_ b: [UInt8]) throws(PortMapping.DecodeError) -> Response {
        guard b.count >= 8, b.count <= maxResponseLength else { throw .length(b.count) }
        guard b[0] == version else { throw .version(b[0]) }
        guard b[1] >= 128 else { throw .notAResponse }
        let result = UInt16(b[2]) << 8 | UInt16(b[3])
        let epoch = readBE32(b, 4)
        if b.count == 8 {
            guard result != 0 else { throw .length(8) }
            return .error(opcode: b[1] - 128, result: result, epoch: epoch)
        }
        switch b[1] - 128 {
        case 0:
            guard b.count == 12 else { throw .length(b.count) }
            return .externalAddress(result: result, epoch: epoch, address: Array(b[8..<12]))
        case 1, 2:
            guard b.count == 16 else { throw .length(b.count) }
            return .mapping(b[1] == 129 ? .udp : .tcp, result: result, epoch: epoch, internalPort: readBE16(b, 8),
                            externalPort: readBE16(b, 10), lifetime: readBE32(b, 12))
        default:
            throw .opcode(b[1])
        }
    }
}

// MARK: - PCP (RFC 6887)

public enum PCP {
    public static let version: UInt8 = 2
    /// RFC 6887 §7: messages are at most 1100 bytes; longer input is refused unread.
    public static let maxMessageLength = 1100
    static let mapOpcode: UInt8 = 1

    public enum ResultCode: UInt8, Sendable, Equatable {
        case success = 0, unsupportedVersion = 1, notAuthorized = 2, malformedRequest = 3, unsupportedOpcode = 4
        case unsupportedOption = 5, malformedOption = 6, networkFailure = 7, noResources = 8, unsupportedProtocol = 9
        case userExceededQuota = 10, cannotProvideExternal = 11, addressMismatch = 12, excessiveRemotePeers = 13
    }

    /// An IPv4 address as PCP carries it (IPv4-mapped IPv6), or an IPv6 address as is.
    public static func mapped(_ ip: [UInt8]) -> [UInt8] {
        ip.count == 4 ? [UInt8](repeating: 0, count: 10) + [0xff, 0xff] + ip : ip
    }

    /// The IPv4 address inside an IPv4-mapped one, else the 16 bytes.
    public static func unmapped(_ ip: [UInt8]) -> [UInt8] {
        ip.count == 16 && ip[0..<10].allSatisfy({ $0 == 0 }) && ip[10] == 0xff && ip[11] == 0xff ? Array(ip[12...]) : ip
    }

    /// A MAP request (60 bytes): `client` is our address as the gateway sees it on the LAN
    /// (4 or 16 bytes); `nonce` (12 bytes) ties the answers to this mapping; lifetime 0 deletes.
    public static func mapRequest(_ proto: PortMapping.TransportProtocol, client: [UInt8], nonce: [UInt8], internalPort: UInt16,
                                  suggestedExternalPort: UInt16, suggestedExternalAddress: [UInt8]? = nil, lifetime: UInt32) -> [UInt8] {
        precondition(nonce.count == 12)
        var b: [UInt8] = [version, mapOpcode, 0, 0] + be32(lifetime) + mapped(client)
        b += nonce + [proto.rawValue, 0, 0, 0] + be16(internalPort) + be16(suggestedExternalPort)
        b += mapped(suggestedExternalAddress ?? [0, 0, 0, 0])
        return b
    }

    public struct MapResponse: Sendable, Equatable {
        public var result: UInt8
        public var lifetime: UInt32
        public var epoch: UInt32
        public var nonce: [UInt8]
        public var proto: UInt8
        public var internalPort: UInt16
        public var externalPort: UInt16
        /// 4 bytes for IPv4, 16 for IPv6.
        public var externalAddress: [UInt8]
    }

    /// A response to a MAP request. Other opcodes, requests, and lengths that are not 60 bytes
    /// plus whole options are refused (options are skipped, bounded by the message limit).
    public static func decodeMapResponse(_ b: [UInt8]) throws(PortMapping.DecodeError) -> MapResponse {
        guard b.count >= 4, b.count <= maxMessageLength else { throw .length(b.count) }
        guard b[0] == version else { throw .version(b[0]) }
        guard b[1] & 0x80 != 0 else { throw .notAResponse }
        guard b[1] & 0x7f == mapOpcode else { throw .opcode(b[1] & 0x7f) }
        // An error answer may carry only the 24-byte header (RFC 6887 §7.2).
        if b[3] != 0, b.count == 24 {
            return MapResponse(result: b[3], lifetime: readBE32(b, 4), epoch: readBE32(b, 8), nonce: [], proto: 0, internalPort: 0,
                               externalPort: 0, externalAddress: [])
        }
        guard b.count >= 60, (b.count - 60) % 4 == 0 else { throw .length(b.count) }
        return MapResponse(result: b[3], lifetime: readBE32(b, 4), epoch: readBE32(b, 8), nonce: Array(b[24..<36]), proto: b[36],
                           internalPort: readBE16(b, 40), externalPort: readBE16(b, 42), externalAddress: unmapped(Array(b[44..<60])))
    }
}

// MARK: - The client

/// Keeps one mapping of a local port on the gateway, by PCP first and NAT-PMP when the gateway
/// does not speak PCP. Sans-I/O: the owner sends `.send` payloads to the gateway's port 5351
/// from one UDP socket, feeds back what comes from the gateway's address, and ticks at
/// `nextDeadline`. Time is seconds on any monotonic clock.
public struct PortMappingClient: Sendable {
    public struct Configuration: Sendable {
        public var proto: PortMapping.TransportProtocol = .tcp
        public var internalPort: UInt16
        /// Our address on the gateway's network (PCP carries it; 4 or 16 bytes).
        public var clientAddress: [UInt8]
        public var lifetime: UInt32 = 7200
        /// RFC 6886 §3.1: first retransmission after 250 ms, doubling; we give up after this many.
        public var maxAttempts = 6
        public var initialTimeout = 0.25
        /// Which dialects to speak: PCP first when on, NAT-PMP first (or only) otherwise.
        public var pcp = true
        public var natpmp = true

        public init(proto: PortMapping.TransportProtocol = .tcp, internalPort: UInt16, clientAddress: [UInt8]) {
            self.proto = proto
            self.internalPort = internalPort
            self.clientAddress = clientAddress
        }
    }

    /// How a mapping was made (this client speaks PCP and NAT-PMP; `UPnPMappingClient` reports
    /// its mappings as `.upnp`).
    public enum Dialect: String, Sendable, Equatable { case pcp = "PCP", natpmp = "NAT-PMP", upnp = "UPnP IGD" }

    /// A mapping the gateway says it made. Claims only: the external address in particular is
    /// one more vote, to be confirmed before anyone is told to dial it.
    public struct Mapping: Sendable, Equatable {
        public var dialect: Dialect
        public var externalPort: UInt16
        /// From PCP's answer or NAT-PMP's external-address request; nil until known.
        public var externalAddress: [UInt8]?
        public var lifetime: UInt32
    }

    public enum Action: Sendable, Equatable {
        case send([UInt8])
        case mapped(Mapping)
        /// The gateway refused, never answered, or forgot the mapping and could not remake it.
        case failed(String)
    }

    enum Phase: Sendable, Equatable {
        case idle
        case requesting(dialect: Dialect, attempt: Int, sentAt: Double)
        /// NAT-PMP gives the external address by a request of its own, after the mapping.
        case askingAddress(attempt: Int, sentAt: Double)
        case mapped(renewAt: Double)
        case deleting
        case failed
    }

    public let configuration: Configuration
    public private(set) var mapping: Mapping?
    var phase: Phase = .idle
    let nonce: [UInt8]
    /// The gateway's epoch at its last answer, and when (our clock): a gateway whose epoch runs
    /// slower than time (RFC 6886 §3.6) has restarted and lost its mappings.
    var lastEpoch: (epoch: UInt32, at: Double)?

    public init(configuration: Configuration, nonce: [UInt8]) {
        precondition(nonce.count == 12)
        self.configuration = configuration
        self.nonce = nonce
    }

    public var isMapped: Bool { if case .mapped = phase { return true }; return false }

    public mutating func start(now: Double) -> [Action] {
        guard case .idle = phase else { return [] }
        guard configuration.pcp || configuration.natpmp else {
            phase = .failed
            return [.failed("neither PCP nor NAT-PMP is enabled")]
        }
        return request(configuration.pcp ? .pcp : .natpmp, attempt: 1, now: now)
    }

    /// PCP did not work (`why`): NAT-PMP next, when enabled.
    private mutating func afterPCP(_ why: String, now: Double) -> [Action] {
        if configuration.natpmp { return request(.natpmp, attempt: 1, now: now) }
        phase = .failed
        return [.failed(why)]
    }

    private mutating func request(_ dialect: Dialect, attempt: Int, now: Double, lifetime: UInt32? = nil) -> [Action] {
        phase = .requesting(dialect: dialect, attempt: attempt, sentAt: now)
        let c = configuration
        let suggested = mapping?.externalPort ?? c.internalPort
        switch dialect {
        case .pcp:
            return [.send(PCP.mapRequest(c.proto, client: c.clientAddress, nonce: nonce, internalPort: c.internalPort,
                                         suggestedExternalPort: suggested, suggestedExternalAddress: mapping?.externalAddress,
                                         lifetime: lifetime ?? c.lifetime))]
        case .natpmp:
            return [.send(NATPMP.mapRequest(c.proto, internalPort: c.internalPort, suggestedExternalPort: suggested, lifetime: lifetime ?? c.lifetime))]
        case .upnp:
            return []  // `UPnPMappingClient`'s, never this client's
        }
    }

    /// When `tick` has work: a retransmission or a renewal.
    public func nextDeadline() -> Double? {
        switch phase {
        case .requesting(_, let attempt, let sentAt), .askingAddress(let attempt, let sentAt):
            return sentAt + configuration.initialTimeout * Double(1 << (attempt - 1))
        case .mapped(let renewAt): return renewAt
        default: return nil
        }
    }

    public mutating func tick(now: Double) -> [Action] {
        guard let d = nextDeadline(), now >= d else { return [] }
        switch phase {
        case .requesting(let dialect, let attempt, _):
            if attempt < configuration.maxAttempts { return request(dialect, attempt: attempt + 1, now: now) }
            // PCP unanswered: try NAT-PMP once through before giving up.
            if dialect == .pcp { return afterPCP("the gateway did not answer PCP", now: now) }
            phase = .failed
            return [.failed(configuration.pcp ? "the gateway did not answer PCP or NAT-PMP" : "the gateway did not answer NAT-PMP")]
        case .askingAddress(let attempt, _):
            if attempt < configuration.maxAttempts {
                phase = .askingAddress(attempt: attempt + 1, sentAt: now)
                return [.send(NATPMP.externalAddressRequest())]
            }
            // The mapping stands without the address: report it.
            return finishMapping(now: now)
        case .mapped:
            return request(mapping?.dialect ?? .pcp, attempt: 1, now: now)
        default:
            return []
        }
    }

    /// Deletes the mapping (lifetime 0); nothing to wait for.
    public mutating func stop() -> [Action] {
        defer { phase = .deleting }
        guard let m = mapping else { return [] }
        let c = configuration
        switch m.dialect {
        case .pcp:
            return [.send(PCP.mapRequest(c.proto, client: c.clientAddress, nonce: nonce, internalPort: c.internalPort,
                                         suggestedExternalPort: 0, lifetime: 0))]
        case .natpmp:
            return [.send(NATPMP.mapRequest(c.proto, internalPort: c.internalPort, suggestedExternalPort: 0, lifetime: 0))]
        case .upnp:
            return []  // `UPnPMappingClient`'s, never this client's
        }
    }

    /// A datagram from the gateway's port 5351. Throws on input that is not a well-formed answer
    /// (the owner logs the reason and drops it); answers that do not fit the state are ignored.
    public mutating func received(_ bytes: [UInt8], now: Double) throws(PortMapping.DecodeError) -> [Action] {
        guard bytes.count <= PCP.maxMessageLength else { throw .length(bytes.count) }
        guard let first = bytes.first else { throw .length(0) }
        if first == NATPMP.version {
            let r = try NATPMP.decodeResponse(bytes)
            return natpmpAnswer(r, now: now)
        }
        let r = try PCP.decodeMapResponse(bytes)
        return pcpAnswer(r, now: now)
    }

    private mutating func pcpAnswer(_ r: PCP.MapResponse, now: Double) -> [Action] {
        guard case .requesting(.pcp, _, _) = phase else { return [] }
        if r.result == PCP.ResultCode.unsupportedVersion.rawValue { return afterPCP("the gateway does not support PCP's version", now: now) }
        guard r.result == PCP.ResultCode.success.rawValue else {
            phase = .failed
            return [.failed("the gateway refused the PCP mapping (result \(r.result))")]
        }
        guard r.nonce == nonce, r.proto == configuration.proto.rawValue, r.internalPort == configuration.internalPort else { return [] }
        // (A renewal answered after a gateway restart is a fresh mapping: nothing more to do.)
        _ = epochWentBack(r.epoch, now: now)
        mapping = Mapping(dialect: .pcp, externalPort: r.externalPort, externalAddress: r.externalAddress, lifetime: r.lifetime)
        return finishMapping(now: now)
    }

    private mutating func natpmpAnswer(_ r: NATPMP.Response, now: Double) -> [Action] {
        switch (phase, r) {
        case (.requesting(let dialect, _, _), _) where dialect == .pcp:
            // A NAT-PMP-only gateway answers a PCP request with a NAT-PMP "unsupported version".
            return afterPCP("the gateway speaks NAT-PMP, not PCP", now: now)
        case (.requesting(.natpmp, _, _), .error(_, let result, _)), (.askingAddress, .error(_, let result, _)):
            phase = .failed
            return [.failed("the gateway refused NAT-PMP (result \(result))")]
        case (.requesting(.natpmp, _, _), .mapping(let proto, let result, let epoch, let internalPort, let externalPort, let lifetime)):
            guard result == NATPMP.ResultCode.success.rawValue else {
                phase = .failed
                return [.failed("the gateway refused the NAT-PMP mapping (result \(result))")]
            }
            guard proto == configuration.proto, internalPort == configuration.internalPort else { return [] }
            _ = epochWentBack(epoch, now: now)
            mapping = Mapping(dialect: .natpmp, externalPort: externalPort, externalAddress: mapping?.externalAddress, lifetime: lifetime)
            phase = .askingAddress(attempt: 1, sentAt: now)
            return [.send(NATPMP.externalAddressRequest())]
        case (.askingAddress, .externalAddress(let result, let epoch, let address)):
            _ = epochWentBack(epoch, now: now)
            if result == NATPMP.ResultCode.success.rawValue, address != [0, 0, 0, 0] { mapping?.externalAddress = address }
            return finishMapping(now: now)
        default:
            return []
        }
    }

    private mutating func finishMapping(now: Double) -> [Action] {
        guard let m = mapping else { return [] }
        guard m.lifetime > 0 else {
            phase = .failed
            return [.failed("the gateway granted a lifetime of 0")]
        }
        phase = .mapped(renewAt: now + Double(m.lifetime) / 2)
        return [.mapped(m)]
    }

    /// Records the gateway's epoch; true when it went backwards against our clock (a restart).
    private mutating func epochWentBack(_ epoch: UInt32, now: Double) -> Bool {
        defer { lastEpoch = (epoch, now) }
        guard let last = lastEpoch else { return false }
        // RFC 6886 §3.6: allow the gateway's clock to run 1/8 slower, less 2 s of slack.
        let elapsed = now - last.at
        return Double(epoch) + 2 < Double(last.epoch) + elapsed * 7 / 8
    }

    /// The gateway's port 5351 is closed (ICMP port unreachable): the dialect being tried is not
    /// served, so the next one is tried at once instead of after every retransmission.
    public mutating func unreachable(now: Double) -> [Action] {
        switch phase {
        case .requesting(.pcp, _, _):
            return afterPCP("the gateway does not serve PCP (port \(PortMapping.port) unreachable)", now: now)
        case .requesting, .askingAddress:
            phase = .failed
            return [.failed("the gateway does not serve \(configuration.pcp ? "PCP or NAT-PMP" : "NAT-PMP") (port \(PortMapping.port) unreachable)")]
        default:
            return []
        }
    }

    /// The gateway's announcement (NAT-PMP sends one to 224.0.0.1:5350 when its address or epoch
    /// changes; PCP an ANNOUNCE): if its epoch says it restarted, the mapping is made again.
    public mutating func gatewayAnnounced(epoch: UInt32, now: Double) -> [Action] {
        guard epochWentBack(epoch, now: now), let m = mapping, isMapped else { return [] }
        return request(m.dialect, attempt: 1, now: now)
    }
}

private func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
private func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
private func readBE16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
private func readBE32(_ b: [UInt8], _ i: Int) -> UInt32 { b[i..<i + 4].reduce(0) { $0 << 8 | UInt32($1) } }

extension PortMapping {
    /// IPv4 default routes from Linux's `/proc/net/route` text: (interface, gateway), lowest metric
    /// first. Fields are hexadecimal in host byte order (little-endian here); only routes with
    /// destination and mask 0 and the gateway flag (0x2) up (0x1) count. Lines that do not parse
    /// are skipped; at most `maxLines` are read.
    public static func defaultGateways(procNetRoute text: String, maxLines: Int = 4096) -> [(interface: String, gateway: [UInt8])] {
        var found: [(String, [UInt8], Int)] = []
        for line in text.split(separator: "\n").dropFirst().prefix(maxLines) {
            let f = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard f.count >= 8, f[1] == "00000000", f[7] == "00000000",
                  let gw = UInt32(f[2], radix: 16), gw != 0, let flags = UInt32(f[3], radix: 16), flags & 0x3 == 0x3,
                  let metric = Int(f[6]) else { continue }
            let bytes = withUnsafeBytes(of: gw.littleEndian, Array.init)
            found.append((String(f[0]), bytes, metric))
        }
        return found.sorted { $0.2 < $1.2 }.map { ($0.0, $0.1) }
    }
}
