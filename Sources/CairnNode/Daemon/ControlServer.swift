import CairnCore
import CairnProto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwiftProtobuf
#if canImport(Glibc)
import Glibc
#endif

public enum ControlServerError: Error, CustomStringConvertible {
    case unsupportedAddress(Multiaddr)
    case nonLoopback(Multiaddr)
    case socketInUse(String)

    public var description: String {
        switch self {
        case .unsupportedAddress(let a): return "the control API listens on /unix/<path> or /ip4|ip6/…/tcp/<port>, not \(a)"
        case .nonLoopback(let a):
            return "refusing to serve the control API on \(a): anyone who reaches it controls the node (use a loopback address, or --api-allow-remote)"
        case .socketInUse(let p): return "\(p) is in use by a running daemon"
        }
    }
}

/// The libp2p daemon control protocol (go-libp2p-daemon `specs/CONTROL.md`, `DHT.md`, `CM.md`;
/// js-libp2p-daemon `PEERSTORE.md`) over a Unix socket or loopback TCP: varint-delimited
/// protobuf requests, one response each (DHT queries stream theirs), a control connection that
/// becomes a stream's byte pipe after STREAM_OPEN, inbound streams delivered by dialling the
/// client's socket. Clients such as p2pclient drive a Cairn host with it unchanged. Every failure
/// is an `ERROR` response (or a closed connection for bytes that are not a request); the server
/// keeps serving other clients.
public final class ControlServer: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Largest control message read (go-libp2p-daemon: 4 MiB).
        public var maxMessageSize = 4 << 20
        /// Serve on a non-loopback TCP address (anyone who reaches it controls the node).
        public var allowRemote = false
        /// For requests without a timeout (go: 60 s).
        public var defaultTimeout: Duration = .seconds(60)
        /// Dialling a client's handler socket.
        public var handlerDialTimeout: Duration = .seconds(10)
        /// Control connections open at once; more are closed at accept.
        public var maxConnections = 256
        public init() {}
    }

    /// The host owns its control server (and closes it before itself).
    unowned let host: CairnHost
    public let configuration: Configuration
    let logger: Logger
    private struct State {
        var servers: [Task<Void, Never>] = []
        var unixPaths: [String] = []
        var handlers: [String: Multiaddr] = [:]
        var open = 0
        var closed = false
    }
    private let state = NIOLockedValueBox(State())
    /// Work that outlives a request (inbound-stream deliveries): cancelled and awaited at close.
    let tasks = TaskSet()

    public init(host: CairnHost, configuration: Configuration = Configuration(), logger: Logger) {
        self.host = host
        self.configuration = configuration
        self.logger = logger
    }

    /// Control connections open now (diagnostics and leak tests).
    public var openConnections: Int { state.withLockedValue { $0.open } }

    // MARK: Listening

    /// Listens on `/unix/<path>` (mode 0600; a stale socket file is replaced, a live one refused)
    /// or `/ip4|ip6/…/tcp/<port>` (loopback only unless `allowRemote`). Returns the bound address.
    @discardableResult
    public func listen(_ address: Multiaddr) async throws -> Multiaddr {
        let group = host.node.swarm.group
        let initializer: @Sendable (Channel) -> EventLoopFuture<ByteChannel> = { channel in
            channel.eventLoop.makeCompletedFuture { try byteChannel(channel, halfClosure: true) }
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(SocketOptions.reuseAddr, value: 1)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        let server: NIOAsyncChannel<ByteChannel, Never>
        let bound: Multiaddr
        switch address.components.first {
        case .unix(let path)? where address.components.count == 1:
            if FileManager.default.fileExists(atPath: path) {
                if await Self.socketAnswers(path, group: group) { throw ControlServerError.socketInUse(path) }
                unlink(path)  // stale: a daemon that died without cleaning up
            }
            let oldMask = umask(0o177)  // the socket is created 0600
            defer { umask(oldMask) }
            server = try await bootstrap.bind(unixDomainSocketPath: path, childChannelInitializer: initializer)
            chmod(path, 0o600)
            state.withLockedValue { $0.unixPaths.append(path) }
            bound = address
        default:
            guard let (ip, _) = address.tcpEndpoint, address.peerID == nil else { throw ControlServerError.unsupportedAddress(address) }
            guard configuration.allowRemote || IPScope(ip) == .loopback else { throw ControlServerError.nonLoopback(address) }
            server = try await bootstrap.bind(to: try address.tcpSocketAddress(), childChannelInitializer: initializer)
            guard let local = server.channel.localAddress, let m = Multiaddr(tcp: local) else { throw ControlServerError.unsupportedAddress(address) }
            bound = m
        }
        let task = Task { [self] () -> Void in
            _ = try? await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await conn in inbound {
                        let admitted = state.withLockedValue { s -> Bool in
                            guard s.open < configuration.maxConnections else { return false }
                            s.open += 1
                            return true
                        }
                        guard admitted else {
                            logger.warning("control API: too many connections; closing a new one")
                            try? await conn.channel.close()
                            continue
                        }
                        group.addTask {
                            await self.serve(conn)
                            self.state.withLockedValue { $0.open -= 1 }
                        }
                    }
                }
            }
        }
        state.withLockedValue { $0.servers.append(task) }
        logger.info("control API listening", metadata: ["addr": "\(bound)"])
        return bound
    }

    /// Inbound streams on `proto` go to the client listening at `address` (the last
    /// registration wins).
    func registerHandler(_ proto: String, _ address: Multiaddr) {
        let first = state.withLockedValue { s -> Bool in
            defer { s.handlers[proto] = address }
            return s.handlers[proto] == nil
        }
        guard first else { return }
        host.handle(protocol: proto) { [weak self] stream in
            guard let self, let address = self.state.withLockedValue({ $0.handlers[proto] }) else {
                stream.reset()
                return
            }
            try await self.deliver(stream, to: address)
        }
    }

    /// The protocols clients handle, and where.
    public var handlers: [String: Multiaddr] { state.withLockedValue { $0.handlers } }

    /// Stops listening, ends every control connection and delivery, removes the Unix sockets.
    public func close() async {
        let (servers, paths, protos) = state.withLockedValue { s -> ([Task<Void, Never>], [String], [String]) in
            s.closed = true
            defer { s.servers = []; s.unixPaths = []; s.handlers = [:] }
            return (s.servers, s.unixPaths, Array(s.handlers.keys))
        }
        for p in protos { host.unhandle(protocol: p) }
        for t in servers { t.cancel() }
        for t in servers { await t.value }
        await tasks.cancelAndWait()
        for p in paths { unlink(p) }
    }

    /// Whether something accepts connections on the Unix socket at `path`.
    static func socketAnswers(_ path: String, group: EventLoopGroup) async -> Bool {
        do {
            let ch = try await ClientBootstrap(group: group).connectTimeout(.seconds(1)).connect(unixDomainSocketPath: path).get()
            try? await ch.close()
            return true
        } catch {
            return false
        }
    }

    // MARK: One control connection

    typealias Inbound = NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    typealias Outbound = NIOAsyncChannelOutboundWriter<ByteBuffer>

    /// Reads varint-delimited messages; what follows the last one is kept for a stream pipe.
    struct FrameReader {
        var inbound: Inbound
        var decoder: LengthPrefixedDecoder

        mutating func next() async throws -> [UInt8]? {
            while true {
                if let m = try decoder.next() { return m }
                guard let chunk = try await inbound.next() else {
                    if decoder.bufferedBytes > 0 { throw ControlProtocolError.truncated }
                    return nil
                }
                decoder.append(chunk.readableBytesView)
            }
        }
    }

    enum ControlProtocolError: Error, CustomStringConvertible {
        case truncated
        var description: String { "the connection ended inside a message" }
    }

    private func serve(_ conn: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        let peer = conn.channel.remoteAddress?.description ?? "unix client"
        do {
            try await conn.executeThenClose { inbound, outbound in
                var reader = FrameReader(inbound: inbound.makeAsyncIterator(), decoder: LengthPrefixedDecoder(maxLength: configuration.maxMessageSize))
                while let bytes = try await reader.next() {
                    let request: P2pd_Pb_Request
                    do {
                        request = try P2pd_Pb_Request(serializedBytes: bytes, partial: true)
                    } catch {
                        logger.info("control API: not a request (\(error)); closing", metadata: ["client": "\(peer)"])
                        try await send(.failure("malformed request: \(error)"), on: outbound)
                        return
                    }
                    switch try await answer(request, outbound: outbound) {
                    case .continue: continue
                    case .close: return
                    case .pipe(let stream):
                        await pipeBytes(stream, leftover: reader.decoder.takeRemainder(), inbound: reader.inbound, outbound: outbound,
                                        channel: conn.channel, logger: logger)
                        return
                    }
                }
            }
        } catch {
            logger.info("control connection ended: \(error)", metadata: ["client": "\(peer)"])
        }
    }

    enum Next { case `continue`, close, pipe(MuxedStream) }

    func send(_ response: P2pd_Pb_Response, on outbound: Outbound) async throws {
        try await outbound.write(ByteBuffer(bytes: LengthPrefixedDecoder.frame(try response.serializedBytes(partial: true))))
    }

    func sendBare(_ message: some SwiftProtobuf.Message, on outbound: Outbound) async throws {
        try await outbound.write(ByteBuffer(bytes: LengthPrefixedDecoder.frame(try message.serializedBytes(partial: true))))
    }

    private func answer(_ request: P2pd_Pb_Request, outbound: Outbound) async throws -> Next {
        guard request.hasType else {
            try await send(.failure("unknown or missing request type"), on: outbound)
            return .close
        }
        do {
            switch request.type {
            case .identify:
                try await send(identify(), on: outbound)
            case .connect:
                try await send(try await connect(request), on: outbound)
            case .disconnect:
                try await send(try await disconnect(request), on: outbound)
            case .listPeers:
                try await send(listPeers(), on: outbound)
            case .streamOpen:
                let (response, stream) = try await streamOpen(request)
                do { try await send(response, on: outbound) } catch {
                    stream.reset()  // the client is gone: the peer's handler must not wait on it
                    throw error
                }
                return .pipe(stream)
            case .streamHandler:
                try await send(try streamHandler(request), on: outbound)
            case .dht:
                try await dht(request, outbound: outbound)
            case .connmanager:
                try await send(try await connManager(request), on: outbound)
            case .peerstore:
                try await send(try peerStore(request), on: outbound)
            case .pubsub:
                try await send(.failure("pubsub is not supported by cairn"), on: outbound)
            case .cairn:
                try await send(try await cairn(request), on: outbound)
            }
        } catch let e as ControlRequestError {
            try await send(.failure(e.description), on: outbound)
        } catch let e as CancellationError {
            throw e
        } catch {
            try await send(.failure("\(error)"), on: outbound)
        }
        return .continue
    }

    // MARK: Streams as byte pipes

    /// A peer opened a stream on a protocol a client handles: dial the client's socket, write a
    /// length-prefixed `StreamInfo`, then pipe.
    func deliver(_ stream: MuxedStream, to address: Multiaddr) async throws {
        let conn: ByteChannel
        do {
            conn = try await connectByteChannel(to: address, group: host.node.swarm.group, timeout: configuration.handlerDialTimeout, halfClosure: true)
        } catch {
            logger.info("control API: the handler at \(address) did not answer (\(error)); resetting the stream")
            stream.reset()
            return
        }
        var info = P2pd_Pb_StreamInfo()
        info.peer = Data(stream.connection.remotePeer?.bytes ?? [])
        info.addr = Data(stream.connection.remoteAddress?.bytes ?? [])
        info.proto = stream.protocolID ?? ""
        try await conn.executeThenClose { inbound, outbound in
            try await sendBare(info, on: outbound)
            await pipeBytes(stream, leftover: [], inbound: inbound.makeAsyncIterator(), outbound: outbound, channel: conn.channel, logger: logger)
        }
    }
}

/// A request the daemon refuses, with the message the client sees.
struct ControlRequestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

extension P2pd_Pb_Response {
    static var ok: P2pd_Pb_Response {
        var r = P2pd_Pb_Response()
        r.type = .ok
        return r
    }

    static func failure(_ message: String) -> P2pd_Pb_Response {
        var r = P2pd_Pb_Response()
        r.type = .error
        r.error.msg = message
        return r
    }
}
