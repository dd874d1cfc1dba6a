import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOPosix
import XCTest

/// The DHT over real TCP on loopback, many nodes in one process.
final class DHTNodeTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var running: [(Node, DHTService)] = []

    override func setUp() async throws { group = MultiThreadedEventLoopGroup(numberOfThreads: 2) }

    override func tearDown() async throws {
        for (n, s) in running {
            s.stop()
            await n.shutdown()
        }
        running = []
        try await group.shutdownGracefully()
    }

    func quietLogger() -> Logger {
        var l = Logger(label: "dht-test")
        l.logLevel = .error
        return l
    }

    /// A DHT node on `ip` (distinct 127.0.0.x addresses are distinct hosts to the resource
    /// manager's per-IP limit).
    func startNode(identity: PrivateKey = .generate(), store: (any DHTStore)? = nil, ip: String = "127.0.0.1", port: Int = 0) async throws -> (Node, DHTService, Multiaddr) {
        let node = Node(identity: identity, group: group, logger: quietLogger())
        var config = DHTService.Configuration()
        config.kademlia.lookup.requestTimeout = 5
        let service = DHTService(node: node, store: store ?? InMemoryDHTStore(), configuration: config, logger: quietLogger())
        let addr = try await node.listen([Multiaddr("/ip4/\(ip)/tcp/\(port)")])[0]
        service.start()
        running.append((node, service))
        return (node, service, addr.appending(.p2p(node.peerID)))
    }

    func testTwentyNodeMeshResolvesEveryPresence() async throws {
        var nodes: [(Node, DHTService, Multiaddr)] = []
        for i in 0..<20 { nodes.append(try await startNode(ip: "127.0.0.\(10 + i)")) }
        // Each joins through the first; then every node publishes its presence.
        for (i, n) in nodes.enumerated() where i > 0 { try await n.1.bootstrap([nodes[0].2]) }
        _ = try await nodes[0].1.bootstrap([nodes[1].2])
        for n in nodes {
            let (acks, attempted) = try await n.1.publishPresence()
            XCTAssertGreaterThan(acks, 0)
            XCTAssertEqual(acks, attempted)
        }
        // Every node resolves every other node to its verified listen address.
        var resolved = 0
        for a in nodes {
            for b in nodes where a.0.peerID != b.0.peerID {
                let record = try await a.1.resolve(b.0.peerID)
                XCTAssertEqual(record.peerID, b.0.peerID)
                XCTAssertEqual(record.addresses, [b.2.withoutTrailingPeerID])
                resolved += 1
            }
        }
        XCTAssertEqual(resolved, 20 * 19)
    }

    func testRestartRejoinsFromSavedPeersAndKeepsRecords() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("dht.sqlite").path
        var others: [(Node, DHTService, Multiaddr)] = []
        for _ in 0..<4 { others.append(try await startNode()) }
        for o in others.dropFirst() { try await o.1.bootstrap([others[0].2]) }

        let identity = PrivateKey.generate()
        let store1 = try SQLiteDHTStore(path: path, validator: RecordValidator())
        let (a1, s1, _) = try await startNode(identity: identity, store: store1)
        try await s1.bootstrap([others[0].2])
        // Another node publishes a signed record; A is among the closest and stores it.
        let writer = others[1].0.swarm.identity
        let (key, env) = RecordValidator.signApplicationRecord(namespace: "restart", value: Array("kept".utf8), seq: 1,
                                                               expires: Date().addingTimeInterval(3600), key: writer)
        let (acks, _) = try await others[1].1.putValue(key, env)
        XCTAssertGreaterThanOrEqual(acks, 4)
        XCTAssertNotNil(try store1.record(forKey: key, now: Date()))
        let tableBefore = Set(s1.routingTable.allEntries.map(\.peer))
        XCTAssertEqual(tableBefore.count, 4)
        s1.stop()
        await a1.shutdown()
        running.removeAll { $0.0 === a1 }

        // Restart: same identity and database, no bootstrap peers.
        let store2 = try SQLiteDHTStore(path: path, validator: RecordValidator())
        let (_, s2, _) = try await startNode(identity: identity, store: store2)
        XCTAssertEqual(Set(s2.routingTable.allEntries.map(\.peer)), tableBefore)
        try await s2.bootstrap([])
        let closest = try await s2.findClosest(to: others[3].0.peerID)
        XCTAssertEqual(closest.first?.id, others[3].0.peerID)
        // It still serves the stored record to others.
        let got = try await others[2].1.getValue(key)
        XCTAssertEqual(got?.value, env)
        XCTAssertEqual(try store2.record(forKey: key, now: Date())?.value, env)
    }

    /// A store that blocks reads until released: proves the server answers from its routing
    /// table while a request is stuck in the store (no store I/O under the behaviour's lock).
    final class BlockingStore: DHTStore, @unchecked Sendable {
        let inner = InMemoryDHTStore()
        let gate = DispatchSemaphore(value: 0)
        let entered = DispatchSemaphore(value: 0)
        func record(forKey key: [UInt8], now: Date) throws -> DHTRecord? {
            entered.signal()
            gate.wait()
            return try inner.record(forKey: key, now: now)
        }
        func putRecord(_ record: DHTRecord) throws { try inner.putRecord(record) }
        func addProvider(_ provider: ProviderRecord) throws { try inner.addProvider(provider) }
        func providers(forKey key: [UInt8], now: Date, limit: Int) throws -> [ProviderRecord] { try inner.providers(forKey: key, now: now, limit: limit) }
        func sweepExpired(now: Date) throws -> Int { try inner.sweepExpired(now: now) }
    }

    func testTheServerAnswersFromItsTableWhileTheStoreIsBusy() async throws {
        let store = BlockingStore()
        let (server, _, serverAddr) = try await startNode(store: store)
        let (client, clientDHT, _) = try await startNode()
        _ = try await client.identify(try await client.dial(serverAddr))
        let conn = try XCTUnwrap(client.swarm.connection(to: server.peerID))
        // A GET_VALUE that sticks in the store...
        let slow = Task { () -> KadMessage? in
            let s = try await conn.openStream([clientDHT.protocolID])
            try await s.writeLengthPrefixed(KadMessage(kind: .getValue, key: Array("/cairn/x".utf8)).encode())
            return try KadMessage.decode(try await s.readLengthPrefixed(maxLength: KadMessage.maxMessageSize))
        }
        let entered = await Task.detached { store.entered.wait(timeout: .now() + 10) == .success }.value
        XCTAssertTrue(entered, "the GET_VALUE reached the store")
        // ...does not hold up a FIND_NODE on another stream.
        let fast = try await conn.openStream([clientDHT.protocolID])
        try await fast.writeLengthPrefixed(KadMessage(kind: .findNode, key: client.peerID.bytes).encode())
        let reply = try await withTimeout(.seconds(5)) {
            try KadMessage.decode(try await fast.readLengthPrefixed(maxLength: KadMessage.maxMessageSize))
        }
        XCTAssertEqual(reply.kind, .findNode)
        store.gate.signal()
        let slowReply = try await slow.value
        XCTAssertEqual(slowReply?.kind, .getValue)
    }
}
