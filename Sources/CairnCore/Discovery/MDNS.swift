/// libp2p mDNS peer discovery (`libp2p/specs/discovery/mdns.md`, as go-libp2p and kubo speak
/// it): a query for PTR `_p2p._udp.local` on 224.0.0.251:5353; each peer answers with a PTR to
/// `<peer-name>._p2p._udp.local`, a TXT record whose strings are `dnsaddr=<multiaddr>/p2p/<id>`,
/// an SRV record and A records for `<peer-name>.local` (go's resolver drops entries without an
/// address record). Only the TXT strings are believed, and only as hints: a dial authenticates.

/// A DNS message (RFC 1035) as far as mDNS discovery needs: questions and the records of every
/// section, with name compression on input. Input is bounded: 9,000 bytes (RFC 6762 §17), 64
/// entries, names of 255 bytes, 32 compression jumps.
public enum DNSMessage {
    public static let maxLength = 9000
    public static let maxEntries = 64

    public enum RecordType: UInt16, Sendable {
        case a = 1, ptr = 12, txt = 16, aaaa = 28, srv = 33, any = 255
    }

    public struct Question: Sendable, Equatable {
        public var name: String
        public var type: UInt16
        /// The class without the unicast-response bit.
        public var qclass: UInt16
        public init(name: String, type: UInt16, qclass: UInt16 = 1) {
            self.name = name
            self.type = type
            self.qclass = qclass
        }
    }

    public enum RData: Sendable, Equatable {
        case ptr(String)
        case txt([[UInt8]])
        case srv(priority: UInt16, weight: UInt16, port: UInt16, target: String)
        case a([UInt8])
        case aaaa([UInt8])
        case other(type: UInt16, [UInt8])
    }

    public struct Record: Sendable, Equatable {
        public var name: String
        public var ttl: UInt32
        public var data: RData
        public init(name: String, ttl: UInt32, data: RData) {
            self.name = name
            self.ttl = ttl
            self.data = data
        }
    }

    public struct Message: Sendable, Equatable {
        public var id: UInt16 = 0
        public var isResponse: Bool
        public var questions: [Question] = []
        /// Answers, authority and additional records together.
        public var records: [Record] = []
        public init(isResponse: Bool, questions: [Question] = [], records: [Record] = []) {
            self.isResponse = isResponse
            self.questions = questions
            self.records = records
        }
    }

    public enum DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
        case length(Int)
        case truncated
        case tooManyEntries(Int)
        case badName(String)
        case badRecord(String)

        public var description: String {
            switch self {
            case .length(let n): return "DNS message of \(n) bytes (limit \(DNSMessage.maxLength))"
            case .truncated: return "DNS message ends early"
            case .tooManyEntries(let n): return "DNS message with \(n) entries (limit \(DNSMessage.maxEntries))"
            case .badName(let why): return "bad DNS name: \(why)"
            case .badRecord(let why): return "bad DNS record: \(why)"
            }
        }
    }

    // MARK: Decoding

    public static func decode(_ b: [UInt8]) throws(DecodeError) -> Message {
        guard b.count <= maxLength else { throw .length(b.count) }
        guard b.count >= 12 else { throw .truncated }
        let id = be16(b, 0), flags = be16(b, 2)
        let counts = (1...4).map { Int(be16(b, 2 * $0 + 2)) }
        let total = counts.reduce(0, +)
        guard total <= maxEntries else { throw .tooManyEntries(total) }
        var m = Message(isResponse: flags & 0x8000 != 0)
        m.id = id
        var i = 12
        for _ in 0..<counts[0] {
            let name = try readName(b, &i)
            guard i + 4 <= b.count else { throw .truncated }
            m.questions.append(Question(name: name, type: be16(b, i), qclass: be16(b, i + 2) & 0x7fff))
            i += 4
        }
        for _ in 0..<(counts[1] + counts[2] + counts[3]) {
            let name = try readName(b, &i)
            guard i + 10 <= b.count else { throw .truncated }
            let type = be16(b, i), ttl = UInt32(be16(b, i + 4)) << 16 | UInt32(be16(b, i + 6)), length = Int(be16(b, i + 8))
            i += 10
            guard i + length <= b.count else { throw .truncated }
            let end = i + length
            let data: RData
            switch type {
            case RecordType.ptr.rawValue:
                var j = i
                data = .ptr(try readName(b, &j))
            case RecordType.txt.rawValue:
                var strings: [[UInt8]] = []
                var j = i
                while j < end {
                    let n = Int(b[j])
                    guard j + 1 + n <= end else { throw .badRecord("TXT string overruns its record") }
                    strings.append(Array(b[(j + 1)..<(j + 1 + n)]))
                    j += 1 + n
                }
                data = .txt(strings)
            case RecordType.srv.rawValue:
                guard length >= 7 else { throw .badRecord("SRV of \(length) bytes") }
                var j = i + 6
                data = .srv(priority: be16(b, i), weight: be16(b, i + 2), port: be16(b, i + 4), target: try readName(b, &j))
            case RecordType.a.rawValue:
                guard length == 4 else { throw .badRecord("A of \(length) bytes") }
                data = .a(Array(b[i..<end]))
            case RecordType.aaaa.rawValue:
                guard length == 16 else { throw .badRecord("AAAA of \(length) bytes") }
                data = .aaaa(Array(b[i..<end]))
            default:
                data = .other(type: type, Array(b[i..<end]))
            }
            m.records.append(Record(name: name, ttl: ttl, data: data))
            i = end
        }
        return m
    }

    /// A name at `i` (advancing past it), lower-cased, labels joined by dots.
    static func readName(_ b: [UInt8], _ i: inout Int) throws(DecodeError) -> String {
        var labels: [String] = []
        var j = i
        var jumps = 0
        var length = 0
        var resume: Int?
        while true {
            guard j < b.count else { throw .truncated }
            let n = Int(b[j])
            if n == 0 {
                j += 1
                break
            }
            if n & 0xc0 == 0xc0 {
                guard j + 1 < b.count else { throw .truncated }
                jumps += 1
                guard jumps <= 32 else { throw .badName("more than 32 compression jumps") }
                if resume == nil { resume = j + 2 }
                j = (n & 0x3f) << 8 | Int(b[j + 1])
                continue
            }
            guard n & 0xc0 == 0 else { throw .badName("label type \(n >> 6)") }
            guard j + 1 + n <= b.count else { throw .truncated }
            length += n + 1
            guard length <= 255 else { throw .badName("longer than 255 bytes") }
            labels.append(String(decoding: b[(j + 1)..<(j + 1 + n)], as: UTF8.self).lowercased())
            j += 1 + n
        }
        i = resume ?? j
        return labels.joined(separator: ".")
    }

    // MARK: Encoding (no compression)

    public static func encode(_ m: Message) -> [UInt8] {
        var out: [UInt8] = []
        out += put16(m.id)
        out += put16(m.isResponse ? 0x8400 : 0)  // a response is authoritative (RFC 6762 §18.4)
        out += put16(UInt16(m.questions.count))
        out += put16(m.isResponse ? UInt16(m.records.count) : 0)
        out += put16(0)
        out += put16(m.isResponse ? 0 : UInt16(m.records.count))
        for q in m.questions {
            out += name(q.name) + put16(q.type) + put16(q.qclass)
        }
        for r in m.records {
            let (type, rdata): (UInt16, [UInt8])
            switch r.data {
            case .ptr(let n): (type, rdata) = (RecordType.ptr.rawValue, name(n))
            case .txt(let strings): (type, rdata) = (RecordType.txt.rawValue, strings.flatMap { [UInt8($0.count)] + $0 })
            case .srv(let p, let w, let port, let t): (type, rdata) = (RecordType.srv.rawValue, put16(p) + put16(w) + put16(port) + name(t))
            case .a(let ip): (type, rdata) = (RecordType.a.rawValue, ip)
            case .aaaa(let ip): (type, rdata) = (RecordType.aaaa.rawValue, ip)
            case .other(let t, let d): (type, rdata) = (t, d)
            }
            out += name(r.name) + put16(type) + put16(1) + put16(UInt16(r.ttl >> 16)) + put16(UInt16(r.ttl & 0xffff))
            out += put16(UInt16(rdata.count)) + rdata
        }
        return out
    }

    static func name(_ dotted: String) -> [UInt8] {
        var out: [UInt8] = []
        for label in dotted.split(separator: ".") {
            let bytes = Array(label.utf8.prefix(63))
            out += [UInt8(bytes.count)] + bytes
        }
        return out + [0]
    }

    static func be16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
    static func put16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
}

/// The discovery logic: what to send and what a received message means. Sans-I/O: the owner
/// sends `.send` payloads to 224.0.0.251:5353 from its port-5353 socket, feeds back every
/// datagram, and ticks at `nextDeadline`. Time is seconds on any monotonic clock.
public struct MDNSDiscovery: Sendable {
    public static let serviceName = "_p2p._udp.local"
    public static let multicastIPv4: [UInt8] = [224, 0, 0, 251]
    public static let port: UInt16 = 5353
    public static let dnsaddrPrefix = "dnsaddr="
    /// At most this many peers are taken from one message, and this many addresses per peer.
    public static let maxPeersPerMessage = 16
    public static let maxAddressesPerPeer = 32

    public struct Configuration: Sendable {
        /// Seconds between queries: the first entries, then the last one repeats.
        public var querySchedule: [Double] = [1, 3, 10, 60]
        public var ttl: UInt32 = 120
        /// At most one answer this often (RFC 6762 §6: one second per record).
        public var minAnswerInterval = 1.0
        public init() {}
    }

    public enum Action: Sendable, Equatable {
        case send([UInt8])
        /// A peer announced these addresses (hints: dial to verify).
        case discovered(PeerID, [Multiaddr])
    }

    public let configuration: Configuration
    public let localPeer: PeerID
    /// Our instance name: random, 32 to 63 characters of [a-z0-9].
    public let peerName: String
    public private(set) var addresses: [Multiaddr] = []
    /// The IPs of our A/AAAA records.
    var ips: [[UInt8]] = []
    var queriesSent = 0
    var nextQueryAt: Double?
    var lastAnswerAt: Double?

    public init(localPeer: PeerID, peerName: String, configuration: Configuration = Configuration()) {
        self.localPeer = localPeer
        self.peerName = peerName
        self.configuration = configuration
    }

    /// A name as go-libp2p makes one: 32 to 63 characters of [a-z0-9] from `random`.
    public static func randomPeerName<G: RandomNumberGenerator>(using random: inout G) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        let n = Int.random(in: 32...63, using: &random)
        return String((0..<n).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &random)] })
    }

    /// The addresses to announce (TCP/IP ones without a relay; `/p2p/<us>` is appended).
    public mutating func setAddresses(_ addrs: [Multiaddr]) {
        var out: [Multiaddr] = []
        var ips: [[UInt8]] = []
        for a in addrs where !a.isRelayed {
            guard let (ip, _) = a.tcpEndpoint, IPScope(ip) != .unspecified else { continue }
            let full = a.withoutTrailingPeerID.appending(.p2p(localPeer))
            // A TXT string is at most 255 bytes.
            guard (Self.dnsaddrPrefix + full.description).utf8.count <= 255, !out.contains(full) else { continue }
            out.append(full)
            if !ips.contains(ip) { ips.append(ip) }
        }
        addresses = out
        self.ips = ips
    }

    public mutating func start(now: Double) -> [Action] {
        queriesSent = 0
        return sendQuery(now: now)
    }

    private mutating func sendQuery(now: Double) -> [Action] {
        let s = configuration.querySchedule
        nextQueryAt = s.isEmpty ? nil : now + s[min(queriesSent, s.count - 1)]
        queriesSent += 1
        return [.send(Self.query())]
    }

    public func nextDeadline() -> Double? { nextQueryAt }

    public mutating func tick(now: Double) -> [Action] {
        guard let at = nextQueryAt, now >= at else { return [] }
        return sendQuery(now: now)
    }

    public static func query() -> [UInt8] {
        DNSMessage.encode(.init(isResponse: false, questions: [.init(name: serviceName, type: DNSMessage.RecordType.ptr.rawValue)]))
    }

    /// Our answer: PTR, then TXT (every address), SRV and A/AAAA for `<peer-name>.local`.
    public func response() -> [UInt8] {
        let instance = peerName + "." + Self.serviceName
        let host = peerName + ".local"
        let ttl = configuration.ttl
        var records: [DNSMessage.Record] = [
            .init(name: Self.serviceName, ttl: ttl, data: .ptr(instance)),
            .init(name: instance, ttl: ttl, data: .txt(addresses.map { Array((Self.dnsaddrPrefix + $0.description).utf8) })),
            .init(name: instance, ttl: ttl, data: .srv(priority: 0, weight: 0, port: addresses.first?.tcpEndpoint?.port ?? 4001, target: host)),
        ]
        for ip in ips {
            records.append(.init(name: host, ttl: ttl, data: ip.count == 4 ? .a(ip) : .aaaa(ip)))
        }
        return DNSMessage.encode(.init(isResponse: true, records: records))
    }

    /// A datagram from the multicast group. Throws on malformed input (the owner logs and drops
    /// it); a query for our service is answered (at most once per `minAnswerInterval`); a
    /// response's dnsaddr strings are grouped by peer (ourselves left out).
    public mutating func received(_ bytes: [UInt8], now: Double) throws(DNSMessage.DecodeError) -> [Action] {
        let m = try DNSMessage.decode(bytes)
        if !m.isResponse {
            let asked = m.questions.contains {
                $0.name == Self.serviceName && ($0.type == DNSMessage.RecordType.ptr.rawValue || $0.type == DNSMessage.RecordType.any.rawValue)
            }
            guard asked, !addresses.isEmpty else { return [] }
            if let last = lastAnswerAt, now - last < configuration.minAnswerInterval { return [] }
            lastAnswerAt = now
            return [.send(response())]
        }
        // Instances of our service named in this response (its PTR records).
        let instances = Set(m.records.compactMap { r -> String? in
            guard r.name == Self.serviceName, case .ptr(let target) = r.data, r.ttl > 0 else { return nil }
            return target
        })
        var found: [(PeerID, [Multiaddr])] = []
        for r in m.records where instances.contains(r.name) {
            guard case .txt(let strings) = r.data else { continue }
            for s in strings {
                let text = String(decoding: s, as: UTF8.self)
                guard text.hasPrefix(Self.dnsaddrPrefix), let a = try? Multiaddr(String(text.dropFirst(Self.dnsaddrPrefix.count))),
                      case .p2p(let peer)? = a.components.last, peer != localPeer, !a.isRelayed else { continue }
                let bare = a.withoutTrailingPeerID
                if let k = found.firstIndex(where: { $0.0 == peer }) {
                    if found[k].1.count < Self.maxAddressesPerPeer, !found[k].1.contains(bare) { found[k].1.append(bare) }
                } else if found.count < Self.maxPeersPerMessage {
                    found.append((peer, [bare]))
                }
            }
        }
        return found.map { .discovered($0.0, $0.1) }
    }
}
