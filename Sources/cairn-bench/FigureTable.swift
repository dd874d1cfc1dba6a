import CairnCore
import CairnNode
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix

extension Bench {
    /// Every figure of docs/benchmarks.md's table in one run, each beside the limit it is judged
    /// against: as a text table, then one JSON object whose keys stay stable for scripts.
    func figures() async throws {
        var quiet = Logger(label: "bench")
        quiet.logLevel = ProcessInfo.processInfo.environment["CAIRN_BENCH_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let cairn = here.appendingPathComponent("cairn").path
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let cores = System.coreCount
        var f: [String: Any] = ["cores": cores]
        var rows: [(String, String, String, String)] = []
        func row(_ name: String, _ value: String, _ limit: String = "", _ ratio: String = "") {
            rows.append((name, value, limit, ratio))
            FileHandle.standardError.write(Data("  \(name): \(value)\n".utf8))
        }

        // 1. The crypto limits.
        let crypto = CryptoCosts.measure()
        f["crypto_limit_mib_s"] = crypto.chachaMiBs
        f["x25519_keygen_us"] = crypto.x25519KeygenMicros
        f["x25519_dh_us"] = crypto.x25519DHMicros
        f["ed25519_sign_us"] = crypto.ed25519SignMicros
        f["ed25519_verify_us"] = crypto.ed25519VerifyMicros
        f["setup_cpu_us"] = crypto.setupMicrosBothEnds
        let setupLimit = crypto.setupLimitPerSecond(cores: cores)
        f["setup_cpu_limit_per_s"] = setupLimit
        row("ChaCha20-Poly1305 encryption, one core (libsodium)", mibs(crypto.chachaMiBs))
        row("X25519 keygen / DH, Ed25519 sign / verify", String(format: "%.1f / %.1f / %.1f / %.1f µs", crypto.x25519KeygenMicros,
            crypto.x25519DHMicros, crypto.ed25519SignMicros, crypto.ed25519VerifyMicros))

        // 2. Sequential setups and one stream (both nodes in this process).
        let (seqRate, seqMedian, stream, streamCPU) = try await sequentialSetupsAndStream(logger: quiet)
        f["sequential_setups_per_s"] = seqRate
        f["sequential_setup_median_ms"] = seqMedian
        f["stream_mib_s"] = stream
        f["stream_vs_crypto"] = stream / crypto.chachaMiBs
        f["stream_cpu_ms_per_mib"] = streamCPU
        row("one Yamux stream", mibs(stream), "≥ 50% of " + mibs(crypto.chachaMiBs), pct(stream / crypto.chachaMiBs))
        // Both ends are in this process: each MiB is encrypted once and decrypted once here.
        row("  CPU per MiB, both ends", String(format: "%.2f ms (crypto alone: %.2f ms)", streamCPU, 2 * 1000 / crypto.chachaMiBs),
            "crypto's share", pct(2 * 1000 / crypto.chachaMiBs / streamCPU))

        // 3. Concurrent setups against the CPU limit.
        if concurrentConns > 0 {
        let (rate, median) = try await concurrentSetups(total: concurrentConns, inFlight: inFlight, logger: quiet)
        f["setups_per_s"] = rate
        f["setups_in_flight"] = inFlight
        f["setup_median_ms"] = median
        f["setup_vs_cpu_limit"] = rate / setupLimit
        row("connection setups, \(inFlight) in flight", String(format: "%.0f/s (median %.1f ms)", rate, median),
            String(format: "≥ 50%% of %.0f/s (crypto on %d cores)", setupLimit, cores), pct(rate / setupLimit))
        }
        row("connection setups, one at a time", String(format: "%.0f/s (median %.2f ms)", seqRate, seqMedian))

        // 4. Relayed against direct.
        if relayMib > 0 {
            let r = try await relayBench(mib: relayMib)
            let direct = r["direct_mib_s"] as! Double, relayed = r["relayed_mib_s"] as! Double
            f["direct_mib_s"] = direct
            f["relayed_mib_s"] = relayed
            f["relayed_vs_direct"] = relayed / direct
            f["relay_cpu_ms_per_mib"] = r["relay_cpu_ms_per_mib"]
            row("one stream through a relay process", mibs(relayed), "≥ 70% of direct " + mibs(direct), pct(relayed / direct))
            // Both ends and the relay share these cores: a relayed byte costs six ChaCha20-Poly1305
            // passes (two Noise sessions at each end, and the relay's decryption and
            // re-encryption) where a direct one costs two: crypto-bound, the ratio is 1/3.
            f["relayed_vs_direct_crypto_work"] = 2.0 / 6.0
            row("  relay CPU per MiB forwarded", String(format: "%.2f ms (crypto alone: %.2f ms)", r["relay_cpu_ms_per_mib"] as! Double,
                                                          2 * 1000 / crypto.chachaMiBs), "crypto work, direct / relayed", "33%")
        }

        // 5. Memory per idle connection.
        if idleConns > 0 {
            let m = try await idleConnectionMemory(cairn: cairn, count: idleConns, logger: quiet)
            f["idle_conn_kib"] = m.kibPerConnection
            f["idle_conns"] = idleConns
            f["idle_rss_before_kib"] = m.before
            f["idle_rss_after_kib"] = m.after
            row("memory per idle connection (\(idleConns), RSS delta)", String(format: "%.1f KiB", m.kibPerConnection), "≤ 64 KiB",
                pct(m.kibPerConnection / 64))
        }

        // 6. TCP forwarding, Cairn and kubo.
        if forwardMib > 0 {
            let r = try await forwardBench(mib: forwardMib, conns: forwardConns, logger: quiet)
            f["forward_mib_s"] = r["forward_mib_s"]
            f["forward_conns_per_s"] = r["forward_conns_per_s"]
            f["forward_conns_failed"] = r["forward_conns_failed"]
            row("`cairn p2p` forward (TCP → stream → TCP)", mibs(r["forward_mib_s"] as! Double) + String(format: ", %.0f conns/s (%d failed)", r["forward_conns_per_s"] as! Double, r["forward_conns_failed"] as! Int))
            let kuboPython = kuboPy ?? ProcessInfo.processInfo.environment["CAIRN_KUBO_PY"] ?? repo.appendingPathComponent(".venv-kubo/bin/python").path
            if FileManager.default.isExecutableFile(atPath: kuboPython) {
                let k = try await kuboForwardBench(python: kuboPython, script: repo.appendingPathComponent("Tests/Interop/kubopeer.py").path,
                                                   mib: forwardMib, conns: forwardConns)
                f["kubo_forward_mib_s"] = k["forward_mib_s"]
                f["kubo_forward_conns_per_s"] = k["forward_conns_per_s"]
                f["kubo_forward_conns_failed"] = k["forward_conns_failed"]
                f["forward_vs_kubo"] = (r["forward_mib_s"] as! Double) / (k["forward_mib_s"] as! Double)
                f["forward_conns_vs_kubo"] = (r["forward_conns_per_s"] as! Double) / (k["forward_conns_per_s"] as! Double)
                row("kubo 0.22 P2PForward (same sink and client)", mibs(k["forward_mib_s"] as! Double) + String(format: ", %.0f conns/s (%d failed)", k["forward_conns_per_s"] as! Double, k["forward_conns_failed"] as! Int),
                    "Cairn / kubo", pct(f["forward_vs_kubo"] as! Double) + " / " + pct(f["forward_conns_vs_kubo"] as! Double))
            } else {
                FileHandle.standardError.write(Data("kubo not measured: no python at \(kuboPython) (bootstrap/setup-kubo.sh)\n".utf8))
            }
        }

        // 7. The DHT simulation (the same behaviour the node runs).
        let sim = here.appendingPathComponent("cairn-dht-sim").path
        if dhtNodes > 0, FileManager.default.isExecutableFile(atPath: sim) {
            for churn in [0.3, 0.0] {
                let r = try runDHTSim(sim, nodes: dhtNodes, churn: churn)
                let key = churn > 0 ? "dht_churn" : "dht"
                for (k, v) in r where ["success_rate", "virtual_lookup_ms_median", "virtual_lookup_ms_p99", "messages_per_lookup_mean", "wall_build_s"].contains(k) {
                    f["\(key)_\(k)"] = v
                }
                let median = (r["virtual_lookup_ms_median"] as? Double ?? 0) / 1000, p99 = (r["virtual_lookup_ms_p99"] as? Double ?? 0) / 1000
                row("DHT lookup, \(dhtNodes) simulated nodes, \(Int(churn * 100))% gone",
                    String(format: "%.0f%% ok, median %.2f s, p99 %.2f s, %.1f msgs", (r["success_rate"] as? Double ?? 0) * 100, median, p99,
                           r["messages_per_lookup_mean"] as? Double ?? 0),
                    churn > 0 ? "≥ 99%, ≤ 1 s, ≤ 3 s, ≤ 40" : "median ≤ 0.5 s")
            }
        }

        // 8. References: raw TCP and py-libp2p.
        if rawMib > 0 {
            let raw = try rawTCPThroughput(mib: rawMib)
            f["raw_tcp_mib_s"] = raw
            row("raw TCP loopback (ceiling)", mibs(raw))
        }
        if !noPy, let py = runPyBench() {
            f["py_setups_per_s"] = py["connections_per_second"]
            f["py_stream_mib_s"] = py["stream_throughput_mib_s"]
            row("py-libp2p 0.8.1: setups, one stream", String(format: "%.0f/s, %.1f MiB/s", py["connections_per_second"] as? Double ?? 0,
                                                              py["stream_throughput_mib_s"] as? Double ?? 0))
        }

        let w0 = rows.map(\.0.count).max() ?? 0, w1 = rows.map(\.1.count).max() ?? 0, w2 = rows.map(\.2.count).max() ?? 0
        func pad(_ s: String, _ w: Int) -> String { s + String(repeating: " ", count: max(0, w - s.count)) }
        print(pad("figure", w0) + "  " + pad("measured", w1) + "  " + pad("goal or limit", w2) + "  ratio")
        for r in rows { print(pad(r.0, w0) + "  " + pad(r.1, w1) + "  " + pad(r.2, w2) + "  " + r.3) }
        let data = try JSONSerialization.data(withJSONObject: ["figures": f], options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }

    /// Sequential setups (after 10 warm-up ones) and one stream's throughput between two nodes
    /// in this process.
    func sequentialSetupsAndStream(logger: Logger) async throws -> (perSecond: Double, medianMillis: Double, streamMiBs: Double, cpuMsPerMiB: Double) {
        var streamCPUms = 0.0
        // One event-loop thread each, as two processes would have: sharing a group of two, both
        // ends of the connection land on one thread about half the time.
        let serverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1), clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var config = benchNodeConfiguration()
        if let w = windowKiB { config.swarm.yamux.receiveWindow = UInt32(w) * 1024 }
        let server = Node(identity: .generate(), configuration: config, group: serverGroup, logger: logger)
        serveSink(on: server)
        let addr = try await server.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])[0].appending(.p2p(server.peerID))
        let client = Node(identity: .generate(), configuration: config, group: clientGroup, logger: logger)
        let clock = ContinuousClock()
        for _ in 0..<10 { try await oneConnection(client, addr) }
        var latencies: [Double] = []
        let t0 = clock.now
        for _ in 0..<conns {
            let s = clock.now
            try await oneConnection(client, addr)
            latencies.append(ms(clock.now - s))
        }
        let rate = Double(conns) / seconds(clock.now - t0)
        latencies.sort()
        let conn = try await client.dial(addr)
        let cpu0 = processCPUSeconds(getpid())
        let throughput = try await sink(conn, mib: mib)
        streamCPUms = (processCPUSeconds(getpid()) - cpu0) * 1000 / Double(mib)
        await conn.close()
        await client.shutdown()
        await server.shutdown()
        try await clientGroup.shutdownGracefully()
        try await serverGroup.shutdownGracefully()
        return (rate, latencies[latencies.count / 2], throughput, streamCPUms)
    }

    func runDHTSim(_ sim: String, nodes: Int, churn: Double) throws -> [String: Any] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: sim)
        p.arguments = ["--nodes", "\(nodes)", "--churn", "\(churn)", "--lookups", "1000"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }
}

func mibs(_ x: Double) -> String { String(format: "%.0f MiB/s", x) }
func pct(_ x: Double) -> String { String(format: "%.0f%%", x * 100) }
