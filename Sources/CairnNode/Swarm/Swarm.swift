import CairnCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

public enum SwarmError: Error, CustomStringConvertible {
    case unsupportedAddress(Multiaddr)
    case missingPeerID(Multiaddr)
    case dialFailed(Multiaddr, String)
    case shutDown
    case refused(ResourceManager.Refusal)

    public var description: String {
        switch self {
        case .unsupportedAddress(let a): return "cannot dial or listen on \(a): only /ip4|ip6/…/tcp/… is supported"
        case .missingPeerID(let a): return "\(a) has no /p2p/<peer-id>"
        case .dialFailed(let a, let why): return "dial \(a) failed: \(why)"
        case .shutDown: return "swarm is shut down"
        case .refused(let r): return "refused by the resource manager: \(r)"
        }
    }
}

public typealias StreamHandler = @Sendable (MuxedStream) async throws -> Void

/// A way to reach peers other than TCP (a relayed circuit), plugged into the swarm: `dial`
/// routes the addresses it claims to it, and the connections it makes are the swarm's like
/// any other.
public protocol SwarmTransport: Sendable {
    func canDial(_ address: Multiaddr) -> Bool
    func dial(_ address: Multiaddr) async throws -> Connection
}

/// The one place that owns sockets and connections. Protocols register stream handlers; the swarm
/// accepts and dials TCP, runs each connection's upgrade, negotiates protocols on inbound streams
/// and hands them to their handler. A relayed circuit plugs in as one more `SwarmTransport`.
public final class Swarm: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var handshakeTimeout: Duration = .seconds(10)
        public var negotiationTimeout: Duration = .seconds(10)
        public var yamux = YamuxConfig()
        /// Dial from the listen port (SO_REUSEADDR + SO_REUSEPORT), as hole punching needs.
        public var reuseListenPort = true
        /// The node's resource limits (connections, handshakes, streams, memory; see
        /// `ResourceManager`).
        public var resources = ResourceManager.Limits()
        public init() {}
    }

    public let identity: PrivateKey
    public let configuration: Configuration
    public let group: EventLoopGroup
    let ownsGroup: Bool
    let logger: Logger

    private struct State {
        var handlers: [String: StreamHandler] = [:]
        /// The service scope each protocol's handler declared (resource limits per service).
        var services: [String: String] = [:]
        var handlerOrder: [String] = []
        var connections: Set<Connection> = []
        /// Connections still in their security handshake (closed too at shutdown).
        var handshaking: Set<Connection> = []
        var listeners: [Channel] = []
        /// UDP sockets of the node's services (STUN, port mapping, mDNS), closed at shutdown.
        var datagramChannels: [ObjectIdentifier: (channel: Channel, purpose: String)] = [:]
        var listenAddresses: [Multiaddr] = []
        var transports: [any SwarmTransport] = []
        var inboundRoles: [[UInt8]: (role: SecureConnectionMachine.Role, until: NIODeadline)] = [:]
        var shutDown = false
    }
    private let state = NIOLockedValueBox(State())
    /// Stream handlers and other work still using connections: shutdown waits for them before
    /// the event loops go away (a task touching a shut-down loop leaks its promise).
    let tasks = TaskSet()
    /// The node's one event stream: connections, identify, addresses, reachability, hole punches.
    public let events = EventBus()
    /// The one resource manager: every connection and stream is granted here first.
    public let resources: NodeResources

    public init(identity: PrivateKey, configuration: Configuration = Configuration(), group: EventLoopGroup? = nil, logger: Logger) {
        self.identity = identity
        self.configuration = configuration
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.ownsGroup = group == nil
        self.logger = logger
        self.resources = NodeResources(limits: configuration.resources, logger: logger)
    }

    public var peerID: PeerID { identity.peerID }

    /// Registers the handler for a protocol; inbound streams that negotiate it are handed over.
    /// `service` is the resource scope the handler declares (several protocols may share one:
    /// identify and identify push); its stream limits come from the resource limits' `services`.
    /// Registering a new protocol emits `localProtocolsChanged` (identify push follows);
    /// replacing a handler does not.
    public func handle(_ protocolID: String, service: String? = nil, _ handler: @escaping StreamHandler) {
        let changed = state.withLockedValue { s -> [String]? in
            let new = s.handlers[protocolID] == nil
            if new { s.handlerOrder.append(protocolID) }
            s.handlers[protocolID] = handler
            s.services[protocolID] = service
            return new ? s.handlerOrder : nil
        }
        if let changed { events.emit(.localProtocolsChanged(changed)) }
    }

    /// Stops serving a protocol (for example the DHT when reachability turns private).
    public func unhandle(_ protocolID: String) {
        let changed = state.withLockedValue { s -> [String]? in
            guard s.handlers.removeValue(forKey: protocolID) != nil else { return nil }
            s.services[protocolID] = nil
            s.handlerOrder.removeAll { $0 == protocolID }
            return s.handlerOrder
        }
        if let changed { events.emit(.localProtocolsChanged(changed)) }
    }

    public func isHandling(_ protocolID: String) -> Bool { state.withLockedValue { $0.handlers[protocolID] != nil } }

    public var supportedProtocols: [String] { state.withLockedValue { $0.handlerOrder } }

    public var connections: [Connection] { state.withLockedValue { Array($0.connections) } }

    public func connections(to peer: PeerID) -> [Connection] {
        connections.filter { $0.remotePeer == peer }
    }

    /// The bound listen addresses, wildcard addresses expanded to interface addresses.
    public var listenAddresses: [Multiaddr] { state.withLockedValue { $0.listenAddresses } }

    // MARK: UDP sockets

    /// Takes a service's UDP socket into the swarm's keeping: listed in `datagramSockets`,
    /// forgotten when it closes, and closed at shutdown with everything else. A socket adopted
    /// after shutdown is closed at once (and false returned).
    @discardableResult
    public func adoptDatagramChannel(_ channel: Channel, purpose: String) -> Bool {
        let key = ObjectIdentifier(channel)
        let kept = state.withLockedValue { s -> Bool in
            guard !s.shutDown else { return false }
            s.datagramChannels[key] = (channel, purpose)
            return true
        }
        guard kept else {
            channel.close(promise: nil)
            return false
        }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.state.withLockedValue { $0.datagramChannels.removeValue(forKey: key) }
        }
        return true
    }

    /// The UDP sockets the swarm keeps: what each is for and where it is bound.
    public var datagramSockets: [(purpose: String, local: SocketAddress?)] {
        state.withLockedValue { s in s.datagramChannels.values.map { ($0.purpose, $0.channel.localAddress) } }
    }

    // MARK: Listening

    @discardableResult
    public func listen(_ address: Multiaddr) async throws -> [Multiaddr] {
        let socketAddress = try address.tcpSocketAddress()
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(SocketOptions.reuseAddr, value: 1)
            .serverChannelOption(SocketOptions.reusePort, value: configuration.reuseListenPort ? 1 : 0)
        if case .v6 = socketAddress { bootstrap = bootstrap.serverChannelOption(SocketOptions.ipv6Only, value: 1) }
        bootstrap = bootstrap
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    // The resource manager decides before any cryptography: a refused socket is
                    // closed at once and costs nothing more.
                    let ip = channel.remoteAddress.flatMap { Multiaddr(tcp: $0)?.tcpEndpoint?.ip }
                    switch self.resources.openConnection(.inbound, ip: ip) {
                    case .failure:
                        channel.close(promise: nil)
                    case .success(let id):
                        try self.setUpConnection(channel, direction: .inbound, role: self.inboundRole(from: channel.remoteAddress),
                                                 expectedRemote: nil, resourceID: id)
                    }
                }
            }
        let channel = try await bootstrap.bind(to: socketAddress).get()
        guard let local = channel.localAddress, let bound = Multiaddr(tcp: local) else {
            throw SwarmError.unsupportedAddress(address)
        }
        let expanded = expandListenAddress(bound)
        state.withLockedValue {
            $0.listeners.append(channel)
            $0.listenAddresses += expanded
        }
        logger.info("listening", metadata: ["addrs": "\(expanded.map { $0.description }.joined(separator: " "))"])
        return expanded
    }

    /// The port of the first listener on the same IP family as `ip`, to dial from.
    private func reusableLocalAddress(forFamilyOf ip: [UInt8]) -> SocketAddress? {
        guard configuration.reuseListenPort else { return nil }
        return state.withLockedValue { s -> SocketAddress? in
            for l in s.listeners {
                guard let a = l.localAddress, let m = Multiaddr(tcp: a), let (lip, _) = m.tcpEndpoint else { continue }
                if lip.count == ip.count { return a }
            }
            return nil
        }
    }

    // MARK: Dialing

    /// Dials `address` (`/ip4|ip6/…/tcp/…[/p2p/<id>]`). With a peer ID, any other identity is refused.
    /// `role` is the security role on the new connection: the initiator as usual, or the
    /// responder for a hole punch whose simultaneous open makes the socket direction meaningless.
    /// `connectTimeout` bounds the TCP connect (default: the handshake timeout).
    public func dial(_ address: Multiaddr, role: SecureConnectionMachine.Role = .initiator, fromListenPort: Bool = true,
                     connectTimeout: Duration? = nil) async throws -> Connection {
        do {
            return try await dialTransport(address, role: role, fromListenPort: fromListenPort, connectTimeout: connectTimeout)
        } catch {
            events.emit(.dialFailed(peer: address.peerID, address: address, reason: "\(error)"))
            throw error
        }
    }

    private func dialTransport(_ address: Multiaddr, role: SecureConnectionMachine.Role, fromListenPort: Bool,
                               connectTimeout: Duration?) async throws -> Connection {
        guard state.withLockedValue({ !$0.shutDown }) else { throw SwarmError.shutDown }
        if let t = state.withLockedValue({ $0.transports.first { $0.canDial(address) } }) {
            return try await t.dial(address)
        }
        guard let (ip, _) = address.tcpEndpoint else { throw SwarmError.unsupportedAddress(address) }
        let remote = try address.tcpSocketAddress()
        let expected = address.peerID
        if fromListenPort, let local = reusableLocalAddress(forFamilyOf: ip) {
            do {
                return try await connect(remote, from: local, expected: expected, role: role, connectTimeout: connectTimeout)
            } catch let e as IOError where e.errnoCode == EADDRINUSE || e.errnoCode == EADDRNOTAVAIL {
                // The 4-tuple is taken (a second connection to the same peer): use an ephemeral port.
                logger.debug("listen port busy for this destination, dialing from an ephemeral port")
            } catch let e as ChannelError {
                if case .connectTimeout = e { throw SwarmError.dialFailed(address, "\(e)") }
                logger.debug("dial from listen port failed (\(e)), retrying from an ephemeral port")
            }
        }
        do {
            return try await connect(remote, from: nil, expected: expected, role: role, connectTimeout: connectTimeout)
        } catch let e as ConnectionError {
            throw SwarmError.dialFailed(address, "\(e)")
        } catch let e as SwarmError {
            throw e
        } catch {
            throw SwarmError.dialFailed(address, "\(error)")
        }
    }

    private func connect(_ remote: SocketAddress, from local: SocketAddress?, expected: PeerID?,
                         role: SecureConnectionMachine.Role, connectTimeout: Duration?) async throws -> Connection {
        let ip = Multiaddr(tcp: remote)?.tcpEndpoint?.ip
        let resourceID: ResourceManager.ConnectionID
        switch resources.openConnection(.outbound, ip: ip) {
        case .failure(let r): throw SwarmError.refused(r)
        case .success(let id): resourceID = id
        }
        let holder = NIOLockedValueBox<Connection?>(nil)
        var bootstrap = ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(connectTimeout ?? configuration.handshakeTimeout))
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let c = try self.setUpConnection(channel, direction: .outbound, role: role, expectedRemote: expected, resourceID: resourceID)
                    holder.withLockedValue { $0 = c }
                }
            }
        if let local {
            if case .v6 = local { bootstrap = bootstrap.channelOption(SocketOptions.ipv6Only, value: 1) }
            bootstrap = bootstrap
                .channelOption(SocketOptions.reuseAddr, value: 1)
                .channelOption(SocketOptions.reusePort, value: 1)
                .bind(to: local)
        }
        do {
            _ = try await bootstrap.connect(to: remote).get()
        } catch {
            // No connection took the grant over (its close would release it): release it here.
            if holder.withLockedValue({ $0 }) == nil { resources.closeConnection(resourceID) }
            throw error
        }
        guard let connection = holder.withLockedValue({ $0 }) else { throw SwarmError.shutDown }
        _ = try await connection.established.get()
        return connection
    }

    @discardableResult
    func setUpConnection(_ channel: Channel, direction: Connection.Direction, role: SecureConnectionMachine.Role,
                         expectedRemote: PeerID?, resourceID: ResourceManager.ConnectionID) throws -> Connection {
        let connection = try makeConnection(ChannelTransport(channel), direction: direction, role: role, expectedRemote: expectedRemote,
                                            resourceID: resourceID)
        try channel.pipeline.syncOperations.addHandler(ConnectionHandler(connection: connection, handshakeTimeout: TimeAmount(configuration.handshakeTimeout)))
        return connection
    }

    /// A connection over `transport`, wired to this swarm (streams, registration, resources); the
    /// caller starts it. `resourceID` is the resource manager's grant for it; without one (a
    /// relayed circuit) it is asked for here, and a refusal throws.
    func makeConnection(_ transport: ConnectionTransport, direction: Connection.Direction, role: SecureConnectionMachine.Role,
                        expectedRemote: PeerID?, relay: PeerID? = nil, limit: CircuitRelay.Limit? = nil,
                        resourceID: ResourceManager.ConnectionID? = nil) throws -> Connection {
        let grant: ResourceManager.ConnectionID
        if let resourceID {
            grant = resourceID
        } else {
            switch resources.openConnection(direction == .inbound ? .inbound : .outbound, ip: nil) {
            case .failure(let r): throw SwarmError.refused(r)
            case .success(let id): grant = id
            }
        }
        let connection = Connection(transport: transport, direction: direction, role: role, identity: identity,
                                    expectedRemote: expectedRemote, yamux: configuration.yamux, logger: logger, relay: relay, limit: limit,
                                    resources: resources, resourceID: grant)
        connection.onInboundStream = { [weak self] stream in self?.acceptStream(stream) }
        connection.onEstablished = { [weak self] c in self?.established(c) }
        state.withLockedValue { _ = $0.handshaking.insert(connection) }
        let resources = self.resources
        connection.closed.whenComplete { [weak self] result in
            resources.closeConnection(grant)
            guard let self else { return }
            let wasEstablished = self.state.withLockedValue { s -> Bool in
                s.handshaking.remove(connection)
                return s.connections.remove(connection) != nil
            }
            guard case .success(let reason) = result else { return }
            if wasEstablished {
                self.events.emit(.connectionClosed(connection, reason: reason))
            } else if connection.remotePeer == nil || reason != .closed {
                self.events.emit(.handshakeFailed(direction: direction, reason: reason))
            }
        }
        return connection
    }

    /// For a hole punch: until `deadline`, a connection accepted from one of `addresses`
    /// (ip:port) takes the security `role` given — the peer's dial landed on our listener
    /// instead of meeting ours in a simultaneous open, and the punch fixed the roles.
    public func expectInbound(from addresses: [Multiaddr], role: SecureConnectionMachine.Role, until deadline: NIODeadline) {
        state.withLockedValue { s in
            let now = NIODeadline.now()
            s.inboundRoles = s.inboundRoles.filter { $0.value.until > now }
            for a in addresses {
                guard let (ip, port) = a.tcpEndpoint else { continue }
                s.inboundRoles[(ip + [UInt8(port >> 8), UInt8(port & 0xff)])] = (role, deadline)
            }
        }
    }

    func inboundRole(from remote: SocketAddress?) -> SecureConnectionMachine.Role {
        guard let remote, let m = Multiaddr(tcp: remote), let (ip, port) = m.tcpEndpoint else { return .responder }
        return state.withLockedValue { s in
            guard let o = s.inboundRoles[ip + [UInt8(port >> 8), UInt8(port & 0xff)]], o.until > NIODeadline.now() else { return .responder }
            return o.role
        }
    }

    /// Transports beyond TCP (a relayed circuit): `dial` hands them the addresses they claim.
    public func addTransport(_ t: any SwarmTransport) { state.withLockedValue { $0.transports.append(t) } }

    private func established(_ connection: Connection) {
        let (limitedToSamePeer, late) = state.withLockedValue { s -> ([Connection], Bool) in
            s.handshaking.remove(connection)
            guard !s.shutDown else { return ([], true) }
            s.connections.insert(connection)
            guard let peer = connection.remotePeer else { return ([], false) }
            if connection.isLimited {
                // A relayed connection that comes up beside a direct one falls under the rule too.
                return (s.connections.contains { !$0.isLimited && $0.remotePeer == peer } ? [connection] : [], false)
            }
            return (s.connections.filter { $0.isLimited && $0.remotePeer == peer }, false)
        }
        if late {
            // A dial that finished while the swarm shut down: nobody will close it later.
            connection.eventLoop.execute { connection.perform(connection.machine.close()) }
            return
        }
        // Keep-alive rule: a relayed connection is kept only while no direct one exists or while
        // it carries streams; once both are false it closes (no timer, no poll).
        for r in limitedToSamePeer {
            guard let peer = r.remotePeer else { continue }
            r.closeWhenIdle(because: "a direct connection to the peer is up") { [weak self] in self?.directConnection(to: peer) != nil }
        }
        events.emit(.connectionEstablished(connection))
    }

    /// A connection to `peer`: with `preferDirect`, a direct one when there is one (new streams
    /// should use it), else a relayed one; without, any.
    public func connection(to peer: PeerID, preferDirect: Bool = true) -> Connection? {
        let all = connections(to: peer)
        return preferDirect ? all.first { !$0.isLimited } ?? all.first : all.first
    }

    /// A direct (not relayed) connection to `peer`, if any.
    public func directConnection(to peer: PeerID) -> Connection? {
        connections(to: peer).first { !$0.isLimited }
    }

    /// The connection new streams to `peer` should use: a direct one when there is one.
    public func bestConnection(to peer: PeerID) -> Connection? { connection(to: peer, preferDirect: true) }

    private func acceptStream(_ stream: MuxedStream) {
        let (handlers, order, services) = state.withLockedValue { ($0.handlers, $0.handlerOrder, $0.services) }
        let resources = self.resources
        let timeout = configuration.negotiationTimeout
        let logger = self.logger
        let started = tasks.spawn {
            let proto: String
            do {
                proto = try await withTimeout(timeout) { try await stream.negotiateInbound(order) }
            } catch {
                logger.debug("inbound stream negotiation failed: \(error)", metadata: ["peer": "\(stream.connection.remotePeer?.description ?? "?")"])
                stream.reset()
                return
            }
            guard let handler = handlers[proto] else { stream.reset(); return }
            if let grant = stream.resourceID,
               case .failure = resources.setProtocol(grant, proto, service: services[proto], peer: stream.connection.remotePeer) {
                stream.reset()
                return
            }
            logger.debug("inbound stream", metadata: ["protocol": "\(proto)", "peer": "\(stream.connection.remotePeer?.description ?? "?")"])
            do {
                try await handler(stream)
            } catch {
                logger.info("\(proto) stream failed: \(error)", metadata: ["peer": "\(stream.connection.remotePeer?.description ?? "?")"])
                stream.reset()
            }
        }
        if !started { stream.reset() }
    }

    // MARK: Shutdown

    public func shutdown() async {
        let (listeners, conns, datagrams) = state.withLockedValue { s -> ([Channel], [Connection], [Channel]) in
            s.shutDown = true
            defer { s.datagramChannels = [:] }
            return (s.listeners, Array(s.connections) + Array(s.handshaking), s.datagramChannels.values.map(\.channel))
        }
        for l in listeners { try? await l.close() }
        for d in datagrams { try? await d.close() }
        for c in conns { await c.close() }
        await tasks.cancelAndWait()
        if ownsGroup { try? await group.shutdownGracefully() }
    }
}

/// Tasks that must finish before their event loops shut down. Once `cancelAndWait` has begun,
/// nothing new is started.
final class TaskSet: Sendable {
    private struct State {
        var next: UInt64 = 0
        var running: [UInt64: Task<Void, Never>] = [:]
        var closed = false
    }
    private let state = NIOLockedValueBox(State())

    /// Starts `body` unless the set is closed; returns whether it started.
    @discardableResult
    func spawn(_ body: @escaping @Sendable () async -> Void) -> Bool {
        state.withLockedValue { s in
            guard !s.closed else { return false }
            let id = s.next
            s.next += 1
            s.running[id] = Task {
                await body()
                _ = self.state.withLockedValue { $0.running.removeValue(forKey: id) }
            }
            return true
        }
    }

    /// Tasks running now.
    var count: Int { state.withLockedValue { $0.running.count } }

    /// Closes the set, cancels what is running and waits for all of it.
    func cancelAndWait() async {
        let running = state.withLockedValue { s -> [Task<Void, Never>] in
            s.closed = true
            return Array(s.running.values)
        }
        for t in running { t.cancel() }
        for t in running { await t.value }
    }
}
