import CairnCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

// The UDP side of STUN: a Binding server any STUN client can use, and a client a node uses to
// ask peers' STUN ports for its reflexive address. The decisions are CairnCore's
// STUNServerLogic and STUNClientLogic; the handlers here only move datagrams.

extension STUNEndpoint {
    /// The endpoint of an IPv4 or IPv6 socket address (IPv4-mapped IPv6 unmapped to IPv4).
    public init?(_ address: SocketAddress) {
        guard let text = address.ipAddress, let port = address.port, let e = STUNEndpoint(ip: text, port: UInt16(port)) else { return nil }
        self = e.unmapped
    }
}

/// A STUN Binding server (RFC 8489) on one UDP socket, normally beside the node's TCP listener
/// on the same port number. It answers Binding requests with XOR-MAPPED-ADDRESS (plus SOFTWARE
/// and FINGERPRINT); anything else is refused with an error response or dropped, logged at
/// debug with its reason, and counted in `stats`.
public final class STUNServer: Sendable {
    public let localAddress: SocketAddress
    let channel: Channel
    private let logic: NIOLockedValueBox<STUNServerLogic>

    private init(channel: Channel, localAddress: SocketAddress, logic: NIOLockedValueBox<STUNServerLogic>) {
        self.channel = channel
        self.localAddress = localAddress
        self.logic = logic
    }

    /// Binds a UDP socket at `address` and starts answering.
    ///
    /// `reuseAddress` is off by default: on Linux, SO_REUSEADDR lets any other socket that also
    /// sets it share the UDP port, and unicast datagrams go to the socket bound last — a second
    /// server would not fail, it would silently take the traffic. Off, such a bind fails with
    /// EADDRINUSE.
    public static func start(bindingTo address: SocketAddress, group: EventLoopGroup, software: String? = "cairn",
                             reuseAddress: Bool = false, logger: Logger) async throws -> STUNServer {
        let logic = NIOLockedValueBox(STUNServerLogic(software: software))
        var bootstrap = DatagramBootstrap(group: group)
        // Beside an IPv4 responder on the same port number (a dual-stack node).
        if case .v6 = address { bootstrap = bootstrap.channelOption(SocketOptions.ipv6Only, value: 1) }
        bootstrap = bootstrap
            .channelOption(SocketOptions.reuseAddr, value: reuseAddress ? 1 : 0)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(STUNServerHandler(logic: logic, logger: logger))
                }
            }
        let channel = try await bootstrap.bind(to: address).get()
        guard let local = channel.localAddress else {
            try? await channel.close()
            throw ChannelError.unknownLocalAddress
        }
        logger.info("STUN server listening", metadata: ["udp": "\(local)"])
        return STUNServer(channel: channel, localAddress: local, logic: logic)
    }

    /// Binds UDP on the IP and port number of a TCP listen address (`/ip4|ip6/…/tcp/<port>`),
    /// so the node's STUN port is its TCP port.
    public static func start(besideTCP listenAddress: Multiaddr, group: EventLoopGroup, software: String? = "cairn",
                             reuseAddress: Bool = false, logger: Logger) async throws -> STUNServer {
        try await start(bindingTo: try listenAddress.tcpSocketAddress(), group: group, software: software,
                        reuseAddress: reuseAddress, logger: logger)
    }

    /// The bound address as `/ip4|ip6/…/udp/<port>`.
    public var multiaddr: Multiaddr? {
        guard let e = STUNEndpoint(localAddress) else { return nil }
        return Multiaddr(components: [e.isIPv4 ? .ip4(e.ip) : .ip6(e.ip), .udp(e.port)])
    }

    /// Counts of answers, refusals and drops, with a counter per rejection reason.
    public var stats: STUNServerStats { logic.withLockedValue { $0.stats } }

    public func close() async {
        try? await channel.close()
    }
}

/// Carries datagrams to and from `STUNServerLogic`; decides nothing itself.
final class STUNServerHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let logic: NIOLockedValueBox<STUNServerLogic>
    let logger: Logger

    init(logic: NIOLockedValueBox<STUNServerLogic>, logger: Logger) {
        self.logic = logic
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let source = STUNEndpoint(envelope.remoteAddress) ?? STUNEndpoint(ip: [], port: 0)
        let datagram = Array(envelope.data.readableBytesView)
        let (outcome, count) = logic.withLockedValue { l -> (STUNServerLogic.Outcome, Int) in
            let o = l.handle(datagram, from: source)
            return (o, o.rejection.map { l.stats.count($0.reason) } ?? 0)
        }
        if let r = outcome.rejection {
            logger.debug("STUN datagram \(outcome.reply == nil ? "dropped" : "refused"): \(r.detail)",
                         metadata: ["reason": "\(r.reason)", "count": "\(count)", "from": "\(envelope.remoteAddress)",
                                    "bytes": "\(datagram.count)"])
        }
        if case .answer = outcome {
            logger.trace("STUN Binding answered", metadata: ["to": "\(envelope.remoteAddress)"])
        }
        if let reply = outcome.reply {
            let out = AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: context.channel.allocator.buffer(bytes: reply))
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // One bad datagram or a transient send error must not stop the server.
        logger.debug("STUN socket error: \(error)")
    }
}

// MARK: - Client

public enum STUNQueryError: Error, Equatable, CustomStringConvertible {
    /// No usable answer after `attempts` transmissions within the timeout.
    case timeout(attempts: Int)
    case failed(STUNClientError)
    case unsupportedAddress(String)

    public var description: String {
        switch self {
        case .timeout(let n): return "no STUN answer after \(n) request\(n == 1 ? "" : "s")"
        case .failed(let e): return e.description
        case .unsupportedAddress(let a): return "cannot query STUN at \(a)"
        }
    }
}

/// Asks a STUN server for this host's reflexive address: one Binding transaction over UDP from
/// an ephemeral port, retransmitted as RFC 8489 §6.2.1 says (RTO 500 ms, doubling) but at most
/// `maxTransmissions` times and never past the timeout. One answer is one voter: callers should
/// weigh it against others, never act on a single server's word.
public struct STUNClient: Sendable {
    public static let initialRTO: TimeAmount = .milliseconds(500)
    /// Requests sent per query (RFC 8489's Rc is 7; three suffice to ride out a lost datagram
    /// and keep a query under a few seconds).
    public static let maxTransmissions = 3
    /// Requests at 0, 0.5 and 1.5 s, then 2 s (the doubled RTO) for the last answer.
    public static let defaultTimeout: TimeAmount = .milliseconds(3500)

    public let group: EventLoopGroup
    public var software: String?

    public init(group: EventLoopGroup, software: String? = nil) {
        self.group = group
        self.software = software
    }

    /// The mapped address `server` saw this query come from.
    public func query(server: SocketAddress, timeout: TimeAmount = STUNClient.defaultTimeout) async throws -> STUNEndpoint {
        try await exchange(server: server, timeout: timeout).mapped
    }

    /// The mapped address, and the local address the query was sent from (by default an
    /// ephemeral port on the wildcard address of the server's family).
    public func exchange(server: SocketAddress, timeout: TimeAmount = STUNClient.defaultTimeout,
                         from localAddress: SocketAddress? = nil) async throws -> (mapped: STUNEndpoint, local: SocketAddress) {
        let local: SocketAddress
        switch (server, localAddress) {
        case (_, let l?): local = l
        case (.v4, nil): local = try SocketAddress(ipAddress: "0.0.0.0", port: 0)
        case (.v6, nil): local = try SocketAddress(ipAddress: "::", port: 0)
        default: throw STUNQueryError.unsupportedAddress("\(server)")
        }
        guard let serverEndpoint = STUNEndpoint(server) else { throw STUNQueryError.unsupportedAddress("\(server)") }
        let logic = STUNClientLogic(software: software)
        let loop = group.next()
        let promise = loop.makePromise(of: STUNEndpoint.self)
        let bootstrap = DatagramBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(STUNClientHandler(
                        logic: logic, server: server, serverEndpoint: serverEndpoint, timeout: timeout, promise: promise))
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.bind(to: local).get()
        } catch {
            promise.fail(error)
            throw error
        }
        let bound = channel.localAddress ?? local
        return try await withTaskCancellationHandler {
            defer { channel.close(promise: nil) }
            return (try await promise.futureResult.get(), bound)
        } onCancel: {
            promise.fail(CancellationError())
        }
    }
}

/// Sends the request, retransmits on schedule, and settles the promise with the first answer
/// to this transaction from the server's address; stray datagrams are dropped.
final class STUNClientHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let logic: STUNClientLogic
    let request: [UInt8]
    let server: SocketAddress
    let serverEndpoint: STUNEndpoint
    let timeout: TimeAmount
    let promise: EventLoopPromise<STUNEndpoint>
    var sent = 0
    var rto = STUNClient.initialRTO
    var retransmit: Scheduled<Void>?
    var deadline: Scheduled<Void>?
    var done = false

    init(logic: STUNClientLogic, server: SocketAddress, serverEndpoint: STUNEndpoint, timeout: TimeAmount,
         promise: EventLoopPromise<STUNEndpoint>) {
        self.logic = logic
        self.request = logic.request()
        self.server = server
        self.serverEndpoint = serverEndpoint
        self.timeout = timeout
        self.promise = promise
    }

    func handlerAdded(context: ChannelHandlerContext) {
        promise.futureResult.assumeIsolated().whenComplete { [self] _ in finish() }
    }

    func channelActive(context: ChannelHandlerContext) {
        let loop = context.eventLoop.assumeIsolated()
        deadline = loop.scheduleTask(in: timeout) { [self] in
            guard !done else { return }
            promise.fail(STUNQueryError.timeout(attempts: sent))
        }
        transmit(context.channel, loop)
        context.fireChannelActive()
    }

    private func transmit(_ channel: Channel, _ loop: NIOIsolatedEventLoop) {
        guard !done else { return }
        sent += 1
        let envelope = AddressedEnvelope(remoteAddress: server, data: channel.allocator.buffer(bytes: request))
        channel.writeAndFlush(envelope, promise: nil)
        guard sent < STUNClient.maxTransmissions else { return }
        retransmit = loop.scheduleTask(in: rto) { [self] in transmit(channel, loop) }
        rto = rto * 2
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        let envelope = unwrapInboundIn(data)
        // Only the server we asked may answer (a different source is stray or forged).
        guard STUNEndpoint(envelope.remoteAddress) == serverEndpoint else { return }
        do {
            promise.succeed(try logic.parseResponse(Array(envelope.data.readableBytesView)))
        } catch where error.isIgnorable {
            return
        } catch {
            promise.fail(STUNQueryError.failed(error))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ICMP port unreachable and the like: keep retransmitting until the deadline.
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done { promise.fail(ChannelError.ioOnClosedChannel) }
        context.fireChannelInactive()
    }

    private func finish() {
        done = true
        retransmit?.cancel()
        deadline?.cancel()
    }
}
