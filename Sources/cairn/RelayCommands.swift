import ArgumentParser
import CairnCore
import CairnNode
import Foundation
import Logging
import NIOCore

/// The status for `cairn status`/`relays`; with `printingJSON` it is printed as JSON and nil returned.
func hostStatus(_ common: CommonOptions, printingJSON: Bool) async throws -> HostStatus? {
    let st = try await hostStatus(common)
    guard printingJSON else { return st }
    FileHandle.standardOutput.write(try st.encoded(pretty: false) + Data("\n".utf8))
    return nil
}

/// The status of the node running on the data directory: asked through its control API, else
/// read from the `relays.json` it keeps (a node started with --no-api).
func hostStatus(_ common: CommonOptions) async throws -> HostStatus {
    if let node = await runningNode(common) {
        let report = try await ask(node) { $0.type = .status }.report
        return try HostStatus.decode(Data(Reports.json(report).utf8))
    }
    let path = common.dataDirectory.appendingPathComponent("relays.json")
    guard let data = try? Data(contentsOf: path) else {
        throw CLIError("no node running on \(common.dataDirectory.path) (no control socket, no \(path.lastPathComponent)): is `cairn node --data-dir \(common.dataDirectory.path)` running?")
    }
    do { return try HostStatus.decode(data) } catch { throw CLIError("unreadable status at \(path.path): \(error)") }
}

struct Relays: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the relay reservations a running node holds and serves, and its active circuits.")
    @OptionGroup var common: CommonOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        guard let st = try await hostStatus(common, printingJSON: json) else { return }
        let age = Date().timeIntervalSince1970 - st.updated
        print("node \(st.peerId) (status \(String(format: "%.0f", age)) s old\(age > 10 ? ", node not running?" : ""))")
        print("reachability: \(st.reachability)")
        print("reservations held: \(st.held.count)")
        for h in st.held {
            print("  on \(h.relay), expires in \(h.expiresInS) s, voucher \(h.voucherVerified ? "verified" : "none")")
            for a in h.addrs { print("    \(a)") }
        }
        print("relayed connections: \(st.relayedConnections.count)")
        for r in st.relayedConnections { print("  \(r.direction) \(r.peer) via \(r.relay)") }
        let serving = st.serving
        print("relaying for others: \(serving.volunteering ? "yes" : "no")")
        print("  reservations served: \(serving.reservations.count)")
        for r in serving.reservations { print("    \(r.peer), expires in \(r.expiresInS) s") }
        print("  active circuits: \(serving.circuits.count)")
        for c in serving.circuits { print("    #\(c.id) \(c.from) -> \(c.to) (\(c.ageS) s)") }
        print("  granted \(serving.reservationsGranted) reservations, opened \(serving.circuitsOpened) circuits, forwarded \(serving.bytesForwarded) bytes")
        if !serving.refused.isEmpty {
            print("  refused: " + serving.refused.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
        }
        if !serving.circuitEnds.isEmpty {
            print("  circuits ended: " + serving.circuitEnds.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
        }
        let l = serving.limits
        print("  limits: circuit_bytes \(l.circuitBytes), circuit_duration_s \(l.circuitDurationS), max_circuits \(l.maxCircuits), "
              + "max_circuits_per_peer \(l.maxCircuitsPerPeer), max_reservations \(l.maxReservations), "
              + "max_reservations_per_ip \(l.maxReservationsPerIp), max_reservations_per_peer \(l.maxReservationsPerPeer), reservation_ttl_s \(l.reservationTtlS)")
        if !st.holePunches.isEmpty {
            print("hole punches: \(st.holePunches.count)")
            for h in st.holePunches {
                print("  \(h.peer) (\(h.role)): \(h.result == "direct" ? "direct by \(h.how ?? "?")" : "relayed: \(h.reason ?? "?")")")
            }
        }
    }
}

struct DialCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dial",
        abstract: "Find a peer (presence record or peer routing) and connect: directly if possible, else through one of its relays and then upgraded by hole punching when the NATs allow; say which, and why.")
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
        var out: Reports.Object
        if let node = await runningNode(common) {
            out = try await ask(node) { r in
                r.type = .dial; r.peer = Data(target.bytes); r.timeout = directTimeout; r.seconds = upgradeWait
                r.viaRelay = viaRelay; r.count = Int64(pings); r.interval = pingInterval
            }.report
        } else {
            var config = try oneShotConfiguration(common, dht: dht)
            // A listener (our dials' port, the punch's), AutoNAT answers, and the hole-punch responder.
            config.listenAddresses = [try Multiaddr("/ip4/0.0.0.0/tcp/0"), try Multiaddr("/ip6/::/tcp/0")]
            config.nat.serveAutoNAT = true
            config.holePunching = HolePunchService.Configuration()
            let host = try CLIError.wrap { try CairnHost(configuration: config, logger: logger) }
            var options = DialOptions()
            // From an ephemeral port: a failed SYN from the listen port would leave NAT state on the
            // very 4-tuple a hole punch uses next, and spoil it (measured: 1 punch in 5).
            options.portUse = .ephemeral
            options.connectTimeout = .milliseconds(Int64(directTimeout * 1000))
            options.relayedOnly = viaRelay
            options.waitForUpgrade = .milliseconds(Int64(upgradeWait * 1000))
            // Our external address (from votes on the DHT connections) is what a punch offers.
            options.waitForExternalAddress = .seconds(3)
            options.timeout = .seconds(3600)
            do {
                try await host.start()
                try await host.joinDHT()
                let outcome = try await host.connect(to: target, options)
                let rtts = try await host.node.ping(outcome.connection, count: max(1, pings), interval: .milliseconds(Int(pingInterval * 1000)))
                out = Reports.dial(outcome, target: target, rtts: rtts, host: host)
            } catch {
                await host.shutdown()
                throw CLIError("\(error)")
            }
            await host.shutdown()
        }
        if json {
            print(Reports.json(out))
            return
        }
        switch out["how"] as? String {
        case "direct":
            print("connected to \(peer) directly at \(out["address"] ?? "?")")
        case "upgraded":
            print("connected to \(peer) through relay \(out["relay"] ?? "?"), then directly at \(out["address"] ?? "?") (\(out["upgrade"] ?? "?") after \(String(format: "%.0f", out["upgrade_ms"] as? Double ?? 0)) ms)")
        default:
            print("connected to \(peer) through relay \(out["relay"] ?? "?") (limited connection): \(out["why_relayed"] ?? "?")")
        }
        for f in out["direct_failures"] as? [String] ?? [] { print("  not direct: \(f)") }
        print(String(format: "ping: %.3f ms", out["rtt_ms"] as? Double ?? 0))
    }
}
