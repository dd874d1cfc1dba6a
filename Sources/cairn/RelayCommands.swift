import ArgumentParser
import CairnCore
import CairnNode
import Foundation
import Logging
import NIOCore

/// The relay status a running `cairn node` keeps in `<data-dir>/relays.json` (every 2 s), which
/// `cairn relays` prints.
enum RelayStatus {
    static func write(to path: URL, node: Node, client: RelayClient, service: RelayService, nat: NATService, holePunch: HolePunchService) {
        let now = Date()
        let stats = service.stats
        let counts = client.circuitCounts
        let relayed = node.swarm.connections.filter(\.isLimited)
        let obj: [String: Any] = [
            "peer_id": node.peerID.description,
            "updated": now.timeIntervalSince1970,
            "reachability": nat.reachability.reachability.rawValue,
            "advertised_addrs": node.advertisedAddresses.map(\.description),
            "held": client.reservations.sorted { $0.relay < $1.relay }.map { r in
                ["relay": r.relay.description, "expires_in_s": Int(r.expires.timeIntervalSince(now)),
                 "addrs": r.addresses.map(\.description), "voucher_verified": r.voucher != nil,
                 "limit": ["duration_s": r.limit?.duration.map { Int($0) } as Any, "data_bytes": r.limit?.data.map { Int($0) } as Any]] as [String: Any]
            },
            "relayed_connections": relayed.map { ["peer": $0.remotePeer?.description ?? "?", "relay": $0.relay?.description ?? "?",
                                                  "direction": $0.direction.rawValue] },
            "hole_punches": holePunch.outcomes.map { outcomeJSON($0) },
            "circuits_through_relays": ["inbound": counts.inbound, "outbound": counts.outbound],
            "serving": [
                "volunteering": stats.serving,
                "reservations": stats.reservations.map { ["peer": $0.peer.description, "expires_in_s": Int($0.expires.timeIntervalSince(now))] },
                "circuits": stats.circuits.map { ["id": Int($0.id), "from": $0.source.description, "to": $0.destination.description,
                                                  "age_s": Int(now.timeIntervalSince($0.opened))] as [String: Any] },
                "reservations_granted": stats.reservationsGranted,
                "circuits_opened": stats.circuitsOpened,
                "bytes_forwarded": Int(stats.bytesForwarded),
                "refused": Dictionary(uniqueKeysWithValues: stats.refused.map { ("\($0.key)", $0.value) }),
                "circuit_ends": stats.circuitEnds,
                "limits": ["max_reservations": stats.configuration.maxReservations, "max_reservations_per_peer": stats.configuration.maxReservationsPerPeer,
                           "max_reservations_per_ip": stats.configuration.maxReservationsPerIP, "max_circuits": stats.configuration.maxCircuits,
                           "max_circuits_per_peer": stats.configuration.maxCircuitsPerPeer, "reservation_ttl_s": Int(stats.configuration.reservationTTL),
                           "circuit_duration_s": Int(stats.configuration.circuitDuration), "circuit_bytes": Int(stats.configuration.circuitBytes)],
            ] as [String: Any],
        ]
        guard let data = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted]) else { return }
        let tmp = path.appendingPathExtension("tmp")
        if (try? data.write(to: tmp)) != nil { _ = rename(tmp.path, path.path) }  // atomic: readers never see half a file
    }
}

func outcomeJSON(_ o: HolePunchService.Outcome) -> [String: Any] {
    var out: [String: Any] = ["peer": o.peer.description, "role": o.role, "at": o.at.timeIntervalSince1970]
    switch o.result {
    case .direct(let how, let attempts):
        out["result"] = "direct"; out["how"] = how; out["attempts"] = attempts
    case .relayed(let reason):
        out["result"] = "relayed"; out["reason"] = reason
    }
    if let e = o.elapsed { out["elapsed_ms"] = millis(e) }
    return out
}

struct Relays: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the relay reservations a running node holds and serves, and its active circuits.")
    @OptionGroup var common: CommonOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let path = common.dataDirectory.appendingPathComponent("relays.json")
        guard let data = try? Data(contentsOf: path), let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CLIError("no relay status at \(path.path): is `cairn node --data-dir \(common.dataDirectory.path)` running?")
        }
        let age = Date().timeIntervalSince1970 - ((obj["updated"] as? Double) ?? 0)
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
            return
        }
        print("node \(obj["peer_id"] ?? "?") (status \(String(format: "%.0f", age)) s old\(age > 10 ? ", node not running?" : ""))")
        print("reachability: \(obj["reachability"] ?? "?")")
        let held = obj["held"] as? [[String: Any]] ?? []
        print("reservations held: \(held.count)")
        for h in held {
            print("  on \(h["relay"] ?? "?"), expires in \(h["expires_in_s"] ?? "?") s, voucher \((h["voucher_verified"] as? Bool) == true ? "verified" : "none")")
            for a in h["addrs"] as? [String] ?? [] { print("    \(a)") }
        }
        let relayed = obj["relayed_connections"] as? [[String: Any]] ?? []
        print("relayed connections: \(relayed.count)")
        for r in relayed { print("  \(r["direction"] ?? "?") \(r["peer"] ?? "?") via \(r["relay"] ?? "?")") }
        let serving = obj["serving"] as? [String: Any] ?? [:]
        print("relaying for others: \((serving["volunteering"] as? Bool) == true ? "yes" : "no")")
        let served = serving["reservations"] as? [[String: Any]] ?? []
        print("  reservations served: \(served.count)")
        for r in served { print("    \(r["peer"] ?? "?"), expires in \(r["expires_in_s"] ?? "?") s") }
        let circuits = serving["circuits"] as? [[String: Any]] ?? []
        print("  active circuits: \(circuits.count)")
        for c in circuits { print("    #\(c["id"] ?? "?") \(c["from"] ?? "?") -> \(c["to"] ?? "?") (\(c["age_s"] ?? "?") s)") }
        print("  granted \(serving["reservations_granted"] ?? 0) reservations, opened \(serving["circuits_opened"] ?? 0) circuits, forwarded \(serving["bytes_forwarded"] ?? 0) bytes")
        if let refused = serving["refused"] as? [String: Int], !refused.isEmpty {
            print("  refused: " + refused.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
        }
        if let ends = serving["circuit_ends"] as? [String: Int], !ends.isEmpty {
            print("  circuits ended: " + ends.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
        }
        if let l = serving["limits"] as? [String: Int] {
            print("  limits: " + l.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
    }
}

struct DialCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dial",
        abstract: "Resolve a peer's presence record and connect: directly if possible, else through one of its relays and then upgraded by hole punching when the NATs allow; say which, and why.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument(help: "The peer ID to reach.") var peer: String
    @Option(help: "Seconds per direct dial attempt.") var directTimeout: Double = 5
    @Option(help: "Seconds to wait for a relayed connection to be upgraded to a direct one (0: do not wait).") var upgradeWait: Double = 20
    @Flag(help: "Skip the direct addresses: go through a relay (and let hole punching upgrade it).") var viaRelay = false
    @Option(help: "Pings to send over the chosen connection (one a --ping-interval).") var pings = 1
    @Option(help: "Seconds between pings.") var pingInterval: Double = 0.1
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let target = try PeerID(string: peer)
        let logger = common.bootstrapLogging()
        let key = try common.loadIdentity(logger)
        let node = Node(identity: key, logger: logger)
        _ = try await node.listen([try Multiaddr("/ip4/0.0.0.0/tcp/0")])
        _ = RelayClient(node: node, logger: logger)
        // Our votes (from the DHT peers we join through) give the addresses we offer in DCUtR.
        let nat = NATService(node: node, dht: nil, logger: logger)
        let holePunch = HolePunchService(node: node, nat: nat, logger: logger)
        let service = try dht.makeService(node: node, common: common, logger: logger, mode: .client)
        service.start()
        defer { service.stop() }
        let outcome: [String: Any]
        do {
            try await dht.join(service, logger: logger)
            outcome = try await connect(target, node: node, service: service, holePunch: holePunch, nat: nat)
        } catch {
            service.stop()
            await node.shutdown()
            throw CLIError("\(error)")
        }
        await node.shutdown()
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: outcome, options: [.sortedKeys]), as: UTF8.self))
            return
        }
        switch outcome["how"] as? String {
        case "direct":
            print("connected to \(peer) directly at \(outcome["address"] ?? "?")")
        case "upgraded":
            print("connected to \(peer) through relay \(outcome["relay"] ?? "?"), then directly at \(outcome["address"] ?? "?") (\(outcome["upgrade"] ?? "?") after \(String(format: "%.0f", outcome["upgrade_ms"] as? Double ?? 0)) ms)")
        default:
            print("connected to \(peer) through relay \(outcome["relay"] ?? "?") (limited connection): \(outcome["why_relayed"] ?? "?")")
        }
        for f in outcome["direct_failures"] as? [String] ?? [] { print("  not direct: \(f)") }
        print(String(format: "ping: %.3f ms", outcome["rtt_ms"] as? Double ?? 0))
    }

    func connect(_ target: PeerID, node: Node, service: DHTService, holePunch: HolePunchService, nat: NATService) async throws -> [String: Any] {
        // Our external address comes from votes: give identify on the DHT connections a moment.
        let voteDeadline = ContinuousClock.now + .seconds(3)
        while nat.externalAddresses.isEmpty, ContinuousClock.now < voteDeadline { try await Task.sleep(for: .milliseconds(50)) }
        let record = try await service.resolve(target)
        let direct = viaRelay ? [] : record.addresses.filter { $0.tcpEndpoint != nil }
        let relayed = record.addresses.filter { $0.components.contains(.p2pCircuit) }
        var failures: [String] = []
        var conn: Connection?
        for a in direct {
            do {
                // The connect itself is bounded (a timeout around it would wait for it anyway).
                // From an ephemeral port: a failed SYN from the listen port would leave NAT state
                // on the very 4-tuple a hole punch uses next, and spoil it (measured: 1 punch in 5).
                let limit = TimeAmount.milliseconds(Int64(directTimeout * 1000))
                conn = try await withTimeout(limit + .seconds(10), on: node.swarm.group.next()) {
                    try await node.swarm.dial(a.appending(.p2p(target)), fromListenPort: false, connectTimeout: limit)
                }
                break
            } catch {
                failures.append("\(a): \(error)")
            }
        }
        var how = "direct"
        var relayConn: Connection?
        if conn == nil {
            for a in relayed {
                do {
                    conn = try await node.dial(a.appending(.p2p(target)))
                    relayConn = conn
                    how = "relayed"
                    break
                } catch {
                    failures.append("\(a): \(error)")
                }
            }
        }
        guard var conn else {
            throw CLIError("could not reach \(target) at any of its \(record.addresses.count) addresses:\n  " + failures.joined(separator: "\n  "))
        }
        var out: [String: Any] = ["peer": target.description, "record_seq": Int(record.seq), "record_addrs": record.addresses.map(\.description),
                                  "direct_failures": failures, "our_external_addrs": nat.externalAddresses.map(\.description)]
        if let relayConn {
            out["relay"] = relayConn.relay?.description
            if let l = relayConn.limit { out["limit"] = ["duration_s": l.duration.map { Int($0) } as Any, "data_bytes": l.data.map { Int($0) } as Any] }
            // The peer (B) starts the upgrade once it has identified us; wait for a direct connection.
            let deadline = ContinuousClock.now + .milliseconds(Int(upgradeWait * 1000))
            while ContinuousClock.now < deadline, node.swarm.connections(to: target).allSatisfy(\.isLimited) {
                try await Task.sleep(for: .milliseconds(20))
            }
            if let d = node.bestConnection(to: target), !d.isLimited {
                conn = d
                how = "upgraded"
                // The hole-punch side notes its outcome a moment after the connection is up.
                let noteDeadline = ContinuousClock.now + .seconds(1)
                while ContinuousClock.now < noteDeadline {
                    if case .direct? = holePunch.outcome(for: target)?.result { break }
                    try await Task.sleep(for: .milliseconds(20))
                }
                let o = holePunch.outcome(for: target)
                if case .direct(let via, _)? = o?.result { out["upgrade"] = via }
                out["upgrade_ms"] = o?.elapsed.map(millis) ?? NSNull()
            } else {
                out["why_relayed"] = holePunch.outcome(for: target).map { o -> String in
                    if case .relayed(let reason) = o.result { return reason }
                    return "?"
                } ?? "the peer did not start a hole punch within \(Int(upgradeWait)) s"
            }
        }
        let rtts = try await node.ping(conn, count: max(1, pings), interval: .milliseconds(Int(pingInterval * 1000)))
        out["how"] = how
        out["address"] = conn.remoteAddress?.description ?? "?"
        out["rtt_ms"] = millis(rtts[0])
        out["pings"] = rtts.count
        out["still_limited_connections"] = node.swarm.connections(to: target).filter(\.isLimited).count
        return out
    }
}
