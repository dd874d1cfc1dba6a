import Foundation
import XCTest

/// `cairn` processes in a NAT lab: running nodes, their `relays.json` status, and one-shot
/// `cairn dial` runs (shared by the relay and hole-punching lab tests).
final class LabNodes: @unchecked Sendable {
    let lab: NATLab
    let bin = CLITests.productsDirectory.appendingPathComponent("cairn").path
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("labnodes-" + UUID().uuidString)
    private(set) var running: [String: NATLab.Spawned] = [:]

    init(_ lab: NATLab) { self.lab = lab }

    func cleanUp() { try? FileManager.default.removeItem(at: dir) }

    /// Starts `cairn node` named `name` on `host`, listening on `listenIP`:4001; returns its peer ID.
    @discardableResult
    func start(_ host: NATLab.Host, name: String, listenIP: String, extra: [String]) throws -> String {
        let node = try lab.spawn(in: host, [bin, "node", "--data-dir", dir.appendingPathComponent(name).path,
                                            "--listen", "/ip4/\(listenIP)/tcp/4001", "--peers-file", "/dev/null", "--no-stun",
                                            "--log-level", "warning"] + extra)
        running[name] = node
        let deadline = Date().addingTimeInterval(20)
        var id: String?
        while Date() < deadline, let line = node.nextLine(timeout: 20) {
            if line.hasPrefix("peer id: ") { id = String(line.dropFirst("peer id: ".count)) }
            if line.hasPrefix("listening on ") && !line.contains("/127.0.0.1/"), let id { return id }
        }
        throw NATLab.LabError.setupFailed("\(name) did not start")
    }

    /// Stops a node: at once (grace 0), or politely (stdin closed, SIGTERM) so it can clean up.
    func stop(_ name: String, grace: Double = 0) { running[name]?.stop(grace: grace) }

    /// `cairn relays --json` of a running node.
    func status(_ name: String) -> [String: Any]? {
        let out = NATLab.execute(bin, ["relays", "--data-dir", dir.appendingPathComponent(name).path, "--json"], timeout: 10)
        return (try? JSONSerialization.jsonObject(with: Data(out.stdout.utf8))) as? [String: Any]
    }

    func heldRelays(_ name: String) -> Set<String> {
        Set((status(name)?["held"] as? [[String: Any]] ?? []).compactMap { $0["relay"] as? String })
    }

    func waitFor(_ what: String, timeout: Double, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            if Date() > deadline { throw NATLab.LabError.commandFailed("timed out after \(timeout) s waiting for \(what)") }
            usleep(250_000)
        }
    }

    /// One-shot `cairn dial --json` from `host` (identity `name`), resolving `peer` through `bootstrap`.
    func dial(from host: NATLab.Host, name: String, peer: String, bootstrap: [String], extra: [String] = [], timeout: Double = 90) -> [String: Any] {
        let out = lab.run(in: host, [bin, "dial", peer, "--data-dir", dir.appendingPathComponent(name).path, "--json",
                                     "--dht-mode", "client", "--peers-file", "/dev/null", "--log-level", "error"]
                          + extra + bootstrap.flatMap { ["--bootstrap", $0] }, timeout: timeout)
        let line = out.stdout.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? ""
        return ((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]) ?? ["error": "\(out)"]
    }
}
