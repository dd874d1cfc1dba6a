import CairnCore
import Foundation
import NIOConcurrencyHelpers
import XCTest

/// Issue 4's proof in the NAT lab: public Cairn nodes, and `cairn netcheck` behind each kind of
/// NAT learns its public address by vote, classifies the NAT (mapping, port allocation, and
/// filtering from an unsolicited stranger) and finds its reachability by AutoNAT dial-back —
/// which one lying server cannot sway.
final class NetcheckLabTests: XCTestCase {
    let bin = CLITests.productsDirectory.appendingPathComponent("cairn").path
    var dir: URL!

    override func setUp() {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("netcheck-" + UUID().uuidString)
    }

    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    /// Starts `cairn node` on `host` and returns its `/p2p` multiaddr.
    func startNode(_ lab: NATLab, _ host: NATLab.Host, name: String, port: Int = 4001, extra: [String] = []) throws -> String {
        let node = try lab.spawn(in: host, [bin, "node", "--data-dir", dir.appendingPathComponent(name).path,
                                            "--listen", "/ip4/\(host.ip)/tcp/\(port)", "--peers-file", "/dev/null",
                                            "--log-level", "error"] + extra)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, let line = node.nextLine(timeout: 20) {
            if line.hasPrefix("listening on ") { return String(line.dropFirst("listening on ".count)) }
        }
        throw NATLab.LabError.setupFailed("\(name) did not start")
    }

    /// Creates the identity in `name`'s data directory and returns its peer ID.
    func makeIdentity(_ name: String) throws -> String {
        let out = NATLab.execute(bin, ["id", "--data-dir", dir.appendingPathComponent(name).path, "--json"], timeout: 20)
        let obj = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any]
        return try XCTUnwrap(obj?["peer_id"] as? String, "cairn id: \(out)")
    }

    /// Runs `cairn netcheck --json` on `host` (identity `name`) and returns its report.
    func netcheck(_ lab: NATLab, on host: NATLab.Host, name: String, bootstrap: [String], duration: Int = 25,
                  extra: [String] = []) -> [String: Any] {
        Self.parse(Self.netcheck(bin: bin, dir: dir, lab, on: host, name: name, bootstrap: bootstrap, duration: duration, extra: extra))
    }

    /// Runs several netchecks at once (runs: name → host, bootstrap, extra arguments), each on a
    /// thread of its own: they block, and the cooperative pool has only as many threads as cores.
    func netchecks(_ lab: NATLab, _ runs: [String: (NATLab.Host, [String], [String])]) -> [String: [String: Any]] {
        let (bin, dir) = (bin, dir!)
        let results = NIOLockedValueBox<[String: String]>([:])
        let threads = runs.map { name, run in
            Thread {
                let raw = Self.netcheck(bin: bin, dir: dir, lab, on: run.0, name: "h-\(name)", bootstrap: run.1, duration: 25, extra: run.2)
                results.withLockedValue { $0[name] = raw }
            }
        }
        threads.forEach { $0.start() }
        while threads.contains(where: { !$0.isFinished }) { usleep(50_000) }
        return results.withLockedValue { $0 }.mapValues(Self.parse)
    }

    /// The JSON line of netcheck's output, or all of the output when there is none.
    static func netcheck(bin: String, dir: URL, _ lab: NATLab, on host: NATLab.Host, name: String, bootstrap: [String],
                         duration: Int, extra: [String]) -> String {
        let argv = [bin, "netcheck", "--data-dir", dir.appendingPathComponent(name).path, "--listen", "/ip4/0.0.0.0/tcp/4001",
                    "--duration", "\(duration)", "--json", "--log-level", "error"] + extra + bootstrap.flatMap { ["--bootstrap", $0] }
        let out = lab.run(in: host, argv, timeout: Double(duration) + 40)
        return out.stdout.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? "\(out)"
    }

    static func parse(_ raw: String) -> [String: Any] {
        ((try? JSONSerialization.jsonObject(with: Data(raw.utf8))) as? [String: Any]) ?? ["error": raw]
    }

    func testNetcheckBehindEachNATKind() async throws {
        let lab = try NATLab(spec: ["pub:5", "fullcone:a", "home:b", "symmetric:c", "open:d"])
        addTeardownBlock { lab.tearDown() }
        var bootstrap: [String] = []
        for i in 1...4 { bootstrap.append(try startNode(lab, try lab.host("pub\(i)"), name: "pub\(i)")) }

        // Where each host's port 4001 should appear to the world, and who it is.
        let hosts = ["a", "b", "c", "d"]
        var ids: [String: String] = [:]
        for name in hosts { ids[name] = try makeIdentity("h-\(name)") }
        let wan = { (n: String) in try lab.router(n).ip }
        let outside = ["a": try wan("a"), "b": try wan("b"), "c": try wan("c"), "d": try lab.host("d").ip]

        // pub5, a stranger none of them contacts, keeps trying to reach each at that address
        // while netcheck lingers: only where filtering is endpoint-independent does it get in.
        _ = try makeIdentity("stranger")
        let targets = hosts.map { "/ip4/\(outside[$0]!)/tcp/4001/p2p/\(ids[$0]!)" }.joined(separator: " ")
        let stranger = try lab.spawn(in: try lab.host("pub5"), ["/bin/bash", "-c", """
            end=$((SECONDS + 22)); while [ $SECONDS -lt $end ]; do
              for t in \(targets); do timeout -k 1 4 \(bin) ping --data-dir \(dir.appendingPathComponent("stranger").path) -c 1 --log-level error $t & done
              wait; sleep 1
            done
            """])
        defer { stranger.stop() }

        // Run netcheck behind every router at once (dial-backs that fail take the dial timeout).
        var runs: [String: (NATLab.Host, [String], [String])] = [:]
        for name in hosts { runs[name] = (try lab.host(name), bootstrap, ["--stun", "--linger"]) }
        let reports = netchecks(lab, runs)

        func check(_ name: String, external: [String], mapping: String, allocation: String, filtering: String, reachability: String) throws {
            let r = try XCTUnwrap(reports[name])
            XCTAssertNil(r["error"], "\(name): \(r)")
            XCTAssertEqual(Set(r["external_addrs"] as? [String] ?? []), Set(external), "\(name): \(r)")
            let nat = r["nat"] as? [String: Any]
            XCTAssertEqual(nat?["mapping"] as? String, mapping, "\(name): \(r)")
            XCTAssertEqual(nat?["port_allocation"] as? String, allocation, "\(name): \(r)")
            XCTAssertEqual(nat?["filtering"] as? String, filtering, "\(name): \(r)")
            XCTAssertEqual(nat?["observers"] as? Int, 4, "\(name): \(r)")
            XCTAssertEqual(r["reachability"] as? String, reachability, "\(name): \(r)")
            // Four identify votes (TCP) and four STUN votes (UDP) on its own connections, from
            // four observers (a stranger's inbound connection may add one more, not counted).
            let votes = (r["votes"] as? [[String: Any]] ?? []).filter { $0["outbound"] as? Bool == true }
            XCTAssertEqual(votes.count, 8, "\(name): \(r)")
            XCTAssertEqual(votes.filter { ($0["claimed"] as? String)?.contains("/udp/") == true }.count, 4, "\(name): \(r)")
        }
        let a = outside["a"]!, b = outside["b"]!, d = outside["d"]!
        // Full cone: the public address by vote, reachable, and the stranger got in.
        try check("a", external: ["/ip4/\(a)/tcp/4001", "/ip4/\(a)/udp/4001"], mapping: "endpoint-independent",
                  allocation: "port-preserving", filtering: "endpoint-independent", reachability: "public")
        // Home router: the same kind of address by vote, but the firewall drops dial-backs and strangers.
        try check("b", external: ["/ip4/\(b)/tcp/4001", "/ip4/\(b)/udp/4001"], mapping: "endpoint-independent",
                  allocation: "port-preserving", filtering: "unknown", reachability: "private")
        // Symmetric: every observer sees another port, so nothing is adopted; private.
        try check("c", external: [], mapping: "endpoint-dependent", allocation: "random", filtering: "unknown", reachability: "private")
        // No NAT: its own address, confirmed public, open to strangers.
        try check("d", external: ["/ip4/\(d)/tcp/4001", "/ip4/\(d)/udp/4001"], mapping: "endpoint-independent",
                  allocation: "port-preserving", filtering: "endpoint-independent", reachability: "public")

        // A standard STUN client behind each NAT, asking a public Cairn node's responder, is told
        // its router's WAN address.
        let tool = try requireTool("turnutils_stunclient", package: "coturn")
        let pub1 = try lab.host("pub1").ip
        for name in ["a", "b", "c"] {
            let out = lab.run(in: try lab.host(name), [tool, "-p", "4001", pub1], timeout: 10)
            XCTAssertEqual(out.status, 0, "\(name): \(out)")
            XCTAssertTrue(out.stdout.contains("UDP reflexive addr: \(outside[name]!):"), "\(name) behind \(outside[name]!): \(out.stdout)")
        }
    }

    /// One AutoNAT server lies (the hidden `--testing-autonat-answer`): it says "reached you" to
    /// the node behind a home router, and "could not" to the public one. Neither ever shows the
    /// false state, at any answer: one server alone does not decide, and the honest four outvote it.
    func testOneLyingAutoNATServerDoesNotFlipReachability() async throws {
        let lab = try NATLab(spec: ["pub:6", "home:b", "open:d"])
        addTeardownBlock { lab.tearDown() }
        var honest: [String] = []
        for i in 1...4 { honest.append(try startNode(lab, try lab.host("pub\(i)"), name: "pub\(i)", extra: ["--no-stun"])) }
        let liars = ["b": ("pub5", "ok", "public", "private"), "d": ("pub6", "dial-error", "private", "public")]
        var runs: [String: (NATLab.Host, [String], [String])] = [:]
        for (name, (liar, answer, _, _)) in liars {
            let liarAddr = try startNode(lab, try lab.host(liar), name: liar, extra: ["--no-stun", "--testing-autonat-answer", answer])
            // The liar is dialed first, so its answer tends to arrive before the honest ones.
            runs[name] = (try lab.host(name), [liarAddr] + honest, [])
        }
        let reports = netchecks(lab, runs)
        for (name, (liar, answer, lie, truth)) in liars {
            let r = try XCTUnwrap(reports[name])
            let answers = try XCTUnwrap(r["autonat_answers"] as? [[String: Any]], "\(name): \(r)")
            let liarIP = try lab.host(liar).ip
            XCTAssertEqual(answers.count, 5, "\(name): \(r)")
            let lies = answers.filter { $0["server_group"] as? String == liarIP }
            XCTAssertEqual(lies.map { $0["status"] as? String }, [answer == "ok" ? "ok" : "dialError"], "\(name): \(r)")
            XCTAssertEqual(answers.filter { $0["status"] as? String == (answer == "ok" ? "dialError" : "ok") }.count, 4, "\(name): \(r)")
            XCTAssertFalse(answers.contains { $0["reachability"] as? String == lie }, "\(name) showed the lie at some answer: \(answers)")
            XCTAssertEqual(r["reachability"] as? String, truth, "\(name): \(r)")
        }
    }

    /// One host running ten identities that all claim a false address cannot make it win: they
    /// are one observer. The truth, seen by four distinct hosts, is adopted.
    func testTenIdentitiesOnOneHostCannotMakeAFalseAddressWin() async throws {
        let lab = try NATLab(spec: ["pub:5", "home:b"])
        addTeardownBlock { lab.tearDown() }
        let lie = "/ip4/203.0.113.66/tcp/6666"
        var bootstrap: [String] = []
        for i in 1...4 { bootstrap.append(try startNode(lab, try lab.host("pub\(i)"), name: "pub\(i)", extra: ["--no-stun"])) }
        let sybilHost = try lab.host("pub5")
        for i in 0..<10 {
            bootstrap.append(try startNode(lab, sybilHost, name: "sybil\(i)", port: 5001 + i, extra: ["--no-stun", "--testing-claim-observed", lie]))
        }
        let r = netcheck(lab, on: try lab.host("b"), name: "h", bootstrap: bootstrap, duration: 20)
        let votes = try XCTUnwrap(r["votes"] as? [[String: Any]], "\(r)")
        XCTAssertEqual(votes.count, 14, "\(r)")
        XCTAssertEqual(votes.filter { $0["claimed"] as? String == lie }.count, 10, "\(r)")
        XCTAssertEqual(Set(votes.filter { $0["claimed"] as? String == lie }.compactMap { $0["observer"] as? String }), [sybilHost.ip])
        XCTAssertEqual(r["external_addrs"] as? [String], ["/ip4/\(try lab.router("b").ip)/tcp/4001"], "\(r)")
    }
}
