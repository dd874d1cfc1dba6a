import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The relay side of Circuit Relay v2 (hop protocol): grants reservations with signed vouchers,
/// opens circuits to reserved peers over the stop protocol, and forwards the circuit's bytes —
/// an end-to-end encrypted session it cannot read — within each circuit's limits of time and
/// bytes. `RelayResources` decides; this carries it out.
public final class RelayService: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var resources = RelayResources.Configuration()
        public var messageTimeout: Duration = .seconds(10)
        /// Copy chunk size when forwarding.
        public var chunkSize = 64 * 1024
        public init() {}
    }

    /// What an operator sees: counts, limits and refusals.
    public struct Stats: Sendable {
        public var serving: Bool
        public var reservations: [RelayResources.Reservation]
        public var circuits: [RelayResources.Circuit]
        public var reservationsGranted: Int
        public var circuitsOpened: Int
        public var refused: [RelayResources.Refusal: Int]
        public var bytesForwarded: UInt64
        /// How circuits ended, by reason ("data limit", "duration limit", "closed", …).
        public var circuitEnds: [String: Int]
        public var configuration: RelayResources.Configuration
    }

    let node: Node
    public let configuration: Configuration
    let logger: Logger
    private struct State {
        var resources: RelayResources
        var serving = false
        var bytesForwarded: UInt64 = 0
        var circuitEnds: [String: Int] = [:]
        var watched: Set<UInt64> = []
        var subscriptions: [EventSubscription] = []
    }
    private let state: NIOLockedValueBox<State>
    /// Testing: sees every chunk forwarded (to prove it is ciphertext).
    let tap = NIOLockedValueBox<(@Sendable ([UInt8]) -> Void)?>(nil)

    public init(node: Node, configuration: Configuration = Configuration(), logger: Logger) {
        self.node = node
        self.configuration = configuration
        self.logger = logger
        self.state = NIOLockedValueBox(State(resources: RelayResources(configuration: configuration.resources)))
    }

    /// Starts or stops volunteering: the hop protocol is served (and so announced by identify)
    /// only while serving. Existing circuits are left to finish.
    public func setServing(_ on: Bool) {
        let changed = state.withLockedValue { s -> Bool in
            defer { s.serving = on }
            return s.serving != on
        }
        guard changed else { return }
        if on {
            node.swarm.handle(CircuitRelay.hopProtocolID, service: "relay") { [weak self] stream in
                guard let self else { throw StreamError.connectionClosed("relay service is gone") }
                try await self.serveHop(stream)
            }
            logger.notice("relay: volunteering as a circuit relay", metadata: ["limits": "\(configuration.resources)"])
        } else {
            node.swarm.unhandle(CircuitRelay.hopProtocolID)
            logger.notice("relay: no longer relaying")
        }
        // Connected peers hear of it by identify push (it follows the protocol change).
    }

    public var isServing: Bool { state.withLockedValue { $0.serving } }

    /// Volunteers while AutoNAT finds this node publicly reachable, and stops when it does not.
    public func followReachability(of nat: NATService) {
        let sub = node.events.subscribe { [weak self] event in
            if case .reachabilityChanged(let r) = event { self?.setServing(r == .public) }
        }
        state.withLockedValue { $0.subscriptions.append(sub) }
    }

    /// Stops following reachability and stops serving.
    public func stop() {
        for s in state.withLockedValue({ s -> [EventSubscription] in defer { s.subscriptions = [] }; return s.subscriptions }) { s.cancel() }
        setServing(false)
    }

    public var stats: Stats {
        state.withLockedValue { s in
            s.resources.expire(now: Date())
            return Stats(serving: s.serving, reservations: Array(s.resources.reservations.values), circuits: Array(s.resources.circuits.values),
                         reservationsGranted: s.resources.reservationsGranted, circuitsOpened: s.resources.circuitsOpened,
                         refused: s.resources.refused, bytesForwarded: s.bytesForwarded, circuitEnds: s.circuitEnds,
                         configuration: s.resources.configuration)
        }
    }

    // MARK: Hop

    func serveHop(_ stream: MuxedStream) async throws {
        guard let peer = stream.connection.remotePeer else { return }
        let bytes = try await withTimeout(configuration.messageTimeout) {
            try await stream.readLengthPrefixed(maxLength: CircuitRelay.maxMessageSize)
        }
        let message: CircuitRelay.HopMessage
        do {
            message = try CircuitRelay.decodeHop(bytes)
        } catch {
            logger.info("relay: malformed hop message: \(error)", metadata: ["peer": "\(peer)"])
            return try await reply(stream, .malformedMessage)
        }
        switch message {
        case .reserve:
            try await reserve(stream, peer)
        case .connect(let target):
            try await connect(stream, from: peer, to: target.id)
        case .status:
            logger.info("relay: hop stream began with STATUS", metadata: ["peer": "\(peer)"])
            try await reply(stream, .unexpectedMessage)
        }
    }

    private func reply(_ stream: MuxedStream, _ status: CircuitRelay.Status) async throws {
        try await stream.writeLengthPrefixed(CircuitRelay.encode(.status(status, reservation: nil, limit: nil)))
        await stream.closeWrite()
    }

    private func reserve(_ stream: MuxedStream, _ peer: PeerID) async throws {
        let conn = stream.connection
        guard !conn.isLimited, let (ip, _) = conn.remoteAddress?.tcpEndpoint else {
            logger.info("relay: refused a reservation over a relayed connection", metadata: ["peer": "\(peer)"])
            return try await reply(stream, .permissionDenied)
        }
        let result = state.withLockedValue { $0.resources.reserve(peer: peer, ip: ip, connection: conn.id, now: Date()) }
        switch result {
        case .failure(let why):
            logger.info("relay: refused a reservation: \(why)", metadata: ["peer": "\(peer)"])
            try await reply(stream, why.status)
        case .success(let r):
            watch(conn)
            let expire = UInt64(r.expires.timeIntervalSince1970)
            let voucher = ReservationVoucher.seal(peer: peer, expiration: expire, relayKey: node.swarm.identity)
            let addrs = publicAddresses().map { $0.appending(.p2p(node.peerID)) }
            let reservation = CircuitRelay.Reservation(expire: expire, addresses: addrs, voucher: voucher.bytes)
            try await stream.writeLengthPrefixed(CircuitRelay.encode(.status(.ok, reservation: reservation, limit: configuration.resources.limit)))
            await stream.closeWrite()
            logger.info("relay: granted a reservation", metadata: ["peer": "\(peer)", "expires": "\(r.expires)"])
        }
    }

    /// The addresses others can reach this relay at: its listen addresses that are not
    /// loopback, unless it only has loopback ones (tests).
    func publicAddresses() -> [Multiaddr] {
        let all = node.listenAddresses.filter { $0.tcpEndpoint != nil }
        let routable = all.filter { a in a.tcpEndpoint.map { IPScope($0.ip) != .loopback && IPScope($0.ip) != .unspecified } ?? false }
        return routable.isEmpty ? all : routable
    }

    /// Reservations end with the connection that made them.
    private func watch(_ conn: Connection) {
        let first = state.withLockedValue { $0.watched.insert(conn.id).inserted }
        guard first else { return }
        conn.closed.whenComplete { [weak self] _ in
            self?.state.withLockedValue { s in
                s.watched.remove(conn.id)
                s.resources.connectionClosed(conn.id)
            }
        }
    }

    private func connect(_ stream: MuxedStream, from source: PeerID, to target: PeerID) async throws {
        if stream.connection.isLimited {
            logger.info("relay: refused CONNECT over a relayed connection", metadata: ["peer": "\(source)"])
            return try await reply(stream, .permissionDenied)
        }
        let opened = state.withLockedValue { $0.resources.openCircuit(from: source, to: target, now: Date()) }
        let circuit: RelayResources.Circuit
        switch opened {
        case .failure(let why):
            logger.info("relay: refused a circuit: \(why)", metadata: ["from": "\(source)", "to": "\(target)"])
            return try await reply(stream, why.status)
        case .success(let c):
            circuit = c
        }
        var ended = "closed"
        defer {
            state.withLockedValue { s in
                s.resources.closeCircuit(circuit.id)
                s.circuitEnds[ended, default: 0] += 1
            }
        }
        // The reservation's connection carries the stop stream.
        guard let targetConn = node.swarm.directConnection(to: target) else {
            ended = "target gone"
            return try await reply(stream, .connectionFailed)
        }
        let limit = configuration.resources.limit
        let stop: MuxedStream
        do {
            stop = try await targetConn.openStream([CircuitRelay.stopProtocolID])
            try await stop.writeLengthPrefixed(CircuitRelay.encode(.connect(CircuitRelay.Peer(id: source), limit: limit)))
            let answer = try await withTimeout(configuration.messageTimeout) {
                try await stop.readLengthPrefixed(maxLength: CircuitRelay.maxMessageSize)
            }
            guard case .status(let status) = try CircuitRelay.decodeStop(answer), status == .ok else {
                stop.reset()
                ended = "target refused"
                logger.info("relay: the target refused the circuit", metadata: ["from": "\(source)", "to": "\(target)"])
                return try await reply(stream, .connectionFailed)
            }
        } catch {
            ended = "stop failed"
            logger.info("relay: could not open the circuit's stop stream: \(error)", metadata: ["to": "\(target)"])
            return try await reply(stream, .connectionFailed)
        }
        try await stream.writeLengthPrefixed(CircuitRelay.encode(.status(.ok, reservation: nil, limit: limit)))
        logger.info("relay: circuit open", metadata: ["id": "\(circuit.id)", "from": "\(source)", "to": "\(target)"])
        ended = await forward(stream, stop, limit: limit)
        logger.info("relay: circuit ended: \(ended)", metadata: ["id": "\(circuit.id)", "from": "\(source)", "to": "\(target)"])
    }

    /// Copies both ways until both sides finish, a side fails, or a limit is reached; returns why
    /// it ended. Each direction may carry `limit.data` bytes; the whole circuit lasts at most
    /// `limit.duration` seconds. At a limit both streams are reset.
    private func forward(_ a: MuxedStream, _ b: MuxedStream, limit: CircuitRelay.Limit) async -> String {
        let chunk = configuration.chunkSize
        let maxBytes = limit.data ?? .max
        let tap = self.tap.withLockedValue { $0 }
        let state = self.state
        @Sendable func pump(_ from: MuxedStream, _ to: MuxedStream) async -> String {
            var sent: UInt64 = 0
            do {
                while let buf = try await from.read(max: chunk) {
                    let n = UInt64(buf.readableBytes)
                    if sent + n > maxBytes {
                        // Deliver what fits, then cut.
                        let fits = Int(maxBytes - sent)
                        if fits > 0, let head = buf.getSlice(at: buf.readerIndex, length: fits) { try? await to.write(head) }
                        state.withLockedValue { $0.bytesForwarded += UInt64(fits) }
                        return "data limit"
                    }
                    sent += n
                    state.withLockedValue { $0.bytesForwarded += n }  // live: operators watch it grow
                    tap?(Array(buf.readableBytesView))
                    try await to.write(buf)
                }
                await to.closeWrite()
                return "closed"
            } catch is CancellationError {
                return "cancelled"
            } catch {
                return "\(error)"
            }
        }
        let reason: String = await withTaskGroup(of: String?.self) { g in
            g.addTask { await pump(a, b) }
            g.addTask { await pump(b, a) }
            if let d = limit.duration {
                g.addTask {
                    try? await Task.sleep(nanoseconds: UInt64(d) * 1_000_000_000)
                    return Task.isCancelled ? nil : "duration limit"
                }
            }
            var first: String?
            var pumpsDone = 0
            for await r in g {
                guard let r else { continue }
                if r == "closed" {
                    pumpsDone += 1
                    if pumpsDone == 2 { first = first ?? "closed"; break }
                    continue
                }
                first = r
                break
            }
            g.cancelAll()
            return first ?? "closed"
        }
        a.reset()
        b.reset()
        return reason
    }
}
