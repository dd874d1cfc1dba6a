import CairnCore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves `GET /metrics` in Prometheus' text format (version 0.0.4) over HTTP/1.1. Loopback
/// only unless the operator allows otherwise: metrics tell who the node talks to.
public final class MetricsServer: Sendable {
    public enum Failure: Error, CustomStringConvertible {
        case notTCP(Multiaddr)
        case notLoopback(Multiaddr)
        public var description: String {
            switch self {
            case .notTCP(let a): return "metrics address \(a) is not /ip4|ip6/…/tcp/…"
            case .notLoopback(let a): return "metrics address \(a) is not on loopback (allow remote scrapes explicitly)"
            }
        }
    }

    let channel: Channel
    /// The bound address (`/ip4/127.0.0.1/tcp/<port>`).
    public let address: Multiaddr

    private init(channel: Channel, address: Multiaddr) {
        self.channel = channel
        self.address = address
    }

    public static func start(on address: Multiaddr, allowRemote: Bool = false, group: EventLoopGroup,
                             metrics: NodeMetrics, logger: Logger) async throws -> MetricsServer {
        guard let (ip, _) = address.tcpEndpoint else { throw Failure.notTCP(address) }
        let loopback = ip.count == 4 ? ip[0] == 127 : ip == [UInt8](repeating: 0, count: 15) + [1]
        guard loopback || allowRemote else { throw Failure.notLoopback(address) }
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(SocketOptions.reuseAddr, value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(metrics: metrics))
                }
            }
            .bind(to: try address.tcpSocketAddress())
            .get()
        guard let local = channel.localAddress, let bound = Multiaddr(tcp: local) else {
            try? await channel.close()
            throw Failure.notTCP(address)
        }
        logger.info("serving metrics", metadata: ["addr": "\(bound)"])
        return MetricsServer(channel: channel, address: bound)
    }

    public func close() async { try? await channel.close() }
}

/// One request at a time per connection: `GET /metrics` gets the exposition, anything else 404/405.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let metrics: NodeMetrics
    private var head: HTTPRequestHead?

    init(metrics: NodeMetrics) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let h = head else { return }
            head = nil
            let (status, body): (HTTPResponseStatus, String)
            let path = h.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? h.uri
            if h.method != .GET {
                (status, body) = (.methodNotAllowed, "only GET\n")
            } else if path == "/metrics" {
                (status, body) = (.ok, metrics.exposition())
            } else {
                (status, body) = (.notFound, "metrics are at /metrics\n")
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
            headers.add(name: "Content-Length", value: "\(body.utf8.count)")
            if !h.isKeepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            let keepAlive = h.isKeepAlive
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }
}
