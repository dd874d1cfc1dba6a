import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOPosix
import XCTest

/// AutoNAT over real TCP on 127.0.0.1 (servers allow private addresses, as in a lab).
final class NATServiceTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var nodes: [Node] = []
    var services: [NATService] = []

    override func setUp() async throws { group = MultiThreadedEventLoopGroup(numberOfThreads: 2) }
    override func tearDown() async throws {
        for n in nodes { await n.shutdown() }
        try await group.shutdownGracefully()
    }

    func quiet() -> Logger { var l = Logger(label: "nat-test"); l.logLevel = .critical; return l }

    /// Each node on its own loopback address (127.0.0.2, .3, …), so each server is a distinct
    /// host to the reachability tally, as in the world.
    func makeNode() async throws -> (Node, Multiaddr) {
        let n = Node(identity: .generate(), group: group, logger: quiet())
        nodes.append(n)
        let a = try await n.listen([Multiaddr("/ip4/127.0.0.\(nodes.count + 1)/tcp/0")])[0]
        return (n, a.appending(.p2p(n.peerID)))
    }

    func honestServer() async throws -> Multiaddr {
        let (n, a) = try await makeNode()
        var config = NATService.Configuration()
        config.policy.allowPrivateAddresses = true
        services.append(NATService(node: n, dht: nil, configuration: config, logger: quiet()))
        return a
    }

    /// A server that always claims the dial-back failed.
    func lyingServer() async throws -> Multiaddr {
        let (n, a) = try await makeNode()
        n.swarm.handle(AutoNAT.protocolID) { stream in
            _ = try await stream.readLengthPrefixed(maxLength: 4096)
            try await stream.writeLengthPrefixed(AutoNAT.encode(.dialResponse(status: .dialError, text: "lie", address: nil)))
            await stream.closeWrite()
        }
        return a
    }

    func testOneLyingServerDoesNotFlipReachabilityAndDHTModeFollows() async throws {
        let (client, _) = try await makeNode()
        let dht = DHTService(node: client, store: InMemoryDHTStore(), logger: quiet())
        dht.setMode(.client)
        let nat = NATService(node: client, dht: dht, logger: quiet())
        var servers: [Multiaddr] = []
        for _ in 0..<4 { servers.append(try await honestServer()) }
        let liar = try await lyingServer()
        for s in servers {
            let status = try await nat.probe(try await client.dial(s))
            XCTAssertEqual(status, .ok)
        }
        // Two agreeing servers decide; the next two raise the confidence.
        XCTAssertEqual(nat.reachability.reachability, .public)
        XCTAssertEqual(nat.reachability.confidence, 2)
        XCTAssertEqual(dht.mode, .server, "a public node serves the DHT")
        XCTAssertTrue(client.swarm.isHandling(dht.protocolID))
        // The liar answers: confidence drops, reachability holds, the mode does not flap.
        let status = try await nat.probe(try await client.dial(liar))
        XCTAssertEqual(status, .dialError)
        XCTAssertEqual(nat.reachability.reachability, .public)
        XCTAssertEqual(nat.reachability.confidence, 1)
        XCTAssertEqual(dht.mode, .server)
        XCTAssertEqual(nat.report().autonatAnswers.map(\.status), [.ok, .ok, .ok, .ok, .dialError])
        XCTAssertEqual(nat.report().autonatAnswers.map(\.reachability), [.unknown, .public, .public, .public, .public])
        dht.stop()
    }

    func testConsistentFailuresMakeItPrivateAndTheDHTAClient() async throws {
        let (client, _) = try await makeNode()
        let dht = DHTService(node: client, store: InMemoryDHTStore(), logger: quiet())
        let nat = NATService(node: client, dht: dht, logger: quiet())
        // One server alone, however often it answers, does not decide.
        let first = try await client.dial(try await lyingServer())
        for _ in 0..<3 { _ = try await nat.probe(first) }
        XCTAssertEqual(nat.reachability.reachability, .unknown)
        _ = try await nat.probe(try await client.dial(try await lyingServer()))
        XCTAssertEqual(nat.reachability.reachability, .private)
        XCTAssertEqual(dht.mode, .client)
        XCTAssertFalse(client.swarm.isHandling(dht.protocolID))
        dht.stop()
    }

    func testHostileRequestsAreRefused() async throws {
        let server = try await honestServer()
        let (client, _) = try await makeNode()
        let conn = try await client.dial(server)
        func ask(_ bytes: [UInt8]) async throws -> AutoNAT.Message {
            let s = try await conn.openStream([AutoNAT.protocolID])
            try await s.writeLengthPrefixed(bytes)
            let answer = try AutoNAT.decode(try await s.readLengthPrefixed(maxLength: 4096)).0
            // An honest client ends its stream: the server holds two AutoNAT streams per peer at most.
            await s.closeWrite()
            return answer
        }
        // Too many addresses.
        let many = (0..<40).map { try! Multiaddr("/ip4/127.0.0.1/tcp/\(1000 + $0)") }
        guard case .dialResponse(.badRequest, _, _) = try await ask(AutoNAT.encode(.dial(peer: client.peerID, addresses: many))) else { return XCTFail() }
        // Only a third party's address.
        guard case .dialResponse(.dialRefused, _, _) = try await ask(AutoNAT.encode(.dial(peer: client.peerID, addresses: [try Multiaddr("/ip4/198.18.0.99/tcp/4001")]))) else { return XCTFail() }
        // Asking on behalf of another peer.
        guard case .dialResponse(.badRequest, _, _) = try await ask(AutoNAT.encode(.dial(peer: PrivateKey.generate().peerID, addresses: []))) else { return XCTFail() }
        // Garbage.
        guard case .dialResponse(.badRequest, _, _) = try await ask([0xff, 0xff, 0xff]) else { return XCTFail() }
    }
}
