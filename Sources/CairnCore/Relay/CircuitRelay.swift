import CairnProto
import Foundation
import SwiftProtobuf

/// Circuit Relay v2 (libp2p/specs relay/circuit-v2.md): the hop and stop messages, their limits
/// and the reservation voucher, sans-I/O.
public enum CircuitRelay {
    public static let hopProtocolID = "/libp2p/circuit/relay/0.2.0/hop"
    public static let stopProtocolID = "/libp2p/circuit/relay/0.2.0/stop"
    /// Largest hop or stop message accepted (go-libp2p: 4 KiB).
    public static let maxMessageSize = 4096
    /// Most addresses a peer or reservation may carry; more is malformed.
    public static let maxAddresses = 32

    public enum Status: Int, Sendable, Equatable, CustomStringConvertible {
        case ok = 100
        case reservationRefused = 200
        case resourceLimitExceeded = 201
        case permissionDenied = 202
        case connectionFailed = 203
        case noReservation = 204
        case malformedMessage = 400
        case unexpectedMessage = 401

        public var description: String {
            switch self {
            case .ok: return "OK"
            case .reservationRefused: return "RESERVATION_REFUSED"
            case .resourceLimitExceeded: return "RESOURCE_LIMIT_EXCEEDED"
            case .permissionDenied: return "PERMISSION_DENIED"
            case .connectionFailed: return "CONNECTION_FAILED"
            case .noReservation: return "NO_RESERVATION"
            case .malformedMessage: return "MALFORMED_MESSAGE"
            case .unexpectedMessage: return "UNEXPECTED_MESSAGE"
            }
        }
    }

    /// Limits of one relayed connection; nil fields mean unlimited.
    public struct Limit: Sendable, Equatable {
        public var duration: UInt32?
        public var data: UInt64?
        public init(duration: UInt32? = nil, data: UInt64? = nil) {
            self.duration = duration
            self.data = data
        }
    }

    public struct Peer: Sendable, Equatable {
        public var id: PeerID
        public var addresses: [Multiaddr]
        public init(id: PeerID, addresses: [Multiaddr] = []) {
            self.id = id
            self.addresses = addresses
        }
    }

    /// What a relay grants: until when, at which of its addresses, and its signed voucher.
    public struct Reservation: Sendable, Equatable {
        public var expire: UInt64?
        public var addresses: [Multiaddr]
        /// The voucher envelope's bytes, unverified (verify with `ReservationVoucher.open`).
        public var voucher: [UInt8]?
        public init(expire: UInt64?, addresses: [Multiaddr], voucher: [UInt8]?) {
            self.expire = expire
            self.addresses = addresses
            self.voucher = voucher
        }
    }

    public enum HopMessage: Sendable, Equatable {
        case reserve
        case connect(Peer)
        case status(Status, reservation: Reservation?, limit: Limit?)
    }

    public enum StopMessage: Sendable, Equatable {
        case connect(Peer, limit: Limit?)
        case status(Status)
    }

    public enum CodecError: Error, Equatable, Sendable, CustomStringConvertible {
        case tooLarge(Int)
        case malformed(String)

        public var description: String {
            switch self {
            case .tooLarge(let n): return "relay message of \(n) bytes exceeds \(CircuitRelay.maxMessageSize)"
            case .malformed(let s): return "malformed relay message: \(s)"
            }
        }

        /// The status to answer a peer with.
        public var status: Status { .malformedMessage }
    }

    // MARK: Encoding

    public static func encode(_ m: HopMessage) -> [UInt8] {
        var pb = Circuit_Pb_HopMessage()
        switch m {
        case .reserve:
            pb.type = .reserve
        case .connect(let peer):
            pb.type = .connect
            pb.peer = encode(peer)
        case .status(let status, let reservation, let limit):
            pb.type = .status
            pb.status = Circuit_Pb_Status(rawValue: status.rawValue) ?? .unused
            if let r = reservation {
                var pr = Circuit_Pb_Reservation()
                if let e = r.expire { pr.expire = e }
                pr.addrs = r.addresses.map { Data($0.bytes) }
                if let v = r.voucher { pr.voucher = Data(v) }
                pb.reservation = pr
            }
            if let limit { pb.limit = encode(limit) }
        }
        return try! [UInt8](pb.serializedBytes() as [UInt8])
    }

    public static func encode(_ m: StopMessage) -> [UInt8] {
        var pb = Circuit_Pb_StopMessage()
        switch m {
        case .connect(let peer, let limit):
            pb.type = .connect
            pb.peer = encode(peer)
            if let limit { pb.limit = encode(limit) }
        case .status(let status):
            pb.type = .status
            pb.status = Circuit_Pb_Status(rawValue: status.rawValue) ?? .unused
        }
        return try! [UInt8](pb.serializedBytes() as [UInt8])
    }

    private static func encode(_ p: Peer) -> Circuit_Pb_Peer {
        var pb = Circuit_Pb_Peer()
        pb.id = Data(p.id.bytes)
        pb.addrs = p.addresses.map { Data($0.bytes) }
        return pb
    }

    private static func encode(_ l: Limit) -> Circuit_Pb_Limit {
        var pb = Circuit_Pb_Limit()
        if let d = l.duration { pb.duration = d }
        if let d = l.data { pb.data = d }
        return pb
    }

    // MARK: Decoding

    public static func decodeHop(_ bytes: [UInt8]) throws(CodecError) -> HopMessage {
        guard bytes.count <= maxMessageSize else { throw .tooLarge(bytes.count) }
        let pb: Circuit_Pb_HopMessage
        do { pb = try Circuit_Pb_HopMessage(serializedBytes: bytes) } catch { throw .malformed("protobuf") }
        switch pb.type {
        case .reserve:
            return .reserve
        case .connect:
            guard pb.hasPeer else { throw .malformed("CONNECT without peer") }
            return .connect(try decode(pb.peer))
        case .status:
            guard pb.hasStatus else { throw .malformed("STATUS without status") }
            let status = try decode(pb.status)
            var reservation: Reservation?
            if pb.hasReservation {
                let r = pb.reservation
                guard r.addrs.count <= maxAddresses else { throw .malformed("\(r.addrs.count) reservation addresses") }
                reservation = Reservation(expire: r.hasExpire ? r.expire : nil,
                                          addresses: r.addrs.compactMap { try? Multiaddr(bytes: [UInt8]($0)) },
                                          voucher: r.hasVoucher ? [UInt8](r.voucher) : nil)
            }
            return .status(status, reservation: reservation, limit: pb.hasLimit ? decode(pb.limit) : nil)
        }
    }

    public static func decodeStop(_ bytes: [UInt8]) throws(CodecError) -> StopMessage {
        guard bytes.count <= maxMessageSize else { throw .tooLarge(bytes.count) }
        let pb: Circuit_Pb_StopMessage
        do { pb = try Circuit_Pb_StopMessage(serializedBytes: bytes) } catch { throw .malformed("protobuf") }
        switch pb.type {
        case .connect:
            guard pb.hasPeer else { throw .malformed("CONNECT without peer") }
            return .connect(try decode(pb.peer), limit: pb.hasLimit ? decode(pb.limit) : nil)
        case .status:
            guard pb.hasStatus else { throw .malformed("STATUS without status") }
            return .status(try decode(pb.status))
        }
    }

    private static func decode(_ pb: Circuit_Pb_Peer) throws(CodecError) -> Peer {
        guard pb.hasID else { throw .malformed("peer without id") }
        guard pb.addrs.count <= maxAddresses else { throw .malformed("\(pb.addrs.count) peer addresses") }
        let id: PeerID
        do { id = try PeerID(bytes: [UInt8](pb.id)) } catch { throw .malformed("peer id") }
        // Unparseable addresses are dropped: they are advisory (active relaying is not done).
        return Peer(id: id, addresses: pb.addrs.compactMap { try? Multiaddr(bytes: [UInt8]($0)) })
    }

    private static func decode(_ pb: Circuit_Pb_Status) throws(CodecError) -> Status {
        guard let s = Status(rawValue: pb.rawValue) else { throw .malformed("status \(pb.rawValue)") }
        return s
    }

    private static func decode(_ pb: Circuit_Pb_Limit) -> Limit {
        Limit(duration: pb.hasDuration ? pb.duration : nil, data: pb.hasData ? pb.data : nil)
    }
}

/// A relay's signed promise to serve a peer until `expiration` (a signed envelope, domain
/// `libp2p-relay-rsvp`, payload type 0x0302). Only `open` makes one from bytes, verified.
public struct ReservationVoucher: Sendable, Equatable {
    public static let domain = "libp2p-relay-rsvp"
    public static let payloadType: [UInt8] = [0x03, 0x02]

    public let relay: PeerID
    public let peer: PeerID
    /// Unix seconds.
    public let expiration: UInt64

    /// Signs a voucher as `relayKey` (whose peer ID becomes `relay`).
    public static func seal(peer: PeerID, expiration: UInt64, relayKey: PrivateKey) -> VerifiedEnvelope {
        var pb = Circuit_Pb_ReservationVoucher()
        pb.relay = Data(relayKey.peerID.bytes)
        pb.peer = Data(peer.bytes)
        pb.expiration = expiration
        let payload = try! [UInt8](pb.serializedBytes() as [UInt8])
        return VerifiedEnvelope(sealing: payload, payloadType: payloadType, domain: domain, key: relayKey)
    }

    public enum OpenError: Error, Equatable, Sendable {
        case envelope(EnvelopeError)
        case malformed
        case signerIsNotTheRelay
    }

    /// Verifies the envelope's signature and that its signer is the relay the voucher names.
    public static func open(_ bytes: [UInt8]) throws(OpenError) -> ReservationVoucher {
        let env: VerifiedEnvelope
        do { env = try UnverifiedEnvelope(bytes: bytes).verify(domain: domain, expectedPayloadType: payloadType) } catch { throw .envelope(error) }
        guard let pb = try? Circuit_Pb_ReservationVoucher(serializedBytes: env.payload),
              pb.hasRelay, pb.hasPeer, pb.hasExpiration,
              let relay = try? PeerID(bytes: [UInt8](pb.relay)), let peer = try? PeerID(bytes: [UInt8](pb.peer)) else { throw .malformed }
        guard env.signer == relay else { throw .signerIsNotTheRelay }
        return ReservationVoucher(relay: relay, peer: peer, expiration: pb.expiration)
    }
}
