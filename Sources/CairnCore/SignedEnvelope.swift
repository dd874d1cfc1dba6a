import CairnProto
import Foundation
import SwiftProtobuf

public enum EnvelopeError: Error, Equatable, Sendable, CustomStringConvertible {
    case tooLarge(Int)
    case malformed(String)
    case invalidSignature
    case wrongPayloadType
    case signerMismatch

    public var description: String {
        switch self {
        case .tooLarge(let n): return "envelope of \(n) bytes exceeds the limit"
        case .malformed(let s): return "malformed envelope: \(s)"
        case .invalidSignature: return "envelope signature does not verify"
        case .wrongPayloadType: return "envelope payload type is not the expected one"
        case .signerMismatch: return "envelope signer does not match the record's peer ID"
        }
    }
}

/// A signed envelope as received from the wire: nothing in it may be used until `verify` succeeds
/// (libp2p RFC 0002). Only `VerifiedEnvelope` values carry a payload to the rest of the node.
public struct UnverifiedEnvelope: Sendable {
    public static let maxSize = 16 * 1024

    let publicKeyBytes: [UInt8]
    let payloadType: [UInt8]
    let payload: [UInt8]
    let signature: [UInt8]
    let rawBytes: [UInt8]

    public init(bytes: [UInt8]) throws(EnvelopeError) {
        guard bytes.count <= Self.maxSize else { throw .tooLarge(bytes.count) }
        let pb: Record_Pb_Envelope
        // Partial: py-libp2p leaves out the key's type when it is RSA (0, the enum's default);
        // `PublicKey` reads a missing type as that default and checks the key itself.
        do { pb = try Record_Pb_Envelope(serializedBytes: bytes, partial: true) } catch { throw .malformed("protobuf: \(error)") }
        guard pb.hasPublicKey else { throw .malformed("no public key") }
        var key = pb.publicKey
        if !key.hasType && key.hasData && key.unknownFields.data.isEmpty { key.type = .rsa }  // proto2's default, left out by py
        do { publicKeyBytes = try [UInt8](key.serializedBytes(partial: true) as [UInt8]) } catch { throw .malformed("public key") }
        payloadType = [UInt8](pb.payloadType)
        payload = [UInt8](pb.payload)
        signature = [UInt8](pb.signature)
        rawBytes = bytes
    }

    /// Checks the signature over the domain-separated payload, and that the payload type is the one
    /// the caller expects. Returns the verified envelope.
    public func verify(domain: String, expectedPayloadType: [UInt8]) throws(EnvelopeError) -> VerifiedEnvelope {
        guard payloadType == expectedPayloadType else { throw .wrongPayloadType }
        let key: PublicKey
        do { key = try PublicKey(protobufBytes: publicKeyBytes) } catch { throw .malformed("public key: \(error)") }
        let signed = VerifiedEnvelope.signingInput(domain: domain, payloadType: payloadType, payload: payload)
        guard key.isValidSignature(signature, for: signed) else { throw .invalidSignature }
        return VerifiedEnvelope(publicKey: key, payloadType: payloadType, payload: payload, signature: signature, bytes: rawBytes)
    }
}

/// An envelope whose signature has been checked against its key, for a given domain.
public struct VerifiedEnvelope: Sendable {
    public let publicKey: PublicKey
    public let payloadType: [UInt8]
    public let payload: [UInt8]
    public let signature: [UInt8]
    /// The serialized envelope, exactly as received or produced.
    public let bytes: [UInt8]

    public var signer: PeerID { PeerID(publicKey: publicKey) }

    fileprivate init(publicKey: PublicKey, payloadType: [UInt8], payload: [UInt8], signature: [UInt8], bytes: [UInt8]) {
        self.publicKey = publicKey
        self.payloadType = payloadType
        self.payload = payload
        self.signature = signature
        self.bytes = bytes
    }

    /// Signs `payload` with `key` under `domain` and produces the serialized envelope.
    public init(sealing payload: [UInt8], payloadType: [UInt8], domain: String, key: PrivateKey) {
        let signature = key.sign(Self.signingInput(domain: domain, payloadType: payloadType, payload: payload))
        var pb = Record_Pb_Envelope()
        pb.publicKey = try! Crypto_Pb_PublicKey(serializedBytes: key.publicKey.protobufBytes)
        pb.payloadType = Data(payloadType)
        pb.payload = Data(payload)
        pb.signature = Data(signature)
        self.init(publicKey: key.publicKey, payloadType: payloadType, payload: payload, signature: signature,
                  bytes: try! [UInt8](pb.serializedBytes() as [UInt8]))
    }

    /// varint(len(domain)) || domain || varint(len(type)) || type || varint(len(payload)) || payload
    static func signingInput(domain: String, payloadType: [UInt8], payload: [UInt8]) -> [UInt8] {
        let d = Array(domain.utf8)
        return Varint.encode(d.count) + d + Varint.encode(payloadType.count) + payloadType + Varint.encode(payload.count) + payload
    }
}

/// A routing record (libp2p RFC 0003): a peer's addresses with a sequence number.
public struct PeerRecord: Sendable, Equatable {
    public static let domain = "libp2p-peer-record"
    /// The multicodec `libp2p-peer-record` (0x0301) as the two bytes go- and py-libp2p put on the wire.
    public static let payloadType: [UInt8] = [0x03, 0x01]
    public static let maxAddresses = 64

    public let peerID: PeerID
    public let seq: UInt64
    public let addresses: [Multiaddr]

    public init(peerID: PeerID, seq: UInt64, addresses: [Multiaddr]) {
        self.peerID = peerID
        self.seq = seq
        self.addresses = addresses
    }

    public func encode() -> [UInt8] {
        var pb = Peer_Pb_PeerRecord()
        pb.peerID = Data(peerID.bytes)
        pb.seq = seq
        pb.addresses = addresses.map { a in
            var info = Peer_Pb_PeerRecord.AddressInfo()
            info.multiaddr = Data(a.bytes)
            return info
        }
        return try! [UInt8](pb.serializedBytes() as [UInt8])
    }

    /// Seals this record into an envelope signed by `key` (which must be this record's peer).
    public func sign(with key: PrivateKey) -> VerifiedEnvelope {
        precondition(key.peerID == peerID, "a peer record is signed by its own peer")
        return VerifiedEnvelope(sealing: encode(), payloadType: Self.payloadType, domain: Self.domain, key: key)
    }

    /// Opens a peer record from a verified envelope; the signer must be the record's peer.
    public init(envelope: VerifiedEnvelope) throws(EnvelopeError) {
        guard envelope.payloadType == Self.payloadType else { throw .wrongPayloadType }
        let pb: Peer_Pb_PeerRecord
        do { pb = try Peer_Pb_PeerRecord(serializedBytes: envelope.payload) } catch { throw .malformed("peer record: \(error)") }
        let id: PeerID
        do { id = try PeerID(bytes: [UInt8](pb.peerID)) } catch { throw .malformed("peer record peer ID") }
        guard id == envelope.signer else { throw .signerMismatch }
        guard pb.addresses.count <= Self.maxAddresses else { throw .malformed("too many addresses") }
        var addrs: [Multiaddr] = []
        for info in pb.addresses {
            do { addrs.append(try Multiaddr(bytes: [UInt8](info.multiaddr))) } catch { throw .malformed("address: \(error)") }
        }
        self.init(peerID: id, seq: pb.seq, addresses: addrs)
    }

    /// Decodes and verifies a serialized envelope carrying a peer record, in one step.
    public static func open(envelopeBytes: [UInt8]) throws(EnvelopeError) -> (PeerRecord, VerifiedEnvelope) {
        let env = try UnverifiedEnvelope(bytes: envelopeBytes).verify(domain: domain, expectedPayloadType: payloadType)
        return (try PeerRecord(envelope: env), env)
    }
}
