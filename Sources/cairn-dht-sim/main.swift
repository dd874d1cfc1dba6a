import ArgumentParser
import CairnCore
import CairnSim
import Foundation

/// Kademlia over the simulated network: lookup success, hops, messages per lookup, wall time.
struct DHTSim: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cairn-dht-sim",
        abstract: "Run the unchanged Kademlia behaviour over a simulated network and report lookup statistics.")

    @Option(help: "Number of nodes.") var nodes = 1000
    @Option(help: "Fraction of nodes taken offline after the network is built (0...1).") var churn = 0.0
    @Option(help: "Lookups to run (FIND_NODE of a random online node from a random online node).") var lookups = 1000
    @Option(help: "One-way latency in ms (plus uniform jitter of half that).") var latencyMs = 40.0
    @Option(help: "Message loss probability.") var loss = 0.0
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Option(help: "Per-request timeout in seconds (virtual): the transport's, and the longest a lookup waits.") var timeout: Double = 10
    @Flag(help: "Fixed timeouts (every request waits --timeout) instead of ones from measured round trips.") var fixedTimeouts = false
    @Option(help: "Closest peers that must answer before a FIND_NODE lookup ends (β; 20 = all k).") var beta = 3
    @Option(help: "Requests in flight per lookup (α).") var alpha = 3
    @Flag(help: "Do not demote peers whose requests time out in the routing table (to measure what the demotion is worth).") var noDemotion = false
    @Option(help: "Disjoint lookup paths (S/Kademlia; 1 = plain lookups).") var disjoint = 1
    @Option(help: "Lookups start from this many random nodes only (0: any node), so a node's table has time to learn who is gone.") var askers = 0
    @Option(help: "Build: each wave of concurrent joins is this fraction of the nodes already joined (0 = one join at a time).") var growth = 0.02

    func secs(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    func run() throws {
        var config = SimNetwork.Configuration()
        config.latency = latencyMs / 1000
        config.jitter = latencyMs / 2000
        config.loss = loss
        config.seed = seed
        config.kademlia.lookup.requestTimeout = timeout
        config.kademlia.lookup.adaptiveTimeouts = !fixedTimeouts
        config.kademlia.lookup.beta = beta
        config.kademlia.lookup.alpha = alpha
        config.kademlia.demoteUnresponsive = !noDemotion
        config.kademlia.lookup.disjointPaths = disjoint
        let wall = ContinuousClock()
        let t0 = wall.now
        let net = SimNetwork(configuration: config)
        net.build(count: nodes, growth: growth) { joined in
            FileHandle.standardError.write(Data("built \(joined) of \(nodes) nodes, \(Int(secs(wall.now - t0))) s\n".utf8))
        }
        let buildTime = wall.now - t0
        _ = net.churn(fraction: churn)
        var askerPool: [Int] = []
        while askerPool.count < askers { askerPool.append(net.randomIndex()) }
        var ok = 0
        var hops: [Int] = [], messages: [Int] = [], latencies: [Double] = []
        let t1 = wall.now
        for _ in 0..<lookups {
            let from = askerPool.isEmpty ? net.randomIndex() : askerPool[Int(net.randomIndex()) % askerPool.count]
            var to = net.randomIndex()
            while to == from { to = net.randomIndex() }
            let target = net.peerID(to)
            guard let (result, stats) = net.runQuery(on: from, { b, now in b.findNode(target, now: now) }) else { continue }
            if case .closestPeers(let peers) = result, peers.first?.id == target { ok += 1 }
            hops.append(stats.hops)
            messages.append(stats.requests)
            latencies.append(stats.finished!.timeIntervalSince(stats.started) * 1000)
        }
        let lookupTime = wall.now - t1
        func pct(_ a: [Int], _ p: Double) -> Int { let s = a.sorted(); return s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count) * p))] }
        func pctD(_ a: [Double], _ p: Double) -> Double { let s = a.sorted(); return s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count) * p))] }
        let result: [String: Any] = [
            "nodes": nodes, "churn": churn, "timeout_s": timeout, "adaptive_timeouts": !fixedTimeouts, "beta": beta, "alpha": alpha, "growth": growth, "demotion": !noDemotion, "disjoint_paths": disjoint, "askers": askers, "lookups": lookups, "loss": loss, "latency_ms": latencyMs,
            "success_rate": Double(ok) / Double(max(1, lookups)),
            "hops_median": pct(hops, 0.5), "hops_p99": pct(hops, 0.99),
            "messages_per_lookup_mean": Double(messages.reduce(0, +)) / Double(max(1, messages.count)),
            "messages_per_lookup_p99": pct(messages, 0.99),
            "virtual_lookup_ms_median": pctD(latencies, 0.5), "virtual_lookup_ms_p99": pctD(latencies, 0.99),
            "wall_build_s": secs(buildTime), "wall_lookups_s": secs(lookupTime),
            "messages_delivered": net.messagesDelivered,
        ]
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}

DHTSim.main()
