import CairnCore
@testable import CairnNode
import Foundation
import GRDB
import XCTest

/// The SQLite DHT store: the `InMemoryDHTStore` semantics, re-validation on read, the seq guard,
/// providers, the routing snapshot, and what is left on disk across instances.
final class SQLiteDHTStoreTests: XCTestCase {
    var dir: URL!
    var path: String { dir.appendingPathComponent("dht.sqlite").path }
    let key = PrivateKey.generate()
    let other = PrivateKey.generate()
    let now = Date()
    let validator = RecordValidator()

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-dht-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try FileManager.default.removeItem(at: dir)
    }

    func makeStore(_ validator: RecordValidator? = nil) throws -> SQLiteDHTStore {
        try SQLiteDHTStore(path: path, validator: validator ?? self.validator)
    }

    func presence(_ k: PrivateKey, at date: Date, port: UInt16 = 4001) throws -> DHTRecord {
        let env = PeerRecord(peerID: k.peerID, seq: UInt64(date.timeIntervalSince1970 * 1e9),
                             addresses: [try Multiaddr("/ip4/1.2.3.4/tcp/\(port)")]).sign(with: k)
        return try validator.validate(key: RecordValidator.presenceKey(k.peerID), value: env.bytes, now: date)
    }

    func application(_ value: [UInt8], seq: UInt64, lifetime: TimeInterval = 3600, at date: Date? = nil) throws -> DHTRecord {
        let at = date ?? now
        let (k, env) = RecordValidator.signApplicationRecord(namespace: "notes", value: value, seq: seq,
                                                             expires: at.addingTimeInterval(lifetime), key: key)
        return try validator.validate(key: k, value: env, now: at)
    }

    func opaque(_ key: String, _ value: String, at date: Date? = nil, validator: RecordValidator? = nil) throws -> DHTRecord {
        try (validator ?? self.validator).validate(key: Array(key.utf8), value: Array(value.utf8), now: date ?? now)
    }

    /// A connection of its own, as any other program would open the file.
    func rawConnection() throws -> DatabaseQueue {
        var config = Configuration()
        config.busyMode = .timeout(5)
        return try DatabaseQueue(path: path, configuration: config)
    }

    func assertSame(_ got: DHTRecord?, _ want: DHTRecord, file: StaticString = #filePath, line: UInt = #line) {
        guard let got else { return XCTFail("record missing", file: file, line: line) }
        XCTAssertEqual(got.key, want.key, file: file, line: line)
        XCTAssertEqual(got.value, want.value, file: file, line: line)
        XCTAssertEqual(got.kind, want.kind, file: file, line: line)
        XCTAssertEqual(got.seq, want.seq, file: file, line: line)
        XCTAssertEqual(got.expiresAt.timeIntervalSince1970, want.expiresAt.timeIntervalSince1970, accuracy: 1e-3, file: file, line: line)
        XCTAssertEqual(got.receivedAt.timeIntervalSince1970, want.receivedAt.timeIntervalSince1970, accuracy: 1e-3, file: file, line: line)
    }

    // MARK: Records

    func testPutAndGetEachKindOfRecord() throws {
        let store = try makeStore()
        let p = try presence(key, at: now)
        let a = try application(Array("hello".utf8), seq: 5)
        let o = try opaque("/ipns/whatever", "bytes from elsewhere")
        guard case .presence = p.kind, case .application = a.kind, case .opaque = o.kind else { return XCTFail("fixture kinds") }
        XCTAssertNil(try store.record(forKey: p.key, now: now))
        for r in [p, a, o] { try store.putRecord(r) }
        XCTAssertEqual(try store.recordCount(), 3)
        assertSame(try store.record(forKey: p.key, now: now), p)
        assertSame(try store.record(forKey: a.key, now: now), a)
        assertSame(try store.record(forKey: o.key, now: now), o)
        XCTAssertNil(try store.record(forKey: Array("/ipns/other".utf8), now: now))
        // An opaque key is replaced by a later write.
        let o2 = try opaque("/ipns/whatever", "newer bytes", at: now.addingTimeInterval(10))
        try store.putRecord(o2)
        assertSame(try store.record(forKey: o.key, now: now.addingTimeInterval(10)), o2)
        XCTAssertEqual(try store.recordCount(), 3)
    }

    func testExpiredRecordsAreNotReturnedAndAreSwept() throws {
        var short = validator
        short.opaquePolicy = .accept(ttl: 120)
        let store = try makeStore(short)
        let a = try application([1], seq: 1, lifetime: 60)            // expires now+60
        let p = try presence(key, at: now)                              // expires now+3600
        let o = try opaque("/other/key", "x", validator: short)         // expires now+120
        for r in [a, p, o] { try store.putRecord(r) }
        try store.addProvider(ProviderRecord(key: [9], provider: other.peerID, addresses: [], expiresAt: now.addingTimeInterval(90)))

        let t1 = now.addingTimeInterval(61)
        XCTAssertNil(try store.record(forKey: a.key, now: t1))
        XCTAssertNotNil(try store.record(forKey: o.key, now: t1))
        XCTAssertNotNil(try store.record(forKey: p.key, now: t1))
        XCTAssertEqual(try store.recordCount(now: t1), 2)
        XCTAssertEqual(try store.sweepExpired(now: t1), 1)
        XCTAssertEqual(try store.recordCount(), 2)

        let t2 = now.addingTimeInterval(121)
        XCTAssertNil(try store.record(forKey: o.key, now: t2))
        XCTAssertEqual(try store.sweepExpired(now: t2), 2, "the opaque record and the provider")
        XCTAssertEqual(try store.recordCount(), 1)
        XCTAssertEqual(try store.providerCount(), 0)
        XCTAssertEqual(try store.sweepExpired(now: t2), 0)

        let t3 = now.addingTimeInterval(3601)
        XCTAssertNil(try store.record(forKey: p.key, now: t3))
        XCTAssertEqual(try store.sweepExpired(now: t3), 1)
        XCTAssertEqual(try store.recordCount(), 0)
    }

    func testRecordTamperedWithOnDiskIsNotReturned() throws {
        let store = try makeStore()
        let a = try application(Array("genuine".utf8), seq: 3)
        let p = try presence(key, at: now)
        let o = try opaque("/ipns/name", "x")
        for r in [a, p, o] { try store.putRecord(r) }
        assertSame(try store.record(forKey: a.key, now: now), a)

        let raw = try rawConnection()
        // 1. One bit of the application record's signature flipped.
        var flipped = a.value
        flipped[flipped.count - 1] ^= 1
        // 2. The presence key given another peer's validly signed record.
        let foreign = try presence(other, at: now).value
        // 3. The opaque row's expiry pushed into the far future; its received_at still dates it.
        try raw.write { db in
            try db.execute(sql: "UPDATE dht_record SET value = ? WHERE key = ?", arguments: [Data(flipped), Data(a.key)])
            try db.execute(sql: "UPDATE dht_record SET value = ? WHERE key = ?", arguments: [Data(foreign), Data(p.key)])
            try db.execute(sql: "UPDATE dht_record SET expires_at = ?, received_at = ? WHERE key = ?",
                           arguments: [now.addingTimeInterval(1e6).timeIntervalSince1970,
                                       now.addingTimeInterval(-40 * 3600).timeIntervalSince1970, Data(o.key)])
        }
        XCTAssertNil(try store.record(forKey: a.key, now: now))
        XCTAssertNil(try store.record(forKey: p.key, now: now))
        XCTAssertNil(try store.record(forKey: o.key, now: now))
        // And the rows are gone, not merely hidden.
        XCTAssertEqual(try store.recordCount(), 0)
        XCTAssertEqual(try raw.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM dht_record") }, 0)
    }

    func testHigherSeqIsNotReplacedByLower() throws {
        let store = try makeStore()
        let a6 = try application([6], seq: 6)
        let a5 = try application([5], seq: 5)
        try store.putRecord(a6)
        XCTAssertThrowsError(try store.putRecord(a5)) {
            XCTAssertEqual($0 as? CairnCore.RecordError, .staleSequence(stored: 6, offered: 5))
        }
        assertSame(try store.record(forKey: a6.key, now: now), a6)
        // Higher replaces.
        let a7 = try application([7], seq: 7)
        try store.putRecord(a7)
        assertSame(try store.record(forKey: a7.key, now: now), a7)
        // Presence: an older record (lower seq) does not replace a newer one.
        let newer = try presence(key, at: now, port: 2)
        let older = try presence(key, at: now.addingTimeInterval(-60), port: 1)
        try store.putRecord(newer)
        XCTAssertThrowsError(try store.putRecord(older))
        assertSame(try store.record(forKey: newer.key, now: now), newer)
        // An expired higher-seq row does not block: a lower seq received after its expiry wins.
        let shortLived = try application([9], seq: 9, lifetime: 60)
        try store.putRecord(shortLived)
        let later = now.addingTimeInterval(120)
        let a8 = try application([8], seq: 8, at: later)
        try store.putRecord(a8)
        assertSame(try store.record(forKey: a8.key, now: later), a8)
    }

    // MARK: Providers

    func testProvidersAddListExpireAndLimit() throws {
        let store = try makeStore()
        let cid: [UInt8] = [0x12, 0x20] + [UInt8](repeating: 7, count: 32)
        let peers = (0..<4).map { _ in PrivateKey.generate().peerID }
        let addrs = [try Multiaddr("/ip4/10.0.0.1/tcp/4001"), try Multiaddr("/ip6/::1/udp/4001/quic-v1/p2p/\(peers[0])")]
        for (i, p) in peers.enumerated() {
            try store.addProvider(ProviderRecord(key: cid, provider: p, addresses: i == 0 ? addrs : [],
                                                 expiresAt: now.addingTimeInterval(Double(100 * (i + 1)))))
        }
        try store.addProvider(ProviderRecord(key: [1, 2, 3], provider: peers[0], addresses: [], expiresAt: now.addingTimeInterval(1000)))

        let all = try store.providers(forKey: cid, now: now, limit: 20)
        XCTAssertEqual(all.map(\.provider), peers.reversed(), "latest expiry first")
        XCTAssertEqual(all.last?.addresses, addrs)
        XCTAssertEqual(all.last?.key, cid)
        XCTAssertEqual(all[0].expiresAt.timeIntervalSince(now), 400, accuracy: 1e-3)
        XCTAssertEqual(try store.providers(forKey: cid, now: now, limit: 2).map(\.provider), [peers[3], peers[2]])
        XCTAssertEqual(try store.providers(forKey: cid, now: now, limit: 0), [])
        XCTAssertEqual(try store.providers(forKey: [1, 2, 3], now: now, limit: 20).map(\.provider), [peers[0]])
        XCTAssertEqual(try store.providers(forKey: [4], now: now, limit: 20), [])

        // Re-announcing replaces the provider's row (addresses and expiry), it does not add one.
        try store.addProvider(ProviderRecord(key: cid, provider: peers[0], addresses: [addrs[0]], expiresAt: now.addingTimeInterval(500)))
        let again = try store.providers(forKey: cid, now: now, limit: 20)
        XCTAssertEqual(again.map(\.provider), [peers[0], peers[3], peers[2], peers[1]])
        XCTAssertEqual(again[0].addresses, [addrs[0]])
        XCTAssertEqual(try store.providerCount(), 5)

        // Expired providers are not listed, and go with a sweep.
        let t = now.addingTimeInterval(250)
        XCTAssertEqual(try store.providers(forKey: cid, now: t, limit: 20).map(\.provider), [peers[0], peers[3], peers[2]])
        XCTAssertEqual(try store.providerCount(now: t), 4)
        XCTAssertEqual(try store.sweepExpired(now: t), 1)
        XCTAssertEqual(try store.providerCount(), 4)
    }

    // MARK: Routing snapshot

    func testRoutingSnapshotRoundTrip() throws {
        let store = try makeStore()
        XCTAssertTrue(try store.loadRouting().isEmpty)
        let peers = (0..<3).map { _ in PrivateKey.generate().peerID }
        let entries: [(PeerID, [Multiaddr], Date)] = [
            (peers[0], [try Multiaddr("/ip4/1.1.1.1/tcp/1"), try Multiaddr("/dns4/boot.example/tcp/4001")], now.addingTimeInterval(-10)),
            (peers[1], [], now.addingTimeInterval(-30)),
            (peers[2], [try Multiaddr("/ip4/2.2.2.2/udp/2/quic-v1")], now),
        ]
        try store.saveRouting(entries)
        let loaded = try store.loadRouting()
        XCTAssertEqual(loaded.map(\.0), [peers[2], peers[0], peers[1]], "most recently seen first")
        for (peer, addrs, seen) in entries {
            let row = try XCTUnwrap(loaded.first { $0.0 == peer })
            XCTAssertEqual(row.1, addrs)
            XCTAssertEqual(row.2.timeIntervalSince1970, seen.timeIntervalSince1970, accuracy: 1e-3)
        }
        // Saving again replaces the whole snapshot.
        let newcomer = PrivateKey.generate().peerID
        try store.saveRouting([(newcomer, [try Multiaddr("/ip4/3.3.3.3/tcp/3")], now)])
        XCTAssertEqual(try store.loadRouting().map(\.0), [newcomer])
        try store.saveRouting([])
        XCTAssertTrue(try store.loadRouting().isEmpty)
    }

    func testRoutingSnapshotIsReplacedAtomically() throws {
        let store = try makeStore()
        let first = PrivateKey.generate().peerID
        try store.saveRouting([(first, [], now)])
        // A snapshot whose write fails part-way (an insert refused by a trigger we add)
        // leaves the previous snapshot intact.
        let poison = PrivateKey.generate().peerID
        try rawConnection().write { db in
            try db.execute(sql: """
                CREATE TRIGGER poison BEFORE INSERT ON dht_routing WHEN NEW.peer = '\(poison.base58)'
                BEGIN SELECT RAISE(ABORT, 'poisoned'); END
                """)
        }
        XCTAssertThrowsError(try store.saveRouting([(PrivateKey.generate().peerID, [], now), (poison, [], now)]))
        XCTAssertEqual(try store.loadRouting().map(\.0), [first])
    }

    // MARK: Disk

    func testWriterConnectionIsSynchronousFull() throws {
        let store = try makeStore()
        // 2 = FULL. GRDB's WAL setup sets NORMAL (1) after prepareDatabase has run.
        XCTAssertEqual(try store.db.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }, 2)
        XCTAssertEqual(try store.db.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }, "wal")
    }

    func testEverythingSurvivesCloseAndReopen() throws {
        let a = try application(Array("kept".utf8), seq: 4)
        let p = try presence(key, at: now)
        let o = try opaque("/pk/blob", "opaque")
        let provider = ProviderRecord(key: [7, 7], provider: other.peerID, addresses: [try Multiaddr("/ip4/9.9.9.9/tcp/9")],
                                      expiresAt: now.addingTimeInterval(600))
        let routing: [(PeerID, [Multiaddr], Date)] = [(other.peerID, [try Multiaddr("/ip4/9.9.9.9/tcp/9")], now)]
        do {
            let store = try makeStore()
            for r in [a, p, o] { try store.putRecord(r) }
            try store.addProvider(provider)
            try store.saveRouting(routing)
        }
        // The pool is gone: its connections are closed, and the last close checkpoints the WAL
        // into the main file and removes it.
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + "-wal"))

        let reopened = try makeStore()
        XCTAssertEqual(try reopened.recordCount(), 3)
        assertSame(try reopened.record(forKey: a.key, now: now), a)
        assertSame(try reopened.record(forKey: p.key, now: now), p)
        assertSame(try reopened.record(forKey: o.key, now: now), o)
        XCTAssertEqual(try reopened.providers(forKey: [7, 7], now: now, limit: 20), [provider].map {
            ProviderRecord(key: $0.key, provider: $0.provider, addresses: $0.addresses,
                           expiresAt: Date(timeIntervalSince1970: $0.expiresAt.timeIntervalSince1970))
        })
        let loaded = try reopened.loadRouting()
        XCTAssertEqual(loaded.map(\.0), [other.peerID])
        XCTAssertEqual(loaded.first?.1, routing[0].1)
    }

    func testTwoInstancesShareOneFileConcurrently() throws {
        let first = try makeStore()
        let a = try application([1], seq: 1)
        try first.putRecord(a)
        // A second instance opens the file while the first holds it open.
        let second = try makeStore()
        assertSame(try second.record(forKey: a.key, now: now), a)
        let o = try opaque("/ipns/two", "from the second")
        try second.putRecord(o)
        assertSame(try first.record(forKey: o.key, now: now), o)
        // The seq guard holds across instances.
        try first.putRecord(try application([2], seq: 2))
        XCTAssertThrowsError(try second.putRecord(try application([1], seq: 1)))

        // Both write at once from many threads: writers wait for each other instead of failing
        // with SQLITE_BUSY, and readers are not blocked.
        let errors = ErrorBox()
        let stores = [first, second]
        let now = self.now
        DispatchQueue.concurrentPerform(iterations: 200) { i in
            do {
                let store = stores[i % 2]
                try store.addProvider(ProviderRecord(key: [UInt8(i % 5)], provider: PrivateKey.generate().peerID,
                                                     addresses: [], expiresAt: now.addingTimeInterval(600)))
                _ = try store.providers(forKey: [UInt8(i % 5)], now: now, limit: 20)
            } catch {
                errors.append(error)
            }
        }
        XCTAssertEqual(errors.all.map { "\($0)" }, [])
        XCTAssertEqual(try first.providerCount(), 200)
        XCTAssertEqual(try second.providerCount(), 200)
    }

    func testManyInstancesCreatingOneFreshFileAtOnce() throws {
        // Eight instances open a database that does not exist yet, at once: each switches it to
        // WAL and runs the migration. The races are narrow, so this is done on twenty fresh files;
        // every other one already exists, empty and in WAL mode, so that the instances do not
        // queue up on the switch to WAL and run into each other in the migration instead.
        let validator = self.validator
        for round in 0..<20 {
            let path = dir.appendingPathComponent("fresh-\(round).sqlite").path
            if round % 2 == 1 {
                let q = try DatabaseQueue(path: path)
                _ = try q.writeWithoutTransaction { db in try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL") }
                try q.close()
            }
            let errors = ErrorBox()
            let opened = Counter()
            DispatchQueue.concurrentPerform(iterations: 8) { _ in
                do {
                    let store = try SQLiteDHTStore(path: path, validator: validator)
                    _ = try store.recordCount()
                    opened.increment()
                } catch {
                    errors.append(error)
                }
            }
            XCTAssertEqual(errors.all.map { "\($0)" }, [], "round \(round)")
            XCTAssertEqual(opened.value, 8)
            let store = try SQLiteDHTStore(path: path, validator: validator)
            try store.putRecord(try application([1], seq: 1))
            XCTAssertEqual(try store.recordCount(), 1)
        }
    }
}

private final class Counter: @unchecked Sendable {
    private var n = 0
    private let lock = NSLock()
    func increment() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}

private final class ErrorBox: @unchecked Sendable {
    private var errors: [any Error] = []
    private let lock = NSLock()
    func append(_ e: any Error) { lock.withLock { errors.append(e) } }
    var all: [any Error] { lock.withLock { errors } }
}
