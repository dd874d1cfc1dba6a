import Foundation
import GRDB

/// Opening Cairn's SQLite files (peer store, DHT store) the same careful way: WAL, writers that
/// wait for each other, and `synchronous = FULL` so that a write that returned survives kill -9
/// or power loss.
enum SQLiteFile {
    static let busyTimeout: TimeInterval = 5

    static func openPool(path: String) throws -> DatabasePool {
        var config = Configuration()
        config.journalMode = .wal
        // Two instances on one file (the node and a one-shot command) would otherwise get
        // SQLITE_BUSY at once; GRDB's writes are BEGIN IMMEDIATE, so a timeout serialises them.
        config.busyMode = .timeout(busyTimeout)
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        let pool = try openRetryingWhileBusy(path: path, configuration: config)
        // GRDB runs prepareDatabase *before* it switches the writer to WAL, and that switch sets
        // `synchronous = NORMAL`, silently undoing the line above on the only connection that
        // writes. Set it again; the pool keeps this one writer for its life.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        return pool
    }

    /// The busy timeout does not cover the first open of a fresh file: switching it to WAL needs
    /// an exclusive lock, and when another connection is doing the same SQLite answers SQLITE_BUSY
    /// at once (waiting could deadlock), so two instances creating one database together would
    /// otherwise fail.
    static func openRetryingWhileBusy(path: String, configuration: Configuration) throws -> DatabasePool {
        let deadline = Date().addingTimeInterval(busyTimeout)
        while true {
            do {
                return try DatabasePool(path: path, configuration: configuration)
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && Date() < deadline {
                Thread.sleep(forTimeInterval: 0.01)
            }
        }
    }

    /// GRDB reads which migrations are applied outside the migration's transaction, so two
    /// instances creating one fresh file at the same moment can both try to run it, and the later
    /// one fails ("table already exists"). Once more: it then sees the other's committed migration
    /// and has nothing to do; a genuine failure happens again.
    static func migrate(_ migrator: DatabaseMigrator, _ db: DatabasePool) throws {
        do { try migrator.migrate(db) } catch { try migrator.migrate(db) }
    }
}
