import CairnCore
import Foundation
import GRDB

/// The DHT's records, provider records and a routing-table snapshot, in SQLite through GRDB
/// (WAL journal, `synchronous = FULL`, so a write that returned survives kill -9 or power loss).
///
/// Semantics follow `InMemoryDHTStore`: callers validate before `putRecord`, and nothing expired
/// is ever returned. In addition, every record read back is validated again with the store's
/// `RecordValidator` (storage is not trusted more than the network): a row that no longer
/// validates is treated as absent and deleted.
///
/// Layout: keys as BLOBs, values as BLOBs, seq as the UInt64's bit pattern in an INTEGER, dates
/// as REAL seconds since 1970, peer IDs as base58 text, multiaddrs as newline-separated text.
/// Several instances (or processes) may open one file at once; writers wait for each other up
/// to `busyTimeout`.
public final class SQLiteDHTStore: DHTStore, Sendable {
    let db: DatabasePool
    public let validator: RecordValidator
    public static var busyTimeout: TimeInterval { SQLiteFile.busyTimeout }

    public init(path: String, validator: RecordValidator) throws {
        self.validator = validator
        db = try SQLiteFile.openPool(path: path)

        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-dht") { db in
            try db.create(table: "dht_record") { t in
                t.primaryKey("key", .blob)
                t.column("value", .blob).notNull()
                t.column("seq", .integer).notNull()
                t.column("expires_at", .double).notNull()
                t.column("received_at", .double).notNull()
            }
            try db.create(index: "dht_record_expires_at", on: "dht_record", columns: ["expires_at"])
            try db.create(table: "dht_provider") { t in
                t.column("key", .blob).notNull()
                t.column("peer", .text).notNull()
                t.column("addrs", .text).notNull()
                t.column("expires_at", .double).notNull()
                t.primaryKey(["key", "peer"])
            }
            try db.create(index: "dht_provider_expires_at", on: "dht_provider", columns: ["expires_at"])
            try db.create(table: "dht_routing") { t in
                t.primaryKey("peer", .text)
                t.column("addrs", .text).notNull()
                t.column("last_seen", .double).notNull()
            }
        }
        try SQLiteFile.migrate(migrator, db)
    }

    // MARK: Records

    public func record(forKey key: [UInt8], now: Date) throws -> DHTRecord? {
        let row = try db.read { db in
            try Row.fetchOne(db, sql: "SELECT value, received_at FROM dht_record WHERE key = ? AND expires_at > ?",
                             arguments: [Data(key), now.timeIntervalSince1970])
        }
        guard let row else { return nil }
        let value: Data = row["value"]
        let receivedAt = Date(timeIntervalSince1970: row["received_at"])
        if let record = try? DHTRecord.restore(key: key, value: [UInt8](value), receivedAt: receivedAt, validator: validator, now: now),
           record.expiresAt > now {
            return record
        }
        // No longer valid (tampered with, or the policy changed, or it expired by its own dates
        // before its expires_at column said so). Delete it, unless a new value replaced it meanwhile.
        try db.write { db in
            try db.execute(sql: "DELETE FROM dht_record WHERE key = ? AND value = ?", arguments: [Data(key), value])
        }
        return nil
    }

    /// Stores `record`, replacing what the key held.
    ///
    /// The caller has already validated the record and decided it wins over the stored one
    /// (`Kademlia.storeValidated`). As a second line of defence (another instance or process may
    /// have written in between), a signed record (presence or application) never replaces an
    /// unexpired stored row whose seq is higher; that throws `RecordError.staleSequence` (spelled
    /// `CairnCore.RecordError` below: GRDB has a `RecordError` too). Opaque records carry no seq,
    /// so a later write always replaces. "Unexpired" is judged at the record's `receivedAt`, the
    /// caller's clock when it validated.
    public func putRecord(_ record: DHTRecord) throws {
        try db.write { db in
            var signed = true
            if case .opaque = record.kind { signed = false }
            if signed, let stored = try Int64.fetchOne(
                db, sql: "SELECT seq FROM dht_record WHERE key = ? AND expires_at > ?",
                arguments: [Data(record.key), record.receivedAt.timeIntervalSince1970]
            ).map({ UInt64(bitPattern: $0) }), stored > record.seq {
                throw CairnCore.RecordError.staleSequence(stored: stored, offered: record.seq)
            }
            try db.execute(sql: """
                INSERT INTO dht_record (key, value, seq, expires_at, received_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(key) DO UPDATE SET
                  value = excluded.value, seq = excluded.seq,
                  expires_at = excluded.expires_at, received_at = excluded.received_at
                """, arguments: [
                    Data(record.key), Data(record.value), Int64(bitPattern: record.seq),
                    record.expiresAt.timeIntervalSince1970, record.receivedAt.timeIntervalSince1970,
                ])
        }
    }

    // MARK: Providers

    public func addProvider(_ provider: ProviderRecord) throws {
        try db.write { db in
            try db.execute(sql: """
                INSERT INTO dht_provider (key, peer, addrs, expires_at) VALUES (?, ?, ?, ?)
                ON CONFLICT(key, peer) DO UPDATE SET addrs = excluded.addrs, expires_at = excluded.expires_at
                """, arguments: [
                    Data(provider.key), provider.provider.base58, Self.encode(provider.addresses),
                    provider.expiresAt.timeIntervalSince1970,
                ])
        }
    }

    /// Unexpired providers of `key`, the latest expiry first.
    public func providers(forKey key: [UInt8], now: Date, limit: Int) throws -> [ProviderRecord] {
        guard limit > 0 else { return [] }
        let rows = try db.read { db in
            try Row.fetchAll(db, sql: """
                SELECT peer, addrs, expires_at FROM dht_provider WHERE key = ? AND expires_at > ?
                ORDER BY expires_at DESC LIMIT ?
                """, arguments: [Data(key), now.timeIntervalSince1970, limit])
        }
        return rows.compactMap { row in
            guard let peer = try? PeerID(string: row["peer"] as String) else { return nil }
            return ProviderRecord(key: key, provider: peer, addresses: Self.decode(row["addrs"]),
                                  expiresAt: Date(timeIntervalSince1970: row["expires_at"]))
        }
    }

    @discardableResult
    public func sweepExpired(now: Date) throws -> Int {
        try db.write { db in
            let t = now.timeIntervalSince1970
            try db.execute(sql: "DELETE FROM dht_record WHERE expires_at <= ?", arguments: [t])
            var deleted = db.changesCount
            try db.execute(sql: "DELETE FROM dht_provider WHERE expires_at <= ?", arguments: [t])
            deleted += db.changesCount
            return deleted
        }
    }

    // MARK: Routing-table snapshot

    /// Replaces the whole snapshot, in one transaction. A peer listed twice keeps its last entry.
    public func saveRouting(_ entries: [(PeerID, [Multiaddr], Date)]) throws {
        try db.write { db in
            try db.execute(sql: "DELETE FROM dht_routing")
            let insert = try db.cachedStatement(sql: "INSERT OR REPLACE INTO dht_routing (peer, addrs, last_seen) VALUES (?, ?, ?)")
            for (peer, addrs, lastSeen) in entries {
                try insert.execute(arguments: [peer.base58, Self.encode(addrs), lastSeen.timeIntervalSince1970])
            }
        }
    }

    /// The snapshot, most recently seen first. Rows that no longer parse are skipped.
    public func loadRouting() throws -> [(PeerID, [Multiaddr], Date)] {
        let rows = try db.read { db in try Row.fetchAll(db, sql: "SELECT peer, addrs, last_seen FROM dht_routing ORDER BY last_seen DESC") }
        return rows.compactMap { row in
            guard let peer = try? PeerID(string: row["peer"] as String) else { return nil }
            return (peer, Self.decode(row["addrs"]), Date(timeIntervalSince1970: row["last_seen"]))
        }
    }

    // MARK: Counts

    /// Stored records; with `now`, only the unexpired ones (rows are not re-validated here).
    public func recordCount(now: Date? = nil) throws -> Int {
        try count(table: "dht_record", now: now)
    }

    /// Stored provider records; with `now`, only the unexpired ones.
    public func providerCount(now: Date? = nil) throws -> Int {
        try count(table: "dht_provider", now: now)
    }

    private func count(table: String, now: Date?) throws -> Int {
        try db.read { db in
            if let now {
                return try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table) WHERE expires_at > ?", arguments: [now.timeIntervalSince1970]) ?? 0
            }
            return try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table)") ?? 0
        }
    }

    // MARK: Encoding

    static func encode(_ addrs: [Multiaddr]) -> String { addrs.map(\.description).joined(separator: "\n") }

    static func decode(_ text: String) -> [Multiaddr] {
        text.split(separator: "\n").compactMap { try? Multiaddr(String($0)) }
    }
}
