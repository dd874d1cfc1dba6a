import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOCore
import NIOPosix
import XCTest

/// The Prometheus endpoint after a known sequence of events shows the expected counters; the
/// JSON log handler writes one parseable object per line.
final class MetricsTests: LoopbackNodesTestCase {
    var hosts: [CairnHost] = []
    var raws: [RawPeer] = []

    override func tearDown() async throws {
        for r in raws { await r.close() }
        for h in hosts { await h.shutdown() }
        hosts = []
        try await super.tearDown()
    }

    /// `GET path` over a raw socket; returns the status line and the body.
    func get(_ path: String, from address: Multiaddr) async throws -> (status: String, body: String) {
        let r = try await RawPeer.connect(to: address, group: group)
        raws.append(r)
        try await r.send(Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8))
        _ = await r.awaitClose()
        let text = String(decoding: r.collector.take(max: .max), as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw RawPeerError.timeout("an HTTP response") }
        let head = String(text[..<split.lowerBound])
        return (head.components(separatedBy: "\r\n")[0], String(text[split.upperBound...]))
    }

    /// The samples of an exposition: `name{labels}` → value.
    func samples(_ body: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in body.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else { continue }
            out[String(line[..<space])] = v
        }
        return out
    }

    func testScrapeAfterAKnownSequenceShowsTheExpectedCounters() async throws {
        var c = try loopbackHostConfiguration()
        c.dht.followReachability = false
        c.metricsAddress = try Multiaddr("/ip4/127.0.0.1/tcp/0")
        c.node.swarm.resources.connectionsPerIP = 1
        let host = try CairnHost(configuration: c, group: group, logger: logs.logger(label: "host"))
        hosts.append(host)
        try await host.start()
        let hostAddress = host.listenAddresses[0].appending(.p2p(host.peerID))
        let metricsAddress = try XCTUnwrap(host.metricsServerAddress)

        // 1. A peer on 127.0.0.3 connects, pings twice and sends two FIND_NODE requests on one
        //    stream, which it keeps open.
        let (peer, _) = try await makeNode("peer", ip: "127.0.0.3")
        let conn = try await peer.dial(hostAddress)
        _ = try await peer.ping(conn, count: 2)
        let kad = try await conn.openStream(["/ipfs/kad/1.0.0"])
        for _ in 0..<2 {
            try await kad.writeLengthPrefixed(KadMessage(kind: .findNode, key: Array(repeating: 7, count: 32)).encode())
            _ = try await kad.readLengthPrefixed(maxLength: KadMessage.maxMessageSize)
        }
        // 2. From 127.0.0.2: garbage instead of multistream-select (a failed handshake), and a
        //    second connection over the per-IP limit of 1 (a refusal).
        let garbage = try await RawPeer.connect(to: hostAddress, group: group, from: "127.0.0.2")
        raws.append(garbage)
        try await garbage.send(Array("\u{13}/not-multistream/1\n".utf8))
        _ = await garbage.awaitClose()
        try await eventually { host.node.swarm.resources.read { $0.connections(fromIP: [127, 0, 0, 2]) } == 0 }
        let held = try await RawPeer.connect(to: hostAddress, group: group, from: "127.0.0.2")
        raws.append(held)
        let over = try await RawPeer.connect(to: hostAddress, group: group, from: "127.0.0.2")
        raws.append(over)
        _ = await over.awaitClose()
        // 3. The host runs one DHT query of its own.
        _ = try await host.dht!.findClosest(key: Array("k".utf8))

        let (status, body) = try await get("/metrics", from: metricsAddress)
        XCTAssertEqual(status, "HTTP/1.1 200 OK")
        let m = samples(body)
        XCTAssertEqual(m[#"cairn_connections{direction="inbound",transport="direct"}"#], 1, body)
        XCTAssertEqual(m[#"cairn_connections{direction="outbound",transport="relayed"}"#], 0)
        XCTAssertEqual(m[#"cairn_connections_opened_total{direction="inbound",transport="direct"}"#], 1)
        XCTAssertEqual(m[#"cairn_handshake_failures_total{direction="inbound",reason="security_negotiation"}"#], 1)
        XCTAssertEqual(m[#"cairn_resource_refusals_total{limit="connections",scope="ip"}"#], 1)
        XCTAssertEqual(m[#"cairn_dht_requests_served_total{result="answered",type="find_node"}"#], 2)
        XCTAssertEqual(m[#"cairn_dht_queries_total{type="find_node"}"#], 1)
        XCTAssertEqual(m[#"cairn_dht_query_duration_seconds_count{type="find_node"}"#], 1)
        XCTAssertEqual(m[#"cairn_dht_routing_table_peers{table="main"}"#], 0, "the peer does not serve the DHT")
        XCTAssertEqual(m[#"cairn_resource_usage{resource="inbound_handshakes"}"#], 1, "the held raw socket")
        XCTAssertEqual(m[#"cairn_reachability{state="unknown"}"#], 1)
        XCTAssertEqual(m[#"cairn_reachability{state="public"}"#], 0)
        XCTAssertEqual(m[#"cairn_relay_circuits_opened_total"#], 0)
        XCTAssertNotNil(m["cairn_tasks"])
        XCTAssertEqual(m[#"cairn_streams{protocol="/ipfs/kad/1.0.0"}"#], 1, "the kad stream still open")

        let (missing, _) = try await get("/nothing", from: metricsAddress)
        XCTAssertEqual(missing, "HTTP/1.1 404 Not Found")
    }

    func testMetricsRefuseANonLoopbackAddressUnlessAllowed() async throws {
        var c = try loopbackHostConfiguration()
        c.metricsAddress = try Multiaddr("/ip4/0.0.0.0/tcp/0")
        let host = try CairnHost(configuration: c, group: group, logger: logs.logger(label: "host"))
        hosts.append(host)
        do {
            try await host.start()
            XCTFail("metrics served on 0.0.0.0 without --metrics-allow-remote")
        } catch let e as MetricsServer.Failure {
            guard case .notLoopback = e else { return XCTFail("\(e)") }
        }
    }

    func testJSONLogLinesCarryLevelMessageAndMetadata() throws {
        let lines = LineCollector()
        var h = JSONLogHandler(label: "cairn") { lines.append($0) }
        h.logLevel = .debug
        h[metadataKey: "node"] = "a"
        let logger = Logger(label: "cairn") { _ in h }
        logger.warning("resource manager refused inbound connection", metadata: ["refused": "ip limit on connections reached", "n": "\(3)"])
        logger.trace("not written")
        XCTAssertEqual(lines.all.count, 1)
        let line = try XCTUnwrap(lines.all.first)
        XCTAssertTrue(line.hasSuffix("\n"))
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(object["level"] as? String, "warning")
        XCTAssertEqual(object["msg"] as? String, "resource manager refused inbound connection")
        XCTAssertEqual(object["refused"] as? String, "ip limit on connections reached")
        XCTAssertEqual(object["node"] as? String, "a")
        XCTAssertEqual(object["label"] as? String, "cairn")
        XCTAssertNotNil(ISO8601DateFormatter.withFractionalSeconds.date(from: object["ts"] as? String ?? ""))
    }
}

final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ s: String) { lock.withLock { lines.append(s) } }
    var all: [String] { lock.withLock { lines } }
}

extension ISO8601DateFormatter {
    static var withFractionalSeconds: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}
