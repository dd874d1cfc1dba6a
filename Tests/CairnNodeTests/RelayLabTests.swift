import CairnCore
import Foundation
import XCTest

/// Issue 5 in the NAT lab: volunteer relays on the public segment; nodes behind a home router
/// and a symmetric NAT reserve on them, publish their relayed addresses in their presence
/// records, and reach each other through a relay; when a relay dies, the node moves on.
final class RelayLabTests: XCTestCase {
    let bin = CLITests.productsDirectory.appendingPathComponent("cairn").path
    var dir: URL!

    override func setUp() { dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaylab-" + UUID().uuidString) }
    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    func start(_ lab: NATLab, _ host: NATLab.Host, name: String, listenIP: String, extra: [String]) throws -> (NATLab.Spawned, String) {
        let node = try lab.spawn(in: host, [bin, "node", "--data-dir", dir.appendingPathComponent(name).path,
                                            "--listen", "/ip4/\(listenIP)/tcp/4001", "--peers-file", "/dev/null", "--no-stun",
                                            "--log-level", "warning"] + extra)
        let deadline = Date().addingTimeInterval(20)
        var id: String?
        while Date() < deadline, let line = node.nextLine(timeout: 20) {
            if line.hasPrefix("peer id: ") { id = String(line.dropFirst("peer id: ".count)) }
            if line.hasPrefix("listening on ") && !line.contains("/127.0.0.1/"), let id { return (node, id) }
        }
        throw NATLab.LabError.setupFailed("\(name) did not start")
    }

    /// `cairn relays --json` of a running node's data directory.
    func relays(_ name: String) -> [String: Any]? {
        let out = NATLab.execute(bin, ["relays", "--data-dir", dir.appendingPathComponent(name).path, "--json"], timeout: 10)
        return (try? JSONSerialization.jsonObject(with: Data(out.stdout.utf8))) as? [String: Any]
    }

    func heldRelays(_ name: String) -> Set<String> {
        Set((relays(name)?["held"] as? [[String: Any]] ?? []).compactMap { $0["relay"] as? String })
    }

    func waitFor(_ what: String, timeout: Double, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            if Date() > deadline { throw NATLab.LabError.commandFailed("timed out after \(timeout) s waiting for \(what)") }
            usleep(250_000)
        }
    }

    /// One-shot `cairn dial --json` from `host`, resolving `peer` through `bootstrap`.
    func dial(_ lab: NATLab, from host: NATLab.Host, name: String, peer: String, bootstrap: [String]) -> [String: Any] {
        let out = lab.run(in: host, [bin, "dial", peer, "--data-dir", dir.appendingPathComponent(name).path, "--json",
                                     "--dht-mode", "client", "--peers-file", "/dev/null", "--log-level", "error"]
                          + bootstrap.flatMap { ["--bootstrap", $0] }, timeout: 60)
        let line = out.stdout.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? ""
        return ((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]) ?? ["error": "\(out)"]
    }

    func testPrivateNodesTalkThroughAVolunteerRelayAndSurviveItsDeath() throws {
        let lab = try NATLab(spec: ["pub:3", "home:b", "symmetric:c"])
        addTeardownBlock { lab.tearDown() }
        // Three public volunteers, also the DHT.
        var volunteers: [String: (NATLab.Spawned, String)] = [:]
        var bootstrap: [String] = []
        for i in 1...3 {
            let host = try lab.host("pub\(i)")
            let (p, id) = try start(lab, host, name: "pub\(i)", listenIP: host.ip, extra: ["--relay", "--relay-when", "always", "--auto-relay", "off"])
            volunteers["pub\(i)"] = (p, id)
            bootstrap.append("/ip4/\(host.ip)/tcp/4001/p2p/\(id)")
        }
        let relayIDs = Dictionary(uniqueKeysWithValues: volunteers.map { ($0.value.1, $0.key) })
        // The private nodes: known to be behind NAT, so they reserve at once (--auto-relay always).
        var ids: [String: String] = [:]
        for name in ["b", "c"] {
            let (_, id) = try start(lab, try lab.host(name), name: name, listenIP: "0.0.0.0",
                                    extra: ["--dht-mode", "client", "--auto-relay", "always"] + bootstrap.flatMap { ["--bootstrap", $0] })
            ids[name] = id
        }
        for name in ["b", "c"] {
            try waitFor("\(name) to hold 2 reservations", timeout: 30) { heldRelays(name).count == 2 }
            // Its advertised addresses (and so its presence record) carry the relayed ones.
            let advertised = relays(name)?["advertised_addrs"] as? [String] ?? []
            XCTAssertEqual(advertised.filter { $0.contains("/p2p-circuit") }.count, 2, "\(name): \(advertised)")
        }

        // Each finds the other's presence record through the DHT and connects through a relay
        // (direct dials to private addresses fail; the relayed one works end to end).
        for (from, to) in [("c", "b"), ("b", "c")] {
            let r = dial(lab, from: try lab.host(from), name: "\(from)-dialer", peer: ids[to]!, bootstrap: bootstrap)
            XCTAssertNil(r["error"], "\(from) -> \(to): \(r)")
            XCTAssertEqual(r["how"] as? String, "relayed", "\(from) -> \(to): \(r)")
            let relay = try XCTUnwrap(r["relay"] as? String, "\(r)")
            let held = heldRelays(to)
            XCTAssertTrue(held.contains(relay), "\(from) -> \(to) went through \(relay), not one of \(to)'s relays \(held)")
            XCTAssertNotNil(r["rtt_ms"] as? Double)
        }
        // The relays counted those circuits (their status files lag by up to 2 s).
        let names = Array(volunteers.keys)
        try waitFor("the relays to report 2 circuits", timeout: 10) {
            names.compactMap { relaysStatus(of: $0)?["circuits_opened"] as? Int }.reduce(0, +) >= 2
        }

        // Churn: kill one of b's relays. b notices, reserves on the third, republishes; a new
        // dial succeeds through a live relay.
        let before = heldRelays("b")
        let victimID = try XCTUnwrap(before.first)
        let victim = try XCTUnwrap(relayIDs[victimID])
        volunteers[victim]!.0.stop(grace: 0)
        let killed = Date()
        try waitFor("b to replace its dead relay", timeout: 30) {
            let now = heldRelays("b")
            return now.count == 2 && !now.contains(victimID)
        }
        let recovery = Date().timeIntervalSince(killed)
        print("b replaced its dead relay in \(String(format: "%.1f", recovery)) s")
        let advertised = relays("b")?["advertised_addrs"] as? [String] ?? []
        XCTAssertFalse(advertised.contains { $0.contains(victimID) }, "\(advertised)")
        let live = bootstrap.filter { !$0.contains(victimID) }
        let r = dial(lab, from: try lab.host("c"), name: "c-dialer2", peer: ids["b"]!, bootstrap: live)
        XCTAssertEqual(r["how"] as? String, "relayed", "\(r)")
        XCTAssertNotEqual(r["relay"] as? String, victimID, "\(r)")
        let used = r["relay"] as? String ?? "", held = heldRelays("b")
        XCTAssertTrue(held.contains(used), "\(used) not in \(held): \(r)")
    }

    func relaysStatus(of name: String) -> [String: Any]? { relays(name)?["serving"] as? [String: Any] }
}
