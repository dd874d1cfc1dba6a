import ArgumentParser
import CairnCore
import CairnNode
import Foundation
import Logging

/// The relay status a running `cairn node` keeps in `<data-dir>/relays.json` (every 2 s), which
/// `cairn relays` prints.
enum RelayStatus {
    static func write(to path: URL, node: Node, client: RelayClient, service: RelayService, nat: NATService) {
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
        abstract: "Resolve a peer's presence record and connect: directly if possible, else through one of its relays; say which.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument(help: "The peer ID to reach.") var peer: String
    @Option(help: "Seconds per direct dial attempt.") var directTimeout: Double = 5
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let target = try PeerID(string: peer)
        let outcome = try await withJoinedDHT(common, dht) { node, s -> [String: Any] in
            let record = try await s.resolve(target)
            let direct = record.addresses.filter { $0.tcpEndpoint != nil }
            let relayed = record.addresses.filter { $0.components.contains(.p2pCircuit) }
            var failures: [String] = []
            var conn: Connection?
            for a in direct {
                do {
                    conn = try await withTimeout(.milliseconds(Int64(directTimeout * 1000)), on: node.swarm.group.next()) {
                        try await node.dial(a.appending(.p2p(target)))
                    }
                    break
                } catch {
                    failures.append("\(a): \(error)")
                }
            }
            if conn == nil {
                for a in relayed {
                    do {
                        conn = try await node.dial(a.appending(.p2p(target)))
                        break
                    } catch {
                        failures.append("\(a): \(error)")
                    }
                }
            }
            guard let conn else {
                throw CLIError("could not reach \(target) at any of its \(record.addresses.count) addresses:\n  " + failures.joined(separator: "\n  "))
            }
            let rtt = try await node.ping(conn, count: 1)[0]
            var out: [String: Any] = ["peer": target.description, "how": conn.isLimited ? "relayed" : "direct",
                                      "address": conn.remoteAddress?.description ?? "?", "rtt_ms": millis(rtt),
                                      "record_seq": Int(record.seq), "record_addrs": record.addresses.map(\.description),
                                      "direct_failures": failures]
            if let relay = conn.relay { out["relay"] = relay.description }
            if let l = conn.limit { out["limit"] = ["duration_s": l.duration.map { Int($0) } as Any, "data_bytes": l.data.map { Int($0) } as Any] }
            return out
        }
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: outcome, options: [.sortedKeys]), as: UTF8.self))
            return
        }
        let how = outcome["how"] as? String ?? "?"
        if how == "direct" {
            print("connected to \(peer) directly at \(outcome["address"] ?? "?")")
        } else {
            print("connected to \(peer) through relay \(outcome["relay"] ?? "?") (limited connection)")
            for f in outcome["direct_failures"] as? [String] ?? [] { print("  not direct: \(f)") }
        }
        print(String(format: "ping: %.3f ms", outcome["rtt_ms"] as? Double ?? 0))
    }
}
