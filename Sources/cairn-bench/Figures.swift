import ArgumentParser
import CairnCore
import CairnCrypto
import CairnNode
import Foundation
import Logging
import NIOCore
import NIOPosix

/// The costs of the cryptography every byte and every connection needs, measured with libsodium
/// in this process: the limits the other figures are compared with.
struct CryptoCosts {
    /// ChaCha20-Poly1305 (IETF) encryption of Noise-sized frames (65,519 bytes), one core.
    var chachaMiBs: Double
    var x25519KeygenMicros: Double
    var x25519DHMicros: Double
    var ed25519SignMicros: Double
    var ed25519VerifyMicros: Double

    /// CPU a connection costs both of its ends (both are in this process in the setup
    /// measurement). Each side: two X25519 key generations (Noise's static and ephemeral keys
    /// are made per handshake), three DH (ee, es, se), one Ed25519 signature (its Noise
    /// identity payload) and two verifications (the peer's Noise payload and its signed peer
    /// record in identify).
    var setupMicrosBothEnds: Double {
        2 * (2 * x25519KeygenMicros + 3 * x25519DHMicros + ed25519SignMicros + 2 * ed25519VerifyMicros)
    }

    /// Connections per second the cores could set up if they did nothing but that crypto.
    func setupLimitPerSecond(cores: Int) -> Double { Double(cores) * 1e6 / setupMicrosBothEnds }

    static func measure() -> CryptoCosts {
        let clock = ContinuousClock()
        func micros(_ n: Int, _ body: () -> Void) -> Double {
            for _ in 0..<max(1, n / 20) { body() }  // warm up
            let t = clock.now
            for _ in 0..<n { body() }
            return seconds(clock.now - t) * 1e6 / Double(n)
        }
        // Encryption straight into an output buffer, as the Noise transport does.
        let key = secureRandomBytes(32), nonce = [UInt8](repeating: 0, count: 12)
        let plain = [UInt8](repeating: 0x5a, count: NoiseTransport.maxPlaintextPerFrame)
        var out = [UInt8](repeating: 0, count: plain.count + 16)
        var frames = 0
        let t = clock.now
        while seconds(clock.now - t) < 1 || frames < 100 {
            plain.withUnsafeBytes { p in out.withUnsafeMutableBytes { o in _ = ChaChaPoly.seal(key: key, nonce: nonce, plaintext: p, into: o) } }
            frames += 1
        }
        let chacha = Double(frames * plain.count) / 1_048_576 / seconds(clock.now - t)

        let peer = X25519PrivateKey()
        let keygen = micros(2000) { _ = X25519PrivateKey() }
        let a = X25519PrivateKey()
        let dh = micros(2000) { _ = try? a.sharedSecret(with: peer.publicKey) }
        let signer = Ed25519PrivateKey()
        let message = [UInt8](repeating: 7, count: 100)
        let sign = micros(4000) { _ = signer.signature(for: message) }
        let signature = signer.signature(for: message)
        let verify = micros(2000) { _ = signer.publicKey.isValidSignature(signature, for: message) }
        return CryptoCosts(chachaMiBs: chacha, x25519KeygenMicros: keygen, x25519DHMicros: dh, ed25519SignMicros: sign, ed25519VerifyMicros: verify)
    }
}

/// A node configuration for the benchmarks: loopback is allow-listed, so the resource manager
/// counts nothing and refuses nothing (a benchmark's many connections from one address and one
/// peer are not an attack).
func benchNodeConfiguration() -> Node.Configuration {
    var c = Node.Configuration()
    c.swarm.resources.allow = [ResourceManager.AllowEntry("127.0.0.0/8")!]
    return c
}

/// Connection setups with `inFlight` at a time (each: TCP, Noise, Yamux, identify both ways, one
/// ping, close), from one client node to one server node in this process.
func concurrentSetups(total: Int, inFlight: Int, logger: Logger) async throws -> (perSecond: Double, medianMillis: Double) {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
    let server = Node(identity: .generate(), configuration: benchNodeConfiguration(), group: group, logger: logger)
    let addr = try await server.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])[0].appending(.p2p(server.peerID))
    let client = Node(identity: .generate(), configuration: benchNodeConfiguration(), group: group, logger: logger)
    let clock = ContinuousClock()
    func one() async throws -> Double {
        let s = clock.now
        let c = try await client.dial(addr)
        _ = try await client.ping(c, count: 1)
        await c.close()
        return seconds(clock.now - s) * 1000
    }
    for _ in 0..<inFlight { _ = try await one() }  // warm up
    let t0 = clock.now
    let latencies = try await withThrowingTaskGroup(of: [Double].self) { g in
        for w in 0..<inFlight {
            let share = total / inFlight + (w < total % inFlight ? 1 : 0)
            g.addTask {
                var l: [Double] = []
                for _ in 0..<share { l.append(try await one()) }
                return l
            }
        }
        var all: [Double] = []
        for try await l in g { all += l }
        return all.sorted()
    }
    let rate = Double(total) / seconds(clock.now - t0)
    await client.shutdown()
    await server.shutdown()
    try await group.shutdownGracefully()
    return (rate, latencies[latencies.count / 2])
}

/// Resident memory of a process, from /proc/PID/status (VmRSS), in KiB.
func residentKiB(_ pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
    return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
}

/// Starts `cairn node` with `arguments` (plus a scratch data directory) and waits for its
/// "listening on" line; the process, the address it listens on and the data directory (the
/// caller removes it). `CAIRN_BENCH_LOG=<level>` sets its log level and keeps its stderr.
func startNodeProcess(cairn: String, arguments: [String]) throws -> (Process, Multiaddr, URL) {
    let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-bench-\(UUID().uuidString)")
    let p = Process()
    p.executableURL = URL(fileURLWithPath: cairn)
    p.arguments = ["node", "--data-dir", dataDir.path] + arguments
    let out = Pipe()
    p.standardOutput = out
    if let level = ProcessInfo.processInfo.environment["CAIRN_BENCH_LOG"] { p.arguments! += ["--log-level", level] } else {
        p.standardError = FileHandle.nullDevice
    }
    try p.run()
    var buffered = ""
    while true {
        let d = out.fileHandleForReading.availableData
        guard !d.isEmpty else { throw ValidationError("the node process exited") }
        buffered += String(decoding: d, as: UTF8.self)
        if let line = buffered.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }) {
            return (p, try Multiaddr(String(line.dropFirst("listening on ".count))), dataDir)
        }
    }
}

/// Memory per idle connection: a `cairn node` process (release, no bootstrap peers, loopback
/// allow-listed) takes `count` connections, each from a peer of its own that ran identify and
/// then stays silent; the process's RSS after them less its RSS before, per connection.
func idleConnectionMemory(cairn: String, count: Int, logger: Logger) async throws -> (kibPerConnection: Double, before: Int, after: Int) {
    let (p, addr, dataDir) = try startNodeProcess(cairn: cairn, arguments: [
        "--listen", "/ip4/127.0.0.1/tcp/0", "--allow", "127.0.0.0/8", "--no-stun", "--auto-relay", "off",
        "--peers-file", "/dev/null", "--no-api", "--log-level", "error"])
    defer { p.terminate(); p.waitUntilExit(); try? FileManager.default.removeItem(at: dataDir) }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
    func settle() async throws { try await Task.sleep(for: .seconds(2)) }
    // Warm-up: a first round of connections makes the node's one-time allocations.
    var warm: [(Node, Connection)] = []
    for _ in 0..<20 {
        let n = Node(identity: .generate(), configuration: benchNodeConfiguration(), group: group, logger: logger)
        warm.append((n, try await n.dial(addr)))
    }
    try await settle()
    for (n, c) in warm { await c.close(); await n.shutdown() }
    try await settle()
    let before = residentKiB(p.processIdentifier)
    var clients: [(Node, Connection)] = []
    for _ in 0..<count {
        let n = Node(identity: .generate(), configuration: benchNodeConfiguration(), group: group, logger: logger)
        clients.append((n, try await n.dial(addr)))
    }
    try await settle()
    let after = residentKiB(p.processIdentifier)
    for (n, c) in clients { await c.close(); await n.shutdown() }
    try await group.shutdownGracefully()
    return (Double(after - before) / Double(count), before, after)
}
