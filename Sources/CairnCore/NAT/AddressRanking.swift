/// The order in which a peer's direct addresses are dialed (Happy Eyeballs, RFC 8305, for
/// peer-to-peer): the path most likely to work and to be best first, the others started shortly
/// after, so a dead address costs a short delay and not a whole connect timeout.
///
/// 1. **LAN**: a private address of a peer behind the same NAT as us (it advertises a public IP
///    we are observed at: home routers rarely hairpin), or one in our own /24 (IPv4) or /64 (IPv6).
/// 2. **IPv6**: a global IPv6 address (no NAT; a stateful firewall at most).
/// 3. **Public IPv4**.
/// 4. **Other private** addresses (another LAN's: most likely unreachable).
/// 5. **Loopback** (reachable only when the peer is on this host).
public enum AddressRanking {
    public enum Tier: Int, Comparable, Sendable, CustomStringConvertible {
        case lan = 0, ipv6, publicIPv4, otherPrivate, loopback

        public static func < (a: Tier, b: Tier) -> Bool { a.rawValue < b.rawValue }

        public var description: String {
            switch self {
            case .lan: return "lan"
            case .ipv6: return "ipv6"
            case .publicIPv4: return "public"
            case .otherPrivate: return "private"
            case .loopback: return "loopback"
            }
        }
    }

    /// What we know of ourselves: our interface addresses (listen addresses, wildcards expanded)
    /// and the public IPs peers observe us at (votes, confirmed addresses).
    public struct Context: Sendable, Equatable {
        public var localIPs: [[UInt8]]
        public var externalIPs: [[UInt8]]
        public init(localIPs: [[UInt8]], externalIPs: [[UInt8]]) {
            self.localIPs = localIPs
            self.externalIPs = externalIPs
        }
    }

    /// Whether a peer with these addresses sits behind the same NAT as us: one of its public IPs
    /// is one we are observed at.
    public static func sameNAT(_ peerAddresses: [Multiaddr], _ context: Context) -> Bool {
        peerAddresses.contains { a in
            guard let (ip, _) = a.tcpEndpoint, !a.isRelayed else { return false }
            return IPScope(ip).isPublic && context.externalIPs.contains(ip)
        }
    }

    /// The tier of one address of a peer whose addresses are `peerAddresses`.
    public static func tier(_ address: Multiaddr, peerAddresses: [Multiaddr], _ context: Context) -> Tier {
        guard let (ip, _) = address.tcpEndpoint else { return .otherPrivate }
        switch IPScope(ip) {
        case .loopback, .unspecified:
            return .loopback
        case .publicRange:
            return ip.count == 16 && !isV4Mapped(ip) ? .ipv6 : .publicIPv4
        case .privateRange, .linkLocal:
            if sameNAT(peerAddresses, context) { return .lan }
            let prefix = ip.count == 4 ? 3 : 8
            if context.localIPs.contains(where: { $0.count == ip.count && $0.prefix(prefix) == ip.prefix(prefix) }) { return .lan }
            return .otherPrivate
        }
    }

    /// `addresses` best first (stable within a tier).
    public static func rank(_ addresses: [Multiaddr], _ context: Context) -> [Multiaddr] {
        addresses.enumerated()
            .map { (tier: tier($0.element, peerAddresses: addresses, context), index: $0.offset, address: $0.element) }
            .sorted { ($0.tier, $0.index) < ($1.tier, $1.index) }
            .map(\.address)
    }

    static func isV4Mapped(_ ip: [UInt8]) -> Bool {
        ip.count == 16 && ip.prefix(10).allSatisfy { $0 == 0 } && ip[10] == 0xff && ip[11] == 0xff
    }
}
