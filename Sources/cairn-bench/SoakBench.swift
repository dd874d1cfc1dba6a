import ArgumentParser
import CairnCore
import CairnNode
import CairnProto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The soak (`cairn-bench --soak SECONDS`): a loopback mesh of `cairn node` processes, each on
/// its own 127.0.0.x address, node 0 the bootstrap peer and a relay. For the given time it drives
/// DHT traffic (publish, resolve, provide, providers), direct streams (pings through the dialer)
/// and relayed streams (a dial through the relay, then pings) through each node's control API,
/// kills and restarts nodes (SIGKILL and SIGTERM in turn, same identity and address), and
/// samples every node's RSS, descriptors, threads and task count (`cairn_tasks` from its metrics
/// endpoint). An operation fails "expectedly" when one of its two nodes is down or was restarted
/// in the last `settle` seconds; any other failure counts as unexpected.
struct Soak {
    let cairn: String
    let seconds: Double
    let nodes: Int
    let churnEvery: Double
    let sampleEvery: Double
    let settle: Double = 20
    /// How long a killed node stays down before it restarts.
    let downtime: Double = 5
    let out: String?

    final class Member: @unchecked Sendable {
        let index: Int
        let ip: String
        let dataDir: URL
        var process: Process?
        var peerID = ""
        var address = ""
        var metricsURL = ""
        var restartedAt = Date.distantPast
        var restarts = 0
        init(index: Int, ip: String, dataDir: URL) {
            self.index = index
            self.ip = ip
            self.dataDir = dataDir
        }
        var control: ControlClient { ControlClient(address: Multiaddr(components: [.unix(dataDir.appendingPathComponent("api.sock").path)])) }
        var pid: Int32 { process?.processIdentifier ?? 0 }
    }

    struct Sample: Codable {
        var t: Double
        var node: Int
        var rssKiB: Int
        var fds: Int
        var threads: Int
        var tasks: Int
        var connections: Int
    }

    func run() async throws -> [String: Any] {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-soak-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let members = try startMesh(in: root)
        defer { for m in members { m.process?.terminate(); m.process?.waitUntilExit() } }
        print("soak: \(nodes) nodes up; running \(Int(seconds)) s (churn every \(Int(churnEvery)) s, samples every \(Int(sampleEvery)) s)")
        try await Task.sleep(for: .seconds(5))  // joins and first presence records

        let began = Date()
        var samples: [Sample] = []
        var ops: [String: [String: Int]] = [:]
        var unexpected: [String] = []
        var churns = 0
        var nextChurn = began.addingTimeInterval(churnEvery)
        var down: [(Member, Date)] = []
        var nextSample = began
        var rng = SystemRandomNumberGenerator()
        let kinds = ["publish", "resolve", "provide", "providers", "ping", "relayed"]
        while Date().timeIntervalSince(began) < seconds {
            let now = Date()
            if now >= nextSample {
                for m in members where m.process?.isRunning == true { samples.append(await sample(m, t: now.timeIntervalSince(began))) }
                nextSample = now.addingTimeInterval(sampleEvery)
                let last = samples.suffix(nodes)
                print(String(format: "soak: t=%4.0fs rss %d–%d KiB, fds %d–%d, tasks %d–%d, ops ok %d, expected failures %d, unexpected %d",
                             now.timeIntervalSince(began), last.map(\.rssKiB).min() ?? 0, last.map(\.rssKiB).max() ?? 0,
                             last.map(\.fds).min() ?? 0, last.map(\.fds).max() ?? 0, last.map(\.tasks).min() ?? 0, last.map(\.tasks).max() ?? 0,
                             ops.values.reduce(0) { $0 + ($1["ok"] ?? 0) }, ops.values.reduce(0) { $0 + ($1["expected_failure"] ?? 0) },
                             unexpected.count))
                fflush(nil)
            }
            if now >= nextChurn {
                let victim = members[Int.random(in: 1..<nodes, using: &rng)]
                if !down.contains(where: { $0.0 === victim }) {
                    stop(victim, kill: churns % 2 == 0)
                    down.append((victim, now.addingTimeInterval(downtime)))
                    churns += 1
                }
                nextChurn = now.addingTimeInterval(churnEvery)
            }
            for (m, at) in down where at <= now {
                try start(m, bootstrap: members[0].address)
                m.restartedAt = Date()
            }
            down.removeAll { $0.1 <= now }
            // A burst of operations between random pairs, a few at a time.
            await withTaskGroup(of: (String, Member, Member, String?).self) { g in
                // Four distinct origins: two concurrent publishes of one node would race their
                // sequence numbers, and the older one is (rightly) refused as a rollback.
                for a in members.shuffled(using: &rng).prefix(4) {
                    let kind = kinds.randomElement(using: &rng)!
                    var b = members.randomElement(using: &rng)!
                    while b === a { b = members.randomElement(using: &rng)! }
                    let (pa, pb) = (a.peerID, b.peerID)
                    g.addTask { (kind, a, b, await self.operation(kind, from: a, to: b, peer: pb, own: pa)) }
                }
                for await (kind, a, b, failure) in g {
                    guard let failure else { ops[kind, default: [:]]["ok", default: 0] += 1; continue }
                    // Expected: one of the two ends is down or came back less than `settle` ago.
                    let recent = [a, b].contains { Date().timeIntervalSince($0.restartedAt) < settle || $0.process?.isRunning != true }
                    if recent || failure.hasPrefix("churned:") {
                        ops[kind, default: [:]]["expected_failure", default: 0] += 1
                    } else {
                        ops[kind, default: [:]]["unexpected_failure", default: 0] += 1
                        unexpected.append("\(kind): \(failure)")
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        var perNode: [[String: Any]] = []
        for m in members {
            let own = samples.filter { $0.node == m.index }
            // Since the node's last (re)start: the figures that must stay flat.
            let since = own.filter { $0.t >= m.restartedAt.timeIntervalSince(began) + settle }
            let series = since.isEmpty ? own : since
            perNode.append([
                "node": m.index, "restarts": m.restarts,
                "rss_kib_first": series.first?.rssKiB ?? 0, "rss_kib_last": series.last?.rssKiB ?? 0, "rss_kib_max": series.map(\.rssKiB).max() ?? 0,
                "fds_first": series.first?.fds ?? 0, "fds_last": series.last?.fds ?? 0, "fds_max": series.map(\.fds).max() ?? 0,
                "tasks_first": series.first?.tasks ?? 0, "tasks_last": series.last?.tasks ?? 0, "tasks_max": series.map(\.tasks).max() ?? 0,
                "threads_max": series.map(\.threads).max() ?? 0, "samples": series.count,
            ])
        }
        let result: [String: Any] = [
            "seconds": seconds, "nodes": nodes, "churns": churns, "operations": ops,
            "unexpected_failures": Array(unexpected.prefix(50)), "per_node": perNode,
        ]
        if let out {
            let data = try JSONSerialization.data(withJSONObject: ["summary": result, "samples": samples.map { s -> [String: Any] in
                ["t": s.t, "node": s.node, "rss_kib": s.rssKiB, "fds": s.fds, "threads": s.threads, "tasks": s.tasks, "connections": s.connections]
            }], options: [.sortedKeys])
            try data.write(to: URL(fileURLWithPath: out))
        }
        return result
    }

    // MARK: Processes

    /// Starts `nodes` nodes with their data directories under `root`, node i on 127.0.0.(10+i):
    /// node 0 first (the bootstrap peer and relay), then the others joining through it.
    func startMesh(in root: URL) throws -> [Member] {
        let members = (0..<nodes).map { Member(index: $0, ip: "127.0.0.\(10 + $0)", dataDir: root.appendingPathComponent("n\($0)")) }
        try start(members[0], bootstrap: nil)
        for m in members.dropFirst() { try start(m, bootstrap: members[0].address) }
        return members
    }

    func start(_ m: Member, bootstrap: String?) throws {
        try FileManager.default.createDirectory(at: m.dataDir, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cairn)
        var args = ["node", "--data-dir", m.dataDir.path, "--listen", "/ip4/\(m.ip)/tcp/0", "--metrics", "/ip4/127.0.0.1/tcp/0",
                    "--no-stun", "--auto-relay", "off", "--log-level", "warning", "--peers-file", "/dev/null"]
        if let bootstrap { args += ["--bootstrap", bootstrap] } else { args += ["--relay", "--relay-when", "always"] }
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        FileManager.default.createFile(atPath: m.dataDir.appendingPathComponent("node.log").path, contents: nil)
        p.standardError = try FileHandle(forWritingTo: m.dataDir.appendingPathComponent("node.log"))
        try p.run()
        m.process = p
        var buffered = ""
        while !buffered.contains("metrics on ") || !buffered.hasSuffix("\n") {
            let d = out.fileHandleForReading.availableData
            guard !d.isEmpty else { throw ValidationError("node \(m.index) exited at start: see \(m.dataDir.path)/node.log") }
            buffered += String(decoding: d, as: UTF8.self)
        }
        for line in buffered.split(separator: "\n") {
            if line.hasPrefix("peer id: ") { m.peerID = String(line.dropFirst("peer id: ".count)) }
            if line.hasPrefix("listening on ") { m.address = String(line.dropFirst("listening on ".count)) }
            if line.hasPrefix("metrics on ") { m.metricsURL = String(line.dropFirst("metrics on ".count)) }
        }
    }

    /// Stops a node (SIGKILL or SIGTERM); `start` brings it back with the same identity and address.
    func stop(_ m: Member, kill: Bool) {
        if let p = m.process {
            if kill { Glibc.kill(p.processIdentifier, SIGKILL) } else { p.terminate() }
            p.waitUntilExit()
        }
        m.restartedAt = Date()
        m.restarts += 1
    }

    // MARK: Operations

    /// Runs one operation on `a`'s node towards `b`; nil on success, else why it failed.
    func operation(_ kind: String, from a: Member, to b: Member, peer: String, own: String) async -> String? {
        let control = a.control
        guard let target = try? PeerID(string: peer) else { return "churned: no peer ID yet" }
        do {
            try await withTimeout(.seconds(30)) {
                _ = try await control.cairn { r in
                    switch kind {
                    case "publish":
                        r.type = .publish
                        r.name = "soak"
                        r.value = Data("\(own) at \(Date().timeIntervalSince1970)".utf8)
                        r.seconds = 600
                    case "resolve":
                        r.type = .resolve
                        r.peer = Data(target.bytes)
                    case "provide":
                        r.type = .provide
                        r.key = Data("soak-\(own.suffix(4))".utf8)
                    case "providers":
                        r.type = .providers
                        r.key = Data("soak-\(peer.suffix(4))".utf8)
                    case "ping":
                        r.type = .ping
                        r.peer = Data(target.bytes)
                        r.count = 2
                        r.interval = 0.05
                    default:  // relayed
                        r.type = .dial
                        r.peer = Data(target.bytes)
                        r.viaRelay = true
                        r.count = 2
                        r.interval = 0.05
                        r.seconds = 2
                    }
                }
            }
            return nil
        } catch {
            return "\(a.index)→\(b.index): \(error)"
        }
    }

    // MARK: Samples

    func sample(_ m: Member, t: Double) async -> Sample {
        let pid = m.pid
        var rss = 0, threads = 0
        if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) {
            for line in status.split(separator: "\n") {
                let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                if f.first == "VmRSS:", f.count > 1 { rss = Int(f[1]) ?? 0 }
                if f.first == "Threads:", f.count > 1 { threads = Int(f[1]) ?? 0 }
            }
        }
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
        var tasks = 0, connections = 0
        if let text = await httpGet(m.metricsURL) {
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else { continue }
                if line.hasPrefix("cairn_tasks ") { tasks = Int(v) }
                if line.hasPrefix("cairn_connections{") { connections += Int(v) }
            }
        }
        return Sample(t: t, node: m.index, rssKiB: rss, fds: fds, threads: threads, tasks: tasks, connections: connections)
    }
}

/// A plain HTTP/1.1 GET over a socket (the metrics endpoint on loopback); nil on any failure.
func httpGet(_ url: String) async -> String? {
    guard let u = URL(string: url), let host = u.host, let port = u.port else { return nil }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { return nil }
    let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard connected == 0 else { return nil }
    let request = Array("GET \(u.path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
    var response: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        response += buf[0..<n]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { return nil }
    return String(text[split.upperBound...])
}
