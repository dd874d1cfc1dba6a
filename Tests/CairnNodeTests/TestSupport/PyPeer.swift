import Foundation
import XCTest

/// Runs the py-libp2p 0.8.1 interop peer (Tests/Interop/pypeer.py) from the venv made by
/// bootstrap/setup-interop.sh. Without that venv the interop tests skip, saying why — unless
/// CAIRN_REQUIRE_INTEROP=1 (set by bootstrap/test.sh, hence in CI), where they fail instead.
enum PyPeer {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let script = repoRoot.appendingPathComponent("Tests/Interop/pypeer.py").path

    static func python() throws -> String {
        let env = ProcessInfo.processInfo.environment
        let venv = env["CAIRN_PY_VENV"] ?? repoRoot.appendingPathComponent(".venv-interop").path
        return try interopPython(venv + "/bin/python", what: "py-libp2p interop venv", setup: "setup-interop.sh")
    }

    /// The Python of an interop venv, if it exists. Missing, the test skips with the reason —
    /// except under CAIRN_REQUIRE_INTEROP=1 (bootstrap/test.sh, hence CI), where it fails.
    static func interopPython(_ py: String, what: String, setup: String) throws -> String {
        if FileManager.default.isExecutableFile(atPath: py) { return py }
        let why = "\(what) not found at \(py): run bootstrap/\(setup) (needs Python >= 3.10 and PyPI)"
        if ProcessInfo.processInfo.environment["CAIRN_REQUIRE_INTEROP"] == "1" { XCTFail(why) }
        throw XCTSkip(why)
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        /// The last JSON object printed on stdout.
        var json: [String: Any] {
            for line in stdout.split(separator: "\n").reversed() {
                if let d = line.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] { return o }
            }
            return [:]
        }
    }

    /// Runs a one-shot mode (ping, identify) to completion, bounded by `timeout` seconds.
    static func run(_ args: [String], timeout: Double = 40) async throws -> Result {
        let (status, stdout, stderr) = try await runProcess(try python(), [script] + args, timeout: timeout)
        return Result(status: status, stdout: stdout, stderr: stderr)
    }

    /// A long-running py peer (`listen`, `dht-server`, …) that prints JSON lines and takes
    /// commands on its stdin; it stops when its stdin closes.
    final class Listener {
        let process = Process()
        let stdin = Pipe()
        let out = LockedData()
        let err = LockedData()
        private(set) var peerID = ""
        private(set) var addrs: [String] = []

        init(mode: String = "listen", extraArgs: [String] = []) throws {
            process.executableURL = URL(fileURLWithPath: try PyPeer.python())
            process.arguments = [PyPeer.script, mode, "--port", "0", "--host", "127.0.0.1"] + extraArgs
            let o = Pipe(), e = Pipe()
            process.standardOutput = o
            process.standardError = e
            process.standardInput = stdin
            let out = self.out, err = self.err
            o.fileHandleForReading.readabilityHandler = { h in out.append(h.availableData) }
            e.fileHandleForReading.readabilityHandler = { h in err.append(h.availableData) }
            try process.run()
        }

        /// Every JSON line printed so far.
        var lines: [[String: Any]] {
            out.string.split(separator: "\n").compactMap {
                guard let d = $0.data(using: .utf8) else { return nil }
                return try? JSONSerialization.jsonObject(with: d) as? [String: Any]
            }
        }

        /// Waits for the `skip`+1-th JSON line whose "event" is `event` and that satisfies
        /// `match`; fails at once if the peer reports an error.
        func waitFor(event: String, skip: Int = 0, timeout: Double = 20,
                     match: ([String: Any]) -> Bool = { _ in true }) async throws -> [String: Any] {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                let all = lines
                let hits = all.filter { $0["event"] as? String == event && match($0) }
                if hits.count > skip { return hits[skip] }
                if let e = all.first(where: { $0["event"] as? String == "error" }) {
                    throw NSError(domain: "PyPeer", code: 2, userInfo: [NSLocalizedDescriptionKey: "py peer error: \(e)"])
                }
                if !process.isRunning { break }
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            throw NSError(domain: "PyPeer", code: 1, userInfo: [NSLocalizedDescriptionKey:
                "no '\(event)' line from py peer; stdout: \(out.string.suffix(2000)) stderr: \(err.string.suffix(3000))"])
        }

        func start() async throws {
            let o = try await waitFor(event: "listening")
            peerID = o["peer_id"] as? String ?? ""
            addrs = o["addrs"] as? [String] ?? []
        }

        /// Sends one stdin command and waits for its reply line.
        func command(_ line: String, reply event: String) async throws -> [String: Any] {
            let before = lines.filter { $0["event"] as? String == event }.count
            stdin.fileHandleForWriting.write(Data((line + "\n").utf8))
            return try await waitFor(event: event, skip: before, timeout: 10)
        }

        func stop() {
            try? stdin.fileHandleForWriting.close()
            let deadline = Date().addingTimeInterval(5)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
    }
}

/// Runs a program to completion (killed after `timeout` seconds); returns its exit status and
/// what it printed.
func runProcess(_ executable: String, _ args: [String], timeout: Double) async throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    let outData = LockedData(), errData = LockedData()
    out.fileHandleForReading.readabilityHandler = { h in outData.append(h.availableData) }
    err.fileHandleForReading.readabilityHandler = { h in errData.append(h.availableData) }
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { try await Task.sleep(nanoseconds: 20_000_000) }
    if p.isRunning { p.terminate() }
    p.waitUntilExit()
    out.fileHandleForReading.readabilityHandler = nil
    err.fileHandleForReading.readabilityHandler = nil
    outData.append(out.fileHandleForReading.readDataToEndOfFile())
    errData.append(err.fileHandleForReading.readDataToEndOfFile())
    return (p.terminationStatus, outData.string, errData.string)
}

final class LockedData: @unchecked Sendable {
    private var data = Data()
    private let lock = NSLock()
    func append(_ d: Data) { lock.lock(); data.append(d); lock.unlock() }
    var string: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }
}
