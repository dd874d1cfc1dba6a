import CairnCore
import CairnCrypto
@testable import CairnNode
import Foundation
import Logging
import NIOCore
import NIOPosix
import XCTest

/// Two or more Swift nodes over real TCP on 127.0.0.1.
final class NodeTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var nodes: [Node] = []

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    }

    override func tearDown() async throws {
        for n in nodes { await n.shutdown() }
        nodes = []
        try await group.shutdownGracefully()
    }

    func makeNode(store: PeerStore? = nil) async throws -> (Node, Multiaddr) {
        let n = Node(identity: .generate(), peerStore: store, group: group, logger: Logger(label: "node-test"))
        nodes.append(n)
        let addr = try await n.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])[0]
        return (n, addr.appending(.p2p(n.peerID)))
    }

    func testDialPingAndIdentifyBothWays() async throws {
        let (a, aAddr) = try await makeNode()
        let (b, bAddr) = try await makeNode()
        let conn = try await a.dial(bAddr)
        XCTAssertEqual(conn.remotePeer, b.peerID)
        let rtts = try await a.ping(conn, count: 5)
        XCTAssertEqual(rtts.count, 5)

        let info = try await a.identify(conn)
        XCTAssertEqual(info.agentVersion, "cairn/0.1.0")
        XCTAssertEqual(info.listenAddrs, [bAddr.withoutTrailingPeerID])
        XCTAssertEqual(info.signedPeerRecord?.addresses, [bAddr.withoutTrailingPeerID])
        XCTAssertEqual(info.signedPeerRecord?.peerID, b.peerID)
        XCTAssertEqual(info.observedAddr, aAddr.withoutTrailingPeerID, "A dials from its listen port, so B observes it")

        // B identified A on the same connection, from its side.
        let bConn = try XCTUnwrap(b.swarm.connections(to: a.peerID).first)
        let bInfo = try await b.identify(bConn)
        XCTAssertEqual(bInfo.listenAddrs, [aAddr.withoutTrailingPeerID])
        XCTAssertEqual(bInfo.observedAddr, bConn.localAddress)
    }

    func testBulkTransferRespectsWindowsAndArrivesIntact() async throws {
        let (a, _) = try await makeNode()
        let (b, bAddr) = try await makeNode()
        let received = NIOLockedValueBoxLite<[UInt8]>([])
        b.swarm.handle("/test/sink/1.0.0") { stream in
            let bytes = try await stream.readToEnd(limit: 8 << 20)
            received.set(bytes)
            try await stream.write(Array(SHA256.hash(bytes)))
            await stream.closeWrite()
        }
        let conn = try await a.dial(bAddr)
        let stream = try await conn.openStream(["/test/sink/1.0.0"])
        let payload = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        // 3 MiB through a 256 KiB window: the writer must wait for window updates.
        var offset = 0
        while offset < payload.count {
            let n = min(100_000, payload.count - offset)
            try await stream.write(Array(payload[offset..<offset + n]))
            offset += n
        }
        await stream.closeWrite()
        let digest = try await stream.readToEnd(limit: 64)
        XCTAssertEqual(digest, SHA256.hash(payload))
        XCTAssertEqual(received.get().count, payload.count)
    }

    func testManyConcurrentStreams() async throws {
        let (a, _) = try await makeNode()
        let (_, bAddr) = try await makeNode()
        let conn = try await a.dial(bAddr)
        try await withThrowingTaskGroup(of: Int.self) { g in
            for _ in 0..<20 { g.addTask { try await a.ping(conn, count: 3).count } }
            var total = 0
            for try await n in g { total += n }
            XCTAssertEqual(total, 60)
        }
    }

    func testUnsupportedProtocolIsRefusedAndConnectionStaysUp() async throws {
        let (a, _) = try await makeNode()
        let (_, bAddr) = try await makeNode()
        let conn = try await a.dial(bAddr)
        do {
            _ = try await conn.openStream(["/no/such/protocol/1.0.0"])
            XCTFail("negotiation should fail")
        } catch let e as StreamError {
            guard case .negotiation(.noProtocolAgreed) = e else { return XCTFail("\(e)") }
        }
        let rtts = try await a.ping(conn, count: 1)
        XCTAssertEqual(rtts.count, 1)
    }

    func testIdentifyPushUpdatesPeerStore() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try PeerStore(path: dir.appendingPathComponent("peers.sqlite").path)
        let (a, aAddr) = try await makeNode(store: store)
        let (b, bAddr) = try await makeNode()
        let conn = try await a.dial(bAddr)
        _ = try await a.identify(conn)
        // A stored B's verified record.
        let first = try await poll { try store.peer(b.peerID) }
        var stored = try XCTUnwrap(first)
        XCTAssertEqual(stored.addresses, [bAddr.withoutTrailingPeerID])
        XCTAssertNotNil(stored.signedRecord)
        let firstSeq = try XCTUnwrap(stored.recordSeq)
        // B gains a listen address, re-signs with a higher seq and pushes.
        let extra = try await b.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])[0]
        let bConn = try XCTUnwrap(b.swarm.connections(to: a.peerID).first)
        try await b.pushIdentify(to: bConn)
        let second = try await poll { try store.peer(b.peerID).flatMap { $0.addresses.count == 2 ? $0 : nil } }
        stored = try XCTUnwrap(second)
        XCTAssertTrue(stored.addresses.contains(extra))
        XCTAssertGreaterThan(try XCTUnwrap(stored.recordSeq), firstSeq)
        _ = aAddr
    }

    func testPeerStoreNeverRollsBackARecord() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try PeerStore(path: dir.appendingPathComponent("peers.sqlite").path)
        let key = PrivateKey.generate()
        func info(seq: UInt64, port: UInt16) throws -> IdentifyInfo {
            let rec = PeerRecord(peerID: key.peerID, seq: seq, addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/\(port)")])
            let msg = IdentifyInfo(publicKey: key.publicKey).encode(signedRecord: rec.sign(with: key))
            return try IdentifyInfo.decode(msg, from: key.peerID)
        }
        let newer = try info(seq: 10, port: 1000)
        try store.update(peer: key.peerID, info: newer, verifiedRecord: newer.signedPeerRecordEnvelope)
        let older = try info(seq: 5, port: 2000)
        try store.update(peer: key.peerID, info: older, verifiedRecord: older.signedPeerRecordEnvelope)
        let stored = try XCTUnwrap(try store.peer(key.peerID))
        XCTAssertEqual(stored.recordSeq, 10)
        let (record, _) = try PeerRecord.open(envelopeBytes: try XCTUnwrap(stored.signedRecord))
        XCTAssertEqual(record.addresses, [try Multiaddr("/ip4/127.0.0.1/tcp/1000")])
        // Reopening the database finds the same row (it is on disk, not in memory).
        let reopened = try PeerStore(path: dir.appendingPathComponent("peers.sqlite").path)
        XCTAssertEqual(try reopened.peer(key.peerID)?.recordSeq, 10)
    }

    func testIdentityIsCreatedPrivateAndReloaded() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = IdentityStore(dataDirectory: dir)
        let (k1, created1) = try store.loadOrCreate()
        XCTAssertTrue(created1)
        let perms = try FileManager.default.attributesOfItem(atPath: store.keyURL.path)[.posixPermissions] as? NSNumber
        XCTAssertEqual(perms?.intValue, 0o600)
        let (k2, created2) = try store.loadOrCreate()
        XCTAssertFalse(created2)
        XCTAssertEqual(k1.peerID, k2.peerID)
        // A key file others can read is refused.
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: store.keyURL.path)
        XCTAssertThrowsError(try store.loadOrCreate())
    }

    /// Polls `body` until it returns non-nil, for at most 5 s.
    func poll<T>(_ body: () throws -> T?) async throws -> T? {
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if let v = try body() { return v }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        return nil
    }
}

final class NIOLockedValueBoxLite<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
}
