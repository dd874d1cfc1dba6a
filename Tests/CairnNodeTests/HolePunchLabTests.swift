import CairnCore
import Foundation
import NIOConcurrencyHelpers
import XCTest

/// Issue 6 in the NAT lab: B sits behind a home router with a reservation on a public relay;
/// peers behind another home router, on a public host and behind a symmetric NAT dial it with
/// `cairn dial`. Home ↔ home is upgraded by a hole punch (and then the relay carries nothing),
/// public → private by connection reversal, symmetric ↔ home stays relayed with its reason.
final class HolePunchLabTests: XCTestCase {
    func testUpgradeAcrossNATKinds() throws {
        let lab = try NATLab(spec: ["pub:4", "home:b", "home:e", "open:d", "symmetric:c"])
        let n = LabNodes(lab)
        addTeardownBlock { lab.tearDown(); n.cleanUp() }
        var bootstrap: [String] = []
        for i in 1...4 {
            let host = try lab.host("pub\(i)")
            let extra = i == 1 ? ["--relay", "--relay-when", "always", "--auto-relay", "off"] : ["--auto-relay", "off"]
            bootstrap.append("/ip4/\(host.ip)/tcp/4001/p2p/\(try n.start(host, name: "pub\(i)", listenIP: host.ip, extra: extra))")
        }
        let b = try n.start(try lab.host("b"), name: "b", listenIP: "0.0.0.0",
                            extra: ["--dht-mode", "client", "--auto-relay", "always"] + bootstrap.flatMap { ["--bootstrap", $0] })
        let wanB = try lab.router("b").ip
        try n.waitFor("b to reserve and learn its public address", timeout: 40) {
            let s = n.status("b")
            let advertised = s?["advertised_addrs"] as? [String] ?? []
            return advertised.contains { $0.contains("/p2p-circuit") } && advertised.contains("/ip4/\(wanB)/tcp/4001")
        }

        // Home router ↔ home router: a hole punch, while the relay's counter is watched.
        let samples = NIOLockedValueBox<[(bytes: Int, circuits: Int, opened: Int)]>([])
        let done = NIOLockedValueBox(false)
        let watcher = Thread {
            while !done.withLockedValue({ $0 }) {
                if let s = n.status("pub1")?["serving"] as? [String: Any] {
                    let sample = (bytes: s["bytes_forwarded"] as? Int ?? -1, circuits: (s["circuits"] as? [Any])?.count ?? -1,
                                  opened: s["circuits_opened"] as? Int ?? -1)
                    samples.withLockedValue { $0.append(sample) }
                }
                usleep(300_000)
            }
        }
        watcher.start()
        let home = n.dial(from: try lab.host("e"), name: "e", peer: b, bootstrap: bootstrap, extra: ["--pings", "60", "--ping-interval", "0.1"])
        usleep(2_500_000)  // the relay's status file lags by up to 2 s
        done.withLockedValue { $0 = true }
        XCTAssertNil(home["error"], "\(home)")
        XCTAssertEqual(home["how"] as? String, "upgraded", "home ↔ home: \(home)")
        XCTAssertEqual(home["upgrade"] as? String, "hole punch", "\(home)")
        XCTAssertEqual(home["address"] as? String, "/ip4/\(wanB)/tcp/4001", "\(home)")
        XCTAssertEqual(home["pings"] as? Int, 60)
        XCTAssertEqual(home["still_limited_connections"] as? Int, 0, "the relayed connection was closed once idle: \(home)")
        print("home ↔ home upgraded in \(home["upgrade_ms"] ?? "?") ms")
        // The circuit was used, then closed; from then on the relay forwarded nothing more
        // while 60 pings crossed the direct connection. (The relayed connection closes as soon as
        // it is idle, often between two status writes: the circuit counter shows it was opened.)
        let s = samples.withLockedValue { $0 }
        let opened = try XCTUnwrap(s.firstIndex { $0.circuits > 0 || $0.opened > s[0].opened }, "the relay never showed the circuit: \(s)")
        let closed = try XCTUnwrap(s[opened...].firstIndex { $0.circuits == 0 }, "the circuit never closed: \(s)")
        XCTAssertGreaterThan(s[closed].bytes, 0)
        XCTAssertEqual(s.last!.bytes, s[closed].bytes, "the relay forwarded bytes after the upgrade: \(s)")

        // Public → private: B dials the public peer back (connection reversal), no punch.
        let pub = n.dial(from: try lab.host("d"), name: "d", peer: b, bootstrap: bootstrap, extra: ["--pings", "10"])
        XCTAssertEqual(pub["how"] as? String, "upgraded", "public → private: \(pub)")
        XCTAssertEqual(pub["upgrade"] as? String, "peer's dial", "\(pub)")
        do {
            try n.waitFor("b to record the reversal", timeout: 5) {
                (n.status("b")?["hole_punches"] as? [[String: Any]] ?? []).contains { $0["how"] as? String == "reversal" }
            }
        } catch {
            XCTFail("\(error): \(n.status("b")?["hole_punches"] ?? "-")")
        }

        // Symmetric ↔ home: no address survives the symmetric NAT; relayed, with the reason.
        let sym = n.dial(from: try lab.host("c"), name: "c", peer: b, bootstrap: bootstrap, extra: ["--upgrade-wait", "30"])
        XCTAssertEqual(sym["how"] as? String, "relayed", "symmetric ↔ home: \(sym)")
        let why = sym["why_relayed"] as? String ?? ""
        XCTAssertFalse(why.isEmpty, "\(sym)")
        XCTAssertEqual(sym["our_external_addrs"] as? [String], [], "a symmetric NAT gives no stable address: \(sym)")
        print("symmetric ↔ home stays relayed: \(why)")
    }
}
