import Foundation

/// IP address classes that matter for address inference.
public enum IPScope: Sendable, Equatable {
    case loopback, privateRange, linkLocal, unspecified, publicRange

    public init(_ ip: [UInt8]) {
        if ip.allSatisfy({ $0 == 0 }) { self = .unspecified; return }
        if ip.count == 4 {
            switch (ip[0], ip[1]) {
            case (127, _): self = .loopback
            case (10, _), (192, 168), (100, 64...127): self = .privateRange
            case (172, 16...31): self = .privateRange
            case (169, 254): self = .linkLocal
            default: self = .publicRange
            }
            return
        }
        if ip == [UInt8](repeating: 0, count: 15) + [1] { self = .loopback; return }
        if ip[0] == 0xfe && ip[1] & 0xc0 == 0x80 { self = .linkLocal; return }
        if ip[0] & 0xfe == 0xfc { self = .privateRange; return }
        if Array(ip.prefix(12)) == [UInt8](repeating: 0, count: 10) + [0xff, 0xff] { self = IPScope(Array(ip.suffix(4))); return }
        self = .publicRange
    }

    public var isPublic: Bool { self == .publicRange }
}

/// Who counts as one observer: an IPv4 address, or an IPv6 /56 — never a peer ID, so many
/// identities on one host vote once.
public struct ObserverGroup: Hashable, Sendable, CustomStringConvertible {
    let prefix: [UInt8]

    public init(ip: [UInt8]) { prefix = ip.count == 4 ? ip : Array(ip.prefix(7)) }

    public var description: String {
        prefix.count == 4 ? IPAddressText.format(prefix) : IPAddressText.format(prefix + [UInt8](repeating: 0, count: 9)) + "/56"
    }
}

/// Observed-address voting (identify's observedAddr): an external address is adopted once at
/// least `minObservers` distinct observers agree within `window`; at most `maxPerLocalAddress`
/// external addresses per local address; an observation dies with its connection or when it ages
/// out. Sans-I/O: the owner reports observations and closed connections, with the time.
public struct ObservedAddressBook: Sendable {
    public struct Configuration: Sendable {
        public var minObservers = 4
        public var window: TimeInterval = 600
        public var maxPerLocalAddress = 3
        public init() {}
    }

    public enum Rejection: Error, Equatable, Sendable, CustomStringConvertible {
        /// Not /ip4|ip6/…/tcp/… (identify), or not …/udp/… (STUN).
        case notTCP
        case unspecified
        case loopback
        case portZero
        case wrongFamily
        case privateObserverForPublicAddress
        case relayed

        public var description: String {
            switch self {
            case .notTCP: return "observed address is not /ip4|ip6/…/tcp/…"
            case .unspecified: return "observed address is unspecified (0.0.0.0 or ::)"
            case .loopback: return "observed address is loopback"
            case .portZero: return "observed port is 0"
            case .wrongFamily: return "observed address family differs from the connection's"
            case .privateObserverForPublicAddress: return "an observer on a private or loopback address cannot vote for a public address"
            case .relayed: return "observations over relayed connections do not count"
            }
        }
    }

    public struct Vote: Sendable, Equatable {
        public let connection: UInt64
        public let observer: ObserverGroup
        public let observerAddress: Multiaddr
        public let local: Multiaddr
        public let observed: Multiaddr
        public let at: Date
        /// Whether we dialed the observer (outbound connection): for mapping classification.
        public let outbound: Bool
    }

    public let configuration: Configuration
    public private(set) var votes: [UInt64: Vote] = [:]
    public private(set) var rejected: [Rejection: Int] = [:]

    public init(configuration: Configuration = Configuration()) { self.configuration = configuration }

    /// Records what the peer on `connection` (whose address is `remote`) says it sees of us
    /// (`observed`), on a connection whose local end is `local`.
    @discardableResult
    public mutating func record(connection: UInt64, local: Multiaddr, remote: Multiaddr, observed: Multiaddr,
                                outbound: Bool, relayed: Bool = false, now: Date) -> Rejection? {
        let verdict = check(local: local, remote: remote, observed: observed, relayed: relayed)
        if let verdict {
            rejected[verdict, default: 0] += 1
            return verdict
        }
        let (rip, _) = remote.tcpEndpoint!
        votes[connection] = Vote(connection: connection, observer: ObserverGroup(ip: rip), observerAddress: remote,
                                 local: local.withoutTrailingPeerID, observed: observed.withoutTrailingPeerID, at: now, outbound: outbound)
        return nil
    }

    func check(local: Multiaddr, remote: Multiaddr, observed: Multiaddr, relayed: Bool) -> Rejection? {
        if relayed || observed.isRelayed { return .relayed }
        guard let (oip, oport) = observed.tcpEndpoint, let (rip, _) = remote.tcpEndpoint, let (lip, _) = local.tcpEndpoint else { return .notTCP }
        let scope = IPScope(oip)
        if scope == .unspecified { return .unspecified }
        if scope == .loopback { return .loopback }
        if oport == 0 { return .portZero }
        if oip.count != lip.count || oip.count != rip.count { return .wrongFamily }
        if scope.isPublic && !IPScope(rip).isPublic { return .privateObserverForPublicAddress }
        return nil
    }

    /// Records a STUN answer: `server` (a peer's UDP STUN port) mapped our UDP socket `local` to
    /// `mapped`. A STUN vote is one more observer, counted like identify's (by IP or /56), for the
    /// UDP address; it lives until the window passes. `id` must be distinct from connection IDs
    /// (use `ObservedAddressBook.stunVoteID`).
    @discardableResult
    public mutating func recordSTUN(id: UInt64, local: Multiaddr, server: Multiaddr, mapped: Multiaddr, now: Date) -> Rejection? {
        let verdict = checkUDP(local: local, server: server, mapped: mapped)
        if let verdict {
            rejected[verdict, default: 0] += 1
            return verdict
        }
        let (sip, _) = server.udpEndpoint!
        votes[id] = Vote(connection: id, observer: ObserverGroup(ip: sip), observerAddress: server, local: local,
                         observed: mapped, at: now, outbound: true)
        return nil
    }

    /// STUN vote IDs live in the upper half of the ID space; connection IDs count up from 1.
    public static func stunVoteID(_ n: UInt64) -> UInt64 { (1 << 63) | n }

    func checkUDP(local: Multiaddr, server: Multiaddr, mapped: Multiaddr) -> Rejection? {
        guard let (mip, mport) = mapped.udpEndpoint, let (sip, _) = server.udpEndpoint, let (lip, _) = local.udpEndpoint else { return .notTCP }
        let scope = IPScope(mip)
        if scope == .unspecified { return .unspecified }
        if scope == .loopback { return .loopback }
        if mport == 0 { return .portZero }
        if mip.count != lip.count || mip.count != sip.count { return .wrongFamily }
        if scope.isPublic && !IPScope(sip).isPublic { return .privateObserverForPublicAddress }
        return nil
    }

    public mutating func connectionClosed(_ connection: UInt64) { votes[connection] = nil }

    /// Drops observations older than the window.
    public mutating func expire(now: Date) {
        votes = votes.filter { now.timeIntervalSince($0.value.at) < configuration.window }
    }

    /// The adopted external addresses: per local address, the observed addresses that at least
    /// `minObservers` distinct observers agree on, most-supported first, at most
    /// `maxPerLocalAddress` of them.
    public func externalAddresses(now: Date) -> [Multiaddr] {
        var out: [Multiaddr] = []
        for (_, vs) in Dictionary(grouping: liveVotes(now), by: { $0.local }).sorted(by: { $0.key.description < $1.key.description }) {
            let support = Dictionary(grouping: vs, by: { $0.observed }).mapValues { Set($0.map(\.observer)).count }
            let adopted = support.filter { $0.value >= configuration.minObservers }
                .sorted { ($0.value, $1.key.description) > ($1.value, $0.key.description) }
                .prefix(configuration.maxPerLocalAddress)
            out += adopted.map(\.key)
        }
        return out
    }

    public func liveVotes(_ now: Date) -> [Vote] {
        votes.values.filter { now.timeIntervalSince($0.at) < configuration.window }.sorted { $0.at < $1.at }
    }
}

/// What the observations say about the NAT in front of us.
public struct NATClassification: Sendable, Equatable {
    public enum Mapping: String, Sendable { case unknown, endpointIndependent = "endpoint-independent", endpointDependent = "endpoint-dependent" }
    public enum PortAllocation: String, Sendable { case unknown, preserving = "port-preserving", sequential, random }
    public enum Filtering: String, Sendable { case unknown, endpointIndependent = "endpoint-independent" }

    public var mapping: Mapping = .unknown
    public var portAllocation: PortAllocation = .unknown
    public var filtering: Filtering = .unknown
    /// Distinct observers the mapping verdict rests on.
    public var observers = 0

    /// Classifies from the votes on outbound connections (where we chose the local port).
    /// Needs `minObservers` distinct observers; mapping is endpoint-independent when they all
    /// (but at most one outlier per 4) see the same external address for the same local one.
    public static func classify(votes: [ObservedAddressBook.Vote], minObservers: Int = 4, inboundFromUncontacted: Bool = false) -> NATClassification {
        var c = NATClassification()
        if inboundFromUncontacted { c.filtering = .endpointIndependent }
        let outbound = votes.filter(\.outbound)
        // The local address with the most votes; on a tie, TCP (identify) before UDP (STUN).
        let groups = Dictionary(grouping: outbound, by: { $0.local }).sorted {
            ($0.value.count, $0.key.tcpEndpoint != nil ? 1 : 0, $1.key.description) > ($1.value.count, $1.key.tcpEndpoint != nil ? 1 : 0, $0.key.description)
        }
        guard let (local, group) = groups.first else { return c }
        let byObserver = Dictionary(grouping: group, by: { $0.observer }).compactMapValues { $0.last }
        c.observers = byObserver.count
        guard byObserver.count >= minObservers else { return c }
        let observed = byObserver.values.sorted { $0.at < $1.at }.map(\.observed)
        let top = Dictionary(grouping: observed, by: { $0 }).values.map(\.count).max() ?? 0
        let outliers = observed.count - top
        c.mapping = outliers * 4 <= observed.count ? .endpointIndependent : .endpointDependent
        let localPort = local.ipPortEndpoint?.port
        let ports = observed.compactMap { $0.ipPortEndpoint?.port }
        if let lp = localPort, ports.allSatisfy({ $0 == lp }) {
            c.portAllocation = .preserving
        } else if c.mapping == .endpointDependent {
            let deltas = zip(ports.dropFirst(), ports).map { Int($0) - Int($1) }
            c.portAllocation = !deltas.isEmpty && deltas.allSatisfy({ $0 > 0 && $0 <= 16 }) ? .sequential : .random
        } else {
            c.portAllocation = .unknown  // one stable external port that is not ours: one sample says nothing of the allocator
        }
        return c
    }
}
