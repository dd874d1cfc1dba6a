import CairnCore
import CairnNode
import Foundation
import Logging
import NIOCore
import NIOPosix

/// `cairn p2p` forwarding against a direct Cairn stream, in one run: host A forwards a local TCP
/// port to host B, whose `listen` rule connects to a TCP sink; the same MiB also go over one
/// stream from A to B. The sink answers the byte count when the sender half-closes. Then
/// `conns` short connections through the forward (one byte each way, then close).
func forwardBench(mib: Int, conns: Int, logger: Logger) async throws -> [String: Any] {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    func host() async throws -> CairnHost {
        var c = CairnHost.Configuration()
        c.dataDirectory = nil
        c.listenAddresses = [try Multiaddr("/ip4/127.0.0.1/tcp/0")]
        c.stun = false
        c.autoNATProbing = false
        c.autoRelay = .off
        c.dht.enabled = false
        c.node.swarm.resources.allow = [ResourceManager.AllowEntry("127.0.0.0/8")!]
        let h = try CairnHost(configuration: c, group: group, logger: logger)
        try await h.start()
        return h
    }
    let a = try await host(), b = try await host()
    serveSink(on: b.node)
    let sink = try await startTCPSink(group: group)
    _ = try b.forwarding.listen(proto: "/bench/forward/1.0.0", target: try Multiaddr("/ip4/127.0.0.1/tcp/\(sink.localAddress!.port!)"))
    var dial = DialOptions()
    dial.addresses = b.listenAddresses
    _ = try await a.connect(to: b.peerID, dial)
    let rule = try await a.forwarding.forward(proto: "/bench/forward/1.0.0", listen: try Multiaddr("/ip4/127.0.0.1/tcp/0"), peer: b.peerID)
    let port = Int(try Multiaddr(rule.local).tcpEndpoint!.port)

    let fwd = try await pushThroughTCP(port: port, mib: mib, group: group)
    let (connRate, connFailures) = conns > 0 ? try await connectionsThroughTCP(port: port, count: conns, group: group) : (0, 0)

    // One stream, directly.
    let direct = try await pushToSink(try await a.openStream(to: b.peerID, protocols: ["/bench/sink/1.0.0"]), mib: mib)

    try await sink.close()
    await a.shutdown()
    await b.shutdown()
    try await group.shutdownGracefully()
    return ["mib": mib, "forward_mib_s": fwd, "stream_mib_s": direct, "ratio": fwd / direct, "forward_conns_per_s": connRate,
            "forward_conns_failed": connFailures]
}

/// A TCP server that counts what each connection sends and answers the count when it half-closes.
func startTCPSink(group: EventLoopGroup) async throws -> Channel {
    try await ServerBootstrap(group: group)
        .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(CountingSink()) } }
        .bind(host: "127.0.0.1", port: 0).get()
}

/// One TCP connection to `port` that announces and sends `bytes` and reads the count the sink
/// at the far end answers (then it closes).
func sendThroughTCP(port: Int, bytes: UInt64, chunk: ByteBuffer, group: EventLoopGroup) async throws -> UInt64 {
    let conn = try await ClientBootstrap(group: group)
        .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        .connect(host: "127.0.0.1", port: port) { ch in
            ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch, configuration: .init(isOutboundHalfClosureEnabled: true)) }
        }
    return try await conn.executeThenClose { inbound, outbound -> UInt64 in
        var header = ByteBuffer()
        header.writeInteger(bytes)
        try await outbound.write(header)
        var sent: UInt64 = 0
        while sent < bytes {
            let n = min(UInt64(chunk.readableBytes), bytes - sent)
            try await outbound.write(chunk.getSlice(at: chunk.readerIndex, length: Int(n))!)
            sent += n
        }
        // No half-close before the answer: kubo's forward closes both ways at the first EOF.
        var reply = ByteBuffer()
        for try await part in inbound { var p = part; reply.writeBuffer(&p) }
        return reply.readInteger(as: UInt64.self) ?? 0
    }
}

/// MiB/s of `mib` MiB through a TCP forward at `port` to a counting sink (the count is checked).
func pushThroughTCP(port: Int, mib: Int, group: EventLoopGroup) async throws -> Double {
    let total = UInt64(mib) << 20
    let clock = ContinuousClock()
    let t0 = clock.now
    let counted = try await sendThroughTCP(port: port, bytes: total, chunk: ByteBuffer(repeating: 0xcd, count: 256 * 1024), group: group)
    guard counted == total else { throw ForwardBenchError("the sink counted \(counted) of \(total) bytes") }
    return Double(mib) / seconds(clock.now - t0)
}

/// Connections per second through a TCP forward at `port`: each sends one byte and reads the
/// sink's count, then closes; 8 at a time. Connections that do not get the count back (the
/// forward closed them) are counted apart.
func connectionsThroughTCP(port: Int, count: Int, group: EventLoopGroup) async throws -> (perSecond: Double, failed: Int) {
    let one = ByteBuffer(bytes: [1])
    let clock = ContinuousClock()
    let t0 = clock.now
    let failed = try await withThrowingTaskGroup(of: Int.self) { g in
        for w in 0..<8 {
            g.addTask {
                var failed = 0
                for _ in 0..<(count / 8 + (w < count % 8 ? 1 : 0)) {
                    let n = try? await sendThroughTCP(port: port, bytes: 1, chunk: one, group: group)
                    if n != 1 { failed += 1 }
                }
                return failed
            }
        }
        return try await g.reduce(0, +)
    }
    return (Double(count - failed) / seconds(clock.now - t0), failed)
}

/// The same forwarding through two kubo 0.22.0 nodes (go-libp2p v0.29.2, `P2PListen` and
/// `P2PForward` through kubo-python, driven by Tests/Interop/kubopeer.py), same sink, same client.
func kuboForwardBench(python: String, script: String, mib: Int, conns: Int) async throws -> [String: Any] {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let sink = try await startTCPSink(group: group)
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-bench-kubo-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: scratch) }
    let a = try JSONLineProcess(python, [script, "--repo", scratch.appendingPathComponent("a").path])
    let b = try JSONLineProcess(python, [script, "--repo", scratch.appendingPathComponent("b").path])
    defer { a.stop(); b.stop() }
    let readyA = try a.next(), readyB = try b.next()
    guard readyA["event"] as? String == "ready", readyB["event"] as? String == "ready",
          let bID = readyB["peer_id"] as? String, let bAddr = (readyB["addrs"] as? [String])?.first else {
        throw ForwardBenchError("kubo did not start: \(readyA) \(readyB)")
    }
    func command(_ p: JSONLineProcess, _ line: String) throws -> [String: Any] {
        let r = try p.send(line)
        if let e = r["error"] { throw ForwardBenchError("kubo \(line): \(e)") }
        return r
    }
    _ = try command(b, "p2p-listen /x/bench /ip4/127.0.0.1/tcp/\(sink.localAddress!.port!)")
    _ = try command(a, "connect \(bAddr)")
    let fw = try command(a, "p2p-forward /x/bench /ip4/127.0.0.1/tcp/0 \(bID)")
    guard let listen = fw["listen"] as? String, let port = try Multiaddr(listen).tcpEndpoint?.port else {
        throw ForwardBenchError("kubo p2p-forward gave no address: \(fw)")
    }
    let rate = try await pushThroughTCP(port: Int(port), mib: mib, group: group)
    let (connRate, connFailures) = conns > 0 ? try await connectionsThroughTCP(port: Int(port), count: conns, group: group) : (0, 0)
    try await sink.close()
    try await group.shutdownGracefully()
    return ["mib": mib, "forward_mib_s": rate, "forward_conns_per_s": connRate, "forward_conns_failed": connFailures]
}

/// A child process that answers one JSON object per line (kubopeer.py).
final class JSONLineProcess {
    let process = Process()
    let input = Pipe(), output = Pipe()
    var buffered = Data()

    init(_ executable: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    func next() throws -> [String: Any] {
        while true {
            if let nl = buffered.firstIndex(of: 0x0a) {
                let line = buffered[buffered.startIndex..<nl]
                buffered = Data(buffered[(nl + 1)...])
                if let o = try? JSONSerialization.jsonObject(with: line) as? [String: Any] { return o }
                continue
            }
            let d = output.fileHandleForReading.availableData
            guard !d.isEmpty else { throw ForwardBenchError("\(process.executableURL!.lastPathComponent) exited") }
            buffered += d
        }
    }

    func send(_ line: String) throws -> [String: Any] {
        input.fileHandleForWriting.write(Data((line + "\n").utf8))
        return try next()
    }

    func stop() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}

struct ForwardBenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Counts what it receives after an 8-byte header holding how many bytes will follow; answers
/// the count (8 bytes) and closes once that many have arrived, or when the input ends (kubo's
/// forward closes both ways at the sender's half-close, so the answer cannot wait for it).
final class CountingSink: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    var header = ByteBuffer()
    var expected: UInt64?
    var count: UInt64 = 0
    var answered = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        if expected == nil {
            let n = min(8 - header.readableBytes, b.readableBytes)
            var h = b.readSlice(length: n)!
            header.writeBuffer(&h)
            if header.readableBytes == 8 { expected = header.readInteger(as: UInt64.self) }
        }
        count += UInt64(b.readableBytes)
        if let expected, count >= expected { answer(context) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else { return context.fireUserInboundEventTriggered(event) }
        answer(context)
    }

    func answer(_ context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        var out = context.channel.allocator.buffer(capacity: 8)
        out.writeInteger(count)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
    }
}
