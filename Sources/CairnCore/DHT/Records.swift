import CairnProto
import Foundation
import SwiftProtobuf

public enum RecordError: Error, Equatable, Sendable, CustomStringConvertible {
    case keyTooLong(Int)
    case valueTooLarge(Int)
    case envelope(EnvelopeError)
    case signerMismatch
    case keyMismatch
    case expired
    case fromTheFuture
    case lifetimeTooLong
    case malformedKey(String)
    case malformedPayload(String)
    case namespaceRejected(String)
    case staleSequence(stored: UInt64, offered: UInt64)

    public var description: String {
        switch self {
        case .keyTooLong(let n): return "record key of \(n) bytes exceeds \(KadMessage.maxKeyLength)"
        case .valueTooLarge(let n): return "record of \(n) bytes exceeds \(KadMessage.maxRecordSize)"
        case .envelope(let e): return "record envelope: \(e)"
        case .signerMismatch: return "record signer is not the peer named in the key"
        case .keyMismatch: return "record was signed for another key"
        case .expired: return "record has expired"
        case .fromTheFuture: return "record is dated in the future"
        case .lifetimeTooLong: return "record lifetime exceeds the maximum"
        case .malformedKey(let s): return "malformed record key: \(s)"
        case .malformedPayload(let s): return "malformed record payload: \(s)"
        case .namespaceRejected(let n): return "namespace '\(n)' is not accepted by this node's policy"
        case .staleSequence(let s, let o): return "record seq \(o) does not exceed the stored \(s)"
        }
    }
}

/// A DHT record that passed validation. Only a validator makes these, and only these are stored.
public struct DHTRecord: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// `/cairn/peer/<peerID>`: the peer's signed PeerRecord.
        case presence(PeerRecord)
        /// `/<namespace>/<peerID>`: a signed Cairn application record.
        case application(namespace: String, signer: PeerID, value: [UInt8])
        /// `/ipns/<peer-id bytes>`: an IPNS record of that name (verified: signature V2, fields, validity).
        case ipns(IPNS.Record)
        /// Any other key: bytes Cairn cannot verify (other implementations' records).
        case opaque
    }

    public let key: [UInt8]
    /// The value exactly as stored and served (for signed kinds, the serialized envelope).
    public let value: [UInt8]
    public let kind: Kind
    public let seq: UInt64
    public let expiresAt: Date
    public let receivedAt: Date

    /// Rebuilds a record read back from storage; it is validated again (storage is not trusted
    /// more than the network, and an expired record never leaves the store).
    public static func restore(key: [UInt8], value: [UInt8], receivedAt: Date, validator: RecordValidator, now: Date) throws(RecordError) -> DHTRecord {
        try validator.validate(key: key, value: value, now: now, receivedAt: receivedAt)
    }
}

/// A provider record: `provider` can serve `key`, until `expiresAt`.
public struct ProviderRecord: Sendable, Equatable {
    public let key: [UInt8]
    public let provider: PeerID
    public let addresses: [Multiaddr]
    public let expiresAt: Date

    public init(key: [UInt8], provider: PeerID, addresses: [Multiaddr], expiresAt: Date) {
        self.key = key
        self.provider = provider
        self.addresses = addresses
        self.expiresAt = expiresAt
    }
}

/// Validation and selection of DHT records.
///
/// Key policy (documented in docs/dht.md):
/// - `/cairn/peer/<peerID>`: the value must be a signed envelope (domain `libp2p-peer-record`)
///   whose signer is that peer; seq is the record's creation time in nanoseconds and the record
///   expires `presenceTTL` after it.
/// - `/<namespace>/<peerID>` (last segment a peer ID, namespace not in `opaqueNamespaces`): the
///   value must be a signed envelope (domain `cairn-app-record`) by that peer carrying an
///   `AppRecord` for exactly this key, with a seq and an expiry at most `maxAppRecordTTL` ahead.
/// - any other key: opaque bytes, accepted per `opaquePolicy`.
/// Between two valid records for one key the higher seq wins; equal or lower never replaces.
public struct RecordValidator: Sendable {
    public enum OpaquePolicy: Sendable, Equatable {
        /// Store other implementations' values; a later write replaces an earlier one.
        case accept(ttl: TimeInterval)
        case reject
    }

    public static let appRecordDomain = "cairn-app-record"
    public static let appRecordPayloadType = Array("/cairn/app-record/1".utf8)
    public static let presencePrefix = "/cairn/peer/"

    public var presenceTTL: TimeInterval = 3600
    public var maxAppRecordTTL: TimeInterval = 48 * 3600
    public var maxClockSkew: TimeInterval = 300
    public var opaquePolicy: OpaquePolicy = .accept(ttl: 36 * 3600)
    /// Namespaces whose keys end in a peer ID but belong to other systems (left opaque).
    public var opaqueNamespaces: Set<String> = ["ipns", "pk"]

    public init() {}

    public static func presenceKey(_ peer: PeerID) -> [UInt8] { Array((presencePrefix + peer.base58).utf8) }
    public static func appKey(namespace: String, peer: PeerID) -> [UInt8] { Array("/\(namespace)/\(peer.base58)".utf8) }

    /// Parses a text key `/<namespace>/<peerID>` into its parts, if it is one.
    static func signedKeyParts(_ key: [UInt8]) -> (namespace: String, peer: PeerID)? {
        guard let text = String(validating: key, as: UTF8.self), text.hasPrefix("/") else { return nil }
        let parts = text.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 2, let last = parts.last, let peer = try? PeerID(string: String(last)) else { return nil }
        let namespace = parts.dropLast().joined(separator: "/")
        guard !namespace.isEmpty, !namespace.contains("//") else { return nil }
        return (namespace, peer)
    }

    public func validate(key: [UInt8], value: [UInt8], now: Date, receivedAt: Date? = nil) throws(RecordError) -> DHTRecord {
        guard key.count <= KadMessage.maxKeyLength else { throw .keyTooLong(key.count) }
        guard value.count <= KadMessage.maxRecordSize else { throw .valueTooLarge(value.count) }
        let received = receivedAt ?? now
        if let name = IPNS.name(ofKey: key) {
            let r: IPNS.Record
            do { r = try IPNS.verify(value, name: name, now: now) } catch { throw .malformedPayload("\(error)") }
            return DHTRecord(key: key, value: value, kind: .ipns(r), seq: r.sequence, expiresAt: r.validUntil, receivedAt: received)
        }
        if let (namespace, peer) = Self.signedKeyParts(key), !opaqueNamespaces.contains(namespace) {
            if namespace == "cairn/peer" {
                return try validatePresence(key: key, value: value, peer: peer, now: now, received: received)
            }
            if namespace == "cairn" || namespace.hasPrefix("cairn/") {
                throw .malformedKey("unknown cairn namespace '\(namespace)'")
            }
            return try validateApplication(key: key, value: value, namespace: namespace, peer: peer, now: now, received: received)
        }
        if let text = String(validating: key, as: UTF8.self), text.hasPrefix("/cairn/") {
            throw .malformedKey("a /cairn/ key must end in a peer ID")
        }
        switch opaquePolicy {
        case .reject:
            throw .namespaceRejected(Self.namespace(of: key))
        case .accept(let ttl):
            return DHTRecord(key: key, value: value, kind: .opaque, seq: 0, expiresAt: received.addingTimeInterval(ttl), receivedAt: received)
        }
    }

    static func namespace(of key: [UInt8]) -> String {
        guard let text = String(validating: key, as: UTF8.self), text.hasPrefix("/") else { return "(binary)" }
        return String(text.dropFirst().split(separator: "/").first ?? "")
    }

    func validatePresence(key: [UInt8], value: [UInt8], peer: PeerID, now: Date, received: Date) throws(RecordError) -> DHTRecord {
        let record: PeerRecord
        do { record = try PeerRecord.open(envelopeBytes: value).0 } catch { throw .envelope(error) }
        guard record.peerID == peer else { throw .signerMismatch }
        let created = Date(timeIntervalSince1970: Double(record.seq) / 1e9)
        guard created.timeIntervalSince(now) <= maxClockSkew else { throw .fromTheFuture }
        let expires = created.addingTimeInterval(presenceTTL)
        guard expires > now else { throw .expired }
        return DHTRecord(key: key, value: value, kind: .presence(record), seq: record.seq, expiresAt: expires, receivedAt: received)
    }

    func validateApplication(key: [UInt8], value: [UInt8], namespace: String, peer: PeerID, now: Date, received: Date) throws(RecordError) -> DHTRecord {
        let env: VerifiedEnvelope
        do {
            env = try UnverifiedEnvelope(bytes: value).verify(domain: Self.appRecordDomain, expectedPayloadType: Self.appRecordPayloadType)
        } catch { throw .envelope(error) }
        guard env.signer == peer else { throw .signerMismatch }
        let pb: Cairn_Pb_AppRecord
        do { pb = try Cairn_Pb_AppRecord(serializedBytes: env.payload) } catch { throw .malformedPayload("\(error)") }
        guard [UInt8](pb.key) == key else { throw .keyMismatch }
        let expires = Date(timeIntervalSince1970: Double(pb.expires))
        guard expires > now else { throw .expired }
        guard expires.timeIntervalSince(now) <= maxAppRecordTTL + maxClockSkew else { throw .lifetimeTooLong }
        return DHTRecord(key: key, value: value, kind: .application(namespace: namespace, signer: peer, value: [UInt8](pb.value)),
                         seq: pb.seq, expiresAt: expires, receivedAt: received)
    }

    /// Whether `new` may replace `existing` (same key): signed kinds need a strictly higher seq;
    /// opaque values follow the opaque policy (a later write replaces).
    public func shouldReplace(existing: DHTRecord, with new: DHTRecord) -> Bool {
        switch (existing.kind, new.kind) {
        case (.opaque, .opaque): return existing.value != new.value
        case (.ipns(let a), .ipns(let b)):
            // As boxo: the higher sequence wins; on a tie, the later validity.
            return b.sequence > a.sequence || (b.sequence == a.sequence && b.validUntil > a.validUntil)
        default: return new.seq > existing.seq
        }
    }

    /// Signs an application record for `/<namespace>/<our peer ID>`.
    public static func signApplicationRecord(namespace: String, value: [UInt8], seq: UInt64, expires: Date, key signer: PrivateKey) -> (key: [UInt8], envelope: [UInt8]) {
        let key = appKey(namespace: namespace, peer: signer.peerID)
        var pb = Cairn_Pb_AppRecord()
        pb.key = Data(key)
        pb.value = Data(value)
        pb.seq = seq
        pb.expires = UInt64(max(0, expires.timeIntervalSince1970))
        let payload = try! [UInt8](pb.serializedBytes() as [UInt8])
        let env = VerifiedEnvelope(sealing: payload, payloadType: appRecordPayloadType, domain: appRecordDomain, key: signer)
        return (key, env.bytes)
    }
}

/// Where a DHT keeps records and providers. Implementations: `InMemoryDHTStore` (simulation,
/// tests) and the SQLite store in CairnNode. Callers validate before `put`; stores never return
/// expired entries.
public protocol DHTStore: AnyObject, Sendable {
    func record(forKey key: [UInt8], now: Date) throws -> DHTRecord?
    func putRecord(_ record: DHTRecord) throws
    func addProvider(_ provider: ProviderRecord) throws
    func providers(forKey key: [UInt8], now: Date, limit: Int) throws -> [ProviderRecord]
    /// Deletes expired records and providers; returns how many rows went.
    @discardableResult func sweepExpired(now: Date) throws -> Int
}

public final class InMemoryDHTStore: DHTStore, @unchecked Sendable {
    private var records: [[UInt8]: DHTRecord] = [:]
    private var providerMap: [[UInt8]: [PeerID: ProviderRecord]] = [:]
    private let lock = NSLock()

    public init() {}

    public func record(forKey key: [UInt8], now: Date) -> DHTRecord? {
        lock.lock(); defer { lock.unlock() }
        guard let r = records[key], r.expiresAt > now else { return nil }
        return r
    }

    public func putRecord(_ record: DHTRecord) {
        lock.lock(); defer { lock.unlock() }
        records[record.key] = record
    }

    public func addProvider(_ provider: ProviderRecord) {
        lock.lock(); defer { lock.unlock() }
        providerMap[provider.key, default: [:]][provider.provider] = provider
    }

    public func providers(forKey key: [UInt8], now: Date, limit: Int) -> [ProviderRecord] {
        lock.lock(); defer { lock.unlock() }
        return Array((providerMap[key] ?? [:]).values.filter { $0.expiresAt > now }.sorted { $0.expiresAt > $1.expiresAt }.prefix(limit))
    }

    public func sweepExpired(now: Date) -> Int {
        lock.lock(); defer { lock.unlock() }
        let before = records.count + providerMap.values.reduce(0) { $0 + $1.count }
        records = records.filter { $0.value.expiresAt > now }
        providerMap = providerMap.mapValues { $0.filter { $0.value.expiresAt > now } }.filter { !$0.value.isEmpty }
        return before - records.count - providerMap.values.reduce(0) { $0 + $1.count }
    }

    public var recordCount: Int { lock.lock(); defer { lock.unlock() }; return records.count }
}
