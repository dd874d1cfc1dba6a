import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// TCP over peer streams, as kubo's `ipfs p2p`: `listen` exposes a local TCP service to peers on
/// a protocol (each inbound stream becomes a TCP connection to the target); `forward` turns each
/// local TCP connection into a stream to a peer. Bytes are piped both ways; the end of writing is
/// passed on (half-close) and a reset closes the other side.
public final class Forwarding: @unchecked Sendable {
    public struct Rule: Sendable, Equatable, Codable {
        public enum Kind: String, Sendable, Codable { case listen, forward }
        public var kind: Kind
        public var proto: String
        /// listen: the local service connected to; forward: the local address listened on.
        public var local: String
        /// forward: the peer the streams go to.
        public var peer: String?
        public var connections: Int
    }

    public struct Configuration: Sendable {
        /// A relayed connection: wait this long for the direct upgrade before forwarding over it.
        public var upgradeWait: Duration = .seconds(5)
        public var connectTimeout: Duration = .seconds(10)
        public init() {}
    }

    unowned let host: CairnHost
    public let configuration: Configuration
    let logger: Logger
    private struct Forward {
        var rule: Rule
        var server: Channel?
        var task: Task<Void, Never>?
    }
    private struct State {
        var listens: [String: Rule] = [:]
        var forwards: [String: Forward] = [:]
        var active: [String: Int] = [:]
    }
    private let state = NIOLockedValueBox(State())
    let tasks = TaskSet()

    init(host: CairnHost, configuration: Configuration = Configuration(), logger: Logger) {
        self.host = host
        self.configuration = configuration
        self.logger = logger
    }

    public var rules: [Rule] {
        state.withLockedValue { s in
            (Array(s.listens.values) + s.forwards.values.map(\.rule)).map { r in
                var r = r
                r.connections = s.active[Self.key(r), default: 0]
                return r
            }.sorted { ($0.kind.rawValue, $0.proto, $0.local) < ($1.kind.rawValue, $1.proto, $1.local) }
        }
    }

    static func key(_ r: Rule) -> String { "\(r.kind.rawValue) \(r.proto) \(r.local)" }

    private func count(_ r: Rule, _ delta: Int) { state.withLockedValue { $0.active[Self.key(r), default: 0] += delta } }

    // MARK: listen

    /// Peers that open `proto` to us are connected to the TCP service at `target`.
    public func listen(proto: String, target: Multiaddr) throws -> Rule {
        guard target.tcpEndpoint != nil, target.peerID == nil else { throw ControlRequestError("p2p listen: the target must be /ip4|ip6/…/tcp/…, not \(target)") }
        let rule = Rule(kind: .listen, proto: proto, local: target.description, peer: nil, connections: 0)
        let new = state.withLockedValue { s -> Bool in
            guard s.listens[proto] == nil else { return false }
            s.listens[proto] = rule
            return true
        }
        guard new else { throw ControlRequestError("p2p listen: \(proto) is already being listened for") }
        host.handle(protocol: proto) { [weak self] stream in
            guard let self else { stream.reset(); return }
            try await self.connectOut(stream, rule: rule, target: target)
        }
        logger.notice("p2p: peers opening \(proto) reach \(target)")
        return rule
    }

    private func connectOut(_ stream: MuxedStream, rule: Rule, target: Multiaddr) async throws {
        let conn: ByteChannel
        do {
            conn = try await connectByteChannel(to: target, group: host.node.swarm.group, timeout: configuration.connectTimeout, halfClosure: true)
        } catch {
            logger.info("p2p: \(target) refused a stream from \(stream.connection.remotePeer?.description ?? "?"): \(error)")
            stream.reset()
            return
        }
        count(rule, 1)
        defer { count(rule, -1) }
        try await conn.executeThenClose { inbound, outbound in
            await pipeBytes(stream, leftover: [], inbound: inbound.makeAsyncIterator(), outbound: outbound, channel: conn.channel, logger: logger)
        }
    }

    // MARK: forward

    /// Listens on `listen`; each TCP connection becomes a stream to `peer` on `proto`.
    public func forward(proto: String, listen: Multiaddr, peer: PeerID) async throws -> Rule {
        guard listen.tcpEndpoint != nil, listen.peerID == nil else { throw ControlRequestError("p2p forward: listen on /ip4|ip6/…/tcp/…, not \(listen)") }
        let server = try await ServerBootstrap(group: host.node.swarm.group)
            .serverChannelOption(SocketOptions.reuseAddr, value: 1)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .bind(to: try listen.tcpSocketAddress()) { ch in
                ch.eventLoop.makeCompletedFuture { try byteChannel(ch, halfClosure: true) }
            }
        let bound = server.channel.localAddress.flatMap { Multiaddr(tcp: $0) } ?? listen
        let rule = Rule(kind: .forward, proto: proto, local: bound.description, peer: peer.description, connections: 0)
        let task = Task { [self] () -> Void in
            _ = try? await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await conn in inbound {
                        group.addTask { await self.forwardOne(conn, rule: rule, peer: peer) }
                    }
                }
            }
        }
        state.withLockedValue { $0.forwards[bound.description] = Forward(rule: rule, server: server.channel, task: task) }
        logger.notice("p2p: \(bound) forwards to \(peer) on \(proto)")
        return rule
    }

    private func forwardOne(_ conn: NIOAsyncChannel<ByteBuffer, ByteBuffer>, rule: Rule, peer: PeerID) async {
        count(rule, 1)
        defer { count(rule, -1) }
        do {
            var options = DialOptions()
            // As `cairn dial`: direct attempts from an ephemeral port (a failed SYN from the
            // listen port would spoil the 4-tuple a hole punch needs next).
            options.portUse = .ephemeral
            options.waitForUpgrade = configuration.upgradeWait
            let outcome = try await host.connect(to: peer, options)
            if outcome.connection.isLimited {
                logger.notice("p2p: forwarding to \(peer) over a relayed connection (relay limits apply): \(outcome.whyRelayed ?? "no direct path yet")")
            }
            let stream = try await outcome.connection.openStream([rule.proto])
            try await conn.executeThenClose { inbound, outbound in
                await pipeBytes(stream, leftover: [], inbound: inbound.makeAsyncIterator(), outbound: outbound, channel: conn.channel, logger: logger)
            }
        } catch {
            logger.info("p2p: forwarding to \(peer) on \(rule.proto) failed: \(error)")
            try? await conn.channel.close()
        }
    }

    // MARK: close

    /// Closes the rules that match (protocol and/or local address; all with `all`); returns them.
    @discardableResult
    public func close(proto: String?, local: String?, all: Bool) async -> [Rule] {
        let (listens, forwards) = state.withLockedValue { s -> ([Rule], [Forward]) in
            let l = s.listens.values.filter { r in all || ((proto == nil || r.proto == proto) && (local == nil || r.local == local)) }
            let f = s.forwards.values.filter { f in all || ((proto == nil || f.rule.proto == proto) && (local == nil || f.rule.local == local)) }
            for r in l { s.listens[r.proto] = nil }
            for x in f { s.forwards[x.rule.local] = nil }
            return (l, f)
        }
        for r in listens { host.unhandle(protocol: r.proto) }
        for f in forwards {
            try? await f.server?.close()
            f.task?.cancel()
            await f.task?.value
        }
        return listens + forwards.map(\.rule)
    }
}

/// Bytes both ways between a socket and a stream until both directions end: the end of writing
/// is passed on (half-close); a stream reset or a socket error closes the other side at once.
func pipeBytes(_ stream: MuxedStream, leftover: [UInt8], inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
               outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, channel: Channel, logger: Logger) async {
    var it = inbound
    await withTaskGroup(of: Void.self) { g in
        g.addTask {
            do {
                while let chunk = try await stream.read() { try await outbound.write(chunk) }
                outbound.finish()
            } catch {
                logger.debug("pipe: stream → socket ended: \(error)")
                channel.close(promise: nil)  // a reset: the socket goes too
            }
        }
        // Socket → stream here, in this task (the inbound iterator stays in one task).
        do {
            if !leftover.isEmpty { try await stream.write(leftover) }
            while let chunk = try await it.next() { try await stream.write(chunk) }
            await stream.closeWrite()
        } catch {
            logger.debug("pipe: socket → stream ended: \(error)")
            stream.reset()
        }
        await g.waitForAll()
    }
}

/// A socket as an async byte channel: with `halfClosure`, each side's end of writing is passed
/// on (shutdown of the write half) instead of closing the socket.
typealias ByteChannel = NIOAsyncChannel<ByteBuffer, ByteBuffer>

func byteChannel(_ channel: Channel, halfClosure: Bool) throws -> ByteChannel {
    try ByteChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: halfClosure))
}

/// Connects to `/unix/<path>` or `/ip4|ip6/…/tcp/…` (the control API's and the forwarding's
/// local addresses).
func connectByteChannel(to address: Multiaddr, group: EventLoopGroup, timeout: Duration, halfClosure: Bool) async throws -> ByteChannel {
    let bootstrap = ClientBootstrap(group: group)
        .connectTimeout(TimeAmount(timeout))
        .channelOption(ChannelOptions.allowRemoteHalfClosure, value: halfClosure)
    let initializer: @Sendable (Channel) -> EventLoopFuture<ByteChannel> = { ch in
        ch.eventLoop.makeCompletedFuture { try byteChannel(ch, halfClosure: halfClosure) }
    }
    switch address.components.first {
    case .unix(let path)?: return try await bootstrap.connect(unixDomainSocketPath: path, channelInitializer: initializer)
    default: return try await bootstrap.connect(to: try address.tcpSocketAddress(), channelInitializer: initializer)
    }
}
