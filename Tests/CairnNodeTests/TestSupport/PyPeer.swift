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
        let py = venv + "/bin/python"
        if FileManager.default.isExecutableFile(atPath: py) { return py }
        let why = "py-libp2p interop venv not found at \(venv): run bootstrap/setup-interop.sh (needs Python >= 3.10 and PyPI)"
        if env["CAIRN_REQUIRE_INTEROP"] == "1" { XCTFail(why); throw XCTSkip(why) }
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

    /// A long-running `listen` peer; stops when its stdin closes.
    final class Listener {
        let process = Process()
        let stdin = Pipe()
        let out = LockedData()
        let err = LockedData()
        private(set) var peerID = ""
        private(set) var addrs: [String] = []

        init(extraArgs: [String] = []) throws {
            process.executableURL = URL(fileURLWithPath: try PyPeer.python())
            process.arguments = [PyPeer.script, "listen", "--port", "0", "--host", "127.0.0.1"] + extraArgs
            let o = Pipe(), e = Pipe()
            process.standardOutput = o
            process.standardError = e
            process.standardInput = stdin
            let out = self.out, err = self.err
            o.fileHandleForReading.readabilityHandler = { h in out.append(h.availableData) }
            e.fileHandleForReading.readabilityHandler = { h in err.append(h.availableData) }
            try process.run()
        }

        /// Waits for a JSON line whose "event" is `event` and that satisfies `match`.
        func waitFor(event: String, timeout: Double = 20, match: ([String: Any]) -> Bool = { _ in true }) async throws -> [String: Any] {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                for line in out.string.split(separator: "\n") {
                    guard let d = line.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else { continue }
                    if o["event"] as? String == event, match(o) { return o }
                }
                if !process.isRunning { break }
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            throw NSError(domain: "PyPeer", code: 1, userInfo: [NSLocalizedDescriptionKey:
                "no '\(event)' line from py peer; stdout: \(out.string.suffix(2000)) stderr: \(err.string.suffix(2000))"])
        }

        func start() async throws {
            let o = try await waitFor(event: "listening")
            peerID = o["peer_id"] as? String ?? ""
            addrs = o["addrs"] as? [String] ?? []
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
