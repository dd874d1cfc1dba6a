import ArgumentParser
import CairnCore
import CairnNode
import CairnProto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// DHT lookups over real sockets with part of the network gone (`cairn-bench --dht-churn N`): N
/// `cairn node` processes on 127.0.0.x (the soak's mesh, without its traffic) join and publish
/// their presence; then `kill -9` (or SIGSTOP: silently gone) of `fraction` of them (never the
/// bootstrap peer), and lookups
/// timed in wall-clock time from the survivors through their control APIs: `resolve` (the
/// presence record of a live peer: GET_VALUE, then peer routing — what `cairn dial` does first)
/// and `providers` of a key nobody provides (a GET_PROVIDERS walk to the key's k closest).
struct DHTChurnBench {
    let cairn: String
    let nodes: Int
    let fraction: Double
    let lookups: Int
    /// SIGSTOP instead of SIGKILL: the kernel still completes TCP handshakes into the stopped
    /// process's backlog but nothing ever answers, as with a peer that vanished behind a NAT
    /// (a killed process's port refuses at once, which loopback makes too easy).
    let silent: Bool

    func run() async throws -> [String: Any] {
        let soak = Soak(cairn: cairn, seconds: 0, nodes: nodes, churnEvery: 0, sampleEvery: 0, out: nil)
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-dht-churn-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let members = try soak.startMesh(in: root)
        defer { for m in members { m.process?.terminate(); m.process?.waitUntilExit() } }
        print("dht-churn: \(nodes) nodes up; letting them join and publish presence")
        try await Task.sleep(for: .seconds(10))
        var rng = SystemRandomNumberGenerator()
        let victims = Array(members.dropFirst().shuffled(using: &rng).prefix(Int(Double(nodes) * fraction)))
        for v in victims {
            if silent { Glibc.kill(v.pid, SIGSTOP) } else { soak.stop(v, kill: true) }
        }
        defer { if silent { for v in victims { Glibc.kill(v.pid, SIGCONT) } } }
        let alive = members.filter { m in !victims.contains { $0 === m } }
        print("dht-churn: \(silent ? "stopped" : "killed") \(victims.count) with \(silent ? "SIGSTOP" : "SIGKILL"); \(alive.count) left; \(lookups) lookups of each kind")
        var results: [String: Any] = ["nodes": nodes, "gone": victims.count, "how": silent ? "SIGSTOP" : "SIGKILL"]
        for kind in ["resolve", "providers"] {
            var times: [Double] = []
            var failures = 0
            for _ in 0..<lookups {
                let a = alive.randomElement(using: &rng)!
                var b = alive.randomElement(using: &rng)!
                while b === a { b = alive.randomElement(using: &rng)! }
                guard let target = try? PeerID(string: b.peerID) else { continue }
                let key = Data("dht-churn-\(b.peerID.suffix(6))".utf8)
                let clock = ContinuousClock()
                let t = clock.now
                do {
                    let control = a.control
                    try await withTimeout(.seconds(60)) {
                        _ = try await control.cairn { r in
                            if kind == "resolve" {
                                r.type = .resolve
                                r.peer = Data(target.bytes)
                            } else {
                                r.type = .providers  // a GET_PROVIDERS walk to the key's closest peers
                                r.key = key
                            }
                        }
                    }
                    let d = clock.now - t
                    times.append(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
                } catch {
                    failures += 1
                }
            }
            let s = times.sorted()
            func pct(_ p: Double) -> Double { s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count) * p))] }
            results[kind] = ["ok": s.count, "failed": failures, "median_s": pct(0.5), "p90_s": pct(0.9), "p99_s": pct(0.99), "max_s": s.last ?? 0]
            print(String(format: "dht-churn: %@ %d ok, %d failed; median %.3f s, p90 %.3f s, p99 %.3f s",
                         kind, s.count, failures, pct(0.5), pct(0.9), pct(0.99)))
        }
        return results
    }
}
