import CairnCore
import CairnNode
import Foundation
import Logging
import NIOCore
import NIOPosix

/// `cairn p2p` forwarding against a direct Cairn stream, in one run: host A forwards a local TCP
/// port to host B, whose `listen` rule connects to a TCP sink; the same MiB also go over one
/// stream from A to B. The sink answers the byte count when the sender half-closes.
func forwardBench(mib: Int, logger: Logger) async throws -> [String: Any] {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    func host() async throws -> CairnHost {
        var c = CairnHost.Configuration()
        c.dataDirectory = nil
        c.listenAddresses = [try Multiaddr("/ip4/127.0.0.1/tcp/0")]
        c.stun = false
        c.autoNATProbing = false
        c.autoRelay = .off
        c.dht.enabled = false
        let h = try CairnHost(configuration: c, group: group, logger: logger)
        try await h.start()
        return h
    }
    let a = try await host(), b = try await host()
    serveSink(on: b.node)
    // The TCP sink behind B's listen rule.
    let sink = try await ServerBootstrap(group: group)
        .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(CountingSink()) } }
        .bind(host: "127.0.0.1", port: 0).get()
    _ = try b.forwarding.listen(proto: "/bench/forward/1.0.0", target: try Multiaddr("/ip4/127.0.0.1/tcp/\(sink.localAddress!.port!)"))
    var dial = DialOptions()
    dial.addresses = b.listenAddresses
    _ = try await a.connect(to: b.peerID, dial)
    let rule = try await a.forwarding.forward(proto: "/bench/forward/1.0.0", listen: try Multiaddr("/ip4/127.0.0.1/tcp/0"), peer: b.peerID)
    let port = Int(try Multiaddr(rule.local).tcpEndpoint!.port)
    let total = UInt64(mib) << 20
    let chunk = ByteBuffer(repeating: 0xcd, count: 256 * 1024)
    let clock = ContinuousClock()

    // Through the forward: a plain TCP client.
    let conn = try await ClientBootstrap(group: group)
        .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        .connect(host: "127.0.0.1", port: port) { ch in
            ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch, configuration: .init(isOutboundHalfClosureEnabled: true)) }
        }
    let t0 = clock.now
    let counted = try await conn.executeThenClose { inbound, outbound -> UInt64 in
        var sent: UInt64 = 0
        while sent < total {
            try await outbound.write(chunk)
            sent += UInt64(chunk.readableBytes)
        }
        outbound.finish()
        var reply = ByteBuffer()
        for try await part in inbound { var p = part; reply.writeBuffer(&p) }
        return reply.readInteger(as: UInt64.self) ?? 0
    }
    let forwardSeconds = seconds(clock.now - t0)
    guard counted == total else { throw ForwardBenchError("the sink counted \(counted) of \(total) bytes") }

    // One stream, directly.
    let stream = try await a.openStream(to: b.peerID, protocols: ["/bench/sink/1.0.0"])
    let t1 = clock.now
    var sent: UInt64 = 0
    while sent < total {
        try await stream.write(chunk)
        sent += UInt64(chunk.readableBytes)
    }
    await stream.closeWrite()
    _ = try await stream.readExactly(8)
    let streamSeconds = seconds(clock.now - t1)

    try await sink.close()
    await a.shutdown()
    await b.shutdown()
    try await group.shutdownGracefully()
    let fwd = Double(mib) / forwardSeconds, direct = Double(mib) / streamSeconds
    return ["mib": mib, "forward_mib_s": fwd, "stream_mib_s": direct, "ratio": fwd / direct]
}

struct ForwardBenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Counts what it receives; when the input ends, answers the count (8 bytes) and closes.
final class CountingSink: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    var count: UInt64 = 0
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { count += UInt64(unwrapInboundIn(data).readableBytes) }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else { return context.fireUserInboundEventTriggered(event) }
        var out = context.channel.allocator.buffer(capacity: 8)
        out.writeInteger(count)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
    }
}
