import ArgumentParser
import CairnCore
import CairnNode
import Foundation
import Logging
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Loopback benchmark (run it in release: `swift run -c release cairn-bench`):
/// - connection establishments per second: TCP + multistream + Noise + Yamux + one ping, then close;
/// - bulk throughput of one Yamux stream;
/// - the same two figures for py-libp2p 0.8.1 (Tests/Interop/pybench.py) in the same run;
/// - raw TCP loopback throughput (blocking sockets) as the ceiling.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cairn-bench", abstract: "Loopback benchmark: Cairn vs py-libp2p vs raw TCP.")

    @Option(help: "Connections to establish (after 10 warm-up ones).") var conns = 500
    @Option(help: "MiB sent over one Yamux stream.") var mib = 1024
    @Option(help: "MiB sent over raw TCP.") var rawMib = 2048
    @Option(help: "py-libp2p connections.") var pyConns = 200
    @Option(help: "py-libp2p MiB over one stream.") var pyMib = 64
    @Flag(help: "Skip py-libp2p.") var noPy = false
    @Option(help: "MiB over one stream through a Cairn relay (a separate `cairn node --relay` process, limits raised) and directly, for comparison; 0 skips.")
    var relayMib = 256
    @Flag(help: "Only the relay measurement.") var relayOnly = false
    @Option(help: "MiB through `cairn p2p` forwarding (TCP → stream → TCP) and over one stream, in the same run; 0 skips.")
    var forwardMib = 256
    @Flag(help: "Only the forwarding measurement.") var forwardOnly = false
    @Option(help: "Python venv with libp2p 0.8.1 (default: $CAIRN_PY_VENV or .venv-interop).") var pyVenv: String?
    @Option(help: "Connection setups measured with 64 in flight.") var concurrentConns = 2000
    @Option(help: "Connections in flight for the concurrent setup figure.") var inFlight = 64
    @Option(help: "Idle connections held open to a `cairn node` process for the memory figure; 0 skips.") var idleConns = 1000
    @Option(help: "Short connections through the TCP forwards (Cairn and kubo).") var forwardConns = 500
    @Option(help: "kubo's Python (kubo-python 0.1.5) for the P2PForward comparison (default: $CAIRN_KUBO_PY or .venv-kubo); missing skips it.")
    var kuboPy: String?
    @Option(help: "Nodes of the DHT simulation run for the lookup figures (cairn-dht-sim beside this binary, 30% churn and none); 0 skips.")
    var dhtNodes = 10000
    @Option(help: "Write the figures as JSON here too.") var json: String?
    @Option(name: .customLong("window-kib"), help: "Yamux receive window per stream, KiB, for the one-stream figure (default: the node's, 256).") var windowKiB: Int?
    @Option(help: "Only the soak: a mesh of `cairn node` processes with churn, DHT traffic and direct and relayed streams for this many seconds (docs/soak.md).")
    var soak: Double = 0
    @Option(help: "Soak: nodes in the mesh.") var soakNodes = 20
    @Option(help: "Soak: seconds between node restarts.") var soakChurnEvery: Double = 30
    @Option(help: "Soak: seconds between samples of every node.") var soakSampleEvery: Double = 15
    @Option(help: "Soak: write the summary and every sample here (JSON).") var soakOut: String?

    @Option(help: "Only the DHT churn benchmark: this many `cairn node` processes, a fraction killed with SIGKILL, lookups timed from the survivors (0 skips).")
    var dhtChurn = 0
    @Option(help: "DHT churn: fraction of the nodes killed.") var dhtChurnFraction = 0.3
    @Option(help: "DHT churn: lookups of each kind.") var dhtChurnLookups = 100
    @Flag(help: "DHT churn: SIGSTOP the nodes instead of killing them (silently gone: connections stall instead of being refused).")
    var dhtChurnSilent = false

    func run() async throws {
        if dhtChurn > 0 {
            let cairn = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cairn").path
            let r = try await DHTChurnBench(cairn: cairn, nodes: max(dhtChurn, 4), fraction: dhtChurnFraction, lookups: dhtChurnLookups,
                                    silent: dhtChurnSilent).run()
            print(String(decoding: try JSONSerialization.data(withJSONObject: ["dht_churn": r], options: [.sortedKeys]), as: UTF8.self))
            return
        }
        if soak > 0 {
            let cairn = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cairn").path
            let r = try await Soak(cairn: cairn, seconds: soak, nodes: max(soakNodes, 3), churnEvery: soakChurnEvery,
                                   sampleEvery: soakSampleEvery, out: soakOut).run()
            print(String(decoding: try JSONSerialization.data(withJSONObject: ["soak": r], options: [.sortedKeys, .prettyPrinted]), as: UTF8.self))
            return
        }
        if forwardOnly {
            var quiet = Logger(label: "bench")
            quiet.logLevel = .critical
            let r = try await forwardBench(mib: max(forwardMib, 1), conns: forwardConns, logger: quiet)
            print(String(format: "p2p forward: %.0f MiB/s; one stream: %.0f MiB/s (%.2f)", r["forward_mib_s"] as! Double, r["stream_mib_s"] as! Double, r["ratio"] as! Double))
            print(String(decoding: try JSONSerialization.data(withJSONObject: ["forward": r], options: [.sortedKeys]), as: UTF8.self))
            return
        }
        if relayOnly {
            let r = try await relayBench(mib: relayMib)
            print(String(decoding: try JSONSerialization.data(withJSONObject: ["relay": r], options: [.sortedKeys]), as: UTF8.self))
            return
        }
        try await figures()
    }

    /// One stream's throughput directly and through a relay in another process (`cairn node
    /// --relay`, limits raised), and the relay's CPU time (user + system, from /proc) per MiB.
    func relayBench(mib: Int) async throws -> [String: Any] {
        var quiet = Logger(label: "bench")
        quiet.logLevel = ProcessInfo.processInfo.environment["CAIRN_BENCH_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        let cairn = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cairn").path
        let (relay, relayAddr, dataDir) = try startNodeProcess(cairn: cairn, arguments: [
            "--listen", "/ip4/127.0.0.1/tcp/0", "--relay", "--relay-when", "always",
            "--relay-max-circuit-bytes", "\(UInt64(1) << 40)", "--relay-max-circuit-seconds", "86400",
            "--auto-relay", "off", "--no-stun", "--peers-file", "/dev/null", "--log-level", "error"])
        defer { relay.terminate(); relay.waitUntilExit(); try? FileManager.default.removeItem(at: dataDir) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let b = Node(identity: .generate(), group: group, logger: quiet)
        let bClient = RelayClient(node: b, logger: quiet)
        serveSink(on: b)
        let bAddr = try await b.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])[0].appending(.p2p(b.peerID))
        let held = try await bClient.reserve(on: try await b.dial(relayAddr))
        let a = Node(identity: .generate(), group: group, logger: quiet)
        _ = RelayClient(node: a, logger: quiet)

        let direct = try await a.dial(bAddr)
        let directRate = try await sink(direct, mib: mib)
        await direct.close()
        let relayed = try await a.dial(held.addresses[0].appending(.p2p(b.peerID)))
        let cpu0 = processCPUSeconds(relay.processIdentifier)
        let relayedRate = try await sink(relayed, mib: mib)
        let cpu1 = processCPUSeconds(relay.processIdentifier)
        await relayed.close()
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
        let cpuPerMiB = (cpu1 - cpu0) / Double(mib) * 1000
        print(String(format: "relay:     one stream direct %.0f MiB/s, through a relay %.0f MiB/s (%.0f%%); relay CPU %.2f ms per MiB forwarded",
                     directRate, relayedRate, relayedRate / directRate * 100, cpuPerMiB))
        return ["mib": mib, "direct_mib_s": directRate, "relayed_mib_s": relayedRate, "relay_cpu_ms_per_mib": cpuPerMiB]
    }

    /// Sends `mib` MiB over a new sink stream; MiB/s once the sink has counted them all.
    func sink(_ conn: Connection, mib: Int) async throws -> Double {
        try await pushToSink(try await conn.openStream(["/bench/sink/1.0.0"]), mib: mib)
    }

    func oneConnection(_ client: Node, _ addr: Multiaddr) async throws {
        let c = try await client.dial(addr)
        _ = try await client.ping(c, count: 1)
        await c.close()
    }

    func runPyBench() -> [String: Any]? {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let venv = pyVenv ?? ProcessInfo.processInfo.environment["CAIRN_PY_VENV"] ?? repo.appendingPathComponent(".venv-interop").path
        let py = venv + "/bin/python"
        guard FileManager.default.isExecutableFile(atPath: py) else {
            FileHandle.standardError.write(Data("py-libp2p venv not found at \(venv); run bootstrap/setup-interop.sh\n".utf8))
            return nil
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: py)
        p.arguments = [repo.appendingPathComponent("Tests/Interop/pybench.py").path, "--conns", "\(pyConns)", "--mib", "\(pyMib)"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n").reversed() {
            if let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], o["connections_per_second"] != nil { return o }
        }
        return nil
    }
}

/// User + system CPU seconds of a process, from /proc/PID/stat (fields 14 and 15).
func processCPUSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After "pid (comm)": field 3 is index 0, so utime (14) is index 11 and stime (15) index 12.
    guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Sends `mib` MiB over a `/bench/sink/1.0.0` stream, half-closes and checks the sink's count;
/// MiB/s once the sink has counted them all.
func pushToSink(_ stream: MuxedStream, mib: Int) async throws -> Double {
    let chunk = ByteBuffer(repeating: 0xab, count: 256 * 1024)
    let total = UInt64(mib) << 20
    let clock = ContinuousClock()
    let t = clock.now
    var sent: UInt64 = 0
    while sent < total {
        try await stream.write(chunk)
        sent += UInt64(chunk.readableBytes)
    }
    await stream.closeWrite()
    let ack = try await stream.readExactly(8)
    let count = ack.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    guard count == total else { throw ValidationError("sink counted \(count) bytes, sent \(total)") }
    return Double(mib) / seconds(clock.now - t)
}

/// `/bench/sink/1.0.0`: counts what arrives until EOF, answers the count (8 bytes, big-endian).
func serveSink(on node: Node) {
    node.swarm.handle("/bench/sink/1.0.0") { stream in
        var n: UInt64 = 0
        while let chunk = try await stream.read() { n += UInt64(chunk.readableBytes) }
        var out = ByteBuffer()
        out.writeInteger(n)
        try await stream.write(out)
        await stream.closeWrite()
    }
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
func ms(_ d: Duration) -> Double { seconds(d) * 1000 }

/// Raw loopback TCP with blocking sockets: one writer thread, one reader thread.
func rawTCPThroughput(mib: Int) throws -> Double {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) } }
    listen(listener, 1)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &len) } }
    let total = mib << 20
    let reader = Thread {
        let fd = accept(listener, nil, nil)
        var buf = [UInt8](repeating: 0, count: 256 * 1024)
        var n = 0
        while true {
            let r = read(fd, &buf, buf.count)
            if r <= 0 { break }
            n += r
        }
        var ack = UInt64(n).bigEndian
        _ = write(fd, &ack, 8)
        close(fd)
    }
    reader.start()
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) } }
    guard rc == 0 else { throw ValidationError("raw connect failed") }
    let buf = [UInt8](repeating: 0xab, count: 256 * 1024)
    let start = DispatchTime.now()
    var sent = 0
    while sent < total {
        let w = buf.withUnsafeBytes { write(fd, $0.baseAddress, min($0.count, total - sent)) }
        guard w > 0 else { throw ValidationError("raw write failed") }
        sent += w
    }
    shutdown(fd, Int32(SHUT_WR))
    var ack: UInt64 = 0
    _ = read(fd, &ack, 8)
    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    close(fd)
    close(listener)
    guard Int(UInt64(bigEndian: ack)) == total else { throw ValidationError("raw reader counted \(UInt64(bigEndian: ack))") }
    return Double(mib) / elapsed
}
