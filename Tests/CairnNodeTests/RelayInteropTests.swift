import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOPosix
import XCTest

/// Circuit Relay v2 and DCUtR against py-libp2p 0.8.1 on loopback: Swift reserves on a py relay
/// and py dials it through the circuit; py reserves on a Swift relay and Swift dials it; and a
/// relayed connection from py is upgraded by DCUtR with py as the responder.
final class RelayInteropTests: LoopbackNodesTestCase {
    var peers: [PyPeer.Listener] = []

    override func tearDown() async throws {
        for p in peers { p.stop() }
        try await super.tearDown()
    }

    func makeNode(_ name: String) async throws -> Node { try await makeNode(name, ip: "127.0.0.1").0 }

    /// Serves `/cairn/echo/1.0.0`: everything read is written back, then closed.
    func serveEcho(_ n: Node) {
        n.swarm.handle("/cairn/echo/1.0.0") { s in
            let bytes = try await s.readToEnd(limit: 1 << 20)
            try await s.write(bytes)
            await s.closeWrite()
        }
    }

    func testSwiftReservesOnAPyRelayAndPyDialsItThroughTheCircuit() async throws {
        let relay = try PyPeer.Listener(mode: "relay-server")
        peers.append(relay)
        try await relay.start()
        let relayAddr = try Multiaddr(try XCTUnwrap(relay.addrs.first))

        let b = try await makeNode("b")
        serveEcho(b)
        var cfg = RelayClient.Configuration()
        cfg.acceptOnlyFromReservedRelays = true
        let client = RelayClient(node: b, configuration: cfg, logger: Logger(label: "b"))
        let held = try await client.reserve(on: try await b.dial(relayAddr))
        XCTAssertEqual(held.relay.description, relay.peerID)
        XCTAssertGreaterThan(held.expires.timeIntervalSinceNow, 60)
        if let v = held.voucher { XCTAssertEqual(v.peer, b.peerID) }  // verified on receipt when py sends one

        let circuit = held.addresses[0].appending(.p2p(b.peerID))
        let r = try await PyPeer.run(["relay-dial", circuit.description, "--count", "3", "--echo-bytes", "100000"], timeout: 60)
        XCTAssertEqual(r.status, 0, "stdout: \(r.stdout)\nstderr: \(r.stderr.suffix(3000))")
        XCTAssertEqual(r.json["peer_id"] as? String, b.peerID.description, r.stdout)
        XCTAssertEqual((r.json["rtts_ms"] as? [Double])?.count, 3, r.stdout)
        XCTAssertEqual(r.json["echo_ok"] as? Bool, true, r.stdout)
        // B took it as an inbound relayed connection (stop protocol) from the py relay.
        XCTAssertEqual(client.acceptedCircuits, 1)
    }

    func testPyReservesOnASwiftRelayAndSwiftDialsItThroughTheCircuit() async throws {
        let r = try await makeNode("relay")
        let relay = RelayService(node: r, logger: Logger(label: "relay"))
        relay.setServing(true)
        let relayAddr = r.listenAddresses[0].appending(.p2p(r.peerID))

        let py = try PyPeer.Listener(mode: "relay-listen", extraArgs: [relayAddr.description])
        peers.append(py)
        let reserved = try await py.waitFor(event: "reserved", timeout: 30)
        XCTAssertEqual(reserved["relay"] as? String, r.peerID.description, "\(reserved)")
        XCTAssertEqual(relay.stats.reservations.map(\.peer.description), [reserved["peer_id"] as? String ?? "?"])
        let circuit = try Multiaddr(try XCTUnwrap(reserved["circuit_addr"] as? String))

        let a = try await makeNode("a")
        _ = RelayClient(node: a, logger: Logger(label: "a"))
        let conn = try await a.dial(circuit)
        XCTAssertTrue(conn.isLimited)
        XCTAssertEqual(conn.remotePeer?.description, reserved["peer_id"] as? String)
        let rtts = try await a.ping(conn, count: 3)
        XCTAssertEqual(rtts.count, 3)
        let s = try await conn.openStream(["/cairn/echo/1.0.0"])
        let payload = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try await s.write(payload)
        await s.closeWrite()
        let echo = try await s.readToEnd(limit: 1 << 20)
        XCTAssertEqual(echo, payload)
        XCTAssertEqual(relay.stats.circuits.count, 1)
        XCTAssertGreaterThanOrEqual(relay.stats.circuitsOpened, 1)
    }

    /// DCUtR: a py node dials a Swift node through a Swift relay; the Swift node (inbound
    /// relayed connection) initiates, py answers as the responder and dials on SYNC.
    func testPyResponderAndSwiftInitiatorUpgradeARelayedConnection() async throws {
        let r = try await makeNode("relay")
        let relay = RelayService(node: r, logger: Logger(label: "relay"))
        relay.setServing(true)
        let b = try await makeNode("b")
        let client = RelayClient(node: b, logger: Logger(label: "b"))
        var config = HolePunchService.Configuration()
        config.allowPrivateAddresses = true  // everything is on 127.0.0.1
        config.dialFromListenPort = false    // one host: our dial must not take py's 4-tuple
        let punch = HolePunchService(node: b, nat: nil, configuration: config, logger: Logger(label: "b"))
        let held = try await client.reserve(on: try await b.dial(r.listenAddresses[0].appending(.p2p(r.peerID))))
        let circuit = held.addresses[0].appending(.p2p(b.peerID))

        let py = try PyPeer.Listener(mode: "dcutr-dial", extraArgs: [circuit.description, "--wait", "20"])
        peers.append(py)
        _ = try await py.waitFor(event: "relayed", timeout: 30)
        let result = try await py.waitFor(event: "dcutr-dial", timeout: 40)
        XCTAssertEqual(result["direct"] as? Bool, true, "\(result)\nstderr: \(py.err.string.suffix(3000))")
        let messages = (result["dcutr_messages"] as? [[String: Any]] ?? []).compactMap { $0["type"] as? String }
        XCTAssertTrue(messages.contains("CONNECT") && messages.contains("SYNC"), "a real DCUtR exchange: \(result)")
        XCTAssertEqual((result["rtts_ms"] as? [Double])?.count, 3, "\(result)")
        // The Swift side sees a direct connection to py, and records the punch.
        XCTAssertEqual(result["peer_id"] as? String, b.peerID.description)
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, !punch.outcomes.contains(where: { if case .direct = $0.result { return true }; return false }) {
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        let outcome = try XCTUnwrap(punch.outcomes.first, "no outcome on the Swift side")
        guard case .direct(let how, _) = outcome.result else { return XCTFail("\(outcome)") }
        XCTAssertEqual(how, .holePunch)
        XCTAssertTrue(b.swarm.connections(to: outcome.peer).contains { !$0.isLimited })
    }
}
