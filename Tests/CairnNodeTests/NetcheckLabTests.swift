import CairnCore
import Foundation
import XCTest

/// Issue 4's proof in the NAT lab: four public Cairn nodes, and `cairn netcheck` behind each kind
/// of NAT learns its public address by vote, classifies the NAT and finds its reachability by
/// AutoNAT dial-back.
final class NetcheckLabTests: XCTestCase {
    func testNetcheckBehindEachNATKind() async throws {
        let bin = CLITests.productsDirectory.appendingPathComponent("cairn").path
        let lab = try NATLab(spec: ["pub:4", "fullcone:a", "home:b", "symmetric:c", "open:d"])
        addTeardownBlock { lab.tearDown() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("netcheck-" + UUID().uuidString)
        defer { try? FileManager.default.removeItem(at: dir) }

        var bootstrap: [String] = []
        for i in 1...4 {
            let pub = try lab.host("pub\(i)")
            let node = try lab.spawn(in: pub, [bin, "node", "--data-dir", dir.appendingPathComponent("pub\(i)").path,
                                               "--listen", "/ip4/\(pub.ip)/tcp/4001", "--peers-file", "/dev/null", "--log-level", "error"])
            var addr: String?
            let deadline = Date().addingTimeInterval(20)
            while addr == nil, Date() < deadline, let line = node.nextLine(timeout: 20) {
                if line.hasPrefix("listening on ") { addr = String(line.dropFirst("listening on ".count)) }
            }
            bootstrap.append(try XCTUnwrap(addr, "pub\(i) did not start"))
        }

        // Run netcheck behind every router at once (dial-backs that fail take the dial timeout).
        let hosts = ["a", "b", "c", "d"]
        var reports: [String: [String: Any]] = [:]
        try await withThrowingTaskGroup(of: (String, String).self) { g in
            for name in hosts {
                let host = try lab.host(name)
                let argv = [bin, "netcheck", "--data-dir", dir.appendingPathComponent("h-\(name)").path,
                            "--listen", "/ip4/0.0.0.0/tcp/4001", "--duration", "25", "--stun", "--json", "--log-level", "error"]
                    + bootstrap.flatMap { ["--bootstrap", $0] }
                g.addTask {
                    let out = lab.run(in: host, argv, timeout: 60)
                    return (name, "\(out.status)\n\(out.stdout)\n\(out.stderr)")
                }
            }
            for try await (name, output) in g {
                let line = output.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? ""
                let json = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
                reports[name] = json ?? ["error": output]
            }
        }

        func check(_ name: String, external: [String], mapping: String, allocation: String, reachability: String) throws {
            let r = try XCTUnwrap(reports[name])
            XCTAssertNil(r["error"], "\(name): \(r)")
            XCTAssertEqual(Set(r["external_addrs"] as? [String] ?? []), Set(external), "\(name): \(r)")
            let nat = r["nat"] as? [String: Any]
            XCTAssertEqual(nat?["mapping"] as? String, mapping, "\(name): \(r)")
            XCTAssertEqual(nat?["port_allocation"] as? String, allocation, "\(name): \(r)")
            XCTAssertEqual(nat?["observers"] as? Int, 4, "\(name): \(r)")
            XCTAssertEqual(r["reachability"] as? String, reachability, "\(name): \(r)")
            // Four identify votes (TCP) and four STUN votes (UDP), from four observers.
            let votes = r["votes"] as? [[String: Any]] ?? []
            XCTAssertEqual(votes.count, 8, "\(name): \(r)")
            XCTAssertEqual(votes.filter { ($0["claimed"] as? String)?.contains("/udp/") == true }.count, 4, "\(name): \(r)")
        }
        let wan = { (n: String) in try lab.router(n).ip }
        // Full cone: the public address by vote, and reachable (the dial-back passes the cone).
        try check("a", external: ["/ip4/\(wan("a"))/tcp/4001", "/ip4/\(wan("a"))/udp/4001"], mapping: "endpoint-independent", allocation: "port-preserving", reachability: "public")
        // Home router: the same address by vote, but the firewall drops dial-backs: private.
        try check("b", external: ["/ip4/\(wan("b"))/tcp/4001", "/ip4/\(wan("b"))/udp/4001"], mapping: "endpoint-independent", allocation: "port-preserving", reachability: "private")
        // Symmetric: every observer sees another port, so nothing is adopted; private.
        try check("c", external: [], mapping: "endpoint-dependent", allocation: "random", reachability: "private")
        // No NAT: its own address, confirmed public.
        try check("d", external: ["/ip4/\(try lab.host("d").ip)/tcp/4001", "/ip4/\(try lab.host("d").ip)/udp/4001"], mapping: "endpoint-independent", allocation: "port-preserving", reachability: "public")
    }

    /// One host running ten identities that all claim a false address cannot make it win: they
    /// are one observer. The truth, seen by four distinct hosts, is adopted.
    func testTenIdentitiesOnOneHostCannotMakeAFalseAddressWin() async throws {
        let bin = CLITests.productsDirectory.appendingPathComponent("cairn").path
        let lab = try NATLab(spec: ["pub:5", "home:b"])
        addTeardownBlock { lab.tearDown() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sybil-" + UUID().uuidString)
        defer { try? FileManager.default.removeItem(at: dir) }
        let lie = "/ip4/203.0.113.66/tcp/6666"

        func start(_ host: NATLab.Host, port: Int, name: String, extra: [String] = []) throws -> String {
            let node = try lab.spawn(in: host, [bin, "node", "--data-dir", dir.appendingPathComponent(name).path,
                                                "--listen", "/ip4/\(host.ip)/tcp/\(port)", "--peers-file", "/dev/null",
                                                "--no-stun", "--log-level", "error"] + extra)
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline, let line = node.nextLine(timeout: 20) {
                if line.hasPrefix("listening on ") { return String(line.dropFirst("listening on ".count)) }
            }
            throw NSError(domain: "lab", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(name) did not start"])
        }
        var bootstrap: [String] = []
        for i in 1...4 { bootstrap.append(try start(try lab.host("pub\(i)"), port: 4001, name: "pub\(i)")) }
        let sybilHost = try lab.host("pub5")
        for i in 0..<10 {
            bootstrap.append(try start(sybilHost, port: 5001 + i, name: "sybil\(i)", extra: ["--testing-claim-observed", lie]))
        }
        let out = lab.run(in: try lab.host("b"), [bin, "netcheck", "--data-dir", dir.appendingPathComponent("h").path,
                                                  "--listen", "/ip4/0.0.0.0/tcp/4001", "--duration", "20", "--json", "--log-level", "error"]
                          + bootstrap.flatMap { ["--bootstrap", $0] }, timeout: 60)
        let line = out.stdout.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? ""
        let r = try XCTUnwrap((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any], "\(out)")
        let votes = try XCTUnwrap(r["votes"] as? [[String: Any]])
        XCTAssertEqual(votes.count, 14, "\(r)")
        XCTAssertEqual(votes.filter { $0["claimed"] as? String == lie }.count, 10, "\(r)")
        XCTAssertEqual(Set(votes.filter { $0["claimed"] as? String == lie }.compactMap { $0["observer"] as? String }), [sybilHost.ip])
        XCTAssertEqual(r["external_addrs"] as? [String], ["/ip4/\(try lab.router("b").ip)/tcp/4001"], "\(r)")
    }
}
