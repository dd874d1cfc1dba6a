import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOCore
import NIOPosix
import XCTest

/// Hostile DHT input over real streams: refused with a logged reason, nothing stored, the server
/// keeps serving.
final class DHTBadInputTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var server: Node!
    var service: DHTService!
    var store: InMemoryDHTStore!
    var capture: LogCapture!
    var client: Node!
    var serverAddr: Multiaddr!
    let now = Date()

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        capture = LogCapture()
        server = Node(identity: .generate(), group: group, logger: capture.logger(label: "server"))
        store = InMemoryDHTStore()
        service = DHTService(node: server, store: store, logger: capture.logger(label: "server-dht"))
        serverAddr = try await server.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])[0].appending(.p2p(server.peerID))
        client = Node(identity: .generate(), group: group, logger: Logger(label: "client"))
    }

    override func tearDown() async throws {
        service.stop()
        await client.shutdown()
        await server.shutdown()
        try await group.shutdownGracefully()
    }

    /// Sends raw bytes as one length-prefixed request; returns the reply, or nil if the server
    /// reset the stream.
    func send(_ payload: [UInt8], prefixed: Bool = true) async throws -> [UInt8]? {
        let conn = try await client.dial(serverAddr)
        let stream = try await conn.openStream(["/ipfs/kad/1.0.0"])
        try await stream.write(prefixed ? LengthPrefixedDecoder.frame(payload) : payload)
        do { return try await stream.readLengthPrefixed(maxLength: 1 << 20) } catch { return nil }
    }

    func assertRefused(_ payload: [UInt8], prefixed: Bool = true, logs needle: String, file: StaticString = #filePath, line: UInt = #line) async throws {
        let reply = try await send(payload, prefixed: prefixed)
        XCTAssertNil(reply, "expected the stream to be reset", file: file, line: line)
        let deadline = Date().addingTimeInterval(3)
        while Date() < deadline, capture.records(atLeast: .info, containing: [needle]).isEmpty { try await Task.sleep(nanoseconds: 10_000_000) }
        XCTAssertFalse(capture.records(atLeast: .info, containing: [needle]).isEmpty, "no log naming '\(needle)':\n\(capture.dump)", file: file, line: line)
        XCTAssertEqual(store.recordCount, 0, file: file, line: line)
        // The server still answers.
        let ping = try await send(KadMessage(kind: .ping).encode())
        XCTAssertEqual(ping.flatMap { try? KadMessage.decode($0) }?.kind, .ping, file: file, line: line)
    }

    func put(_ key: [UInt8], _ value: [UInt8]) -> [UInt8] { KadMessage(kind: .putValue, key: key, recordValue: value).encode() }

    func testOversizedRecordAndKey() async throws {
        try await assertRefused(put(Array("/test/big".utf8), [UInt8](repeating: 7, count: 10 * 1024 + 1)), logs: "exceeds")
        try await assertRefused(KadMessage(kind: .getValue, key: [UInt8](repeating: 0x61, count: 257)).encode(), logs: "257")
        // A length prefix over the message limit is refused before the body arrives.
        try await assertRefused(Varint.encode(1 << 20), prefixed: false, logs: "exceeds")
    }

    func testMalformedProtobuf() async throws {
        try await assertRefused([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x12], logs: "malformed")
    }

    func testForgedAndMismatchedSignedRecords() async throws {
        let writer = PrivateKey.generate(), other = PrivateKey.generate()
        var (key, env) = RecordValidator.signApplicationRecord(namespace: "bad", value: [1], seq: 1, expires: now.addingTimeInterval(600), key: writer)
        env[env.count - 5] ^= 0x40  // inside the signature
        try await assertRefused(put(key, env), logs: "signature")
        // Signed by someone else than the key's peer.
        let (_, foreign) = RecordValidator.signApplicationRecord(namespace: "bad", value: [1], seq: 1, expires: now.addingTimeInterval(600), key: other)
        try await assertRefused(put(key, foreign), logs: "signer")
        // Expired.
        let (_, expired) = RecordValidator.signApplicationRecord(namespace: "bad", value: [1], seq: 1, expires: now.addingTimeInterval(-60), key: writer)
        try await assertRefused(put(key, expired), logs: "expired")
        // A presence record for another peer.
        let presence = PeerRecord(peerID: other.peerID, seq: UInt64(now.timeIntervalSince1970 * 1e9), addresses: []).sign(with: other).bytes
        try await assertRefused(put(RecordValidator.presenceKey(writer.peerID), presence), logs: "signer")
    }

    func testReplayedLowerSeqIsRefusedAndTheStoredRecordKept() async throws {
        let writer = PrivateKey.generate()
        let (key, v6) = RecordValidator.signApplicationRecord(namespace: "replay", value: [6], seq: 6, expires: now.addingTimeInterval(600), key: writer)
        let (_, v5) = RecordValidator.signApplicationRecord(namespace: "replay", value: [5], seq: 5, expires: now.addingTimeInterval(600), key: writer)
        let first = try await send(put(key, v6))
        XCTAssertNotNil(first)
        let replay = try await send(put(key, v5))
        XCTAssertNil(replay)
        XCTAssertFalse(capture.records(atLeast: .info, containing: ["seq 5"]).isEmpty, capture.dump)
        XCTAssertEqual(store.record(forKey: key, now: Date())?.value, v6)
    }

    func testRateLimitPerPeer() async throws {
        let conn = try await client.dial(serverAddr)
        let stream = try await conn.openStream(["/ipfs/kad/1.0.0"])
        var answered = 0
        do {
            for _ in 0..<200 {
                try await stream.writeLengthPrefixed(KadMessage(kind: .ping).encode())
                _ = try await stream.readLengthPrefixed(maxLength: 1024)
                answered += 1
            }
        } catch {}
        XCTAssertGreaterThanOrEqual(answered, 40, "the burst is served")
        XCTAssertLessThan(answered, 200, "the flood is cut off")
        XCTAssertFalse(capture.records(atLeast: .warning, containing: ["rate limit"]).isEmpty)
        // Another peer is still served.
        let other = Node(identity: .generate(), group: group, logger: Logger(label: "other"))
        let c2 = try await other.dial(serverAddr)
        let s2 = try await c2.openStream(["/ipfs/kad/1.0.0"])
        try await s2.writeLengthPrefixed(KadMessage(kind: .ping).encode())
        let pong = try await s2.readLengthPrefixed(maxLength: 1024)
        XCTAssertEqual(try KadMessage.decode(pong).kind, .ping)
        await other.shutdown()
    }

    /// A server that answers FIND_NODE with more than k closer peers: the client rejects the
    /// answer, logs why and counts the request as failed.
    func testTooManyCloserPeersInAResponseIsRejected() async throws {
        let liar = Node(identity: .generate(), group: group, logger: Logger(label: "liar"))
        liar.swarm.handle("/ipfs/kad/1.0.0") { stream in
            _ = try await stream.readLengthPrefixed(maxLength: 65536)
            let peers = (0..<21).map { _ in KadPeer(id: PrivateKey.generate().peerID, addresses: [try! Multiaddr("/ip4/1.2.3.4/tcp/1")]) }
            try await stream.writeLengthPrefixed(KadMessage(kind: .findNode, closerPeers: peers).encode())
            await stream.closeWrite()
        }
        let addr = try await liar.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])[0]
        do {
            _ = try await service.request(liar.peerID, [addr], KadMessage(kind: .findNode, key: liar.peerID.bytes))
            XCTFail("a response listing 21 closer peers must be refused")
        } catch let e as DHTError {
            XCTAssertTrue("\(e)".contains("21"), "\(e)")
        }
        await liar.shutdown()
    }
}
