import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A NAT lab for tests: network namespaces, veth pairs, a bridge and nftables, built by
/// bootstrap/natlab.sh (read that script's header for the topology and the NAT kinds).
///
///     let lab = try NATLab(spec: ["pub:2", "home:a", "symmetric:b"])
///     addTeardownBlock { lab.tearDown() }
///     let pub1 = try lab.host("pub1"), a = try lab.host("a"), ra = try lab.router("a")
///     let out = lab.run(in: a, ["/usr/bin/python3", "-c", "print(1)"])
///
/// Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip` and `nft`. Without them the tests skip,
/// saying why — unless CAIRN_REQUIRE_LAB=1 (CI), where they fail instead.
final class NATLab: @unchecked Sendable {
    struct Host: Hashable, Sendable, CustomStringConvertible {
        /// `pubN`, a LAN host's NAME, or `r-NAME` for a router (its `ip` is the WAN address).
        let name: String
        let netns: String
        let ip: String
        var description: String { "\(name)(\(ip))" }
    }

    struct Output: Sendable {
        var status: Int32
        var stdout: String
        var stderr: String
        var timedOut: Bool
    }

    enum LabError: Error, CustomStringConvertible {
        case unavailable(String)
        case setupFailed(String)
        case unknownHost(String)
        case commandFailed(String)
        var description: String {
            switch self {
            case .unavailable(let s): return "NAT lab unavailable: \(s)"
            case .setupFailed(let s): return "NAT lab setup failed: \(s)"
            case .unknownHost(let s): return "NAT lab has no host named \(s)"
            case .commandFailed(let s): return "NAT lab command failed: \(s)"
            }
        }
    }

    // MARK: Availability

    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let script = repoRoot.appendingPathComponent("bootstrap/natlab.sh").path

    static func which(_ tool: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        for d in dirs where FileManager.default.isExecutableFile(atPath: d + "/" + tool) { return d + "/" + tool }
        return nil
    }

    /// Why the lab cannot run here, or nil when it can.
    static var skipReason: String? {
        var why: [String] = []
        if geteuid() != 0 { why.append("not root (euid \(geteuid()))") } else if let caps = effectiveCapabilities() {
            // Root in an unprivileged container lacks these; netns and nft need them.
            if caps & (1 << 12) == 0 { why.append("no CAP_NET_ADMIN") }
            if caps & (1 << 21) == 0 { why.append("no CAP_SYS_ADMIN") }
        }
        if which("ip") == nil { why.append("`ip` (iproute2) not found") }
        if which("nft") == nil { why.append("`nft` (nftables) not found") }
        if which("bash") == nil { why.append("`bash` not found") }
        if !FileManager.default.fileExists(atPath: script) { why.append("\(script) missing") }
        return why.isEmpty ? nil : why.joined(separator: "; ")
    }

    static var isAvailable: Bool { skipReason == nil }

    static var required: Bool { ProcessInfo.processInfo.environment["CAIRN_REQUIRE_LAB"] == "1" }

    /// Throws XCTSkip with `reason`, or an error that fails the test when CAIRN_REQUIRE_LAB=1.
    static func skipOrFail(_ reason: String) throws -> Never {
        if required { throw LabError.unavailable(reason + " (CAIRN_REQUIRE_LAB=1, so this fails instead of skipping)") }
        throw XCTSkip(reason)
    }

    static func requireAvailable() throws {
        if let why = skipReason { try skipOrFail("needs root, ip and nft: \(why)") }
    }

    private static func effectiveCapabilities() -> UInt64? {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let hex = line.split(separator: "\t").last ?? line.split(separator: " ").last else { return nil }
        return UInt64(hex.trimmingCharacters(in: .whitespaces), radix: 16)
    }

    static func randomPrefix() -> String { "cl" + String(format: "%04x", Int.random(in: 0...0xffff)) }

    /// Namespaces whose names start with `prefix-`.
    static func namespaces(withPrefix prefix: String) -> [String] {
        guard let ip = which("ip") else { return [] }
        let out = execute(ip, ["netns", "list"], timeout: 10)
        return out.stdout.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
            .filter { $0.hasPrefix(prefix + "-") }
    }

    // MARK: The lab

    let prefix: String
    let spec: [String]
    /// Every host in the order natlab.sh printed them (public hosts, then per router: router, LAN host).
    let hosts: [Host]
    /// Seconds `natlab.sh up` took.
    let setupSeconds: Double
    private let ipPath: String
    private let lock = NSLock()
    private var spawned: [Spawned] = []
    private var tornDown = false

    /// Builds the lab (`natlab.sh up`). `spec` as for natlab.sh: "pub:N", "fullcone:NAME",
    /// "home:NAME", "symmetric:NAME", "open:NAME". Without `prefix`, a fresh random one.
    init(spec: [String], prefix: String? = nil) throws {
        try NATLab.requireAvailable()
        signal(SIGPIPE, SIG_IGN)  // writing to a dead child's stdin must not kill the test runner
        ipPath = NATLab.which("ip")!
        self.spec = spec
        let owner = ["NATLAB_OWNER": String(ProcessInfo.processInfo.processIdentifier)]
        // Remove labs left behind by test runs that crashed (their owner process is gone).
        _ = NATLab.execute("/bin/bash", [NATLab.script, "gc"], timeout: 60, environment: owner)
        var attempt = 0
        while true {
            attempt += 1
            let p = prefix ?? NATLab.randomPrefix()
            let start = Date()
            let out = NATLab.execute("/bin/bash", [NATLab.script, "up", p] + spec, timeout: 60, environment: owner)
            if out.status == 0 && !out.timedOut {
                self.prefix = p
                self.setupSeconds = Date().timeIntervalSince(start)
                hosts = out.stdout.split(separator: "\n").compactMap { line in
                    let f = line.split(separator: " ").map(String.init)
                    return f.count == 3 ? Host(name: f[0], netns: f[1], ip: f[2]) : nil
                }
                return
            }
            _ = NATLab.execute("/bin/bash", [NATLab.script, "down", p], timeout: 60)
            // A random prefix may collide with a concurrent run's; try another.
            if prefix == nil && attempt < 3 && out.stderr.contains("exist") { continue }
            throw LabError.setupFailed("natlab.sh up \(p) \(spec.joined(separator: " ")) -> status \(out.status)"
                + (out.timedOut ? " (timed out)" : "") + ": " + out.stderr)
        }
    }

    deinit { tearDown() }

    func host(_ name: String) throws -> Host {
        guard let h = hosts.first(where: { $0.name == name }) else { throw LabError.unknownHost(name) }
        return h
    }

    /// The NAT router in front of LAN host `name` (its `ip` is the router's WAN address).
    func router(_ name: String) throws -> Host { try host("r-" + name) }

    /// Runs `argv` inside `host`'s namespace to completion, bounded by `timeout` seconds
    /// (then killed, `timedOut` set).
    func run(in host: Host, _ argv: [String], timeout: Double = 10, input: String? = nil) -> Output {
        NATLab.execute(ipPath, ["netns", "exec", host.netns] + argv, timeout: timeout, input: input)
    }

    /// Starts a long-running `argv` in `host`'s namespace. Its stdin is a pipe (closing it is the
    /// polite way to stop our helpers); it is killed at `tearDown()` if still running.
    func spawn(in host: Host, _ argv: [String]) throws -> Spawned {
        let s = try Spawned(executable: ipPath, arguments: ["netns", "exec", host.netns] + argv, label: "\(host.name): \(argv.joined(separator: " "))")
        lock.lock()
        let late = tornDown
        spawned.append(s)
        lock.unlock()
        if late { s.stop(); throw LabError.commandFailed("spawn after tearDown") }
        return s
    }

    /// `conntrack -F` in every router (and forget full-cone mappings): a fresh start for a trial.
    func flush() throws {
        let out = NATLab.execute("/bin/bash", [NATLab.script, "flush", prefix], timeout: 30)
        if out.status != 0 { throw LabError.commandFailed("natlab.sh flush: \(out.stderr)") }
    }

    /// Starts (or restarts) miniupnpd on the `upnp` router in front of `name`, or stops it and
    /// forgets its mappings (`natlab.sh upnpd`; options `--only upnp|pmp`, `--claim IP`).
    func upnpd(_ name: String, start: Bool, options: [String] = []) throws {
        let out = NATLab.execute("/bin/bash", [NATLab.script, "upnpd", prefix, name, start ? "start" : "stop"] + options, timeout: 40)
        if out.status != 0 || out.timedOut { throw LabError.commandFailed("natlab.sh upnpd \(name) \(start ? "start" : "stop"): \(out.stderr)") }
    }

    /// Why the lab's UPnP routers cannot run here (miniupnpd or python3 missing), or nil.
    static var upnpSkipReason: String? {
        var why: [String] = []
        if !FileManager.default.isExecutableFile(atPath: "/usr/sbin/miniupnpd") { why.append("/usr/sbin/miniupnpd missing (apt-get install miniupnpd-nftables)") }
        if which("python3") == nil { why.append("python3 missing (the lab's STUN responder for miniupnpd)") }
        if which("conntrack") == nil { why.append("conntrack missing") }
        return why.isEmpty ? nil : why.joined(separator: "; ")
    }

    /// The packet count of the nftables rule in `host` whose comment is `comment` (the routers'
    /// drop rules: "wan-new-drop", "wan-invalid-drop", "fwd-drop").
    func nftCounter(in host: Host, comment: String) throws -> Int {
        let out = run(in: host, ["nft", "list", "ruleset"])
        guard out.status == 0 else { throw LabError.commandFailed("nft list ruleset in \(host.netns): \(out.stderr)") }
        for line in out.stdout.split(separator: "\n") where line.contains("comment \"\(comment)\"") {
            let words = line.split(separator: " ").map(String.init)
            if let i = words.firstIndex(of: "packets"), i + 1 < words.count, let n = Int(words[i + 1]) { return n }
        }
        throw LabError.commandFailed("no counter with comment \(comment) in \(host.netns)")
    }

    /// Kills every spawned process and deletes every namespace of the lab. Idempotent; call it
    /// from `addTeardownBlock` so it also runs after a failure.
    func tearDown() {
        lock.lock()
        let procs = spawned
        spawned = []
        let already = tornDown
        tornDown = true
        lock.unlock()
        for p in procs { p.stop() }
        if already { return }
        let start = Date()
        let out = NATLab.execute("/bin/bash", [NATLab.script, "down", prefix], timeout: 60)
        teardownSeconds = Date().timeIntervalSince(start)
        if out.status != 0 {
            FileHandle.standardError.write(Data("NATLab: natlab.sh down \(prefix) failed: \(out.stderr)\n".utf8))
        }
    }

    /// Seconds `natlab.sh down` took (after `tearDown()`).
    private(set) var teardownSeconds: Double?

    // MARK: Processes

    /// Output collected from a child's pipe by a reader thread.
    final class Buffer: @unchecked Sendable {
        private let lock = NSLock()
        private var data = Data()
        private var lineStart = 0
        private var eof = false

        func append(_ d: Data) { lock.lock(); data.append(d); lock.unlock() }
        func finish() { lock.lock(); eof = true; lock.unlock() }
        var finished: Bool { lock.lock(); defer { lock.unlock() }; return eof }
        var string: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }

        /// The next complete line not yet returned, if any.
        func takeLine() -> String? {
            lock.lock(); defer { lock.unlock() }
            guard let nl = data[lineStart...].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
            let line = String(decoding: data[lineStart..<nl], as: UTF8.self)
            lineStart = nl + 1
            return line
        }

        /// Reads `fd` until EOF on a thread of its own, then closes it.
        func drain(_ fd: Int32) {
            Thread.detachNewThread { [self] in
                var buf = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n > 0 { append(Data(buf[0..<n])); continue }
                    if n < 0 && errno == EINTR { continue }
                    break
                }
                close(fd)
                finish()
            }
        }
    }

    /// A running child process with piped stdin, stdout and stderr.
    final class Spawned: @unchecked Sendable {
        let process = Process()
        let label: String
        let stdout = Buffer()
        let stderr = Buffer()
        private let stdinPipe = Pipe()

        init(executable: String, arguments: [String], label: String, environment: [String: String]? = nil) throws {
            self.label = label
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            if let environment {
                process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
            }
            let out = Pipe(), err = Pipe()
            process.standardInput = stdinPipe
            process.standardOutput = out
            process.standardError = err
            try process.run()
            // Own the read ends' descriptors (dup: the FileHandles close theirs when released).
            stdout.drain(dup(out.fileHandleForReading.fileDescriptor))
            stderr.drain(dup(err.fileHandleForReading.fileDescriptor))
            try? out.fileHandleForReading.close()
            try? err.fileHandleForReading.close()
        }

        var pid: Int32 { process.processIdentifier }
        var isRunning: Bool { process.isRunning }

        /// Writes `line` + "\n" to the child's stdin; false if it is gone.
        @discardableResult
        func send(_ line: String) -> Bool {
            let bytes = Array((line + "\n").utf8)
            let fd = stdinPipe.fileHandleForWriting.fileDescriptor
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if n > 0 { off += n } else if n < 0 && errno == EINTR { continue } else { return false }
            }
            return true
        }

        /// The next stdout line, waiting at most `timeout` seconds.
        func nextLine(timeout: Double) -> String? {
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                if let l = stdout.takeLine() { return l }
                if stdout.finished || Date() >= deadline { return stdout.takeLine() }
                usleep(5_000)
            }
        }

        /// Waits at most `timeout` seconds for exit; true if it exited.
        @discardableResult
        func wait(timeout: Double) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(5_000) }
            return !process.isRunning
        }

        /// Closes the child's stdin (EOF for it).
        func closeStdin() { try? stdinPipe.fileHandleForWriting.close() }

        /// Closes stdin, then SIGTERM, then SIGKILL, each after a short grace; waits for exit.
        func stop(grace: Double = 1) {
            closeStdin()
            if !wait(timeout: grace) {
                process.terminate()
                if !wait(timeout: grace) { kill(process.processIdentifier, SIGKILL) }
            }
            process.waitUntilExit()
        }
    }

    /// Runs a command to completion, bounded by `timeout` seconds.
    static func execute(_ executable: String, _ arguments: [String], timeout: Double,
                        input: String? = nil, environment: [String: String]? = nil) -> Output {
        let s: Spawned
        do {
            s = try Spawned(executable: executable, arguments: arguments, label: executable, environment: environment)
        } catch {
            return Output(status: -1, stdout: "", stderr: "could not start \(executable): \(error)", timedOut: false)
        }
        if let input { s.send(input) }
        s.closeStdin()
        let exited = s.wait(timeout: timeout)
        if !exited { s.stop(grace: 0.5) }
        s.process.waitUntilExit()
        // The reader threads see EOF once the child (and anything it left running) has gone.
        let deadline = Date().addingTimeInterval(2)
        while !(s.stdout.finished && s.stderr.finished) && Date() < deadline { usleep(2_000) }
        return Output(status: s.process.terminationStatus, stdout: s.stdout.string, stderr: s.stderr.string, timedOut: !exited)
    }
}
