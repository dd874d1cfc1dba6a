import CairnCore
@testable import CairnNode
import Foundation
import Logging
import XCTest

/// Against kubo 0.22.0 (go-libp2p v0.29.2, go-libp2p-kad-dht v0.24.2), the implementation most of
/// the libp2p network runs, on loopback (Tests/Interop/kubopeer.py). On loopback kubo's DHT
/// traffic is its LAN DHT, `/ipfs/lan/kad/1.0.0`; the Cairn hosts here speak that protocol.
final class KuboInteropTests: LoopbackNodesTestCase {
    var kubos: [KuboPeer] = []
    var hosts: [CairnHost] = []
    static let lanDHT = "/ipfs/lan/kad/1.0.0"

    override func tearDown() async throws {
        for k in kubos { k.stop() }
        kubos = []
        for h in hosts { await h.shutdown() }
        hosts = []
        try await super.tearDown()
    }

    func kubo(_ flags: [String] = []) throws -> KuboPeer {
        let k = try KuboPeer(flags)
        kubos.append(k)
        return k
    }

    /// A Cairn host on loopback: DHT server on kubo's LAN protocol, nothing else that dials.
    func host(_ name: String, bootstrap: [String] = [], protocols: [String] = [lanDHT], dual: Bool = false) async throws -> CairnHost {
        var c = CairnHost.Configuration()
        c.dataDirectory = nil
        c.listenAddresses = [try Multiaddr("/ip4/127.0.0.1/tcp/0")]
        c.bootstrapPeers = try bootstrap.map { try Multiaddr($0) }
        c.stun = false
        c.autoNATProbing = false
        c.autoRelay = .off
        c.dht.service.kademlia.protocolID = protocols[0]
        c.dht.service.additionalProtocols = Array(protocols.dropFirst())
        c.dht.followReachability = false
        c.dht.publishPresence = false
        c.dht.dual = dual
        let h = try CairnHost(configuration: c, group: group, logger: logs.logger(label: name))
        hosts.append(h)
        try await h.start()
        return h
    }

    func addr(_ h: CairnHost) -> String { h.listenAddresses[0].appending(.p2p(h.peerID)).description }

    // MARK: Connections

    func testConnectBothWaysWithRSAAndEd25519KuboPeers() async throws {
        let (node, nodeAddr) = try await makeNode("cairn")
        for key in ["rsa", "ed25519"] {
            let k = try kubo(["--key", key])
            XCTAssertTrue(k.peerID.hasPrefix(key == "rsa" ? "Qm" : "12D3KooW"), k.peerID)
            // Cairn dials kubo: Noise verifies kubo's identity (RSA by kubo's default), then
            // ping and identify, whose signed peer record verifies.
            let conn = try await node.dial(try Multiaddr(k.addrs[0]))
            XCTAssertEqual(conn.remotePeer?.base58, k.peerID, key)
            let rtts = try await node.ping(conn, count: 3)
            XCTAssertEqual(rtts.count, 3)
            let info = try await node.identify(conn)
            XCTAssertEqual(info.agentVersion, "kubo/0.22.0/", key)
            XCTAssertEqual(info.signedPeerRecord?.peerID.base58, k.peerID, "\(key): \(info.signedPeerRecordError ?? "no record")")
            XCTAssertTrue(info.protocols.contains(Ping.protocolID), "\(info.protocols)")
            await conn.close()
            // kubo dials Cairn.
            let r = try k.command("connect \(nodeAddr)")
            XCTAssertNil(r["error"], "\(key): \(r)")
            try await eventually(timeout: 10) { node.swarm.connections(to: try! PeerID(string: k.peerID)).count > 0 }
            let peers = try k.command("peers")["peers"] as? [[String: Any]] ?? []
            XCTAssertTrue(peers.contains { $0["peer_id"] as? String == node.peerID.base58 }, "\(peers)")
        }
    }

    /// Identify push reaches kubo: a new advertised address of ours shows up in kubo's peer store
    /// (kubo's FindPeer answers a connected peer from it) without a new connection.
    func testKuboSeesOurIdentifyPush() async throws {
        let s = try await host("s")
        let k = try kubo()
        XCTAssertNil(try k.command("connect \(addr(s))")["error"])
        let before = try k.command("findpeer \(s.peerID) 5")["addrs"] as? [String] ?? []
        let extra = try Multiaddr("/ip4/198.51.100.77/tcp/4001")
        XCTAssertFalse(before.contains(extra.description), "\(before)")
        s.node.setExtraAddresses([extra], source: .observed)  // as a confirmed external address would
        var after: [String] = []
        for _ in 0..<40 where !after.contains(extra.description) {
            after = try k.command("findpeer \(s.peerID) 5")["addrs"] as? [String] ?? []
            if !after.contains(extra.description) { try await Task.sleep(nanoseconds: 100_000_000) }
        }
        XCTAssertTrue(after.contains(extra.description), "kubo never learned the pushed address: \(after)")
    }

    // MARK: A mixed DHT

    func testKuboAndCairnFindEachOtherByIDThroughAMixedDHT() async throws {
        // S serves the IPFS DHT and kubo's LAN DHT on one table (kubo speaks the LAN one here).
        let s = try await host("s", protocols: ["/ipfs/kad/1.0.0", Self.lanDHT])
        XCTAssertTrue(s.node.swarm.supportedProtocols.contains("/ipfs/kad/1.0.0"))
        let k = try kubo(["--bootstrap", addr(s)])
        let kID = try PeerID(string: k.peerID)
        let t = try await host("t", bootstrap: [addr(s)])
        XCTAssertTrue(t.isJoined)
        // kubo finds the Cairn peer T by ID: its FIND_NODE lookup goes through Cairn's S.
        var found: [String: Any] = [:]
        for _ in 0..<20 {
            found = try k.command("findpeer \(t.peerID) 10")
            if found["found"] as? Bool == true { break }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        XCTAssertEqual(found["found"] as? Bool, true, "\(found)")
        XCTAssertTrue((found["addrs"] as? [String] ?? []).contains(t.listenAddresses[0].description), "\(found)")
        // Cairn finds kubo by ID: peer routing (FIND_NODE towards its ID) through S.
        try await eventually(timeout: 10) { s.node.swarm.directConnection(to: kID) != nil }
        let routed = try await t.dht!.findPeer(kID)
        XCTAssertEqual(routed.source, .peerRouting)
        XCTAssertTrue(routed.addresses.contains(try Multiaddr(k.addrs[0]).withoutTrailingPeerID), "\(routed.addresses)")
    }

    /// kubo's dual DHT, in Cairn: loopback peers (kubo's and Cairn's) go to the LAN table
    /// (`/ipfs/lan/kad/1.0.0`), never to the main one, which admits public addresses only; kubo
    /// finds a Cairn peer through the LAN half.
    func testDualDHTKeepsLoopbackPeersInItsLANTable() async throws {
        let d = try await host("d", protocols: ["/ipfs/kad/1.0.0"], dual: true)
        let lan = try XCTUnwrap(d.lanDHT)
        XCTAssertTrue(Set(d.node.swarm.supportedProtocols).isSuperset(of: ["/ipfs/kad/1.0.0", Self.lanDHT]))
        let k = try kubo(["--bootstrap", addr(d)])
        let kID = try PeerID(string: k.peerID)
        let t = try await host("t", bootstrap: [addr(d)])
        try await eventually(timeout: 10) { lan.routingTable.contains(kID) && lan.routingTable.contains(t.peerID) }
        XCTAssertEqual(d.dht!.routingTable.count, 0, "the main (WAN) table admits no loopback peer")
        var found: [String: Any] = [:]
        for _ in 0..<20 {
            found = try k.command("findpeer \(t.peerID) 10")
            if found["found"] as? Bool == true { break }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        XCTAssertEqual(found["found"] as? Bool, true, "\(found)")
    }

    func testProviderRecordsBothWays() async throws {
        let s = try await host("s")
        let k = try kubo(["--bootstrap", addr(s)])
        let kID = try PeerID(string: k.peerID)
        // kubo adds a block and announces it (ADD_PROVIDER over the LAN DHT, to S): a Cairn node
        // finds kubo as its provider, keyed by the CID's multihash.
        let added = try k.command("add hello from kubo")
        let cid = try XCTUnwrap(added["cid"] as? String, "\(added)")
        let key = try XCTUnwrap(CID.multihash(text: cid), cid)
        let t = try await host("t", bootstrap: [addr(s)])
        var providers: [ProviderRecord] = []
        for _ in 0..<30 where !providers.contains(where: { $0.provider == kID }) {
            providers = try await t.dht!.providers(key)
            if !providers.contains(where: { $0.provider == kID }) { try await Task.sleep(nanoseconds: 200_000_000) }
        }
        XCTAssertTrue(providers.contains { $0.provider == kID }, "kubo's provider record of \(cid): \(providers)")
        // Cairn announces a CID; kubo stores the record and serves it back to another node's
        // GET_PROVIDERS.
        let mine = try XCTUnwrap(CID.multihash(text: "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"))
        try await eventually(timeout: 10) { s.node.swarm.directConnection(to: kID) != nil }
        let kAddr = try Multiaddr(k.addrs[0]).withoutTrailingPeerID
        _ = try await s.dht!.request(kID, [kAddr], KadMessage(kind: .addProvider, key: mine,
                                                                providerPeers: [KadPeer(id: s.peerID, addresses: s.listenAddresses)]))
        var served: [KadPeer] = []
        for _ in 0..<20 where !served.contains(where: { $0.id == s.peerID }) {
            let reply = try await t.dht!.request(kID, [kAddr], KadMessage(kind: .getProviders, key: mine))
            served = reply?.providerPeers ?? []
            if !served.contains(where: { $0.id == s.peerID }) { try await Task.sleep(nanoseconds: 100_000_000) }
        }
        XCTAssertTrue(served.contains { $0.id == s.peerID && $0.addresses.contains(s.listenAddresses[0]) }, "\(served)")
    }

    // MARK: IPNS

    /// A Cairn IPNS record is stored by kubo's DHT validator (boxo's) and read back intact.
    func testKuboStoresACairnIPNSRecord() async throws {
        let s = try await host("s")
        let k = try kubo()
        let kID = try PeerID(string: k.peerID)
        let kAddr = try Multiaddr(k.addrs[0]).withoutTrailingPeerID
        let (key, record) = Reports.ipnsRecord(value: Array("/ipfs/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku".utf8),
                                               lifetime: 3600, key: s.node.swarm.identity)
        let put = try await s.dht!.request(kID, [kAddr], KadMessage(kind: .putValue, key: key, recordValue: record))
        XCTAssertEqual(put?.recordValue, record, "kubo echoes a record it accepted")
        let got = try await s.dht!.request(kID, [kAddr], KadMessage(kind: .getValue, key: key))
        let stored = try XCTUnwrap(got?.recordValue, "kubo did not keep the record: \(String(describing: got))")
        let r = try IPNS.verify(stored, name: s.peerID, now: Date())
        XCTAssertEqual(String(decoding: r.value, as: UTF8.self), "/ipfs/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
        // A forged one (signed by another key under our name) is refused by kubo.
        let forged = IPNS.create(value: [1], sequence: UInt64.max, validUntil: Date().addingTimeInterval(3600), ttl: .seconds(1), key: .generate())
        let refused = try? await s.dht!.request(kID, [kAddr], KadMessage(kind: .putValue, key: key, recordValue: forged))
        XCTAssertNil(refused, "kubo must not accept a forged IPNS record")
        let after = try await s.dht!.request(kID, [kAddr], KadMessage(kind: .getValue, key: key))
        XCTAssertEqual(after?.recordValue, record)
    }

    // MARK: Relays

    func testKuboRelaysForCairnAndCairnRelaysForKubo() async throws {
        // kubo as the relay: Cairn B reserves, Cairn A reaches B through the circuit.
        let relay = try kubo(["--relay-service", "--reachability", "public"])
        let (a, _) = try await makeNode("a")
        let (b, _) = try await makeNode("b", ip: "127.0.0.2")
        _ = RelayClient(node: a, logger: logs.logger(label: "a"))
        let bClient = RelayClient(node: b, logger: logs.logger(label: "b"))
        let reservation = try await bClient.reserve(on: try await b.dial(try Multiaddr(relay.addrs[0])))
        XCTAssertNotNil(reservation.voucher, "kubo's reservation voucher verified (signed by an RSA or Ed25519 relay)")
        let circuit = try Multiaddr(relay.addrs[0]).appending(.p2pCircuit).appending(.p2p(b.peerID))
        let relayed = try await a.dial(circuit)
        XCTAssertTrue(relayed.isLimited)
        let rtts = try await a.ping(relayed, count: 2)
        XCTAssertEqual(rtts.count, 2)

        // Cairn as the relay: kubo reserves on it (autorelay with a static relay) and Cairn A
        // reaches kubo through the circuit.
        let (r, rAddr) = try await makeNode("relay")
        let service = RelayService(node: r, logger: logs.logger(label: "relay"))
        service.setServing(true)
        let client = try kubo(["--relay-client", "--reachability", "private", "--static-relay", rAddr.description,
                               "--listen", "/ip4/127.0.0.3/tcp/0", "--announce", "\(rAddr)/p2p-circuit"])
        let clientID = try PeerID(string: client.peerID)
        try await eventually(timeout: 30) { service.stats.reservations.contains { $0.peer == clientID } }
        let toKubo = try await a.dial(rAddr.appending(.p2pCircuit).appending(.p2p(clientID)))
        XCTAssertTrue(toKubo.isLimited)
        XCTAssertEqual(toKubo.remotePeer, clientID)
        let rtt2 = try await a.ping(toKubo, count: 2)
        XCTAssertEqual(rtt2.count, 2)
    }
}
