import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The connectivity matrix (issue 6): for every ordered pair of NAT kinds, N trials of `cairn
/// dial` from a host behind kind A to a node behind kind B, in a NAT lab built with
/// bootstrap/natlab.sh, with fresh NAT state (conntrack flushed, full-cone maps forgotten) and
/// fresh processes for every trial. Four public hosts run the DHT, one of them a volunteer relay.
/// B reserves a relay slot when private; A resolves B's presence record and connects — directly,
/// or through the relay and then upgraded by reversal or hole punch. Reports per pair the share
/// of trials that ended direct, relayed-only, or failed, and the median / p95 time from the
/// relayed connection to the direct one; as a table and as JSON.
@main
struct Matrix: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cairn-natmatrix",
                                                    abstract: "Direct / relayed connectivity for every pair of NAT kinds in the NAT lab.")
    @Option(help: "Trials per ordered pair.") var trials = 20
    @Option(help: "Comma-separated kinds among public, fullcone, home, symmetric.") var kinds = "public,fullcone,home,symmetric"
    @Option(help: """
        Rows beyond the kind pairs (comma-separated): upnp (public, home and symmetric dialing a target behind a \
        home router running miniupnpd), lan (two hosts behind one home router, knowing only the public peers), \
        ipv6 (two hosts with global IPv6 addresses behind stateful firewalls, dual-stack public peers). \
        With --only-scenarios, the kind pairs are skipped.
        """) var scenarios = ""
    @Flag(help: "Run only --scenarios, not the kind pairs.") var onlyScenarios = false
    @Option(help: "Write the JSON here too.") var json: String?
    @Option(help: "The cairn binary (default: beside this one).") var cairn: String?

    static let natlab = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("bootstrap/natlab.sh").path

    func run() throws {
        guard geteuid() == 0 else { throw ValidationError("the NAT lab needs root (network namespaces and nftables)") }
        let bin = cairn ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cairn").path
        let list = kinds.split(separator: ",").map(String.init)
        for k in list where !["public", "fullcone", "home", "symmetric"].contains(k) { throw ValidationError("unknown kind \(k)") }
        var results: [[String: Any]] = []
        print("| A (dials) \\ B (target) | trials | direct | relayed only | failed | to direct: median / p95 | reasons (relayed/failed) |")
        print("|---|---|---|---|---|---|---|")
        var rows: [Scenario] = onlyScenarios ? [] : list.flatMap { a in list.map { b in Scenario.pair(a, b) } }
        for s in scenarios.split(separator: ",").map(String.init) {
            switch s {
            case "upnp": rows += ["public", "home", "symmetric"].map(Scenario.upnp)
            case "lan": rows.append(.sameLAN)
            case "ipv6": rows.append(.ipv6Firewalls)
            default: throw ValidationError("unknown scenario \(s)")
            }
        }
        for row in rows {
            do {
                let (a, b) = (row.a, row.b)
                let r = try pair(row, bin: bin)
                results.append(r)
                let times = (r["direct_ms"] as? [Double] ?? []).sorted()
                let med = times.isEmpty ? "-" : String(format: "%.0f ms", times[times.count / 2])
                let p95 = times.isEmpty ? "-" : String(format: "%.0f ms", times[min(times.count - 1, Int(Double(times.count) * 0.95))])
                let reasons = (r["reasons"] as? [String: Int] ?? [:]).map { "\($0.key) ×\($0.value)" }.joined(separator: "; ")
                let ways = (r["ways"] as? [String: Int] ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")
                print("| \(a) → \(b) | \(trials) | \(r["direct"]!) (\(ways)) | \(r["relayed"]!) | \(r["failed"]!) | \(med) / \(p95) | \(reasons) |")
                fflush(nil)
            }
        }
        let data = try JSONSerialization.data(withJSONObject: ["trials": trials, "pairs": results], options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }

    /// One row of the matrix: who dials whom, in which lab.
    struct Scenario {
        var a: String
        var b: String
        /// natlab.sh specs beyond the public hosts.
        var spec: [String]
        /// The lab hosts of A and B.
        var hostA = "a"
        var hostB = "b"
        /// B's router runs miniupnpd (natlab.sh upnpd ROUTER start).
        var upnpRouter: String?
        /// B is private (it takes a relay slot, unless a port mapping makes it public).
        var bPrivate: Bool
        var bMapsPort = false
        /// Dual stack: public hosts listen on IPv6 too and are bootstrapped by it; B listens on both.
        var ipv6 = false

        static func labKind(_ k: String) -> String { k == "public" ? "open" : k }

        static func pair(_ a: String, _ b: String) -> Scenario {
            Scenario(a: a, b: b, spec: ["\(labKind(a)):a", "\(labKind(b)):b"], bPrivate: b != "public")
        }

        static func upnp(_ a: String) -> Scenario {
            Scenario(a: a, b: "upnp", spec: ["\(labKind(a)):a", "upnp:b"], upnpRouter: "b", bPrivate: true, bMapsPort: true)
        }

        static let sameLAN = Scenario(a: "home (same LAN)", b: "home", spec: ["home:a*2"], hostA: "a", hostB: "a2", bPrivate: true)

        static let ipv6Firewalls = Scenario(a: "IPv6 firewall", b: "IPv6 firewall", spec: ["fw6:a", "fw6:b"], bPrivate: true, ipv6: true)
    }

    /// One row: a lab of its own, `trials` trials.
    func pair(_ row: Scenario, bin: String) throws -> [String: Any] {
        let (kindA, kindB) = (row.a, row.b)
        let prefix = "mx" + String(format: "%04x", Int.random(in: 0...0xffff))
        let up = run("/bin/bash", [Self.natlab, "up", prefix, "pub:4"] + row.spec, timeout: 60)
        guard up.status == 0 else { throw ValidationError("natlab up failed: \(up.err)") }
        defer { _ = run("/bin/bash", [Self.natlab, "down", prefix], timeout: 60) }
        var ip: [String: (ns: String, ip: String)] = [:]
        for line in up.out.split(separator: "\n") {
            let f = line.split(separator: " ").map(String.init)
            if f.count == 3 { ip[f[0]] = (f[1], f[2]) }
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("natmatrix-\(prefix)")
        defer { try? FileManager.default.removeItem(at: dir) }
        var daemons: [Process] = []
        defer { for d in daemons { d.terminate(); d.waitUntilExit() } }
        if let r = row.upnpRouter {
            let u = run("/bin/bash", [Self.natlab, "upnpd", prefix, r, "start"], timeout: 60)
            guard u.status == 0 else { throw ValidationError("natlab upnpd failed: \(u.err)") }
        }
        var bootstrap: [String] = []
        for i in 1...4 {
            let h = ip["pub\(i)"]!
            let extra = i == 1 ? ["--relay", "--relay-when", "always"] : []
            let h6 = ip["pub\(i)-v6"]
            let listen6 = row.ipv6 && h6 != nil ? ["--listen", "/ip6/\(h6!.ip)/tcp/4001"] : []
            let (p, id) = try startNode(bin, ns: h.ns, listen: "/ip4/\(h.ip)/tcp/4001", dir: dir.appendingPathComponent("pub\(i)"),
                                        extra: extra + ["--auto-relay", "off"] + listen6)
            daemons.append(p)
            bootstrap.append(row.ipv6 && h6 != nil ? "/ip6/\(h6!.ip)/tcp/4001/p2p/\(id)" : "/ip4/\(h.ip)/tcp/4001/p2p/\(id)")
        }
        var direct = 0, relayed = 0, failed = 0
        var directMs: [Double] = []
        var reasons: [String: Int] = [:]
        var ways: [String: Int] = [:]
        for t in 0..<trials {
            _ = run("/bin/bash", [Self.natlab, "flush", prefix], timeout: 30)
            let bDir = dir.appendingPathComponent("b-\(t)")
            let bExtra = (row.bPrivate ? ["--auto-relay", "always"] : ["--auto-relay", "off"]) + ["--dht-mode", "client", "--no-mdns"]
                + (row.ipv6 ? ["--listen", "/ip6/::/tcp/4001"] : []) + bootstrap.flatMap { ["--bootstrap", $0] }
            let (bNode, bID): (Process, String)
            do {
                (bNode, bID) = try startNode(bin, ns: ip[row.hostB]!.ns, listen: "/ip4/0.0.0.0/tcp/4001", dir: bDir, extra: bExtra)
            } catch {
                failed += 1; reasons["target did not start", default: 0] += 1; continue
            }
            defer { bNode.terminate(); bNode.waitUntilExit() }
            // A private target is ready once it holds a reservation (its presence then has the relayed address).
            if row.bMapsPort {
                // Ready once its mapped address is confirmed (then it publishes it).
                let deadline = Date().addingTimeInterval(20)
                while Date() < deadline, !mapped(bin, bDir) { usleep(200_000) }
                usleep(500_000)
            } else if row.bPrivate {
                let deadline = Date().addingTimeInterval(20)
                while Date() < deadline, !reserved(bin, bDir) { usleep(200_000) }
            } else {
                usleep(500_000)
            }
            let d = run("/usr/sbin/ip", ["netns", "exec", ip[row.hostA]!.ns, bin, "dial", bID, "--data-dir", dir.appendingPathComponent("a-\(t)").path,
                                         "--json", "--dht-mode", "client", "--peers-file", "/dev/null", "--log-level", "error",
                                         "--direct-timeout", "2", "--upgrade-wait", "20"] + bootstrap.flatMap { ["--bootstrap", $0] }, timeout: 90)
            let line = d.out.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? ""
            guard let r = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any], let how = r["how"] as? String else {
                failed += 1
                let why = d.err.split(separator: "\n").last.map(String.init) ?? "no output"
                reasons[String(why.prefix(100)), default: 0] += 1
                continue
            }
            switch how {
            case "direct":
                direct += 1; ways["direct dial (\(r["path"] as? String ?? "?"))", default: 0] += 1
            case "upgraded":
                direct += 1
                ways[(r["upgrade"] as? String) ?? "upgraded", default: 0] += 1
                if let ms = r["upgrade_ms"] as? Double { directMs.append(ms) }
            default:
                relayed += 1
                reasons[String(((r["why_relayed"] as? String) ?? "?").prefix(100)), default: 0] += 1
            }
        }
        return ["a": kindA, "b": kindB, "trials": trials, "direct": direct, "relayed": relayed, "failed": failed,
                "direct_ms": directMs, "ways": ways, "reasons": reasons]
    }

    func mapped(_ bin: String, _ dir: URL) -> Bool {
        let out = run(bin, ["relays", "--data-dir", dir.path, "--json"], timeout: 10)
        let obj = (try? JSONSerialization.jsonObject(with: Data(out.out.utf8))) as? [String: Any]
        return ((obj?["port_mappings"] as? [[String: Any]]) ?? []).contains { $0["state"] as? String == "confirmed" }
    }

    func reserved(_ bin: String, _ dir: URL) -> Bool {
        let out = run(bin, ["relays", "--data-dir", dir.path, "--json"], timeout: 10)
        let obj = (try? JSONSerialization.jsonObject(with: Data(out.out.utf8))) as? [String: Any]
        return !((obj?["held"] as? [Any]) ?? []).isEmpty
    }

    /// Starts `cairn node` in namespace `ns`; returns it and its peer ID once it listens.
    func startNode(_ bin: String, ns: String, listen: String, dir: URL, extra: [String]) throws -> (Process, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", ns, bin, "node", "--data-dir", dir.path, "--listen", listen, "--peers-file", "/dev/null",
                       "--no-stun", "--log-level", "error"] + extra
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        var text = ""
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            text += String(decoding: d, as: UTF8.self)
            if let idLine = text.split(separator: "\n").first(where: { $0.hasPrefix("peer id: ") }), text.contains("listening on ") {
                return (p, String(idLine.dropFirst("peer id: ".count)))
            }
        }
        p.terminate()
        throw ValidationError("cairn node in \(ns) did not start: \(text)")
    }

    /// Runs a program to completion (killed after `timeout` s); its exit status, stdout, stderr
    /// (through files: nothing to drain while it runs).
    func run(_ exe: String, _ args: [String], timeout: Double) -> (status: Int32, out: String, err: String) {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("natmatrix-run-\(UUID().uuidString)")
        let outURL = base.appendingPathExtension("out"), errURL = base.appendingPathExtension("err")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outURL); try? FileManager.default.removeItem(at: errURL) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        guard let o = try? FileHandle(forWritingTo: outURL), let e = try? FileHandle(forWritingTo: errURL) else { return (-1, "", "no temp files") }
        p.standardOutput = o
        p.standardError = e
        do { try p.run() } catch { return (-1, "", "\(error)") }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { p.terminate(); usleep(500_000); if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        p.waitUntilExit()
        try? o.close(); try? e.close()
        let out = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        return (p.terminationStatus, out, err)
    }
}
