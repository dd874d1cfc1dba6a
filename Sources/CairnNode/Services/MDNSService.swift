import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// LAN discovery by libp2p mDNS: announces the node's interface addresses on 224.0.0.251:5353
/// and connects to the peers that announce theirs, so nodes on one segment find each other with
/// no bootstrap peer (kubo does the same; it interoperates). The decisions are CairnCore's
/// `MDNSDiscovery`; this class owns the UDP socket (port 5353, shared with any other mDNS
/// responder on the host through SO_REUSEADDR/SO_REUSEPORT) and the dials.
///
/// Started only when the node listens on a non-loopback IPv4 address. What a LAN host announces
/// is a hint: the dial authenticates the peer ID, and at most one dial per peer runs every
/// `redialInterval`.
public final class MDNSService: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var discovery = MDNSDiscovery.Configuration()
        /// Connect to discovered peers (off: only report them).
        public var connect = true
        /// A peer is dialed again after this long at the earliest.
        public var redialInterval: Duration = .seconds(30)
        public init() {}
    }

    /// A peer heard of on the LAN.
    public struct Discovered: Sendable {
        public var peer: PeerID
        public var addresses: [Multiaddr]
        public var at: Date
    }

    let node: Node
    let configuration: Configuration
    let logger: Logger

    private struct State {
        var logic: MDNSDiscovery
        var channel: Channel?
        var timer: Scheduled<Void>?
        var stopped = false
        var discovered: [PeerID: Discovered] = [:]
        var lastDial: [PeerID: ContinuousClock.Instant] = [:]
        var dropped = 0
        var note: String?
    }
    private let state: NIOLockedValueBox<State>
    private var loop: EventLoop { node.swarm.group.any() }

    public init(node: Node, configuration: Configuration = Configuration(), logger: Logger) {
        self.node = node
        self.configuration = configuration
        self.logger = logger
        var rng = SystemRandomNumberGenerator()
        state = NIOLockedValueBox(State(logic: MDNSDiscovery(localPeer: node.peerID, peerName: MDNSDiscovery.randomPeerName(using: &rng),
                                                              configuration: configuration.discovery)))
    }

    /// Peers heard of, newest first.
    public var discovered: [Discovered] { state.withLockedValue { $0.discovered.values.sorted { $0.at > $1.at } } }
    /// Datagrams refused as malformed.
    public var dropped: Int { state.withLockedValue { $0.dropped } }
    /// Why discovery is not running, when it is not.
    public var note: String? { state.withLockedValue { $0.note } }

    private var now: Double { Double(NIODeadline.now().uptimeNanoseconds) / 1e9 }

    /// Starts discovery. A failure (port 5353 held by a responder that does not share it, no
    /// multicast) is logged and noted, never thrown: the node runs without LAN discovery.
    public func start() async {
        let addrs = node.lanListenAddresses
        guard !addrs.isEmpty else {
            state.withLockedValue { $0.note = Node.noLANListenAddress }
            return
        }
        do {
            try await open(addrs)
        } catch {
            state.withLockedValue { $0.note = "mDNS not started: \(error)" }
            logger.warning("mDNS discovery not started: \(error)")
        }
    }

    private func open(_ addrs: [Multiaddr]) async throws {
        let group = try SocketAddress(ipAddress: IPAddressText.format(MDNSDiscovery.multicastIPv4), port: Int(MDNSDiscovery.port))
        let channel = try await DatagramBootstrap(group: node.swarm.group)
            .channelOption(SocketOptions.reuseAddr, value: 1)
            .channelOption(SocketOptions.reusePort, value: 1)
            .channelInitializer { [weak self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(MDNSHandler { [weak self] bytes, from in self?.received(bytes, from: from) })
                }
            }
            .bind(host: "0.0.0.0", port: Int(MDNSDiscovery.port)).get()
        // Multicast TTL 255 (RFC 6762 §11) and our own datagrams looped back (other nodes on this host).
        if let options = channel as? SocketOptionProvider {
            try await options.setIPMulticastTTL(255).get()
            try await options.setIPMulticastLoop(1).get()
        }
        // Join the group on every IPv4 interface that has an address we listen on.
        var joined = 0
        if let multicast = channel as? MulticastChannel {
            for device in (try? System.enumerateDevices()) ?? [] {
                guard case .v4? = device.address, let ip = device.address?.ipAddress.flatMap(IPAddressText.parse4),
                      IPScope(ip) != .loopback, addrs.contains(where: { $0.tcpEndpoint?.ip == ip }) else { continue }
                do {
                    try await multicast.joinGroup(group, device: device).get()
                    joined += 1
                } catch {
                    logger.debug("mDNS: could not join the group on \(device.name): \(error)")
                }
            }
            if joined == 0 { try await multicast.joinGroup(group).get(); joined = 1 }
        }
        let proceed = state.withLockedValue { s -> Bool in
            guard !s.stopped else { return false }
            s.channel = channel
            s.logic.setAddresses(addrs)
            return true
        }
        guard proceed, node.swarm.adoptDatagramChannel(channel, purpose: "mdns") else { try? await channel.close(); return }
        logger.info("mDNS discovery on", metadata: ["peer_name": "\(state.withLockedValue { $0.logic.peerName })", "interfaces": "\(joined)"])
        channel.eventLoop.execute { [self] in
            let actions = state.withLockedValue { $0.logic.start(now: now) }
            perform(actions)
        }
        // Announce fresh addresses when they change.
        subscription = node.events.subscribe { [weak self] event in
            if case .localAddressesChanged = event { self?.refreshAddresses() }
        }
    }

    private var subscription: EventSubscription?

    public func stop() async {
        subscription?.cancel()
        let (channel, timer) = state.withLockedValue { s -> (Channel?, Scheduled<Void>?) in
            s.stopped = true
            defer { s.channel = nil; s.timer = nil }
            return (s.channel, s.timer)
        }
        timer?.cancel()
        try? await channel?.close()
    }


    private func refreshAddresses() {
        let addrs = node.lanListenAddresses
        state.withLockedValue { $0.logic.setAddresses(addrs) }
    }

    private func received(_ bytes: [UInt8], from: SocketAddress) {
        let actions: [MDNSDiscovery.Action]
        do {
            actions = try state.withLockedValue { s throws(DNSMessage.DecodeError) in try s.logic.received(bytes, now: now) }
        } catch {
            state.withLockedValue { $0.dropped += 1 }
            logger.debug("mDNS: dropped a datagram: \(error)", metadata: ["from": "\(from)"])
            return
        }
        perform(actions)
    }

    private func perform(_ actions: [MDNSDiscovery.Action]) {
        for a in actions {
            switch a {
            case .send(let bytes):
                guard let ch = state.withLockedValue({ $0.channel }),
                      let dest = try? SocketAddress(ipAddress: IPAddressText.format(MDNSDiscovery.multicastIPv4), port: Int(MDNSDiscovery.port)) else { continue }
                ch.writeAndFlush(AddressedEnvelope(remoteAddress: dest, data: ch.allocator.buffer(bytes: bytes)), promise: nil)
            case .discovered(let peer, let addrs):
                found(peer, addrs)
            }
        }
        rearm()
    }

    private func rearm() {
        let (deadline, channel) = state.withLockedValue { s in (s.logic.nextDeadline(), s.channel) }
        guard let deadline, let channel else { return }
        let wait = TimeAmount.nanoseconds(max(0, Int64((deadline - now) * 1e9)))
        let timer = channel.eventLoop.scheduleTask(in: wait) { [weak self] in
            guard let self else { return }
            let actions = self.state.withLockedValue { s -> [MDNSDiscovery.Action] in s.stopped ? [] : s.logic.tick(now: self.now) }
            if !actions.isEmpty { self.perform(actions) }
        }
        let old = state.withLockedValue { s -> Scheduled<Void>? in defer { s.timer = timer }; return s.timer }
        old?.cancel()
    }

    private func found(_ peer: PeerID, _ addrs: [Multiaddr]) {
        let dial = state.withLockedValue { s -> Bool in
            let isNew = s.discovered[peer] == nil
            if s.discovered[peer] == nil && s.discovered.count >= 256, let oldest = s.discovered.values.min(by: { $0.at < $1.at }) {
                s.discovered[oldest.peer] = nil
            }
            s.discovered[peer] = Discovered(peer: peer, addresses: addrs, at: Date())
            if isNew { self.logger.info("mDNS: found a peer on the LAN", metadata: ["peer": "\(peer)", "addrs": "\(addrs)"]) }
            guard configuration.connect, !s.stopped else { return false }
            if let last = s.lastDial[peer], ContinuousClock.now - last < configuration.redialInterval { return false }
            s.lastDial[peer] = .now
            return true
        }
        guard dial, node.swarm.directConnection(to: peer) == nil else { return }
        var options = DialOptions()
        options.addresses = addrs
        options.useRouting = false
        options.allowRelayed = false
        options.timeout = .seconds(20)
        let dialer = node.dialer
        let logger = self.logger
        _ = node.swarm.tasks.spawn { [options] in
            do {
                let o = try await dialer.connect(to: peer, options)
                logger.info("mDNS: connected", metadata: ["peer": "\(peer)", "addr": "\(o.connection.remoteAddress?.description ?? "?")"])
            } catch {
                logger.info("mDNS: could not connect to a discovered peer: \(error)", metadata: ["peer": "\(peer)"])
            }
        }
    }
}

/// Hands each datagram (at most the DNS limit) to `received`.
private final class MDNSHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let received: ([UInt8], SocketAddress) -> Void
    init(received: @escaping ([UInt8], SocketAddress) -> Void) { self.received = received }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let e = unwrapInboundIn(data)
        guard e.data.readableBytes <= DNSMessage.maxLength else { return }
        received(Array(e.data.readableBytesView), e.remoteAddress)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {}
}
