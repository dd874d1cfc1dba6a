import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOPosix
import XCTest

/// DCUtR against py-libp2p 0.8.1 on loopback: a py node dials a Swift node through a Swift
/// relay; the Swift node (inbound relayed connection) initiates DCUtR, py answers as the
/// responder and dials on SYNC, and the relayed connection is upgraded to a direct one.
final class DCUtRInteropTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var nodes: [Node] = []
    var peers: [PyPeer.Listener] = []

    override func setUp() async throws { group = MultiThreadedEventLoopGroup(numberOfThreads: 2) }
    override func tearDown() async throws {
        for p in peers { p.stop() }
        for n in nodes { await n.shutdown() }
        try await group.shutdownGracefully()
    }

    func makeNode(_ name: String) async throws -> Node {
        var l = Logger(label: name)
        l.logLevel = .warning
        let n = Node(identity: .generate(), group: group, logger: l)
        nodes.append(n)
        try await n.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])
        return n
    }

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
        XCTAssertEqual(how, "hole punch")
        XCTAssertTrue(b.swarm.connections(to: outcome.peer).contains { !$0.isLimited })
    }
}
