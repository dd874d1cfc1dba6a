import CairnCore
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

extension Multiaddr {
    /// `/ip4|ip6/<addr>/tcp/<port>` for a socket address.
    public init?(tcp socketAddress: SocketAddress) {
        guard let ip = socketAddress.ipAddress, let port = socketAddress.port else { return nil }
        if ip.contains(":") {
            guard let b = IPAddressText.parse6(ip) else { return nil }
            self.init(components: [.ip6(b), .tcp(UInt16(port))])
        } else {
            guard let b = IPAddressText.parse4(ip) else { return nil }
            self.init(components: [.ip4(b), .tcp(UInt16(port))])
        }
    }

    /// The socket address of an `/ip4|ip6/…/tcp/…` multiaddr.
    public func tcpSocketAddress() throws -> SocketAddress {
        guard let (ip, port) = tcpEndpoint else { throw SwarmError.unsupportedAddress(self) }
        return try SocketAddress(ipAddress: IPAddressText.format(ip), port: Int(port))
    }

    /// Whether the IP is unspecified (0.0.0.0 or ::).
    var isUnspecifiedIP: Bool {
        switch components.first {
        case .ip4(let b)?, .ip6(let b)?: return b.allSatisfy { $0 == 0 }
        default: return false
        }
    }
}

extension Multiaddr {
    /// `/ip6/::/tcp/…`: the IPv6 half of a dual-stack listen default.
    var isIPv6Wildcard: Bool {
        if case .ip6(let b)? = components.first { return b.allSatisfy { $0 == 0 } }
        return false
    }
}

enum SocketOptions {
    /// SO_REUSEPORT, which NIO does not name: lets outbound dials share the listen port, which
    /// TCP hole punching needs.
    static let reusePort = ChannelOptions.Types.SocketOption(
        level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET), name: NIOBSDSocket.Option(rawValue: SO_REUSEPORT))
    static let reuseAddr = ChannelOptions.Types.SocketOption(
        level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET), name: NIOBSDSocket.Option(rawValue: SO_REUSEADDR))
    /// IPV6_V6ONLY: an IPv6 socket on [::]:port takes IPv6 only, so it can sit beside the IPv4
    /// one on 0.0.0.0:port (with SO_REUSEPORT they would otherwise share IPv4 connections at random).
    static let ipv6Only = ChannelOptions.Types.SocketOption(
        level: NIOBSDSocket.OptionLevel(rawValue: Int32(IPPROTO_IPV6)), name: NIOBSDSocket.Option(rawValue: IPV6_V6ONLY))
}

/// Expands a wildcard listen address into the host's interface addresses of that family.
func expandListenAddress(_ addr: Multiaddr) -> [Multiaddr] {
    guard addr.isUnspecifiedIP, let (ip, port) = addr.tcpEndpoint else { return [addr] }
    let v4 = ip.count == 4
    var out: [Multiaddr] = []
    let devices = (try? System.enumerateDevices()) ?? []
    for d in devices {
        guard let a = d.address, let m = Multiaddr(tcp: a) else { continue }
        guard case let first? = m.components.first else { continue }
        switch first {
        case .ip4(let b) where v4: out.append(Multiaddr(components: [.ip4(b), .tcp(port)]))
        case .ip6(let b) where !v4 && !(b[0] == 0xfe && b[1] & 0xc0 == 0x80):
            out.append(Multiaddr(components: [.ip6(b), .tcp(port)]))
        default: continue
        }
    }
    return out.isEmpty ? [addr] : Array(Set(out)).sorted { $0.description < $1.description }
}
