import CairnProto
import Foundation
import SwiftProtobuf

public enum IdentifyError: Error, Equatable, Sendable, CustomStringConvertible {
    case tooLarge(Int)
    case malformed(String)
    case publicKeyMismatch
    case tooManyEntries(String)

    public var description: String {
        switch self {
        case .tooLarge(let n): return "identify message of \(n) bytes exceeds the limit"
        case .malformed(let s): return "malformed identify message: \(s)"
        case .publicKeyMismatch: return "identify public key does not match the connection's peer"
        case .tooManyEntries(let s): return "identify message lists too many \(s)"
        }
    }
}

/// What a peer says about itself over identify (`/ipfs/id/1.0.0`, push: `/ipfs/id/push/1.0.0`).
/// Decoding checks that the key matches the authenticated peer and verifies the signed peer
/// record; an invalid record is reported and dropped, never used.
public struct IdentifyInfo: Sendable, Equatable {
    public static let protocolID = "/ipfs/id/1.0.0"
    public static let pushProtocolID = "/ipfs/id/push/1.0.0"
    public static let defaultProtocolVersion = "ipfs/0.1.0"
    /// Hard limit on one identify message (go-libp2p uses 8 KiB for messages with a signed record).
    public static let maxMessageSize = 8 * 1024
    public static let maxListenAddrs = 64
    public static let maxProtocols = 256

    public var protocolVersion: String?
    public var agentVersion: String?
    public var publicKey: PublicKey?
    public var listenAddrs: [Multiaddr] = []
    public var observedAddr: Multiaddr?
    public var protocols: [String] = []
    /// The verified peer record, if the peer sent one that verifies.
    public var signedPeerRecord: PeerRecord?
    /// Why a received signed peer record was rejected, if it was.
    public var signedPeerRecordError: String?
    /// Malformed entries that were skipped (for the log).
    public var skipped: [String] = []
    /// The verified envelope the record came in (to store or forward as received).
    public internal(set) var signedPeerRecordEnvelope: VerifiedEnvelope?

    public init(protocolVersion: String? = nil, agentVersion: String? = nil, publicKey: PublicKey? = nil,
                listenAddrs: [Multiaddr] = [], observedAddr: Multiaddr? = nil, protocols: [String] = []) {
        self.protocolVersion = protocolVersion
        self.agentVersion = agentVersion
        self.publicKey = publicKey
        self.listenAddrs = listenAddrs
        self.observedAddr = observedAddr
        self.protocols = protocols
    }

    public static func == (a: IdentifyInfo, b: IdentifyInfo) -> Bool {
        a.protocolVersion == b.protocolVersion && a.agentVersion == b.agentVersion && a.publicKey == b.publicKey
            && a.listenAddrs == b.listenAddrs && a.observedAddr == b.observedAddr && a.protocols == b.protocols
            && a.signedPeerRecord == b.signedPeerRecord
    }

    /// The protobuf message (not length-prefixed), carrying `signedRecord` if given.
    public func encode(signedRecord: VerifiedEnvelope?) -> [UInt8] {
        var pb = Identify_Pb_Identify()
        if let v = protocolVersion { pb.protocolVersion = v }
        if let v = agentVersion { pb.agentVersion = v }
        if let k = publicKey { pb.publicKey = Data(k.protobufBytes) }
        pb.listenAddrs = listenAddrs.map { Data($0.bytes) }
        if let o = observedAddr { pb.observedAddr = Data(o.bytes) }
        pb.protocols = protocols
        if let r = signedRecord { pb.signedPeerRecord = Data(r.bytes) }
        return try! [UInt8](pb.serializedBytes() as [UInt8])
    }

    /// Decodes one identify message received from `remote` (the peer authenticated by Noise).
    public static func decode(_ bytes: [UInt8], from remote: PeerID) throws(IdentifyError) -> IdentifyInfo {
        guard bytes.count <= maxMessageSize else { throw .tooLarge(bytes.count) }
        let pb: Identify_Pb_Identify
        do { pb = try Identify_Pb_Identify(serializedBytes: bytes) } catch { throw .malformed("protobuf: \(error)") }
        guard pb.listenAddrs.count <= maxListenAddrs else { throw .tooManyEntries("listen addresses") }
        guard pb.protocols.count <= maxProtocols else { throw .tooManyEntries("protocols") }
        var info = IdentifyInfo()
        if pb.hasProtocolVersion { info.protocolVersion = pb.protocolVersion }
        if pb.hasAgentVersion { info.agentVersion = pb.agentVersion }
        if pb.hasPublicKey {
            let key: PublicKey
            do { key = try PublicKey(protobufBytes: [UInt8](pb.publicKey)) } catch { throw .malformed("public key: \(error)") }
            guard remote.matches(key) else { throw .publicKeyMismatch }
            info.publicKey = key
        }
        for raw in pb.listenAddrs {
            do { info.listenAddrs.append(try Multiaddr(bytes: [UInt8](raw))) } catch {
                info.skipped.append("listen address: \(error)")
            }
        }
        if pb.hasObservedAddr {
            do { info.observedAddr = try Multiaddr(bytes: [UInt8](pb.observedAddr)) } catch {
                info.skipped.append("observed address: \(error)")
            }
        }
        info.protocols = pb.protocols.filter { !$0.isEmpty && $0.utf8.count <= MultistreamSelect.maxMessageLength }
        if pb.hasSignedPeerRecord {
            let raw = [UInt8](pb.signedPeerRecord)
            do {
                let (record, envelope) = try PeerRecord.open(envelopeBytes: raw)
                if record.peerID == remote {
                    info.signedPeerRecord = record
                    info.signedPeerRecordEnvelope = envelope
                } else {
                    info.signedPeerRecordError = "record is for \(record.peerID), not the connection's peer"
                }
            } catch {
                info.signedPeerRecordError = "\(error)"
            }
        }
        return info
    }

    /// Decodes a whole identify stream, as read to its end: one or more length-prefixed messages
    /// (merged, later fields extending earlier ones, as go-libp2p sends large records).
    public static func decodeStream(_ bytes: [UInt8], from remote: PeerID) throws(IdentifyError) -> IdentifyInfo {
        var decoder = LengthPrefixedDecoder(maxLength: maxMessageSize)
        decoder.append(bytes)
        var messages: [[UInt8]] = []
        do {
            while let m = try decoder.next() { messages.append(m) }
        } catch .tooLarge(let length, _) {
            throw .tooLarge(Int(clamping: length))
        } catch {
            throw .malformed("bad length prefix")
        }
        guard decoder.bufferedBytes == 0, !messages.isEmpty else { throw .malformed("truncated length-prefixed message") }
        var merged = try decode(messages[0], from: remote)
        for m in messages.dropFirst() {
            let next = try decode(m, from: remote)
            merged.merge(next)
        }
        return merged
    }

    mutating func merge(_ o: IdentifyInfo) {
        protocolVersion = o.protocolVersion ?? protocolVersion
        agentVersion = o.agentVersion ?? agentVersion
        publicKey = o.publicKey ?? publicKey
        listenAddrs += o.listenAddrs
        observedAddr = o.observedAddr ?? observedAddr
        protocols += o.protocols
        if o.signedPeerRecord != nil || o.signedPeerRecordError != nil {
            signedPeerRecord = o.signedPeerRecord
            signedPeerRecordError = o.signedPeerRecordError
            signedPeerRecordEnvelope = o.signedPeerRecordEnvelope
        }
        skipped += o.skipped
    }
}

public enum Ping {
    public static let protocolID = "/ipfs/ping/1.0.0"
    public static let payloadLength = 32
}
