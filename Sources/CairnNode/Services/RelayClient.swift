import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

public enum RelayError: Error, Equatable, CustomStringConvertible {
    case refused(CircuitRelay.Status, String?)
    case badAddress(Multiaddr, String)
    case badVoucher(String)
    case unexpected(String)

    public var description: String {
        switch self {
        case .refused(let s, let why): return "relay refused: \(s)\(why.map { " (\($0))" } ?? "")"
        case .badAddress(let a, let why): return "\(a): \(why)"
        case .badVoucher(let why): return "reservation voucher rejected: \(why)"
        case .unexpected(let why): return "relay protocol: \(why)"
        }
    }
}

/// A relayed circuit as a connection's transport: the bytes of an end-to-end Noise + Yamux
/// session ride on one stream (hop or stop) of the connection to the relay.
final class CircuitTransport: ConnectionTransport, @unchecked Sendable {
    let carrier: MuxedStream
    let remote: Multiaddr

    init(carrier: MuxedStream, remote: Multiaddr) {
        self.carrier = carrier
        self.remote = remote
    }

    var eventLoop: EventLoop { carrier.eventLoop }
    var localAddress: Multiaddr? { nil }
    var remoteAddress: Multiaddr? { remote }
    func send(_ bytes: ByteBuffer) { carrier.writeNow(bytes) }
    func close() { carrier.closeWriteNow() }
}

/// The client side of Circuit Relay v2: reserves slots on relays, accepts circuits that relays
/// open to it (stop protocol), and dials `…/p2p/<relay>/p2p-circuit/p2p/<peer>` addresses as a
/// swarm transport. Connections it makes are the swarm's like any other, marked limited.
public final class RelayClient: SwarmTransport, @unchecked Sendable {
    public struct Configuration: Sendable {
        public var messageTimeout: Duration = .seconds(10)
        /// Accept circuits only from relays we hold a reservation on (else any relay).
        public var acceptOnlyFromReservedRelays = true
        public init() {}
    }

    /// A reservation this node holds on a relay.
    public struct HeldReservation: Sendable, Equatable {
        public var relay: PeerID
        public var expires: Date
        /// Our relayed addresses through it: `<relay addr>/p2p/<relay>/p2p-circuit`.
        public var addresses: [Multiaddr]
        public var limit: CircuitRelay.Limit?
        public var voucher: ReservationVoucher?
    }

    let node: Node
    let configuration: Configuration
    let logger: Logger
    private struct State {
        var reservations: [PeerID: HeldReservation] = [:]
        var inboundCircuits = 0
        var outboundCircuits = 0
        var acceptedTotal = 0
    }
    private let state = NIOLockedValueBox(State())

    public init(node: Node, configuration: Configuration = Configuration(), logger: Logger) {
        self.node = node
        self.configuration = configuration
        self.logger = logger
        node.swarm.handle(CircuitRelay.stopProtocolID, service: "relay-client") { [weak self] stream in
            guard let self else { throw StreamError.connectionClosed("relay client is gone") }
            try await self.serveStop(stream)
        }
        node.swarm.addTransport(self)
    }

    public var reservations: [HeldReservation] { state.withLockedValue { Array($0.reservations.values) } }
    public var circuitCounts: (inbound: Int, outbound: Int) { state.withLockedValue { ($0.inboundCircuits, $0.outboundCircuits) } }
    /// Relayed connections accepted since start.
    public var acceptedCircuits: Int { state.withLockedValue { $0.acceptedTotal } }

    /// Forgets a reservation (its relay went away); returns whether there was one.
    @discardableResult
    public func forget(_ relay: PeerID) -> Bool { state.withLockedValue { $0.reservations.removeValue(forKey: relay) != nil } }

    // MARK: Reserving

    /// Sends RESERVE to the relay on `connection`; verifies the voucher when there is one (it must
    /// be signed by that relay, for us). Calling it again refreshes the reservation.
    @discardableResult
    public func reserve(on connection: Connection) async throws -> HeldReservation {
        guard let relay = connection.remotePeer else { throw RelayError.unexpected("connection not established") }
        let stream = try await connection.openStream([CircuitRelay.hopProtocolID])
        defer { stream.reset() }
        try await stream.writeLengthPrefixed(CircuitRelay.encode(.reserve))
        let reply = try await withTimeout(configuration.messageTimeout) {
            try await stream.readLengthPrefixed(maxLength: CircuitRelay.maxMessageSize)
        }
        guard case .status(let status, let reservation, let limit) = try CircuitRelay.decodeHop(reply) else {
            throw RelayError.unexpected("expected STATUS in reply to RESERVE")
        }
        guard status == .ok else { throw RelayError.refused(status, nil) }
        guard let reservation, let expire = reservation.expire else { throw RelayError.unexpected("OK without a reservation expiry") }
        let expires = Date(timeIntervalSince1970: TimeInterval(expire))
        guard expires > Date() else { throw RelayError.unexpected("reservation already expired") }
        var voucher: ReservationVoucher?
        if let bytes = reservation.voucher {
            do { voucher = try ReservationVoucher.open(bytes) } catch { throw RelayError.badVoucher("\(error)") }
            guard voucher!.relay == relay, voucher!.peer == node.peerID else { throw RelayError.badVoucher("names another relay or peer") }
        }
        // Our addresses through it: each of its TCP addresses (the one we reached it at first).
        var bases = reservation.addresses.compactMap { a -> Multiaddr? in
            let base = a.removingPeerID()
            return base.tcpEndpoint != nil ? base : nil
        }
        if let here = connection.remoteAddress, here.tcpEndpoint != nil {
            bases.removeAll { $0 == here }
            bases.insert(here, at: 0)
        }
        let addresses = bases.map { $0.appending(.p2p(relay)).appending(.p2pCircuit) }
        let held = HeldReservation(relay: relay, expires: expires, addresses: addresses, limit: limit, voucher: voucher)
        state.withLockedValue { $0.reservations[relay] = held }
        logger.info("reserved a relay slot", metadata: ["relay": "\(relay)", "expires": "\(expires)",
                                                        "limit": "\(limit.map { "\($0.duration.map(String.init) ?? "-")s/\($0.data.map(String.init) ?? "-")B" } ?? "none")"])
        return held
    }

    // MARK: Dialing through a relay (SwarmTransport)

    public func canDial(_ address: Multiaddr) -> Bool { address.components.contains(.p2pCircuit) }

    /// Dials `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<target>`: CONNECT through the relay,
    /// then Noise + Yamux end to end over the circuit.
    public func dial(_ address: Multiaddr) async throws -> Connection {
        guard let i = address.components.firstIndex(of: .p2pCircuit) else { throw RelayError.badAddress(address, "no /p2p-circuit") }
        let relayAddr = Multiaddr(components: Array(address.components[..<i]))
        let rest = Array(address.components[(i + 1)...])
        guard let relay = relayAddr.peerID else { throw RelayError.badAddress(address, "no /p2p/<relay> before /p2p-circuit") }
        guard rest.count == 1, case .p2p(let target) = rest[0] else { throw RelayError.badAddress(address, "no /p2p/<peer> after /p2p-circuit") }
        guard relayAddr.tcpEndpoint != nil || relayAddr.components.count == 1 else {
            throw RelayError.badAddress(address, "the relay must be reached directly")
        }
        let relayConn: Connection
        if let c = node.swarm.directConnection(to: relay) {
            relayConn = c
        } else {
            guard relayAddr.tcpEndpoint != nil else { throw RelayError.badAddress(address, "no connection to the relay and no address for it") }
            relayConn = try await node.swarm.dial(relayAddr)
        }
        let stream = try await relayConn.openStream([CircuitRelay.hopProtocolID])
        do {
            try await stream.writeLengthPrefixed(CircuitRelay.encode(.connect(CircuitRelay.Peer(id: target))))
            let reply = try await withTimeout(configuration.messageTimeout) {
                try await stream.readLengthPrefixed(maxLength: CircuitRelay.maxMessageSize)
            }
            guard case .status(let status, _, let limit) = try CircuitRelay.decodeHop(reply) else {
                throw RelayError.unexpected("expected STATUS in reply to CONNECT")
            }
            guard status == .ok else { throw RelayError.refused(status, nil) }
            let remote = (relayConn.remoteAddress ?? relayAddr.removingPeerID()).appending(.p2p(relay)).appending(.p2pCircuit)
            let conn = try await upgrade(stream, direction: .outbound, role: .initiator, expected: target, relay: relay, limit: limit, remote: remote)
            state.withLockedValue { $0.outboundCircuits += 1 }
            conn.closed.whenComplete { [weak self] _ in self?.state.withLockedValue { $0.outboundCircuits -= 1 } }
            return conn
        } catch {
            stream.reset()
            throw error
        }
    }

    // MARK: Accepting circuits (stop protocol)

    func serveStop(_ stream: MuxedStream) async throws {
        guard let relay = stream.connection.remotePeer else { return }
        let bytes = try await withTimeout(configuration.messageTimeout) {
            try await stream.readLengthPrefixed(maxLength: CircuitRelay.maxMessageSize)
        }
        let message: CircuitRelay.StopMessage
        do {
            message = try CircuitRelay.decodeStop(bytes)
        } catch {
            logger.info("relay: malformed stop message: \(error)", metadata: ["relay": "\(relay)"])
            try await stream.writeLengthPrefixed(CircuitRelay.encode(.status(.malformedMessage)))
            await stream.closeWrite()
            return
        }
        guard case .connect(let peer, let limit) = message else {
            logger.info("relay: stop stream began with STATUS", metadata: ["relay": "\(relay)"])
            try await stream.writeLengthPrefixed(CircuitRelay.encode(.status(.unexpectedMessage)))
            await stream.closeWrite()
            return
        }
        let reserved = state.withLockedValue { $0.reservations[relay] != nil }
        if configuration.acceptOnlyFromReservedRelays && !reserved {
            logger.info("relay: refused a circuit from a relay we hold no reservation on", metadata: ["relay": "\(relay)", "peer": "\(peer.id)"])
            try await stream.writeLengthPrefixed(CircuitRelay.encode(.status(.permissionDenied)))
            await stream.closeWrite()
            return
        }
        try await stream.writeLengthPrefixed(CircuitRelay.encode(.status(.ok)))
        let remote = (stream.connection.remoteAddress.map { $0 } ?? Multiaddr(components: [])).appending(.p2p(relay)).appending(.p2pCircuit)
        // The relay named the initiator; Noise proves it (another identity fails the handshake).
        let conn = try await upgrade(stream, direction: .inbound, role: .responder, expected: peer.id, relay: relay, limit: limit, remote: remote)
        state.withLockedValue { $0.inboundCircuits += 1; $0.acceptedTotal += 1 }
        conn.closed.whenComplete { [weak self] _ in self?.state.withLockedValue { $0.inboundCircuits -= 1 } }
        logger.info("accepted a relayed connection", metadata: ["peer": "\(peer.id)", "relay": "\(relay)"])
    }

    /// Runs the secure upgrade over `stream` and registers the connection with the swarm.
    private func upgrade(_ stream: MuxedStream, direction: Connection.Direction, role: SecureConnectionMachine.Role,
                         expected: PeerID?, relay: PeerID, limit: CircuitRelay.Limit?, remote: Multiaddr) async throws -> Connection {
        let swarm = node.swarm
        let transport = CircuitTransport(carrier: stream, remote: remote)
        let conn = try swarm.makeConnection(transport, direction: direction, role: role, expectedRemote: expected, relay: relay, limit: limit)
        let timeout = TimeAmount(swarm.configuration.handshakeTimeout)
        try await stream.eventLoop.submit {
            let timer = stream.eventLoop.scheduleTask(in: timeout) { conn.handshakeTimedOut() }
            conn.established.whenComplete { _ in timer.cancel() }
            conn.start()
            // The carrier ended (FIN or reset): the connection is over; finish our half too.
            stream.divert(to: { conn.receive($0) }, onEnd: { _ in
                conn.channelClosed()
                stream.closeWriteNow()
            })
        }.get()
        do {
            _ = try await conn.established.get()
        } catch {
            throw SwarmError.dialFailed(remote, "\(error)")
        }
        return conn
    }
}

extension Multiaddr {
    /// This address without a trailing `/p2p/<id>`.
    func removingPeerID() -> Multiaddr {
        if case .p2p = components.last { return Multiaddr(components: Array(components.dropLast())) }
        return self
    }
}
