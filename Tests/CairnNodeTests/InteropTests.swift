import CairnCore
import CairnNode
import Foundation
import Logging
import NIOPosix
import XCTest

/// Wire compatibility with an independent implementation: py-libp2p 0.8.1, on 127.0.0.1.
final class InteropTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var node: Node!
    var listenAddr: Multiaddr!

    override func setUp() async throws {
        _ = try PyPeer.python()  // skip (or fail in CI) before starting anything
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        node = Node(identity: .generate(), group: group, logger: Logger(label: "interop-test"))
        listenAddr = try await node.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])[0]
    }

    override func tearDown() async throws {
        await node?.shutdown()
        try await group?.shutdownGracefully()
    }

    var fullAddr: String { listenAddr.appending(.p2p(node.peerID)).description }

    func testPyDialsSwiftAndPings() async throws {
        let r = try await PyPeer.run(["ping", fullAddr, "--count", "3"])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        let json = r.json
        XCTAssertEqual(json["event"] as? String, "ping", r.stdout + r.stderr)
        XCTAssertEqual(json["peer_id"] as? String, node.peerID.base58)
        let rtts = json["rtts_ms"] as? [Double] ?? []
        XCTAssertEqual(rtts.count, 3)
        XCTAssertTrue(rtts.allSatisfy { $0 > 0 && $0 < 5000 }, "\(rtts)")
    }

    func testSwiftDialsPyAndPings() async throws {
        let py = try PyPeer.Listener()
        defer { py.stop() }
        try await py.start()
        let conn = try await node.dial(Multiaddr(py.addrs[0]))
        XCTAssertEqual(conn.remotePeer?.base58, py.peerID)
        let rtts = try await node.ping(conn, count: 3)
        XCTAssertEqual(rtts.count, 3)
        XCTAssertTrue(rtts.allSatisfy { $0 > .zero && $0 < .seconds(5) })
        // The py side saw us connect, under our peer ID.
        _ = try await py.waitFor(event: "connected") { $0["peer_id"] as? String == self.node.peerID.base58 }
    }

    /// py-libp2p peers with RSA (kubo's default, the public bootstrap nodes') and secp256k1
    /// identities: their Noise identity proof and signed peer record verify, both ways.
    func testPeersWithRSAAndSecp256k1IdentitiesAreVerified() async throws {
        for (keyType, prefix) in [("rsa", "Qm"), ("secp256k1", "16Uiu2")] {
            let py = try PyPeer.Listener(extraArgs: ["--key-type", keyType])
            defer { py.stop() }
            try await py.start()
            XCTAssertTrue(py.peerID.hasPrefix(prefix), "\(keyType): \(py.peerID)")
            let conn = try await node.dial(Multiaddr(py.addrs[0]))
            XCTAssertEqual(conn.remotePeer?.base58, py.peerID, keyType)
            let info = try await node.identify(conn)
            let record = try XCTUnwrap(info.signedPeerRecord, "\(keyType): \(info.signedPeerRecordError ?? "no record")")
            XCTAssertEqual(record.peerID.base58, py.peerID)
            let rtts = try await node.ping(conn, count: 2)
            XCTAssertEqual(rtts.count, 2)
            // And py dials us: our Ed25519 proof verifies on its side, its proof on ours.
            let r = try await PyPeer.run(["ping", fullAddr, "--count", "1", "--key-type", keyType])
            XCTAssertEqual(r.status, 0, "\(keyType): \(r.stdout) \(r.stderr)")
            XCTAssertEqual(r.json["peer_id"] as? String, node.peerID.base58)
        }
    }

    func testPyIdentifiesSwift() async throws {
        let r = try await PyPeer.run(["identify", fullAddr])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        let j = r.json
        XCTAssertEqual(j["event"] as? String, "identify", r.stdout + r.stderr)
        XCTAssertEqual(j["peer_id"] as? String, node.peerID.base58)
        XCTAssertEqual(j["framing"] as? String, "varint")
        XCTAssertEqual(j["agent_version"] as? String, "cairn/0.1.0")
        XCTAssertEqual(j["public_key_matches_peer_id"] as? Bool, true)
        XCTAssertEqual(j["listen_addrs"] as? [String], [listenAddr.description])
        let protocols = Set(j["protocols"] as? [String] ?? [])
        XCTAssertTrue(protocols.isSuperset(of: [Ping.protocolID, IdentifyInfo.protocolID, IdentifyInfo.pushProtocolID]), "\(protocols)")
        // The address we observed for py is its real source address.
        let local = try XCTUnwrap(j["local_addr"] as? String)
        XCTAssertEqual(j["observed_addr"] as? String, local)
        // Our signed peer record verifies with py-libp2p's own envelope code.
        let spr = try XCTUnwrap(j["signed_peer_record"] as? [String: Any], r.stdout)
        XCTAssertEqual(spr["valid"] as? Bool, true, "\(spr)")
        XCTAssertEqual(spr["peer_id"] as? String, node.peerID.base58)
        XCTAssertEqual(spr["addrs"] as? [String], [listenAddr.description])
        XCTAssertEqual(spr["payload_type_hex"] as? String, "0301")
    }

    func testSwiftIdentifiesPy() async throws {
        let py = try PyPeer.Listener()
        defer { py.stop() }
        try await py.start()
        let pyAddr = try Multiaddr(py.addrs[0])
        let conn = try await node.dial(pyAddr)
        let info = try await node.identify(conn)
        XCTAssertEqual(info.agentVersion, "py-libp2p/0.8.1")
        XCTAssertEqual(info.listenAddrs.map { $0.withoutTrailingPeerID }, [pyAddr.withoutTrailingPeerID])
        XCTAssertTrue(Set(info.protocols).isSuperset(of: [Ping.protocolID, IdentifyInfo.protocolID]), "\(info.protocols)")
        XCTAssertEqual(info.publicKey.map { PeerID(publicKey: $0) }, conn.remotePeer)
        // py observed our real source address; we dial from our listen port (port reuse).
        XCTAssertEqual(info.observedAddr, conn.localAddress)
        XCTAssertEqual(conn.localAddress, listenAddr, "outbound dial should reuse the listen port")
        // py's signed peer record verified here.
        XCTAssertNil(info.signedPeerRecordError)
        let record = try XCTUnwrap(info.signedPeerRecord)
        XCTAssertEqual(record.peerID.base58, py.peerID)
        XCTAssertEqual(record.addresses.map { $0.withoutTrailingPeerID }, [pyAddr.withoutTrailingPeerID])
        XCTAssertGreaterThan(record.seq, 0)
    }
}
