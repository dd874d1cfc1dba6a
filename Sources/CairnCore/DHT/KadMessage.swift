import CairnProto
import Foundation
import SwiftProtobuf

public enum KadMessageError: Error, Equatable, Sendable, CustomStringConvertible {
    case tooLarge(Int)
    case malformed(String)
    case keyTooLong(Int)
    case recordTooLarge(Int)
    case tooManyPeers(String, Int)

    public var description: String {
        switch self {
        case .tooLarge(let n): return "kad message of \(n) bytes exceeds the limit"
        case .malformed(let s): return "malformed kad message: \(s)"
        case .keyTooLong(let n): return "kad key of \(n) bytes exceeds \(KadMessage.maxKeyLength)"
        case .recordTooLarge(let n): return "kad record of \(n) bytes exceeds \(KadMessage.maxRecordSize)"
        case .tooManyPeers(let f, let n): return "kad message lists \(n) \(f), more than k"
        }
    }
}

/// A peer as listed in kad messages. Addresses that do not parse are dropped.
public struct KadPeer: Sendable, Equatable {
    public var id: PeerID
    public var addresses: [Multiaddr]
    public var connected: Bool

    public init(id: PeerID, addresses: [Multiaddr], connected: Bool = false) {
        self.id = id
        self.addresses = addresses
        self.connected = connected
    }
}

/// One kad-dht RPC (`/ipfs/kad/1.0.0`, libp2p/specs kad-dht), with the hard limits Cairn applies
/// to anything it receives.
public struct KadMessage: Sendable, Equatable {
    public enum Kind: Int, Sendable {
        case putValue = 0, getValue = 1, addProvider = 2, getProviders = 3, findNode = 4, ping = 5

        /// The type as metrics and logs name it (`find_node`).
        public var metricName: String {
            switch self {
            case .putValue: return "put_value"
            case .getValue: return "get_value"
            case .addProvider: return "add_provider"
            case .getProviders: return "get_providers"
            case .findNode: return "find_node"
            case .ping: return "ping"
            }
        }
    }

    /// Hard limit on one kad message on the wire.
    public static let maxMessageSize = 64 * 1024
    public static let maxKeyLength = 256
    public static let maxRecordSize = 10 * 1024
    /// Most peers accepted in closerPeers or providerPeers (k).
    public static let maxPeers = 20
    public static let maxAddressesPerPeer = 16

    public var kind: Kind
    public var key: [UInt8]
    /// The record value (PUT_VALUE request, GET_VALUE response).
    public var recordValue: [UInt8]?
    public var closerPeers: [KadPeer]
    public var providerPeers: [KadPeer]

    public init(kind: Kind, key: [UInt8] = [], recordValue: [UInt8]? = nil, closerPeers: [KadPeer] = [], providerPeers: [KadPeer] = []) {
        self.kind = kind
        self.key = key
        self.recordValue = recordValue
        self.closerPeers = closerPeers
        self.providerPeers = providerPeers
    }

    public func encode() -> [UInt8] {
        var pb = Dht_Pb_Message()
        pb.type = Dht_Pb_Message.MessageType(rawValue: kind.rawValue)!
        pb.key = Data(key)
        if let v = recordValue {
            var r = Dht_Pb_Record()
            r.key = Data(key)
            r.value = Data(v)
            pb.record = r
        }
        pb.closerPeers = closerPeers.map(Self.encodePeer)
        pb.providerPeers = providerPeers.map(Self.encodePeer)
        return try! [UInt8](pb.serializedBytes() as [UInt8])
    }

    static func encodePeer(_ p: KadPeer) -> Dht_Pb_Message.Peer {
        var e = Dht_Pb_Message.Peer()
        e.id = Data(p.id.bytes)
        e.addrs = p.addresses.map { Data($0.bytes) }
        e.connection = p.connected ? .connected : .notConnected
        return e
    }

    /// Decodes and checks a received message. Peers with a malformed ID are an error (the sender
    /// is broken or hostile); unparseable addresses are dropped.
    public static func decode(_ bytes: [UInt8]) throws(KadMessageError) -> KadMessage {
        guard bytes.count <= maxMessageSize else { throw .tooLarge(bytes.count) }
        let pb: Dht_Pb_Message
        do { pb = try Dht_Pb_Message(serializedBytes: bytes) } catch { throw .malformed("protobuf: \(error)") }
        guard let kind = Kind(rawValue: pb.type.rawValue) else { throw .malformed("unknown type \(pb.type.rawValue)") }
        guard pb.key.count <= maxKeyLength else { throw .keyTooLong(pb.key.count) }
        guard pb.closerPeers.count <= maxPeers else { throw .tooManyPeers("closer peers", pb.closerPeers.count) }
        guard pb.providerPeers.count <= maxPeers else { throw .tooManyPeers("provider peers", pb.providerPeers.count) }
        var m = KadMessage(kind: kind, key: [UInt8](pb.key))
        if pb.hasRecord {
            guard pb.record.value.count <= maxRecordSize else { throw .recordTooLarge(pb.record.value.count) }
            if !pb.record.key.isEmpty && pb.record.key != pb.key { throw .malformed("record key differs from message key") }
            m.recordValue = [UInt8](pb.record.value)
        }
        m.closerPeers = try pb.closerPeers.map(decodePeer)
        m.providerPeers = try pb.providerPeers.map(decodePeer)
        return m
    }

    static func decodePeer(_ p: Dht_Pb_Message.Peer) throws(KadMessageError) -> KadPeer {
        let id: PeerID
        do { id = try PeerID(bytes: [UInt8](p.id)) } catch { throw .malformed("peer ID") }
        let addrs = p.addrs.prefix(maxAddressesPerPeer).compactMap { try? Multiaddr(bytes: [UInt8]($0)) }
        return KadPeer(id: id, addresses: addrs, connected: p.connection == .connected)
    }
}
