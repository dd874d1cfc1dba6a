import CairnCore
import Foundation
import GRDB

/// What the node knows of a peer, from identify. Only a verified signed peer record is kept.
public struct StoredPeer: Sendable, Equatable {
    public var peerID: PeerID
    public var addresses: [Multiaddr]
    public var protocols: [String]
    public var agentVersion: String?
    public var protocolVersion: String?
    /// The serialized envelope of the peer's latest verified signed peer record, and its seq.
    public var signedRecord: [UInt8]?
    public var recordSeq: UInt64?
    public var lastSeen: Date
}

/// The peer store, in SQLite through GRDB (WAL mode). Addresses and protocols are kept as
/// newline-separated text; a signed record replaces a stored one only with a higher seq.
public final class PeerStore: Sendable {
    let db: DatabasePool

    public init(path: String) throws {
        db = try SQLiteFile.openPool(path: path)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-peers") { db in
            try db.create(table: "peer") { t in
                t.primaryKey("peer_id", .text)
                t.column("addrs", .text).notNull()
                t.column("protocols", .text).notNull()
                t.column("agent", .text)
                t.column("protocol_version", .text)
                t.column("signed_record", .blob)
                t.column("record_seq", .integer)
                t.column("last_seen", .double).notNull()
            }
        }
        try SQLiteFile.migrate(migrator, db)
    }

    /// Records what identify said of `peer`. The record, if any, must already be verified.
    public func update(peer: PeerID, info: IdentifyInfo, verifiedRecord: VerifiedEnvelope?, at date: Date = Date()) throws {
        let record = info.signedPeerRecord
        try db.write { db in
            let existingSeq = try Int64.fetchOne(db, sql: "SELECT record_seq FROM peer WHERE peer_id = ?", arguments: [peer.base58])
            var keepRecord = true
            if let existingSeq, let record, UInt64(bitPattern: existingSeq) >= record.seq { keepRecord = false }
            let addrs = (record?.addresses ?? info.listenAddrs).map { $0.withoutTrailingPeerID.description }
            try db.execute(sql: """
                INSERT INTO peer (peer_id, addrs, protocols, agent, protocol_version, signed_record, record_seq, last_seen)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(peer_id) DO UPDATE SET
                  addrs = excluded.addrs, protocols = excluded.protocols, agent = excluded.agent,
                  protocol_version = excluded.protocol_version, last_seen = excluded.last_seen,
                  signed_record = CASE WHEN ? THEN excluded.signed_record ELSE peer.signed_record END,
                  record_seq = CASE WHEN ? THEN excluded.record_seq ELSE peer.record_seq END
                """, arguments: [
                    peer.base58, addrs.joined(separator: "\n"), info.protocols.joined(separator: "\n"),
                    info.agentVersion, info.protocolVersion,
                    verifiedRecord.map { Data($0.bytes) }, record.map { Int64(bitPattern: $0.seq) },
                    date.timeIntervalSince1970, keepRecord && record != nil, keepRecord && record != nil,
                ])
        }
    }

    public func peer(_ id: PeerID) throws -> StoredPeer? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM peer WHERE peer_id = ?", arguments: [id.base58]).flatMap(Self.decode)
        }
    }

    public func allPeers() throws -> [StoredPeer] {
        try db.read { db in try Row.fetchAll(db, sql: "SELECT * FROM peer ORDER BY last_seen DESC").compactMap(Self.decode) }
    }

    static func decode(_ row: Row) -> StoredPeer? {
        guard let id = try? PeerID(string: row["peer_id"]) else { return nil }
        let addrs: String = row["addrs"]
        let protos: String = row["protocols"]
        let blob: Data? = row["signed_record"]
        let seq: Int64? = row["record_seq"]
        return StoredPeer(
            peerID: id,
            addresses: addrs.split(separator: "\n").compactMap { try? Multiaddr(String($0)) },
            protocols: protos.split(separator: "\n").map(String.init),
            agentVersion: row["agent"], protocolVersion: row["protocol_version"],
            signedRecord: blob.map { [UInt8]($0) }, recordSeq: seq.map { UInt64(bitPattern: $0) },
            lastSeen: Date(timeIntervalSince1970: row["last_seen"]))
    }
}
