import Foundation
import XCTest

/// Issue 15's port mapping against a real gateway: Debian's miniupnpd (UPnP IGD, NAT-PMP, PCP)
/// on a lab home router (`natlab.sh` kind `upnp`). Needs root, nft, miniupnpd and python3 (the
/// STUN responder miniupnpd learns its address from); without them the tests skip, saying why,
/// unless CAIRN_REQUIRE_LAB=1.
final class PortMappingLabTests: XCTestCase {
    struct Setup {
        let lab: NATLab
        let n: LabNodes
        let bootstrap: String
        let wan: String
        let router: NATLab.Host
    }

    func setUpLab(_ file: StaticString = #filePath) throws -> Setup {
        try NATLab.requireAvailable()
        if let why = NATLab.upnpSkipReason { try NATLab.skipOrFail("the UPnP lab router needs: \(why)") }
        let lab = try NATLab(spec: ["pub:2", "upnp:a"])
        let n = LabNodes(lab)
        addTeardownBlock { lab.tearDown(); n.cleanUp() }
        let pub1 = try lab.host("pub1")
        let id = try n.start(pub1, name: "pub1", listenIP: pub1.ip, extra: ["--auto-relay", "off"])
        return Setup(lab: lab, n: n, bootstrap: "/ip4/\(pub1.ip)/tcp/4001/p2p/\(id)", wan: try lab.router("a").ip, router: try lab.router("a"))
    }

    /// Node `a` behind the UPnP router, joined through pub1, renewing every few seconds.
    func startA(_ s: Setup, mode: String = "auto") throws -> String {
        try s.n.start(try s.lab.host("a"), name: "a", listenIP: "0.0.0.0",
                      extra: ["--dht-mode", "client", "--auto-relay", "off", "--bootstrap", s.bootstrap,
                              "--port-mapping", mode, "--port-mapping-lifetime", "6", "--port-mapping-retry", "1"])
    }

    func tcpMapping(_ s: Setup, _ name: String) -> [String: Any]? {
        (s.n.status(name)?["port_mappings"] as? [[String: Any]])?.first { $0["proto"] as? String == "tcp" }
    }

    func advertised(_ s: Setup, _ name: String) -> [String] { s.n.status(name)?["advertised_addrs"] as? [String] ?? [] }

    func rules(_ s: Setup) -> String {
        s.lab.run(in: s.router, ["nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd"]).stdout
    }

    /// Before the gateway serves UPnP, a public peer cannot reach the node; once it does, the node
    /// maps its port (PCP and NAT-PMP refused, UPnP IGD taken), a peer's dial-back confirms it,
    /// and a plain dial from another public peer connects directly to the mapped address. When
    /// the node stops, the mapping goes with it.
    func testAUPnPRouterOpensThePortForAPlainDirectDial() throws {
        let s = try setUpLab()
        let a = try startA(s)
        try s.n.waitFor("the mapping to fail while the gateway serves nothing", timeout: 30) {
            tcpMapping(s, "a")?["state"] as? String == "failed"
        }
        let detail = tcpMapping(s, "a")?["detail"] as? String ?? ""
        XCTAssertTrue(detail.contains("unreachable") && detail.contains("SSDP"), "PCP/NAT-PMP closed, no UPnP answer: \(detail)")
        let before = s.n.dial(from: try s.lab.host("pub2"), name: "pub2-before", peer: a, bootstrap: [s.bootstrap],
                              extra: ["--direct-timeout", "3", "--upgrade-wait", "0"], timeout: 60)
        XCTAssertNotEqual(before["how"] as? String, "direct", "the home router's firewall admits nobody yet: \(before)")

        try s.lab.upnpd("a", start: true, options: ["--only", "upnp"])
        let mapped = "/ip4/\(s.wan)/tcp/4001"
        try s.n.waitFor("a to map its port by UPnP and have it confirmed", timeout: 40) {
            let m = tcpMapping(s, "a")
            return m?["state"] as? String == "confirmed" && advertised(s, "a").contains(mapped)
        }
        let m = try XCTUnwrap(tcpMapping(s, "a"))
        XCTAssertEqual(m["dialect"] as? String, "UPnP IGD", "\(m)")
        XCTAssertEqual(m["confirmed"] as? String, mapped, "\(m)")
        XCTAssertEqual(m["gateway"] as? String, "10.0.1.1")
        XCTAssertTrue((m["detail"] as? String ?? "").contains("dialed back"), "\(m)")
        XCTAssertTrue(rules(s).contains("dport 4001 dnat ip to 10.0.1.2:4001"), rules(s))

        let after = s.n.dial(from: try s.lab.host("pub2"), name: "pub2-after", peer: a, bootstrap: [s.bootstrap],
                             extra: ["--upgrade-wait", "0"], timeout: 60)
        XCTAssertNil(after["error"], "\(after)")
        XCTAssertEqual(after["how"] as? String, "direct", "a plain dial: \(after)")
        XCTAssertEqual(after["address"] as? String, mapped, "\(after)")

        // UPnP alone (`--port-mapping upnp`): no PCP socket tells the LAN address, the driver
        // finds it itself; the mapping is confirmed (so it points at this host).
        let out = s.lab.run(in: try s.lab.host("a"), [s.n.bin, "netcheck", "--data-dir", s.n.dir.appendingPathComponent("nc-upnp").path,
                                                      "--listen", "/ip4/0.0.0.0/tcp/4201", "--bootstrap", s.bootstrap,
                                                      "--port-mapping", "upnp", "--duration", "20", "--json", "--log-level", "error"],
                            timeout: 40)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any], "\(out)")
        let only = try XCTUnwrap((json["port_mapping"] as? [[String: Any]])?.first, "\(json)")
        XCTAssertEqual(only["dialect"] as? String, "UPnP IGD", "\(only)")
        XCTAssertEqual(only["state"] as? String, "confirmed", "\(only)")
        XCTAssertEqual(only["confirmed"] as? String, "/ip4/\(s.wan)/tcp/4201", "\(only)")

        s.n.stop("a", grace: 10)
        XCTAssertFalse(rules(s).contains("dport 4001"), "the node deleted its mapping on the way out: \(rules(s))")
    }

    /// NAT-PMP and PCP each against miniupnpd, through `cairn netcheck` (which reports the
    /// mapping and deletes it when done); then a running node keeps its PCP mapping across a
    /// gateway restart that forgot every mapping.
    func testNATPMPAndPCPEachMapAndARestartedGatewayIsAskedAgain() throws {
        let s = try setUpLab()
        try s.lab.upnpd("a", start: true, options: ["--only", "pmp"])
        let bin = s.n.bin
        for (mode, dialect, port) in [("natpmp", "NAT-PMP", 4101), ("pcp", "PCP", 4102)] {
            let out = s.lab.run(in: try s.lab.host("a"), [bin, "netcheck", "--data-dir", s.n.dir.appendingPathComponent("nc-\(mode)").path,
                                                          "--listen", "/ip4/0.0.0.0/tcp/\(port)", "--bootstrap", s.bootstrap,
                                                          "--port-mapping", mode, "--duration", "20", "--json", "--log-level", "error"],
                                timeout: 40)
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any], "\(out)")
            let m = try XCTUnwrap((json["port_mapping"] as? [[String: Any]])?.first, "\(json)")
            XCTAssertEqual(m["dialect"] as? String, dialect, "\(m)")
            XCTAssertEqual(m["state"] as? String, "confirmed", "\(m)")
            XCTAssertEqual(m["confirmed"] as? String, "/ip4/\(s.wan)/tcp/\(port)", "\(m)")
            XCTAssertEqual(m["summary"] as? String, "tcp \(port): \(dialect) on 10.0.1.1, mapped \(s.wan):\(port), confirmed as /ip4/\(s.wan)/tcp/\(port) (\(m["detail"] as? String ?? ""))")
            XCTAssertFalse(rules(s).contains("dport \(port)"), "netcheck deleted its mapping: \(rules(s))")
        }

        _ = try startA(s, mode: "pcp")
        let mapped = "/ip4/\(s.wan)/tcp/4001"
        try s.n.waitFor("a's PCP mapping to be confirmed", timeout: 40) {
            tcpMapping(s, "a")?["state"] as? String == "confirmed" && advertised(s, "a").contains(mapped)
        }
        XCTAssertEqual(tcpMapping(s, "a")?["dialect"] as? String, "PCP")
        // The gateway goes away and comes back without its mappings (a reboot).
        try s.lab.upnpd("a", start: false)
        try s.n.waitFor("a to notice and stop advertising the mapping", timeout: 40) {
            tcpMapping(s, "a")?["state"] as? String != "confirmed" && !advertised(s, "a").contains(mapped)
        }
        XCTAssertFalse(rules(s).contains("dport 4001"))
        try s.lab.upnpd("a", start: true, options: ["--only", "pmp"])
        try s.n.waitFor("a to map again and have it confirmed", timeout: 40) {
            tcpMapping(s, "a")?["state"] as? String == "confirmed" && advertised(s, "a").contains(mapped)
        }
        XCTAssertTrue(rules(s).contains("dport 4001 dnat ip to 10.0.1.2:4001"), rules(s))
    }

    /// A gateway that claims a wrong external address (its STUN answer lies) still forwards the
    /// port at its real one: the node never advertises the claim, and confirms the port at the
    /// IP its peers observe instead.
    func testALyingGatewayIsNotBelieved() throws {
        let s = try setUpLab()
        let lie = "198.18.0.99"
        try s.lab.upnpd("a", start: true, options: ["--claim", lie])
        _ = try startA(s)
        var seen: Set<String> = []
        try s.n.waitFor("a to confirm its mapping at the observed IP", timeout: 40) {
            seen.formUnion(advertised(s, "a"))
            return tcpMapping(s, "a")?["state"] as? String == "confirmed"
        }
        let m = try XCTUnwrap(tcpMapping(s, "a"))
        XCTAssertEqual(m["claimed_address"] as? String, lie, "the gateway did lie: \(m)")
        XCTAssertEqual(m["confirmed"] as? String, "/ip4/\(s.wan)/tcp/4001", "\(m)")
        seen.formUnion(advertised(s, "a"))
        XCTAssertFalse(seen.contains { $0.contains(lie) }, "the claim was never advertised: \(seen)")
        XCTAssertTrue(seen.contains("/ip4/\(s.wan)/tcp/4001"))
    }
}
