import CairnCore
import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import Prometheus

/// A host's metrics through swift-metrics, kept in a Prometheus registry of its own (several
/// hosts in one process do not mix; nothing global is bootstrapped). Counters follow the event
/// stream and the resource manager as things happen; gauges are read from the services when
/// the registry is scraped (`exposition()`).
///
/// Names: `cairn_connections{direction,transport}`, `cairn_connections_opened_total`,
/// `cairn_handshake_failures_total{direction,reason}`, `cairn_streams{protocol}`,
/// `cairn_resource_refusals_total{scope,limit}`, `cairn_resource_usage{resource}`,
/// `cairn_dht_requests_served_total{type,result}`, `cairn_dht_queries_total{type}`,
/// `cairn_dht_query_duration_seconds{type}` (histogram), `cairn_dht_routing_table_peers{table}`,
/// `cairn_relay_reservations`, `cairn_relay_circuits`, `cairn_relay_reservations_granted_total`,
/// `cairn_relay_circuits_opened_total`, `cairn_relay_bytes_forwarded_total`,
/// `cairn_relay_refusals_total{reason}`, `cairn_holepunch_total{result}`,
/// `cairn_holepunch_duration_seconds` (histogram), `cairn_reachability{state}`,
/// `cairn_external_addresses`, `cairn_tasks`. docs/metrics.md describes each.
public final class NodeMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory
    private let swarm: Swarm
    private let dht: DHTService?
    private let lanDHT: DHTService?
    private let relay: RelayService
    private let nat: NATService
    private struct State {
        var knownProtocols: Set<String> = []
        /// Last values of cumulative stats read from services, to turn them into counter increments.
        var last: [String: Int64] = [:]
    }
    private let state = NIOLockedValueBox(State())
    private let subscriptions = NIOLockedValueBox<[EventSubscription]>([])

    static let durationBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]

    init(swarm: Swarm, dht: DHTService?, lanDHT: DHTService?, relay: RelayService, nat: NATService) {
        self.swarm = swarm
        self.dht = dht
        self.lanDHT = lanDHT
        self.relay = relay
        self.nat = nat
        registry = PrometheusCollectorRegistry()
        var f = PrometheusMetricsFactory(registry: registry)
        f.defaultDurationHistogramBuckets = Self.durationBuckets
        factory = f
        let sub = swarm.events.subscribe { [weak self] in self?.observe($0) }
        subscriptions.withLockedValue { $0.append(sub) }
        swarm.resources.onRefusal { [weak self] r in
            self?.count("cairn_resource_refusals_total", ["scope": r.scope.rawValue, "limit": r.limit.rawValue])
        }
    }

    func stop() {
        for s in subscriptions.withLockedValue({ $0 }) { s.cancel() }
    }

    // MARK: Events

    private func observe(_ event: NodeEvent) {
        switch event {
        case .connectionEstablished(let c):
            count("cairn_connections_opened_total", ["direction": c.direction.rawValue, "transport": c.isLimited ? "relayed" : "direct"])
        case .handshakeFailed(let direction, let reason):
            count("cairn_handshake_failures_total", ["direction": direction.rawValue, "reason": reason.metricLabel])
        case .dhtRequestServed(let type, let answered):
            count("cairn_dht_requests_served_total", ["type": type, "result": answered ? "answered" : "refused"])
        case .dhtQueryFinished(let type, let duration, _):
            count("cairn_dht_queries_total", ["type": type])
            time("cairn_dht_query_duration_seconds", ["type": type], duration)
        case .holePunchFinished(let o):
            let result: String
            switch o.result {
            case .direct(.reversal, _): result = "direct_reversal"
            case .direct(.holePunch, _): result = "direct_hole_punch"
            case .direct(.peersDial, _): result = "direct_peers_dial"
            case .relayed: result = "relayed"
            }
            count("cairn_holepunch_total", ["result": result])
            if let e = o.elapsed { time("cairn_holepunch_duration_seconds", [:], e) }
        default:
            break
        }
    }

    // MARK: Scrape

    /// Reads the gauges from the services and renders every metric in Prometheus' text format.
    public func exposition() -> String {
        collect()
        return registry.emitToString()
    }

    func collect() {
        var connections: [String: Int] = [:]
        for d in ["inbound", "outbound"] { for t in ["direct", "relayed"] { connections["\(d) \(t)"] = 0 } }
        for c in swarm.connections { connections["\(c.direction.rawValue) \(c.isLimited ? "relayed" : "direct")", default: 0] += 1 }
        for (k, n) in connections {
            let parts = k.split(separator: " ").map(String.init)
            gauge("cairn_connections", ["direction": parts[0], "transport": parts[1]], n)
        }

        let resources = swarm.resources
        let streams = resources.read { $0.streamsByProtocol }
        let protocols = state.withLockedValue { s -> Set<String> in
            s.knownProtocols.formUnion(streams.keys)
            return s.knownProtocols
        }
        for p in protocols { gauge("cairn_streams", ["protocol": p], streams[p] ?? 0) }
        let u = resources.usage
        for (name, v) in [("inbound_connections", u.inboundConnections), ("outbound_connections", u.outboundConnections),
                          ("inbound_handshakes", u.inboundHandshakes), ("outbound_handshakes", u.outboundHandshakes),
                          ("inbound_streams", u.inboundStreams), ("outbound_streams", u.outboundStreams),
                          ("negotiating_streams", u.negotiatingStreams), ("memory_bytes", u.memory),
                          ("exempt_connections", u.exemptConnections), ("exempt_streams", u.exemptStreams),
                          ("peers", u.peers), ("ips", u.ips)] {
            gauge("cairn_resource_usage", ["resource": name], v)
        }

        if let dht { gauge("cairn_dht_routing_table_peers", ["table": "main"], dht.routingTable.count) }
        if let lan = lanDHT { gauge("cairn_dht_routing_table_peers", ["table": "lan"], lan.routingTable.count) }

        let relay = self.relay.stats
        gauge("cairn_relay_serving", [:], relay.serving ? 1 : 0)
        gauge("cairn_relay_reservations", [:], relay.reservations.count)
        gauge("cairn_relay_circuits", [:], relay.circuits.count)
        advance("cairn_relay_reservations_granted_total", [:], Int64(relay.reservationsGranted))
        advance("cairn_relay_circuits_opened_total", [:], Int64(relay.circuitsOpened))
        advance("cairn_relay_bytes_forwarded_total", [:], Int64(clamping: relay.bytesForwarded))
        for (reason, n) in relay.refused { advance("cairn_relay_refusals_total", ["reason": "\(reason)"], Int64(n)) }

        let reachability = nat.report().reachability.reachability
        for r in [AutoNAT.ReachabilityTracker.Reachability.unknown, .public, .private] {
            gauge("cairn_reachability", ["state": r.rawValue], r == reachability ? 1 : 0)
        }
        gauge("cairn_external_addresses", [:], nat.externalAddresses.count)
        gauge("cairn_tasks", [:], swarm.tasks.count)
    }

    // MARK: swift-metrics

    private func dims(_ d: [String: String]) -> [(String, String)] { d.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }

    private func count(_ label: String, _ d: [String: String], by n: Int64 = 1) {
        CoreMetrics.Counter(label: label, dimensions: dims(d), factory: factory).increment(by: n)
    }

    private func gauge(_ label: String, _ d: [String: String], _ v: Int) {
        CoreMetrics.Gauge(label: label, dimensions: dims(d), factory: factory).record(v)
    }

    private func time(_ label: String, _ d: [String: String], _ duration: Duration) {
        CoreMetrics.Timer(label: label, dimensions: dims(d), factory: factory).recordNanoseconds(Int64(duration / .nanoseconds(1)))
    }

    /// A cumulative number a service keeps, as a counter: increments by what it grew since the
    /// last scrape.
    private func advance(_ label: String, _ d: [String: String], _ total: Int64) {
        let key = label + dims(d).map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        let delta = state.withLockedValue { s -> Int64 in
            let before = s.last[key] ?? 0
            s.last[key] = total
            return max(0, total - before)
        }
        // Created even at zero, so the series exists from the first scrape.
        count(label, d, by: delta)
    }
}

extension ConnectionError {
    /// A short reason for metrics labels.
    public var metricLabel: String {
        switch self {
        case .securityNegotiation: return "security_negotiation"
        case .noise: return "noise"
        case .muxerNegotiation: return "muxer_negotiation"
        case .yamux: return "yamux"
        case .handshakeTimeout: return "timeout"
        case .closed: return "closed"
        case .refused: return "resource_limit"
        }
    }
}
