import CairnCore
import CairnNode
import Foundation
import Logging
import NIOPosix
import XCTest

/// Kademlia (`/ipfs/kad/1.0.0`) against an independent implementation: py-libp2p 0.8.1's own
/// KadDHT, run by Tests/Interop/pypeer.py (`dht-server`, and the one-shot `dht-*` client modes),
/// on 127.0.0.1. Keys are text keys in the `/test/` namespace, which pypeer.py registers with a
/// permissive last-write-wins validator in py (see Tests/Interop/NOTES.md, "Kademlia DHT");
/// Cairn treats them as opaque values.
final class DHTInteropTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var running: [(Node, DHTService)] = []
    var servers: [PyPeer.Listener] = []

    override func setUp() async throws {
        _ = try PyPeer.python()  // skip (or fail in CI) before starting anything
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    override func tearDown() async throws {
        for s in servers { s.stop() }
        servers = []
        for (n, s) in running {
            s.stop()
            await n.shutdown()
        }
        running = []
        try await group?.shutdownGracefully()
    }

    /// A Swift DHT server node (in-memory store) listening on 127.0.0.1.
    func startSwift() async throws -> (node: Node, dht: DHTService, addr: Multiaddr) {
        var logger = Logger(label: "dht-interop")
        logger.logLevel = .error
        let node = Node(identity: .generate(), group: group, logger: logger)
        var config = DHTService.Configuration()
        config.kademlia.lookup.requestTimeout = 5
        XCTAssertEqual(config.kademlia.mode, .server)
        let dht = DHTService(node: node, store: InMemoryDHTStore(), configuration: config, logger: logger)
        let listen = try await node.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])[0]
        dht.start()
        running.append((node, dht))
        return (node, dht, listen.appending(.p2p(node.peerID)))
    }

    func startPy(_ extraArgs: [String] = []) async throws -> PyPeer.Listener {
        let py = try PyPeer.Listener(mode: "dht-server", extraArgs: ["--timeout", "20"] + extraArgs)
        servers.append(py)
        try await py.start()
        return py
    }

    /// Runs a one-shot pypeer mode and returns its result line, failing on anything else.
    func py(_ args: [String], file: StaticString = #filePath, line: UInt = #line) async throws -> [String: Any] {
        let r = try await PyPeer.run(args + ["--timeout", "30"], timeout: 45)
        XCTAssertEqual(r.status, 0, "pypeer \(args): " + r.stdout + r.stderr.suffix(3000), file: file, line: line)
        let j = r.json
        XCTAssertEqual(j["event"] as? String, args[0], "pypeer \(args): " + r.stdout + r.stderr.suffix(3000), file: file, line: line)
        return j
    }

    /// A fresh `/test/` key. Kept to at most 50 bytes: py-libp2p's FIND_NODE handler resets the
    /// stream for a key that is neither a multihash nor 2...50 bytes long, and a PUT_VALUE or
    /// ADD_PROVIDER starts with a FIND_NODE for the key (py's own put_value does the same).
    func testKey(_ label: String) -> String {
        let key = "/test/\(label)-" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        precondition(key.utf8.count <= 50)
        return key
    }

    // MARK: Peer routing

    /// Cairn joins through a py-libp2p DHT server and completes FIND_NODE lookups; py, in turn,
    /// learns Cairn as a DHT server and finds peers through Cairn's FIND_NODE answers.
    func testSwiftJoinsThroughPyAndFindsNodes() async throws {
        let py = try await startPy()
        let pyPeer = try PeerID(string: py.peerID)
        let pyAddr = try Multiaddr(py.addrs[0])
        let (node, dht, swiftAddr) = try await startSwift()

        let answered = try await dht.bootstrap([pyAddr])
        XCTAssertEqual(answered, 1)
        XCTAssertTrue(dht.routingTable.contains(pyPeer), "py peer missing from the routing table after bootstrap")
        XCTAssertEqual(dht.routingTable.entry(pyPeer)?.addresses, [pyAddr.withoutTrailingPeerID])

        // FIND_NODE for an unrelated peer ID, and for the py peer itself.
        let other = PrivateKey.generate().peerID
        let closest = try await dht.findClosest(to: other)
        XCTAssertTrue(closest.contains { $0.id == pyPeer }, "FIND_NODE result \(closest.map(\.id)) lacks the py peer")
        let toPy = try await dht.findClosest(to: pyPeer)
        XCTAssertEqual(toPy.first?.id, pyPeer)
        XCTAssertTrue(dht.routingTable.contains(pyPeer), "py peer dropped from the routing table by the lookups")

        // py's routing table holds Cairn (it learned it from Cairn's own kad streams).
        let table = try await py.command("table", reply: "routing_table")
        XCTAssertTrue((table["peers"] as? [String] ?? []).contains(node.peerID.base58), "\(table)")

        // py finds the py server through Cairn's FIND_NODE answer (py starts knowing only Cairn)...
        let viaSwift = try await self.py(["dht-find", swiftAddr.description, py.peerID])
        XCTAssertEqual(viaSwift["target_is_dht_server"] as? Bool, true, "\(viaSwift)")
        XCTAssertEqual(viaSwift["found"] as? Bool, true, "\(viaSwift)")
        XCTAssertTrue((viaSwift["addrs"] as? [String] ?? []).map { try? Multiaddr($0).withoutTrailingPeerID }.contains(pyAddr.withoutTrailingPeerID),
                      "\(viaSwift)")
        XCTAssertTrue((viaSwift["queried"] as? [String] ?? []).contains(node.peerID.base58), "\(viaSwift)")
        // ...and Cairn through the py server, at Cairn's listen address.
        let viaPy = try await self.py(["dht-find", pyAddr.description, node.peerID.base58])
        XCTAssertEqual(viaPy["found"] as? Bool, true, "\(viaPy)")
        XCTAssertTrue((viaPy["addrs"] as? [String] ?? []).map { try? Multiaddr($0).withoutTrailingPeerID }.contains(swiftAddr.withoutTrailingPeerID),
                      "\(viaPy)")
    }

    /// A py-libp2p DHT server that bootstraps from Cairn: Cairn answers its lookup, and learns
    /// py as a DHT server from identify (py announces /ipfs/kad/1.0.0).
    func testPyBootstrapsFromSwift() async throws {
        let (node, dht, swiftAddr) = try await startSwift()
        let py = try await startPy(["--bootstrap", swiftAddr.description])
        let pyPeer = try PeerID(string: py.peerID)
        let boot = try await py.waitFor(event: "bootstrapped", timeout: 30)
        XCTAssertEqual(boot["peer_id"] as? String, node.peerID.base58)
        XCTAssertEqual(boot["is_dht_server"] as? Bool, true, "\(boot)")
        XCTAssertEqual(boot["added"] as? Bool, true, "\(boot)")
        XCTAssertTrue((boot["routing_table"] as? [String] ?? []).contains(node.peerID.base58), "\(boot)")
        XCTAssertTrue((boot["closest"] as? [String] ?? []).contains(node.peerID.base58), "\(boot)")
        try await waitUntil("py peer in Cairn's routing table") { dht.routingTable.contains(pyPeer) }
        let closest = try await dht.findClosest(to: PrivateKey.generate().peerID)
        XCTAssertTrue(closest.contains { $0.id == pyPeer }, "\(closest.map(\.id))")
    }

    // MARK: Values

    func testValuesBothWays() async throws {
        let py = try await startPy()
        let pyAddr = try Multiaddr(py.addrs[0])

        // py puts a value before Cairn exists: only the py server holds it.
        let fromPyKey = testKey("from-py")
        let fromPyValue = "written by py-libp2p \(UUID().uuidString)"
        let put = try await self.py(["dht-put", pyAddr.description, fromPyKey, fromPyValue])
        XCTAssertEqual(put["stored_at"] as? [String], [py.peerID], "\(put)")

        // Cairn joins and reads it over GET_VALUE.
        let (node, dht, swiftAddr) = try await startSwift()
        try await dht.bootstrap([pyAddr])
        let got = try await dht.getValue(Array(fromPyKey.utf8))
        let record = try XCTUnwrap(got, "Cairn did not find the value py put")
        XCTAssertEqual(record.value, Array(fromPyValue.utf8))
        XCTAssertEqual(record.key, Array(fromPyKey.utf8))
        XCTAssertEqual(record.kind, .opaque)

        // Cairn puts a value; the py server acknowledges and stores it, and py's client reads it
        // from Cairn (and the py server).
        let fromSwiftKey = testKey("from-swift")
        let fromSwiftValue = "written by Cairn \(UUID().uuidString)"
        let (acks, attempted) = try await dht.putValue(Array(fromSwiftKey.utf8), Array(fromSwiftValue.utf8))
        XCTAssertEqual(attempted, 1, "the py server is the only other DHT server")
        XCTAssertEqual(acks, 1)
        let stored = try await py.command("value \(fromSwiftKey)", reply: "local_value")
        XCTAssertEqual(stored["value"] as? String, fromSwiftValue, "\(stored)")
        let read = try await self.py(["dht-get", swiftAddr.description, fromSwiftKey])
        XCTAssertEqual(read["found"] as? Bool, true, "\(read)")
        XCTAssertEqual(read["value"] as? String, fromSwiftValue, "\(read)")
        let from = read["from"] as? [String: Any] ?? [:]
        XCTAssertEqual((from[node.peerID.base58] as? [String: Any])?["value"] as? String, fromSwiftValue,
                       "Cairn's own GET_VALUE answer: \(read)")

        // Cairn overwrites py's value (opaque keys: last write wins on both sides).
        let newer = "overwritten by Cairn \(UUID().uuidString)"
        let (acks2, _) = try await dht.putValue(Array(fromPyKey.utf8), Array(newer.utf8))
        XCTAssertEqual(acks2, 1)
        let replaced = try await py.command("value \(fromPyKey)", reply: "local_value")
        XCTAssertEqual(replaced["value"] as? String, newer, "\(replaced)")
        let again = try await dht.getValue(Array(fromPyKey.utf8))
        XCTAssertEqual(again?.value, Array(newer.utf8))
    }

    // MARK: Providers

    func testProvidersBothWays() async throws {
        let py = try await startPy()
        let pyAddr = try Multiaddr(py.addrs[0])

        // py provides before Cairn exists: only the py server holds the provider record.
        let pyKey = testKey("prov-py")
        // --hold: the one-shot stays up while the server reads its ADD_PROVIDER (exiting at once could reset it first).
        let provided = try await self.py(["dht-provide", pyAddr.description, pyKey, "--hold", "2"])
        XCTAssertEqual(provided["ok"] as? Bool, true, "\(provided)")
        XCTAssertEqual(provided["sent_to"] as? [String], [py.peerID], "\(provided)")
        let provider = try PeerID(string: try XCTUnwrap(provided["peer_id"] as? String))
        let providerAddrs = try (provided["addrs"] as? [String] ?? []).map { try Multiaddr($0).withoutTrailingPeerID }
        XCTAssertFalse(providerAddrs.isEmpty)
        // ADD_PROVIDER has no reply: wait until the py server has stored it before asking.
        let stored = try await waitForPyProviders(py, key: pyKey) { ps in ps.contains { $0["peer_id"] as? String == provider.base58 } }
        XCTAssertTrue(stored.contains { $0["peer_id"] as? String == provider.base58 }, "py server never stored its own provider record: \(stored)")

        // Cairn joins and finds py's provider record, with its address, over GET_PROVIDERS.
        let (node, dht, swiftAddr) = try await startSwift()
        try await dht.bootstrap([pyAddr])
        let records = try await dht.providers(Array(pyKey.utf8))
        let record = try XCTUnwrap(records.first { $0.provider == provider }, "Cairn did not find py's provider record: \(records)")
        XCTAssertEqual(record.addresses.map { $0.withoutTrailingPeerID }, providerAddrs)
        XCTAssertEqual(record.key, Array(pyKey.utf8))

        // Cairn provides; the py server records Cairn (at its listen address) and py's client
        // finds Cairn among the providers the py server returns.
        let swiftKey = testKey("prov-swift")
        let (acks, attempted) = try await dht.provide(Array(swiftKey.utf8))
        XCTAssertEqual(attempted, 1, "the py server is the only other DHT server")
        XCTAssertEqual(acks, 1)
        let local = try await waitForPyProviders(py, key: swiftKey) { !$0.isEmpty }
        XCTAssertEqual(local.map { $0["peer_id"] as? String }, [node.peerID.base58])
        let localAddrs = (local.first?["addrs"] as? [String] ?? []).compactMap { try? Multiaddr($0).withoutTrailingPeerID }
        XCTAssertEqual(localAddrs, [swiftAddr.withoutTrailingPeerID])
        let found = try await self.py(["dht-providers", pyAddr.description, swiftKey])
        let providers = (found["providers"] as? [[String: Any]] ?? []).compactMap { $0["peer_id"] as? String }
        XCTAssertTrue(providers.contains(node.peerID.base58), "\(found)")
        let byServer = (found["from"] as? [String: Any])?[py.peerID] as? [String]
        XCTAssertEqual(byServer, [node.peerID.base58], "the py server's GET_PROVIDERS answer: \(found)")
        // Cairn answers GET_PROVIDERS for its own record too.
        let fromSwift = try await self.py(["dht-providers", swiftAddr.description, swiftKey])
        let bySwift = (fromSwift["from"] as? [String: Any])?[node.peerID.base58] as? [String]
        XCTAssertEqual(bySwift, [node.peerID.base58], "Cairn's GET_PROVIDERS answer: \(fromSwift)")
    }

    // MARK: Helpers

    func waitForPyProviders(_ py: PyPeer.Listener, key: String, timeout: Double = 10,
                            until: ([[String: Any]]) -> Bool) async throws -> [[String: Any]] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [[String: Any]] = []
        while Date() < deadline {
            last = try await py.command("providers \(key)", reply: "local_providers")["providers"] as? [[String: Any]] ?? []
            if until(last) { return last }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        return last
    }

    func waitUntil(_ what: String, timeout: Double = 10, _ condition: () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        XCTFail("timed out waiting for: \(what)")
    }
}
