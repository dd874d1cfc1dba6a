import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest

/// Circuit Relay v2 between Swift nodes over real TCP on 127.0.0.1: reservations, circuits as a
/// transport, limits, privacy and hostile input.
final class RelayNodeTests: LoopbackNodesTestCase {
    /// A relay R, a reserved peer B and a dialer A.
    func triangle(_ config: RelayService.Configuration = RelayService.Configuration())
        async throws -> (relay: RelayService, rAddr: Multiaddr, a: Node, aClient: RelayClient, b: Node, bClient: RelayClient) {
        let (r, rAddr) = try await makeNode("relay")
        let relay = RelayService(node: r, configuration: config, logger: logs.logger(label: "relay"))
        relay.setServing(true)
        let (a, _) = try await makeNode("a")
        let (b, _) = try await makeNode("b")
        let aClient = RelayClient(node: a, logger: logs.logger(label: "a"))
        let bClient = RelayClient(node: b, logger: logs.logger(label: "b"))
        let held = try await bClient.reserve(on: try await b.dial(rAddr))
        XCTAssertEqual(held.relay, r.peerID)
        return (relay, rAddr, a, aClient, b, bClient)
    }

    func testReserveAndDialThroughTheRelay() async throws {
        let t = try await triangle()
        let held = try XCTUnwrap(t.bClient.reservations.first)
        // The voucher is the relay's signature over (relay, B, expiry), checked on receipt.
        XCTAssertEqual(held.voucher?.relay, t.relay.node.peerID)
        XCTAssertEqual(held.voucher?.peer, t.b.peerID)
        XCTAssertEqual(held.limit, CircuitRelay.Limit(duration: 120, data: 128 * 1024))
        XCTAssertGreaterThan(held.expires.timeIntervalSinceNow, 3500)
        XCTAssertEqual(held.addresses, [t.rAddr.appending(.p2pCircuit)])
        XCTAssertEqual(t.relay.stats.reservations.map(\.peer), [t.b.peerID])

        let circuit = held.addresses[0].appending(.p2p(t.b.peerID))
        let conn = try await t.a.dial(circuit)
        XCTAssertEqual(conn.remotePeer, t.b.peerID)
        XCTAssertTrue(conn.isLimited)
        XCTAssertEqual(conn.relay, t.relay.node.peerID)
        XCTAssertEqual(conn.limit, CircuitRelay.Limit(duration: 120, data: 128 * 1024))
        XCTAssertEqual(conn.remoteAddress, t.rAddr.appending(.p2pCircuit))
        let rtts = try await t.a.ping(conn, count: 3)
        XCTAssertEqual(rtts.count, 3)
        // Identify runs end to end too: B's key, its protocols, over the circuit.
        let info = try await t.a.identify(conn)
        XCTAssertEqual(info.publicKey.map { PeerID(publicKey: $0) }, t.b.peerID)
        // B sees a limited inbound connection from A through the same relay.
        let bSide = try XCTUnwrap(t.b.swarm.connections(to: t.a.peerID).first)
        XCTAssertTrue(bSide.isLimited)
        XCTAssertEqual(bSide.direction, .inbound)
        XCTAssertEqual(t.relay.stats.circuits.count, 1)
        await conn.close()
        try await eventually { t.relay.stats.circuits.isEmpty }
        XCTAssertEqual(t.relay.stats.circuitEnds["closed"], 1, "\(t.relay.stats.circuitEnds)")
    }

    /// The relay forwards only the Noise session's ciphertext: a marker sent in the clear over
    /// the relayed connection never appears in what it handles, though the bytes flowed.
    func testTheRelayOnlySeesCiphertext() async throws {
        let t = try await triangle()
        let seen = NIOLockedValueBox<[UInt8]>([])
        t.relay.tap.withLockedValue { $0 = { chunk in seen.withLockedValue { $0 += chunk } } }
        let marker = Array("cairn-plaintext-marker-".utf8) + Array(repeating: UInt8(ascii: "x"), count: 64)
        let got = NIOLockedValueBox<[UInt8]>([])
        t.b.swarm.handle("/test/echo/1.0.0") { s in
            let bytes = try await s.readToEnd(limit: 1 << 16)
            got.withLockedValue { $0 = bytes }
            try await s.write(bytes)
            await s.closeWrite()
        }
        let conn = try await t.a.dial(t.rAddr.appending(.p2pCircuit).appending(.p2p(t.b.peerID)))
        let s = try await conn.openStream(["/test/echo/1.0.0"])
        var payload: [UInt8] = []
        for _ in 0..<20 { payload += marker }
        try await s.write(payload)
        await s.closeWrite()
        let echo = try await s.readToEnd(limit: 1 << 16)
        XCTAssertEqual(echo, payload)
        XCTAssertEqual(got.withLockedValue { $0 }, payload)
        let forwarded = seen.withLockedValue { $0 }
        XCTAssertGreaterThan(forwarded.count, 2 * payload.count, "the relay carried the session")
        XCTAssertFalse(contains(forwarded, Array("cairn-plaintext-marker".utf8)), "plaintext crossed the relay")
        XCTAssertFalse(contains(forwarded, Array("/test/echo/1.0.0".utf8)), "the inner protocol name crossed the relay in the clear")
        // The outer multistream and Noise handshake are all the relay could parse: the ephemeral keys.
    }

    /// Bulk data both ways at once through the relay arrives intact. (Regression: bytes for a
    /// relayed connection are written while the outer connection is still handling what it
    /// received; its queued Noise frames must leave first or the peer sees nonces out of order.)
    func testBulkBothWaysThroughTheRelayArrivesIntact() async throws {
        var config = RelayService.Configuration()
        config.resources.circuitBytes = 1 << 30
        let t = try await triangle(config)
        for n in [t.a, t.b] {
            n.swarm.handle("/test/echo/1.0.0") { s in
                while let chunk = try await s.read() { try await s.write(chunk) }
                await s.closeWrite()
            }
        }
        let conn = try await t.a.dial(t.rAddr.appending(.p2pCircuit).appending(.p2p(t.b.peerID)))
        let bSide = try XCTUnwrap(t.b.swarm.connections(to: t.a.peerID).first { $0.isLimited })
        let payload = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ ($0 >> 11)) }
        try await withThrowingTaskGroup(of: Void.self) { g in
            for c in [conn, bSide, conn, bSide] {
                g.addTask {
                    let s = try await c.openStream(["/test/echo/1.0.0"])
                    async let echoed = s.readToEnd(limit: 4 << 20)
                    var i = 0
                    while i < payload.count {
                        try await s.write(Array(payload[i..<min(i + 100_000, payload.count)]))
                        i += 100_000
                    }
                    await s.closeWrite()
                    let back = try await echoed
                    XCTAssertEqual(back.count, payload.count)
                    XCTAssertTrue(back == payload, "echo differs")
                }
            }
            try await g.waitForAll()
        }
        // Both connections are still up (no Noise error closed anything).
        _ = try await t.a.ping(conn)
        _ = try await t.b.ping(bSide)
    }

    func testCircuitIsCutAtTheDataLimit() async throws {
        var config = RelayService.Configuration()
        config.resources.circuitBytes = 64 * 1024
        let t = try await triangle(config)
        t.b.swarm.handle("/test/sink/1.0.0") { s in _ = try? await s.readToEnd(limit: 8 << 20) }
        let conn = try await t.a.dial(t.rAddr.appending(.p2pCircuit).appending(.p2p(t.b.peerID)))
        XCTAssertEqual(conn.limit?.data, 64 * 1024)
        let s = try await conn.openStream(["/test/sink/1.0.0"])
        let started = Date()
        do {
            for _ in 0..<64 { try await s.write([UInt8](repeating: 7, count: 4096)) }
            await s.closeWrite()
        } catch {}
        // The relay cut the circuit: the relayed connection closes on both sides.
        _ = try await conn.closed.get()
        XCTAssertLessThan(Date().timeIntervalSince(started), 10)
        try await eventually { t.relay.stats.circuits.isEmpty }
        let stats = t.relay.stats
        XCTAssertEqual(stats.circuitEnds["data limit"], 1, "\(stats.circuitEnds)")
        XCTAssertLessThanOrEqual(stats.bytesForwarded, 2 * 64 * 1024 + 0, "never more than the limit each way")
        // The reservation outlives the circuit, and a new circuit works.
        XCTAssertEqual(stats.reservations.count, 1)
        let again = try await t.a.dial(t.rAddr.appending(.p2pCircuit).appending(.p2p(t.b.peerID)))
        _ = try await t.a.ping(again)
    }

    func testCircuitIsCutAtTheDurationLimit() async throws {
        var config = RelayService.Configuration()
        config.resources.circuitDuration = 1
        let t = try await triangle(config)
        let conn = try await t.a.dial(t.rAddr.appending(.p2pCircuit).appending(.p2p(t.b.peerID)))
        XCTAssertEqual(conn.limit?.duration, 1)
        _ = try await t.a.ping(conn)
        let started = Date()
        _ = try await conn.closed.get()
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        try await eventually { t.relay.stats.circuits.isEmpty }
        XCTAssertEqual(t.relay.stats.circuitEnds["duration limit"], 1, "\(t.relay.stats.circuitEnds)")
    }

    func testConnectWithoutReservationIsRefused() async throws {
        let t = try await triangle()
        let (c, _) = try await makeNode("c")  // holds no reservation
        do {
            _ = try await t.a.dial(t.rAddr.appending(.p2pCircuit).appending(.p2p(c.peerID)))
            XCTFail("dialed a peer without a reservation")
        } catch let e as RelayError {
            XCTAssertEqual(e, .refused(.noReservation, nil))
        }
        XCTAssertEqual(t.relay.stats.refused[.noReservation], 1)
        XCTAssertTrue(!logs.records(atLeast: .info, containing: ["destination holds no reservation"]).isEmpty, logs.dump)
        XCTAssertTrue(t.relay.stats.circuits.isEmpty)
    }

    func testReservationLimitsAreEnforcedAndNothingLeaks() async throws {
        var config = RelayService.Configuration()
        config.resources.maxReservations = 3
        config.resources.maxReservationsPerIP = 100
        let (r, rAddr) = try await makeNode("relay")
        let relay = RelayService(node: r, configuration: config, logger: logs.logger(label: "relay"))
        relay.setServing(true)
        var clients: [(Node, Connection, RelayClient)] = []
        for i in 0..<4 {
            let (n, _) = try await makeNode("p\(i)")
            clients.append((n, try await n.dial(rAddr), RelayClient(node: n, logger: logs.logger(label: "p\(i)"))))
        }
        for (_, conn, client) in clients.prefix(3) { try await client.reserve(on: conn) }
        do {
            try await clients[3].2.reserve(on: clients[3].1)
            XCTFail("a fourth reservation was granted")
        } catch let e as RelayError {
            XCTAssertEqual(e, .refused(.resourceLimitExceeded, nil))
        }
        // A refresh does not take a second slot.
        try await clients[0].2.reserve(on: clients[0].1)
        XCTAssertEqual(relay.stats.reservations.count, 3)
        // A restarted peer (same identity, new connection) replaces its reservation, and the old
        // connection's close does not drop the new one.
        let old = clients[1].1
        let fresh = try await clients[1].0.swarm.dial(rAddr)
        XCTAssertNotEqual(fresh.id, old.id)
        try await clients[1].2.reserve(on: fresh)
        await old.close()
        try await Task.sleep(nanoseconds: 100_000_000)
        XCTAssertEqual(relay.stats.reservations.count, 3)
        let relaySide = r.swarm.connections(to: clients[1].0.peerID)
        XCTAssertEqual(relaySide.count, 1)
        XCTAssertEqual(relay.stats.reservations.first { $0.peer == clients[1].0.peerID }?.connection, relaySide.first?.id)
        // Disconnecting frees the slots: counts return to zero.
        for (n, _, _) in clients { for c in n.swarm.connections { await c.close() } }
        try await eventually { relay.stats.reservations.isEmpty }
        XCTAssertEqual(relay.stats.refused[.tooManyReservations], 1)
    }

    func testReserveFloodAndPerIPLimits() async throws {
        var config = RelayService.Configuration()
        config.resources.maxReservationsPerIP = 2
        let (r, rAddr) = try await makeNode("relay")
        let relay = RelayService(node: r, configuration: config, logger: logs.logger(label: "relay"))
        relay.setServing(true)
        let (p, _) = try await makeNode("flooder")
        let client = RelayClient(node: p, logger: logs.logger(label: "flooder"))
        let conn = try await p.dial(rAddr)
        var statuses: [CircuitRelay.Status] = []
        for _ in 0..<10 {
            do { try await client.reserve(on: conn); statuses.append(.ok) } catch RelayError.refused(let s, _) { statuses.append(s) }
        }
        XCTAssertEqual(statuses, Array(repeating: .ok, count: 4) + Array(repeating: .resourceLimitExceeded, count: 6))
        XCTAssertEqual(relay.stats.refused[.peerReservingTooOften], 6)
        XCTAssertEqual(relay.stats.reservations.count, 1, "a flood holds one slot")
        // Distinct peers from one IP (all on 127.0.0.1 here): two, then refused.
        var perIP: [CircuitRelay.Status] = []
        for i in 0..<2 {
            let (n, _) = try await makeNode("ip\(i)")
            let c = RelayClient(node: n, logger: logs.logger(label: "ip\(i)"))
            do { try await c.reserve(on: try await n.dial(rAddr)); perIP.append(.ok) } catch RelayError.refused(let s, _) { perIP.append(s) }
        }
        XCTAssertEqual(perIP, [.ok, .resourceLimitExceeded])
        XCTAssertEqual(relay.stats.refused[.tooManyReservationsForIP], 1)
    }

    func testMalformedHopAndStopMessagesAreRefused() async throws {
        let t = try await triangle()
        let conn = try await t.a.dial(t.rAddr)
        func hop(_ bytes: [UInt8]) async throws -> CircuitRelay.HopMessage {
            let s = try await conn.openStream([CircuitRelay.hopProtocolID])
            try await s.writeLengthPrefixed(bytes)
            return try CircuitRelay.decodeHop(try await s.readLengthPrefixed(maxLength: 4096))
        }
        guard case .status(.malformedMessage, _, _) = try await hop([0xff, 0xff, 0xff]) else { return XCTFail() }
        guard case .status(.unexpectedMessage, _, _) = try await hop(CircuitRelay.encode(.status(.ok, reservation: nil, limit: nil))) else { return XCTFail() }
        // An oversized length prefix: the stream is dropped, the relay keeps serving.
        let s = try await conn.openStream([CircuitRelay.hopProtocolID])
        try await s.write(Varint.encode(1 << 20) + [0])
        _ = try? await s.read()
        // The stop side: a STATUS where a CONNECT belongs, and garbage.
        let relayConn = try XCTUnwrap(t.relay.node.swarm.connections(to: t.b.peerID).first)
        func stop(_ bytes: [UInt8]) async throws -> CircuitRelay.StopMessage {
            let s = try await relayConn.openStream([CircuitRelay.stopProtocolID])
            try await s.writeLengthPrefixed(bytes)
            return try CircuitRelay.decodeStop(try await s.readLengthPrefixed(maxLength: 4096))
        }
        let unexpected = try await stop(CircuitRelay.encode(.status(.ok)))
        XCTAssertEqual(unexpected, .status(.unexpectedMessage))
        let malformed = try await stop([0x08])
        XCTAssertEqual(malformed, .status(.malformedMessage))
        // Still serving: a real circuit works.
        let c = try await t.a.dial(t.rAddr.appending(.p2pCircuit).appending(.p2p(t.b.peerID)))
        _ = try await t.a.ping(c)
        XCTAssertTrue(!logs.records(atLeast: .info, containing: ["malformed hop message"]).isEmpty, logs.dump)
    }

    func testAStopFromARelayWithoutOurReservationIsRefused() async throws {
        let (r2, r2Addr) = try await makeNode("stranger-relay")
        let (b, _) = try await makeNode("b")
        _ = RelayClient(node: b, logger: logs.logger(label: "b"))
        let conn = try await r2.dial(b.listenAddresses[0].appending(.p2p(b.peerID)))
        let s = try await conn.openStream([CircuitRelay.stopProtocolID])
        try await s.writeLengthPrefixed(CircuitRelay.encode(.connect(CircuitRelay.Peer(id: PrivateKey.generate().peerID), limit: nil)))
        let answer = try await s.readLengthPrefixed(maxLength: 4096)
        XCTAssertEqual(try CircuitRelay.decodeStop(answer), .status(.permissionDenied))
        _ = r2Addr
    }

    /// A node volunteers only once AutoNAT finds it public (the hop protocol appears in what it
    /// announces), and a private node's auto-relay reserves on it and advertises the address.
    func testVolunteeringFollowsReachabilityAndAutoRelayReserves() async throws {
        let (r, rAddr) = try await makeNode("volunteer")
        let relay = RelayService(node: r, logger: logs.logger(label: "relay"))
        var natConfig = NATService.Configuration()
        natConfig.policy.allowPrivateAddresses = true
        let nat = NATService(node: r, dht: nil, configuration: natConfig, logger: logs.logger(label: "nat"))
        relay.followReachability(of: nat)
        XCTAssertFalse(r.swarm.isHandling(CircuitRelay.hopProtocolID), "no volunteering before reachability is known")
        // Two AutoNAT servers on two hosts (loopback addresses) dial it back: public, so it volunteers.
        var servers: [NATService] = []
        for i in 0..<2 {
            let (s, sAddr) = try await makeNode("server\(i)", ip: "127.0.0.\(2 + i)")
            servers.append(NATService(node: s, dht: nil, configuration: natConfig, logger: logs.logger(label: "server\(i)")))
            _ = try await nat.probe(try await r.dial(sAddr))
        }
        XCTAssertEqual(nat.reachability.reachability, .public)
        XCTAssertTrue(relay.isServing)
        XCTAssertTrue(r.swarm.isHandling(CircuitRelay.hopProtocolID))

        let (p, _) = try await makeNode("private")
        let client = RelayClient(node: p, logger: logs.logger(label: "private"))
        var config = AutoRelay.Configuration()
        config.tick = .milliseconds(100)
        let auto = AutoRelay(node: p, client: client, mode: .always, configuration: config, logger: logs.logger(label: "auto"))
        auto.start()
        defer { Task { await auto.stop() } }
        _ = try await p.dial(rAddr)  // identify tells it r speaks hop
        try await eventually { client.reservations.count == 1 }
        let expected = rAddr.appending(.p2pCircuit)
        try await eventually { p.advertisedAddresses.contains(expected) }
        // Its signed peer record carries the relayed address.
        XCTAssertTrue(try PeerRecord(envelope: p.signedPeerRecord).addresses.contains(expected))
        // The relay goes away: the reservation and the address go with it.
        for c in p.swarm.connections(to: r.peerID) { await c.close() }
        try await eventually { client.reservations.isEmpty && !p.advertisedAddresses.contains(expected) }
    }

    // MARK: Helpers

    func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<(i + needle.count)]) == needle { return true }
        }
        return false
    }
}
