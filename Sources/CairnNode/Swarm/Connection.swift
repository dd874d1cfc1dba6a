import CairnCore
import CairnCrypto
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// What a connection runs over: a TCP channel, or a relayed circuit (a stream of another
/// connection). Called on its event loop only.
protocol ConnectionTransport: AnyObject, Sendable {
    var eventLoop: EventLoop { get }
    var localAddress: Multiaddr? { get }
    var remoteAddress: Multiaddr? { get }
    func send(_ bytes: ByteBuffer)
    func close()
}

/// A TCP socket as a connection's transport.
final class ChannelTransport: ConnectionTransport, @unchecked Sendable {
    let channel: Channel
    /// A flush is scheduled for the end of this event-loop turn (event-loop confined): writes
    /// made while handling one read (several streams answering, a handshake message and the
    /// first frames) leave in one system call.
    private var flushScheduled = false
    init(_ channel: Channel) { self.channel = channel }
    var eventLoop: EventLoop { channel.eventLoop }
    // NIO caches the socket's addresses thread-safely once the channel is active.
    var localAddress: Multiaddr? { channel.localAddress.flatMap { Multiaddr(tcp: $0) } }
    var remoteAddress: Multiaddr? { channel.remoteAddress.flatMap { Multiaddr(tcp: $0) } }
    func send(_ bytes: ByteBuffer) {
        guard channel.eventLoop.inEventLoop else { return channel.writeAndFlush(bytes, promise: nil) }
        channel.write(bytes, promise: nil)
        guard !flushScheduled else { return }
        flushScheduled = true
        channel.eventLoop.execute {
            self.flushScheduled = false
            self.channel.flush()
        }
    }

    func close() {
        // Unflushed writes would be failed by the close: what was sent leaves first.
        channel.flush()
        channel.close(promise: nil)
    }
}

/// An upgraded libp2p connection (Noise + Yamux) over one transport: a TCP channel, or a relayed
/// circuit. It carries out the actions of its `SecureConnectionMachine`; every piece of its state
/// lives on the transport's event loop.
public final class Connection: @unchecked Sendable, CustomStringConvertible, Hashable {
    public enum Direction: String, Sendable { case inbound, outbound }

    /// Unique within the process, for tables keyed by connection.
    public let id: UInt64 = Connection.nextID.withLockedValue { v in defer { v += 1 }; return v }
    static let nextID = NIOLockedValueBox<UInt64>(1)

    let transport: ConnectionTransport
    public let direction: Direction
    /// The socket's addresses for TCP; for a relayed circuit the remote is
    /// `<relay's address>/p2p/<relay>/p2p-circuit` and the local one is unknown (nil).
    public var localAddress: Multiaddr? { transport.localAddress }
    public var remoteAddress: Multiaddr? { transport.remoteAddress }
    /// The relay a circuit runs through; nil for a direct connection.
    public let relay: PeerID?
    /// The relay's limits on this circuit (duration, bytes each way), as the relay announced them.
    public let limit: CircuitRelay.Limit?
    /// A relayed connection is limited (the relay may cut it; prefer a direct one for bulk data).
    public var isLimited: Bool { relay != nil }
    /// Event-loop confined after start (its metadata gains the remote address then).
    var logger: Logger

    // Event-loop confined.
    var machine: SecureConnectionMachine
    var streams: [UInt32: MuxedStream] = [:]
    /// Yamux pings in flight: `muxerPing`'s (with a promise) and the round-trip probe's.
    var pings: [UInt32: (sent: NIODeadline, promise: EventLoopPromise<TimeAmount>?)] = [:]
    /// A round-trip probe was sent (event-loop confined).
    var roundTripProbed = false
    var nextPingID: UInt32 = 1
    var closeReason: ConnectionError?
    /// Set by the swarm's keep-alive rule: close as soon as no stream is open, if the condition
    /// (a direct connection to the peer exists) still holds then.
    var idleCloseReason: String?
    var idleCloseStillWanted: (@Sendable () -> Bool)?
    public private(set) var remotePeer: PeerID?
    /// The resource manager and its grant for this connection (released when it closes).
    let resources: NodeResources?
    let resourceID: ResourceManager.ConnectionID
    private var finished = false
    let establishedPromise: EventLoopPromise<PeerID>
    let closedPromise: EventLoopPromise<ConnectionError>

    /// Called on the event loop for each stream the remote opens.
    var onInboundStream: (@Sendable (MuxedStream) -> Void)?
    /// Called on the event loop once when the connection is established.
    var onEstablished: (@Sendable (Connection) -> Void)?

    public var eventLoop: EventLoop { transport.eventLoop }

    init(transport: ConnectionTransport, direction: Direction, role: SecureConnectionMachine.Role, identity: PrivateKey,
         expectedRemote: PeerID?, yamux: YamuxConfig, logger: Logger, relay: PeerID? = nil, limit: CircuitRelay.Limit? = nil,
         resources: NodeResources? = nil, resourceID: ResourceManager.ConnectionID = 0) {
        self.transport = transport
        self.resources = resources
        self.resourceID = resourceID
        self.direction = direction
        self.relay = relay
        self.limit = limit
        self.machine = SecureConnectionMachine(role: role, identity: identity, expectedRemote: expectedRemote, yamuxConfig: yamux)
        self.establishedPromise = transport.eventLoop.makePromise(of: PeerID.self)
        self.closedPromise = transport.eventLoop.makePromise(of: ConnectionError.self)
        var l = logger
        l[metadataKey: "dir"] = "\(direction.rawValue)"
        if let relay { l[metadataKey: "relay"] = "\(relay)" }
        self.logger = l
    }

    public var description: String {
        "\(direction.rawValue) \(remotePeer?.description ?? "?")@\(remoteAddress?.description ?? "?")\(isLimited ? " (relayed)" : "")"
    }

    public static func == (a: Connection, b: Connection) -> Bool { a === b }
    public func hash(into h: inout Hasher) { h.combine(ObjectIdentifier(self)) }

    /// Completes with the authenticated remote peer once the upgrade is done.
    public var established: EventLoopFuture<PeerID> { establishedPromise.futureResult }
    /// Completes with the reason when the connection closes.
    public var closed: EventLoopFuture<ConnectionError> { closedPromise.futureResult }

    // MARK: Driving the machine (event loop)

    func start() {
        logger[metadataKey: "remote"] = "\(remoteAddress?.description ?? "?")"
        perform(machine.start())
    }

    func receive(_ bytes: ByteBuffer) { perform(machine.receive(bytes)) }

    func handshakeTimedOut() { perform(machine.handshakeTimedOut()) }

    func channelClosed() {
        finish(closeReason ?? .closed, log: closeReason == nil && !machine.isClosed)
    }

    func perform(_ actions: [SecureConnectionMachine.Action]) {
        eventLoop.assertInEventLoop()
        var toSend: ByteBuffer?
        func flushPending() {
            if let b = toSend {
                transport.send(b)
                toSend = nil
            }
        }
        for action in actions {
            switch action {
            case .send(var bytes):
                if toSend == nil { toSend = bytes } else { toSend!.writeBuffer(&bytes) }
            case .established(let remote):
                // Observers and stream handlers may write at once (re-entering `perform`, e.g. a
                // relayed connection over one of our streams): what is already encrypted goes
                // out first, or Noise frames would leave out of nonce order.
                flushPending()
                remotePeer = remote
                if case .failure(let refusal) = resources?.establish(resourceID, peer: remote) ?? .success(()) {
                    // Over the peer's limits: close before anyone sees the connection.
                    let reason = ConnectionError.refused("\(refusal)")
                    closeReason = reason
                    for case .send(let b) in machine.close() { transport.send(b) }
                    finish(reason, log: false)
                    transport.close()
                    return
                }
                logger.info("connection established", metadata: ["peer": "\(remote)"])
                // Observers first, so anyone woken by the promise finds the connection registered.
                onEstablished?(self)
                establishedPromise.succeed(remote)
            case .stream(let event):
                flushPending()
                handle(event)
            case .close(let reason):
                flushPending()
                closeReason = reason
                if reason != .closed {
                    logger.warning("closing connection: \(reason)", metadata: ["peer": "\(remotePeer?.description ?? "?")"])
                } else {
                    logger.debug("closing connection")
                }
                finish(reason, log: false)
                transport.close()
            }
        }
        flushPending()
    }

    private func finish(_ reason: ConnectionError, log: Bool) {
        guard !finished else { return }
        finished = true
        if log { logger.info("connection closed by peer") }
        establishedPromise.fail(reason)
        closedPromise.succeed(reason)
        let all = streams.values
        streams = [:]
        for s in all { s.fail(.connectionClosed("\(reason)")) }
        let p = pings
        pings = [:]
        for (_, v) in p { v.promise?.fail(reason) }
    }

    private func handle(_ event: YamuxSession.Event) {
        switch event {
        case .streamOpened(let id):
            var grant: ResourceManager.StreamID?
            if let resources {
                switch resources.openStream(on: resourceID, .inbound, peer: remotePeer) {
                case .failure:
                    perform(machine.reset(id))
                    return
                case .success(let g): grant = g
                }
            }
            let s = MuxedStream(id: id, connection: self, isInbound: true, resourceID: grant)
            streams[id] = s
            onInboundStream?(s)
        case .data(let id, let data):
            streams[id]?.received(data)
        case .remoteClosed(let id):
            guard let s = streams[id] else { return }
            s.receivedFIN()
            if s.localClosed { removeStream(id); streamsChanged() }
        case .reset(let id):
            removeStream(id)?.fail(.reset)
            streamsChanged()
        case .flushed(let id):
            streams[id]?.flushed()
        case .pong(let opaque):
            if let p = pings.removeValue(forKey: opaque) {
                let rtt = NIODeadline.now().uptimeNanoseconds - p.sent.uptimeNanoseconds
                // Every round trip measured tunes the streams' windows.
                machine.setRoundTrip(Double(rtt) / 1e9)
                p.promise?.succeed(.nanoseconds(Int64(rtt)))
            }
        case .goAway(let code):
            logger.debug("peer sent GoAway", metadata: ["code": "\(code)"])
        }
    }

    // MARK: Stream commands (event loop)

    func streamWrite(_ id: UInt32, _ bytes: ByteBuffer) throws -> Int {
        do {
            let (pending, actions) = try machine.write(id, bytes)
            perform(actions)
            return pending
        } catch {
            throw StreamError.connectionClosed("\(error)")
        }
    }

    func streamCloseWrite(_ id: UInt32) {
        perform(machine.closeWrite(id))
        if let s = streams[id], s.remoteClosed { removeStream(id); streamsChanged() }
    }

    func streamReset(_ id: UInt32) {
        removeStream(id)
        perform(machine.reset(id))
        streamsChanged()
    }

    /// Forgets a stream and returns its resources.
    @discardableResult
    private func removeStream(_ id: UInt32) -> MuxedStream? {
        guard let s = streams.removeValue(forKey: id) else { return nil }
        if let g = s.resourceID { resources?.closeStream(g) }
        return s
    }

    /// The keep-alive rule: once marked, the connection closes when its last stream does.
    private func streamsChanged() {
        guard let why = idleCloseReason, streams.isEmpty, !machine.isClosed else { return }
        guard idleCloseStillWanted?() ?? true else {
            idleCloseReason = nil  // the direct connection went away: this one is needed again
            idleCloseStillWanted = nil
            return
        }
        logger.info("closing an idle \(isLimited ? "relayed " : "")connection: \(why)", metadata: ["peer": "\(remotePeer?.description ?? "?")"])
        perform(machine.close())
    }

    /// Closes the connection now if it carries no stream, else as soon as its last stream ends.
    public func closeWhenIdle(because reason: String, while stillWanted: (@Sendable () -> Bool)? = nil) {
        eventLoop.execute {
            guard self.idleCloseReason == nil else { return }
            self.idleCloseReason = reason
            self.idleCloseStillWanted = stillWanted
            self.streamsChanged()
        }
    }

    func streamConsumed(_ id: UInt32, _ count: Int) {
        if !roundTripProbed {
            // The first data read on this connection: measure the round trip for window tuning
            // (connections that never carry data are spared the ping). After the current batch
            // of actions, whose frames were encrypted before the ping's.
            roundTripProbed = true
            eventLoop.execute { self.probeRoundTrip() }
        }
        perform(machine.consumed(id, count, now: Double(NIODeadline.now().uptimeNanoseconds) / 1e9))
    }

    /// Measures the round trip with a Yamux ping (event loop), for window tuning.
    func probeRoundTrip() {
        let id = nextPingID
        nextPingID &+= 1
        pings[id] = (NIODeadline.now(), nil)
        perform(machine.ping(id))
    }

    // MARK: Public API

    /// Opens a stream and negotiates one of `protocols` on it.
    public func openStream(_ protocols: [String], timeout: Duration = .seconds(10)) async throws -> MuxedStream {
        let stream = try await openUnnegotiatedStream()
        do {
            let agreed = try await withTimeout(timeout) { try await stream.negotiateOutbound(protocols) }
            if let g = stream.resourceID { _ = resources?.setProtocol(g, agreed, service: nil, peer: remotePeer) }
        } catch {
            stream.reset()
            throw error
        }
        return stream
    }

    /// Opens a Yamux stream (granted by the resource manager) without negotiating a protocol.
    func openUnnegotiatedStream() async throws -> MuxedStream {
        try await eventLoop.flatSubmit { () -> EventLoopFuture<MuxedStream> in
            var grant: ResourceManager.StreamID?
            if let resources = self.resources, !self.machine.isClosed {
                switch resources.openStream(on: self.resourceID, .outbound, peer: self.remotePeer) {
                case .failure(let r): return self.eventLoop.makeFailedFuture(StreamError.refused("\(r)"))
                case .success(let g): grant = g
                }
            }
            do {
                let (id, actions) = try self.machine.openStream()
                let s = MuxedStream(id: id, connection: self, isInbound: false, resourceID: grant)
                self.streams[id] = s
                self.perform(actions)
                return self.eventLoop.makeSucceededFuture(s)
            } catch {
                if let grant { self.resources?.closeStream(grant) }
                return self.eventLoop.makeFailedFuture(StreamError.connectionClosed("\(error)"))
            }
        }.get()
    }

    /// Streams open on this connection now (0 once it is idle).
    public func openStreamCount() async -> Int {
        (try? await eventLoop.submit { self.streams.count }.get()) ?? 0
    }

    /// The protocols of the streams open now (diagnostics).
    public func openStreamProtocols() async -> [String] {
        (try? await eventLoop.submit { self.streams.values.map { $0.protocolID ?? "?" } }.get()) ?? []
    }

    /// Round-trip time of a Yamux ping on this connection.
    public func muxerPing() async throws -> TimeAmount {
        try await eventLoop.flatSubmit { () -> EventLoopFuture<TimeAmount> in
            let id = self.nextPingID
            self.nextPingID &+= 1
            let p = self.eventLoop.makePromise(of: TimeAmount.self)
            self.pings[id] = (NIODeadline.now(), p)
            self.perform(self.machine.ping(id))
            return p.futureResult
        }.get()
    }

    /// Graceful close: GoAway then close the socket.
    public func close() async {
        try? await eventLoop.submit { self.perform(self.machine.close()) }.get()
        _ = try? await closed.get()
    }
}

/// The channel handler: hands bytes and lifecycle events to the connection, nothing more.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let connection: Connection
    let handshakeTimeout: TimeAmount
    var timer: Scheduled<Void>?

    init(connection: Connection, handshakeTimeout: TimeAmount) {
        self.connection = connection
        self.handshakeTimeout = handshakeTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { activate(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context)
        context.fireChannelActive()
    }

    private func activate(_ context: ChannelHandlerContext) {
        guard timer == nil else { return }
        let conn = connection
        timer = context.eventLoop.scheduleTask(in: handshakeTimeout) { conn.handshakeTimedOut() }
        connection.established.whenComplete { [timer] _ in timer?.cancel() }
        connection.start()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection.receive(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        connection.channelClosed()
        context.fireChannelInactive()
    }

    /// A socket that never became active (a failed connect) is over too.
    func channelUnregistered(context: ChannelHandlerContext) {
        timer?.cancel()
        connection.channelClosed()
        context.fireChannelUnregistered()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        connection.logger.debug("socket error: \(error)")
        context.close(promise: nil)
    }
}

/// Runs `body`, failing with `StreamError.timeout` if it takes longer than `timeout`.
public func withTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw StreamError.timeout
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
