import Foundation
import XCTest

/// Issue 15's IPv6 in the NAT lab (`natlab.sh` kind `fw6`): dual-stack public hosts, and hosts
/// with a global IPv6 address behind a stateful firewall that drops inbound new connections (no
/// NAT), IPv4 behind a home NAT beside it — what most mobile and many home networks give.
final class IPv6LabTests: XCTestCase {
    struct Lab {
        let lab: NATLab
        let n: LabNodes
        /// The public hosts' IPv6 bootstrap addresses.
        let bootstrap: [String]
        let ids: [String: String]
        /// pub1's IPv4 address.
        let bootstrap4: String
    }

    /// pub1..pub4 dual stack (pub1 a relay), listening on both families.
    func setUp(_ spec: [String]) throws -> Lab {
        let lab = try NATLab(spec: ["pub:4"] + spec)
        let n = LabNodes(lab)
        addTeardownBlock { lab.tearDown(); n.cleanUp() }
        var bootstrap: [String] = []
        var ids: [String: String] = [:]
        var first4 = ""
        for i in 1...4 {
            let (h4, h6) = (try lab.host("pub\(i)"), try lab.host("pub\(i)-v6"))
            // pub2..4 join through pub1 over IPv4: pub1 learns both of their families from identify.
            let extra = (i == 1 ? ["--relay", "--relay-when", "always"] : ["--bootstrap", first4])
                + ["--auto-relay", "off", "--listen", "/ip6/\(h6.ip)/tcp/4001"]
            let id = try n.start(h4, name: "pub\(i)", listenIP: h4.ip, extra: extra)
            ids["pub\(i)"] = id
            if i == 1 { first4 = "/ip4/\(h4.ip)/tcp/4001/p2p/\(id)" }
            bootstrap.append("/ip6/\(h6.ip)/tcp/4001/p2p/\(id)")
        }
        return Lab(lab: lab, n: n, bootstrap: bootstrap, ids: ids, bootstrap4: first4)
    }

    /// B and E each behind an IPv6 firewall: E's direct dial to B's global address is dropped by
    /// B's firewall, so E goes through the relay, and DCUtR's simultaneous open gets them a
    /// direct IPv6 connection through both firewalls.
    func testHostsBehindIPv6FirewallsPunchDirectlyOverIPv6() throws {
        let l = try setUp(["fw6:b", "fw6:e"])
        let b = try l.n.start(try l.lab.host("b"), name: "b", listenIP: "0.0.0.0",
                              extra: ["--listen", "/ip6/::/tcp/4001", "--dht-mode", "client", "--auto-relay", "always",
                                      "--port-mapping", "off", "--no-mdns"] + l.bootstrap.flatMap { ["--bootstrap", $0] })
        let b6 = try l.lab.host("b-v6").ip
        try l.n.waitFor("b to reserve a relay slot", timeout: 40) {
            (l.n.status("b")?["advertised_addrs"] as? [String] ?? []).contains { $0.contains("/p2p-circuit") }
        }
        XCTAssertTrue((l.n.status("b")?["advertised_addrs"] as? [String] ?? []).contains("/ip6/\(b6)/tcp/4001"), "b advertises its global IPv6 address")
        let r = l.n.dial(from: try l.lab.host("e"), name: "e", peer: b, bootstrap: l.bootstrap, extra: ["--direct-timeout", "2", "--upgrade-wait", "20"])
        XCTAssertNil(r["error"], "\(r)")
        XCTAssertEqual(r["how"] as? String, "upgraded", "the firewall dropped the plain dial; the punch went through: \(r)")
        XCTAssertEqual(r["upgrade"] as? String, "hole punch", "\(r)")
        XCTAssertEqual(r["address"] as? String, "/ip6/\(b6)/tcp/4001", "\(r)")
        XCTAssertEqual(r["path"] as? String, "punched", "\(r)")
        XCTAssertTrue((r["direct_failures"] as? [String] ?? []).contains { $0.hasPrefix("/ip6/\(b6)/tcp/4001") }, "the plain dial was tried and failed: \(r)")
        // The firewall did drop that first dial.
        XCTAssertGreaterThan(try l.lab.nftCounter(in: try l.lab.router("b"), comment: "fwd-drop"), 0)
        // AutoNAT over IPv6: b's peers (reached over IPv6) could not dial it back through the firewall.
        try l.n.waitFor("AutoNAT to find b private", timeout: 40) { l.n.status("b")?["reachability"] as? String == "private" }
    }

    /// Two dual-stack public peers: a dialer that joined over IPv4 and finds both families for
    /// the target prefers IPv6 (Happy Eyeballs order) and says so.
    func testDualStackPeersConnectOverIPv6() throws {
        let l = try setUp(["ipv6"])
        let r = l.n.dial(from: try l.lab.host("pub2"), name: "pub2-dialer", peer: l.ids["pub3"]!, bootstrap: [l.bootstrap4],
                         extra: ["--upgrade-wait", "0"])
        XCTAssertNil(r["error"], "\(r)")
        XCTAssertEqual(r["how"] as? String, "direct", "\(r)")
        XCTAssertEqual(r["address"] as? String, "/ip6/\(try l.lab.host("pub3-v6").ip)/tcp/4001", "\(r)")
        XCTAssertEqual(r["path"] as? String, "ipv6", "\(r)")
    }
}
