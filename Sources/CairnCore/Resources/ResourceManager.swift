/// The whole node's resource accounting and limits, in the spirit of go-libp2p's resource
/// manager (`p2p/host/resource-manager`), as a sans-I/O value: the swarm asks before it spends
/// (a connection, a handshake, a stream, buffer memory) and tells when it releases; this answers
/// with a grant or a refusal that names the scope and the limit hit. Nothing is held that a later
/// `close…` call does not release.
///
/// Scopes, from the outside in:
/// - **system**: every connection and stream of the node, and the buffer memory they may hold;
/// - **transient**: connections still in their handshake (no peer yet) and streams still
///   negotiating their protocol (no protocol yet);
/// - **IP**: connections per remote address (an IPv4 address, an IPv6 /56), checked on accept
///   before any cryptography;
/// - **peer**: connections, streams and memory per authenticated peer;
/// - **protocol** and **service**: inbound streams per protocol and per service (a group of
///   protocols a service declares, such as identify and identify push), overall and per peer.
///
/// Memory is accounted as what a peer can make us buffer: each connection reserves
/// `connectionMemory` (its read and frame buffers) and each stream `streamMemory` (its Yamux
/// receive window: a peer cannot send more than the window before we read).
///
/// Allow-listed networks and peers are tracked but never refused and never count against a
/// limit: an operator's own peers always get in.
public struct ResourceManager: Sendable {
    public struct StreamLimit: Sendable, Equatable, Codable {
        public var total: Int
        public var perPeer: Int
        public init(total: Int, perPeer: Int) {
            self.total = total
            self.perPeer = perPeer
        }
    }

    public struct Limits: Sendable, Equatable {
        public var inboundConnections = 256
        public var outboundConnections = 256
        /// Connections in their security handshake at once (the transient scope).
        public var inboundHandshakes = 64
        public var outboundHandshakes = 64
        /// Connections (handshaking or established) from one IPv4 address or IPv6 /56.
        public var connectionsPerIP = 16
        public var connectionsPerPeer = 8
        public var inboundStreams = 2048
        public var outboundStreams = 2048
        /// Inbound streams whose protocol is not agreed yet (the transient scope; our own
        /// outbound streams are bounded by the outbound limits).
        public var negotiatingStreams = 256
        public var inboundStreamsPerPeer = 256
        public var outboundStreamsPerPeer = 256
        public var negotiatingStreamsPerPeer = 32
        /// Inbound streams per protocol, unless `protocols` names it.
        public var protocolDefault = StreamLimit(total: 1024, perPeer: 64)
        public var protocols: [String: StreamLimit] = [:]
        /// Inbound streams per service, unless `services` names it.
        public var serviceDefault = StreamLimit(total: 1024, perPeer: 64)
        public var services: [String: StreamLimit] = [
            "identify": StreamLimit(total: 256, perPeer: 8),
            "ping": StreamLimit(total: 256, perPeer: 32),
            "autonat": StreamLimit(total: 64, perPeer: 2),
            "relay": StreamLimit(total: 256, perPeer: 16),
            "holepunch": StreamLimit(total: 64, perPeer: 4),
            "dht": StreamLimit(total: 512, perPeer: 32),
        ]
        /// Buffer memory of the whole node and of one peer, in bytes.
        public var memory = 512 << 20
        public var memoryPerPeer = 96 << 20
        /// Reserved by each connection and each stream.
        public var connectionMemory = 128 << 10
        public var streamMemory = 256 << 10
        /// Networks and peers never refused (see `AllowEntry`).
        public var allow: [AllowEntry] = []

        public init() {}

        /// No limit anywhere (tests and tools that are their own only user).
        public static var unlimited: Limits {
            var l = Limits()
            let big = Int.max / 4
            l.inboundConnections = big; l.outboundConnections = big
            l.inboundHandshakes = big; l.outboundHandshakes = big
            l.connectionsPerIP = big; l.connectionsPerPeer = big
            l.inboundStreams = big; l.outboundStreams = big; l.negotiatingStreams = big
            l.inboundStreamsPerPeer = big; l.outboundStreamsPerPeer = big; l.negotiatingStreamsPerPeer = big
            l.protocolDefault = StreamLimit(total: big, perPeer: big)
            l.serviceDefault = StreamLimit(total: big, perPeer: big)
            l.services = [:]
            l.memory = big; l.memoryPerPeer = big
            return l
        }

        func protocolLimit(_ p: String) -> StreamLimit { protocols[p] ?? protocolDefault }
        func serviceLimit(_ s: String) -> StreamLimit { services[s] ?? serviceDefault }
    }

    /// An allow-list entry: a network (`127.0.0.0/8`, `10.1.2.3`, `fd00::/8`) or a peer ID.
    public enum AllowEntry: Sendable, Equatable, CustomStringConvertible {
        case network(address: [UInt8], prefixLength: Int)
        case peer(PeerID)

        public init?(_ text: String) {
            if let id = try? PeerID(string: text) {
                self = .peer(id)
                return
            }
            let parts = text.split(separator: "/", omittingEmptySubsequences: false)
            let host = String(parts[0])
            guard parts.count <= 2, let ip = IPAddressText.parse4(host) ?? IPAddressText.parse6(host) else { return nil }
            let bits = ip.count * 8
            if parts.count == 2 {
                guard let n = Int(parts[1]), (0...bits).contains(n) else { return nil }
                self = .network(address: ip, prefixLength: n)
            } else {
                self = .network(address: ip, prefixLength: bits)
            }
        }

        public func contains(_ ip: [UInt8]) -> Bool {
            guard case .network(let net, let n) = self, net.count == ip.count else { return false }
            var left = n
            for i in 0..<ip.count where left > 0 {
                let take = min(8, left)
                let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
                if ip[i] & mask != net[i] & mask { return false }
                left -= take
            }
            return true
        }

        public var description: String {
            switch self {
            case .peer(let p): return p.description
            case .network(let a, let n): return "\(IPAddressText.format(a))/\(n)"
            }
        }
    }

    public enum Scope: String, Sendable, Hashable, CaseIterable {
        case system, transient, ip, peer, `protocol`, service
    }

    public enum Limit: String, Sendable, Hashable, CaseIterable {
        case inboundConnections = "inbound_connections"
        case outboundConnections = "outbound_connections"
        case inboundHandshakes = "inbound_handshakes"
        case outboundHandshakes = "outbound_handshakes"
        case connections
        case inboundStreams = "inbound_streams"
        case outboundStreams = "outbound_streams"
        case negotiatingStreams = "negotiating_streams"
        case streams
        case memory
    }

    /// Why something was refused: the scope whose limit it would exceed, and which limit.
    public struct Refusal: Error, Sendable, Hashable, CustomStringConvertible {
        public let scope: Scope
        public let limit: Limit
        /// The protocol or service, for those scopes.
        public let name: String?

        public init(scope: Scope, limit: Limit, name: String? = nil) {
            self.scope = scope
            self.limit = limit
            self.name = name
        }

        public var description: String {
            "\(scope.rawValue)\(name.map { " \($0)" } ?? "") limit on \(limit.rawValue.replacingOccurrences(of: "_", with: " ")) reached"
        }
    }

    public enum Direction: String, Sendable { case inbound, outbound }

    public typealias ConnectionID = UInt64
    public typealias StreamID = UInt64

    /// What is in use now (exempt = allow-listed, not counted against limits).
    public struct Usage: Sendable, Equatable {
        public var inboundConnections = 0
        public var outboundConnections = 0
        public var inboundHandshakes = 0
        public var outboundHandshakes = 0
        public var inboundStreams = 0
        public var outboundStreams = 0
        public var negotiatingStreams = 0
        public var memory = 0
        public var exemptConnections = 0
        public var exemptStreams = 0
        /// Peers and IP keys with anything in use.
        public var peers = 0
        public var ips = 0
        public init() {}
    }

    private struct Conn {
        let direction: Direction
        let ipKey: [UInt8]?
        var peer: PeerID?
        var exempt: Bool
        var handshaking = true
        var streams: Set<StreamID> = []
    }

    private struct Strm {
        let connection: ConnectionID
        let direction: Direction
        var protocolID: String?
        var service: String?
    }

    private struct PeerUsage {
        var connections = 0
        var inboundStreams = 0
        var outboundStreams = 0
        var negotiating = 0
        var memory = 0
        var isEmpty: Bool { connections == 0 && inboundStreams == 0 && outboundStreams == 0 && negotiating == 0 && memory == 0 }
    }

    private struct NamePeer: Hashable {
        let name: String
        let peer: PeerID
    }

    public var limits: Limits
    public private(set) var usage = Usage()
    /// Refusals so far, by scope and limit.
    public private(set) var refusals: [Refusal: Int] = [:]
    private var connections: [ConnectionID: Conn] = [:]
    private var streams: [StreamID: Strm] = [:]
    private var perIP: [[UInt8]: Int] = [:]
    private var perPeer: [PeerID: PeerUsage] = [:]
    private var perProtocol: [String: Int] = [:]
    private var perProtocolPeer: [NamePeer: Int] = [:]
    private var perService: [String: Int] = [:]
    private var perServicePeer: [NamePeer: Int] = [:]
    private var nextID: UInt64 = 1

    public init(limits: Limits = Limits()) { self.limits = limits }

    /// The per-IP key: an IPv4 address (IPv4-mapped IPv6 included), else the IPv6 /56.
    public static func ipKey(_ ip: [UInt8]) -> [UInt8] {
        if ip.count == 16, ip[0..<10].allSatisfy({ $0 == 0 }), ip[10] == 0xFF, ip[11] == 0xFF { return Array(ip[12...]) }
        return ip.count == 16 ? Array(ip.prefix(7)) : ip
    }

    public func isAllowed(ip: [UInt8]) -> Bool {
        let v4mapped = Self.ipKey(ip).count == 4 && ip.count == 16 ? Self.ipKey(ip) : nil
        return limits.allow.contains { $0.contains(ip) || (v4mapped.map($0.contains) ?? false) }
    }

    public func isAllowed(peer: PeerID) -> Bool { limits.allow.contains(.peer(peer)) }

    // MARK: Connections

    /// A new connection (inbound: just accepted, before any cryptography; outbound: before the
    /// dial). `ip` is the remote address (nil for a relayed circuit: the relay's limits apply).
    public mutating func openConnection(_ direction: Direction, ip: [UInt8]?) -> Result<ConnectionID, Refusal> {
        let exempt = ip.map(isAllowed(ip:)) ?? false
        let key = ip.map(Self.ipKey)
        if !exempt {
            let inbound = direction == .inbound
            let (count, limit) = inbound ? (usage.inboundConnections, limits.inboundConnections) : (usage.outboundConnections, limits.outboundConnections)
            if count >= limit { return refuse(.system, inbound ? .inboundConnections : .outboundConnections) }
            let (hs, hsLimit) = inbound ? (usage.inboundHandshakes, limits.inboundHandshakes) : (usage.outboundHandshakes, limits.outboundHandshakes)
            if hs >= hsLimit { return refuse(.transient, inbound ? .inboundHandshakes : .outboundHandshakes) }
            if let key, perIP[key, default: 0] >= limits.connectionsPerIP { return refuse(.ip, .connections) }
            if usage.memory + limits.connectionMemory > limits.memory { return refuse(.system, .memory) }
        }
        let id = nextID
        nextID += 1
        connections[id] = Conn(direction: direction, ipKey: key, peer: nil, exempt: exempt)
        if exempt {
            usage.exemptConnections += 1
        } else {
            if direction == .inbound {
                usage.inboundConnections += 1
                usage.inboundHandshakes += 1
            } else {
                usage.outboundConnections += 1
                usage.outboundHandshakes += 1
            }
            if let key { perIP[key, default: 0] += 1 }
            usage.memory += limits.connectionMemory
        }
        updateCounts()
        return .success(id)
    }

    /// The handshake authenticated `peer`: the connection leaves the transient scope for the
    /// peer's. On a refusal nothing changes; the caller closes the connection.
    public mutating func establish(_ id: ConnectionID, peer: PeerID) -> Result<Void, Refusal> {
        guard var c = connections[id], c.handshaking else { return .success(()) }
        if !c.exempt && isAllowed(peer: peer) {
            // An allow-listed peer: what it held so far no longer counts.
            releaseCounted(c)
            c.exempt = true
            usage.exemptConnections += 1
        }
        if !c.exempt {
            let p = perPeer[peer] ?? PeerUsage()
            if p.connections >= limits.connectionsPerPeer { return refuse(.peer, .connections) }
            if p.memory + limits.connectionMemory > limits.memoryPerPeer { return refuse(.peer, .memory) }
            if c.direction == .inbound { usage.inboundHandshakes -= 1 } else { usage.outboundHandshakes -= 1 }
            perPeer[peer, default: PeerUsage()].connections += 1
            perPeer[peer, default: PeerUsage()].memory += limits.connectionMemory
        }
        c.handshaking = false
        c.peer = peer
        connections[id] = c
        updateCounts()
        return .success(())
    }

    /// The connection closed (at any stage): everything it and its streams held is released.
    public mutating func closeConnection(_ id: ConnectionID) {
        guard let c = connections[id] else { return }
        for s in c.streams { closeStream(s) }
        connections[id] = nil
        if c.exempt { usage.exemptConnections -= 1 } else { releaseCounted(c) }
        updateCounts()
    }

    private mutating func releaseCounted(_ c: Conn) {
        if c.direction == .inbound { usage.inboundConnections -= 1 } else { usage.outboundConnections -= 1 }
        if c.handshaking {
            if c.direction == .inbound { usage.inboundHandshakes -= 1 } else { usage.outboundHandshakes -= 1 }
        } else if let peer = c.peer {
            perPeer[peer]?.connections -= 1
            perPeer[peer]?.memory -= limits.connectionMemory
            if perPeer[peer]?.isEmpty == true { perPeer[peer] = nil }
        }
        if let key = c.ipKey {
            perIP[key, default: 1] -= 1
            if perIP[key] == 0 { perIP[key] = nil }
        }
        usage.memory -= limits.connectionMemory
    }

    // MARK: Streams

    /// A new stream on an established connection (inbound: the peer's SYN, before negotiation;
    /// outbound: before we open it). It starts in the transient scope until `setProtocol`.
    public mutating func openStream(on connection: ConnectionID, _ direction: Direction) -> Result<StreamID, Refusal> {
        guard let c = connections[connection] else { return refuse(.system, .streams) }
        if !c.exempt, let peer = c.peer {
            let p = perPeer[peer] ?? PeerUsage()
            let inbound = direction == .inbound
            if inbound ? usage.inboundStreams >= limits.inboundStreams : usage.outboundStreams >= limits.outboundStreams {
                return refuse(.system, inbound ? .inboundStreams : .outboundStreams)
            }
            if inbound, usage.negotiatingStreams >= limits.negotiatingStreams { return refuse(.transient, .negotiatingStreams) }
            if inbound ? p.inboundStreams >= limits.inboundStreamsPerPeer : p.outboundStreams >= limits.outboundStreamsPerPeer {
                return refuse(.peer, inbound ? .inboundStreams : .outboundStreams)
            }
            if inbound, p.negotiating >= limits.negotiatingStreamsPerPeer { return refuse(.peer, .negotiatingStreams) }
            if usage.memory + limits.streamMemory > limits.memory { return refuse(.system, .memory) }
            if p.memory + limits.streamMemory > limits.memoryPerPeer { return refuse(.peer, .memory) }
        }
        let id = nextID
        nextID += 1
        streams[id] = Strm(connection: connection, direction: direction)
        connections[connection]?.streams.insert(id)
        if c.exempt {
            usage.exemptStreams += 1
        } else {
            if direction == .inbound {
                usage.inboundStreams += 1
                usage.negotiatingStreams += 1
            } else {
                usage.outboundStreams += 1
            }
            usage.memory += limits.streamMemory
            if let peer = c.peer {
                if direction == .inbound {
                    perPeer[peer, default: PeerUsage()].inboundStreams += 1
                    perPeer[peer, default: PeerUsage()].negotiating += 1
                } else {
                    perPeer[peer, default: PeerUsage()].outboundStreams += 1
                }
                perPeer[peer, default: PeerUsage()].memory += limits.streamMemory
            }
        }
        return .success(id)
    }

    /// The stream agreed on `protocolID` (served by `service`, if the handler declared one): it
    /// leaves the transient scope. Inbound streams are checked against the protocol's and the
    /// service's limits; on a refusal nothing changes and the caller resets the stream.
    public mutating func setProtocol(_ id: StreamID, _ protocolID: String, service: String? = nil) -> Result<Void, Refusal> {
        guard var s = streams[id], s.protocolID == nil, let c = connections[s.connection] else { return .success(()) }
        let peer = c.peer
        if !c.exempt, s.direction == .inbound {
            let pl = limits.protocolLimit(protocolID)
            if perProtocol[protocolID, default: 0] >= pl.total { return refuse(.protocol, .inboundStreams, name: protocolID) }
            if let peer, perProtocolPeer[NamePeer(name: protocolID, peer: peer), default: 0] >= pl.perPeer {
                return refuse(.protocol, .inboundStreams, name: protocolID)
            }
            if let service {
                let sl = limits.serviceLimit(service)
                if perService[service, default: 0] >= sl.total { return refuse(.service, .inboundStreams, name: service) }
                if let peer, perServicePeer[NamePeer(name: service, peer: peer), default: 0] >= sl.perPeer {
                    return refuse(.service, .inboundStreams, name: service)
                }
            }
        }
        s.protocolID = protocolID
        s.service = service
        streams[id] = s
        if !c.exempt, s.direction == .inbound {
            usage.negotiatingStreams -= 1
            if let peer { perPeer[peer]?.negotiating -= 1 }
            do {
                perProtocol[protocolID, default: 0] += 1
                if let peer { perProtocolPeer[NamePeer(name: protocolID, peer: peer), default: 0] += 1 }
                if let service {
                    perService[service, default: 0] += 1
                    if let peer { perServicePeer[NamePeer(name: service, peer: peer), default: 0] += 1 }
                }
            }
        }
        return .success(())
    }

    public mutating func closeStream(_ id: StreamID) {
        guard let s = streams.removeValue(forKey: id), let c = connections[s.connection] else { return }
        connections[s.connection]?.streams.remove(id)
        if c.exempt {
            usage.exemptStreams -= 1
            return
        }
        if s.direction == .inbound { usage.inboundStreams -= 1 } else { usage.outboundStreams -= 1 }
        usage.memory -= limits.streamMemory
        let negotiating = s.direction == .inbound && s.protocolID == nil
        if negotiating { usage.negotiatingStreams -= 1 }
        if let peer = c.peer {
            if s.direction == .inbound { perPeer[peer]?.inboundStreams -= 1 } else { perPeer[peer]?.outboundStreams -= 1 }
            if negotiating { perPeer[peer]?.negotiating -= 1 }
            perPeer[peer]?.memory -= limits.streamMemory
            if perPeer[peer]?.isEmpty == true { perPeer[peer] = nil }
        }
        if s.direction == .inbound, let p = s.protocolID {
            let peer = c.peer
            Self.decrement(&perProtocol, p)
            if let peer { Self.decrement(&perProtocolPeer, NamePeer(name: p, peer: peer)) }
            if let svc = s.service {
                Self.decrement(&perService, svc)
                if let peer { Self.decrement(&perServicePeer, NamePeer(name: svc, peer: peer)) }
            }
        }
    }

    // MARK: Reading

    /// Connections (handshaking or established, not allow-listed) from `ip`'s key now.
    public func connections(fromIP ip: [UInt8]) -> Int { perIP[Self.ipKey(ip)] ?? 0 }
    public func connections(of peer: PeerID) -> Int { perPeer[peer]?.connections ?? 0 }
    public func inboundStreams(of peer: PeerID) -> Int { perPeer[peer]?.inboundStreams ?? 0 }
    public func memory(of peer: PeerID) -> Int { perPeer[peer]?.memory ?? 0 }
    /// Inbound streams on `protocolID` now.
    public func inboundStreams(onProtocol protocolID: String) -> Int { perProtocol[protocolID] ?? 0 }
    public func inboundStreams(onService service: String) -> Int { perService[service] ?? 0 }
    /// Open streams by protocol (negotiating ones under "?"), both directions, for metrics.
    public var streamsByProtocol: [String: Int] {
        var out: [String: Int] = [:]
        for s in streams.values { out[s.protocolID ?? "?", default: 0] += 1 }
        return out
    }

    // MARK: Internals

    private mutating func updateCounts() {
        usage.peers = perPeer.count
        usage.ips = perIP.count
    }

    private static func decrement<K: Hashable>(_ d: inout [K: Int], _ k: K) {
        guard let v = d[k] else { return }
        d[k] = v <= 1 ? nil : v - 1
    }

    private mutating func refuse<T>(_ scope: Scope, _ limit: Limit, name: String? = nil) -> Result<T, Refusal> {
        let r = Refusal(scope: scope, limit: limit, name: name)
        refusals[r, default: 0] += 1
        return .failure(r)
    }
}
