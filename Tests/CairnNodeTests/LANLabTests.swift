import Foundation
import XCTest

/// Issue 15's LAN paths in the NAT lab: nodes on one segment behind a router (`natlab.sh`
/// `home:a*2`) find each other by mDNS with no bootstrap peer, with each other and with kubo;
/// hosts behind the same home router that only know public bootstrap peers connect over the LAN.
/// Needs root, ip and nft (mDNS multicasts, so it only ever runs inside lab namespaces).
final class LANLabTests: XCTestCase {
    func connected(_ n: LabNodes, _ name: String) -> [String] { n.status(name)?["connected_peers"] as? [String] ?? [] }

    /// `cairn dial --json` through a running node's control API.
    func dialVia(_ n: LabNodes, _ lab: NATLab, node name: String, host: NATLab.Host, peer: String) -> [String: Any] {
        let out = lab.run(in: host, [n.bin, "dial", peer, "--data-dir", n.dir.appendingPathComponent(name).path, "--json", "--upgrade-wait", "0",
                                     "--log-level", "error"], timeout: 60)
        let line = out.stdout.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? ""
        return ((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]) ?? ["error": "\(out)"]
    }

    func testTwoNodesOnOneLANFindEachOtherByMDNSWithNoBootstrapPeer() throws {
        let lab = try NATLab(spec: ["home:a*2"])
        let n = LabNodes(lab)
        addTeardownBlock { lab.tearDown(); n.cleanUp() }
        let (ha, ha2) = (try lab.host("a"), try lab.host("a2"))
        let a = try n.start(ha, name: "a", listenIP: "0.0.0.0", extra: ["--auto-relay", "off", "--port-mapping", "off"])
        let a2 = try n.start(ha2, name: "a2", listenIP: "0.0.0.0", extra: ["--auto-relay", "off", "--port-mapping", "off"])
        func lanPeers(_ name: String) -> [String] { (n.status(name)?["lan_peers"] as? [[String: Any]] ?? []).compactMap { $0["peer"] as? String } }
        try n.waitFor("a and a2 to hear of each other and connect", timeout: 30) {
            connected(n, "a").contains(a2) && connected(n, "a2").contains(a) && !lanPeers("a").isEmpty && !lanPeers("a2").isEmpty
        }
        XCTAssertEqual(lanPeers("a2"), [a], "a2 heard of a on the LAN, and of nobody else")
        XCTAssertEqual(lanPeers("a"), [a2])
        let r = dialVia(n, lab, node: "a2", host: ha2, peer: a)
        XCTAssertEqual(r["how"] as? String, "direct", "\(r)")
        XCTAssertEqual(r["address"] as? String, "/ip4/\(ha.ip)/tcp/4001", "\(r)")
        XCTAssertEqual(r["path"] as? String, "lan", "\(r)")

        // Hostile LAN traffic: a compression loop, a truncated header, a TXT string past its
        // record. Each is dropped and counted; the node carries on.
        let junk = #"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        for d in [bytes([0,0,0,0,0,1,0,0,0,0,0,0,0xc0,12,0,12,0,1]), bytes([0,0,0x84]),
                  bytes([0,0,0x84,0,0,0,0,1,0,0,0,0,1,0x78,0,0,16,0,1,0,0,0,1,0,3,9,1,2])]:
            s.sendto(d, ("224.0.0.251", 5353))
        """#
        XCTAssertEqual(lab.run(in: ha2, ["/usr/bin/python3", "-c", junk]).status, 0)
        try n.waitFor("a to drop the three datagrams", timeout: 10) { (n.status("a")?["mdns_dropped"] as? Int ?? 0) >= 3 }
        XCTAssertTrue(connected(n, "a").contains(a2))
    }

    func testCairnFindsKuboByMDNS() throws {
        let lab = try NATLab(spec: ["home:a*2"])
        let n = LabNodes(lab)
        addTeardownBlock { lab.tearDown(); n.cleanUp() }
        let (ha, ha2) = (try lab.host("a"), try lab.host("a2"))
        let kubo = try KuboPeer(["--listen", "/ip4/0.0.0.0/tcp/4001", "--mdns"], lab: lab, host: ha2)
        addTeardownBlock { kubo.stop() }
        let a = try n.start(ha, name: "a", listenIP: "0.0.0.0", extra: ["--auto-relay", "off", "--port-mapping", "off"])
        try n.waitFor("cairn to find kubo on the LAN and connect", timeout: 40) { connected(n, "a").contains(kubo.peerID) }
        // Cairn read kubo's announcement (kubo reading Cairn's is the next test).
        let peers = try kubo.command("peers")
        XCTAssertTrue("\(peers)".contains(a), "kubo is connected to cairn: \(peers)")
        let lanPeers = (n.status("a")?["lan_peers"] as? [[String: Any]] ?? [])
        let kuboEntry = try XCTUnwrap(lanPeers.first { $0["peer"] as? String == kubo.peerID }, "\(lanPeers)")
        XCTAssertTrue((kuboEntry["addrs"] as? [String] ?? []).contains("/ip4/\(ha2.ip)/tcp/4001"), "kubo announced its LAN address: \(kuboEntry)")
    }

    /// Kubo's resolver reads Cairn's announcement: Cairn only answers (it dials nobody), and kubo
    /// connects to it.
    func testKuboDialsACairnNodeItFoundByMDNS() throws {
        let lab = try NATLab(spec: ["home:a*2"])
        let n = LabNodes(lab)
        addTeardownBlock { lab.tearDown(); n.cleanUp() }
        let (ha, ha2) = (try lab.host("a"), try lab.host("a2"))
        let a = try n.start(ha, name: "a", listenIP: "0.0.0.0", extra: ["--auto-relay", "off", "--port-mapping", "off", "--mdns-announce-only"])
        let kubo = try KuboPeer(["--listen", "/ip4/0.0.0.0/tcp/4001", "--mdns"], lab: lab, host: ha2)
        addTeardownBlock { kubo.stop() }
        try n.waitFor("kubo to find cairn and connect", timeout: 40) { connected(n, "a").contains(kubo.peerID) }
        XCTAssertTrue("\(try kubo.command("peers"))".contains(a))
    }

    /// Two hosts behind one home router (a real UPnP gateway, so each has a confirmed public
    /// address) that know only a public bootstrap peer and do not use mDNS: the dial between them
    /// goes over the LAN (the router does not hairpin), not through the public address or a relay.
    func testHostsBehindTheSameRouterConnectOverTheLAN() throws {
        if let why = NATLab.upnpSkipReason { try NATLab.skipOrFail("the UPnP lab router needs: \(why)") }
        let lab = try NATLab(spec: ["pub:1", "upnp:a*2"])
        let n = LabNodes(lab)
        addTeardownBlock { lab.tearDown(); n.cleanUp() }
        try lab.upnpd("a", start: true)
        let pub1 = try lab.host("pub1")
        let boot = "/ip4/\(pub1.ip)/tcp/4001/p2p/\(try n.start(pub1, name: "pub1", listenIP: pub1.ip, extra: ["--relay", "--relay-when", "always", "--auto-relay", "off"]))"
        let (ha, ha2) = (try lab.host("a"), try lab.host("a2"))
        let common = ["--dht-mode", "client", "--no-mdns", "--bootstrap", boot]
        let a = try n.start(ha, name: "a", listenIP: "0.0.0.0", extra: common)
        _ = try n.start(ha2, name: "a2", listenIP: "0.0.0.0", extra: common)
        let wan = try lab.router("a").ip
        try n.waitFor("both to have a confirmed public address", timeout: 40) {
            ["a", "a2"].allSatisfy { name in (n.status(name)?["advertised_addrs"] as? [String] ?? []).contains { $0.hasPrefix("/ip4/\(wan)/") } }
        }
        XCTAssertFalse(connected(n, "a2").contains(a), "not connected before the dial")
        let r = dialVia(n, lab, node: "a2", host: ha2, peer: a)
        XCTAssertEqual(r["how"] as? String, "direct", "\(r)")
        XCTAssertEqual(r["address"] as? String, "/ip4/\(ha.ip)/tcp/4001", "over the LAN: \(r)")
        XCTAssertEqual(r["path"] as? String, "lan", "\(r)")
        XCTAssertTrue((r["path_why"] as? String ?? "").contains("behind our NAT"), "\(r)")
        XCTAssertTrue((r["record_addrs"] as? [String] ?? []).contains { $0.hasPrefix("/ip4/\(wan)/") }, "a's record offered its public address too: \(r)")
    }
}
