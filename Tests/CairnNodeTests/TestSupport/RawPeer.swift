import CairnCore
import CairnNode
import Foundation
import NIOCore
import NIOPosix

enum RawPeerError: Error, CustomStringConvertible {
    case timeout(String)
    case closedEarly(wanted: Int, have: Int)

    var description: String {
        switch self {
        case .timeout(let what): return "raw peer: timed out waiting for \(what)"
        case .closedEarly(let w, let h): return "raw peer: socket closed with \(h) of \(w) awaited bytes"
        }
    }
}

/// A bare TCP client for misbehaving on purpose: it writes whatever bytes a test gives it and
/// collects everything the other side sends, so tests can speak (or break) libp2p by hand.
/// Every wait is bounded by a deadline.
final class RawPeer: @unchecked Sendable {
    /// Collects received bytes and notices when the socket closes. Shared with the event loop.
    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer

        private let lock = NSLock()
        private var buffer: [UInt8] = []
        private var closed = false

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            lock.withLock { buffer += bytes.readableBytesView }
        }

        func channelInactive(context: ChannelHandlerContext) {
            lock.withLock { closed = true }
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            // A reset by the peer counts as a close; the test only cares that the socket ended.
            context.close(promise: nil)
        }

        var isClosed: Bool { lock.withLock { closed } }
        var buffered: Int { lock.withLock { buffer.count } }

        /// Removes and returns up to `max` buffered bytes.
        func take(max: Int) -> [UInt8] {
            lock.withLock {
                let n = Swift.min(max, buffer.count)
                let out = Array(buffer[0..<n])
                buffer.removeFirst(n)
                return out
            }
        }
    }

    let channel: Channel
    let collector: Collector

    private init(channel: Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    /// Connects to `address`, from the local address `source` (a 127.0.0.x to stand for another
    /// host) when given.
    static func connect(to address: Multiaddr, group: EventLoopGroup, from source: String? = nil) async throws -> RawPeer {
        let collector = Collector()
        var bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
        if let source { bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: source, port: 0)) }
        let channel = try await bootstrap
            .connect(to: try address.withoutTrailingPeerID.tcpSocketAddress())
            .get()
        return RawPeer(channel: channel, collector: collector)
    }

    func send(_ bytes: [UInt8]) async throws {
        try await send(ByteBuffer(bytes: bytes))
    }

    func send(_ buffer: ByteBuffer) async throws {
        try await channel.writeAndFlush(buffer).get()
    }

    /// Waits (polling, up to `timeout`) until `condition` holds; returns whether it did.
    private func poll(timeout: Duration, _ condition: () -> Bool) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            if condition() { return true }
            if clock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Waits for exactly `count` bytes and consumes them. Throws if the socket closes first or
    /// the time runs out.
    func awaitBytes(count: Int, timeout: Duration = .seconds(5)) async throws -> [UInt8] {
        let ok = await poll(timeout: timeout) { collector.buffered >= count || collector.isClosed }
        if collector.buffered >= count { return collector.take(max: count) }
        if ok { throw RawPeerError.closedEarly(wanted: count, have: collector.buffered) }
        throw RawPeerError.timeout("\(count) bytes (have \(collector.buffered))")
    }

    /// Waits for at least one byte and consumes everything buffered. Throws on close or timeout.
    func awaitAnyBytes(timeout: Duration = .seconds(5)) async throws -> [UInt8] {
        _ = await poll(timeout: timeout) { collector.buffered > 0 || collector.isClosed }
        if collector.buffered > 0 { return collector.take(max: .max) }
        if collector.isClosed { throw RawPeerError.closedEarly(wanted: 1, have: 0) }
        throw RawPeerError.timeout("any bytes")
    }

    /// Reads one libp2p Noise frame (2-byte big-endian length, then the body).
    func awaitNoiseFrame(timeout: Duration = .seconds(5)) async throws -> [UInt8] {
        let header = try await awaitBytes(count: 2, timeout: timeout)
        let length = Int(header[0]) << 8 | Int(header[1])
        return try await awaitBytes(count: length, timeout: timeout)
    }

    /// Whether the other side closed the socket within `timeout` (bytes that arrive meanwhile,
    /// such as a GoAway, stay buffered).
    func awaitClose(timeout: Duration = .seconds(5)) async -> Bool {
        await poll(timeout: timeout) { collector.isClosed }
    }

    var isClosed: Bool { collector.isClosed }

    func close() async {
        try? await channel.close()
    }
}
