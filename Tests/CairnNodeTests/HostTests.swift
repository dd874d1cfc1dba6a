import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest

/// The node as a library: the event stream, the dialer, the keep-alive rule for relayed
/// connections, application streams, and hosts that find each other through the DHT.
final class HostTests: LoopbackNodesTestCase {
    var hosts: [CairnHost] = []

    override func tearDown() async throws {
        for h in hosts { await h.shutdown() }
        hosts = []
        try await super.tearDown()
    }

    /// A host on loopback (`loopbackHostConfiguration`).
    func makeHost(_ name: String, bootstrap: [Multiaddr] = [], presence: Bool = true) async throws -> CairnHost {
        var c = try loopbackHostConfiguration()
        c.bootstrapPeers = bootstrap
        c.dht.publishPresence = presence
        let h = try CairnHost(configuration: c, group: group, logger: logs.logger(label: name))
        hosts.append(h)
        try await h.start()
        return h
    }

    func address(of h: CairnHost) -> Multiaddr { h.listenAddresses[0].appending(.p2p(h.peerID)) }

    // MARK: Sockets

    /// The swarm keeps every UDP socket of the host (here the STUN responder beside the TCP
    /// port) and closes them at shutdown; loopback-only hosts neither map ports nor multicast.
    func testTheSwarmOwnsTheUDPSocketsAndClosesThemAtShutdown() async throws {
        var c = try loopbackHostConfiguration()
        c.stun = true
        let h = try CairnHost(configuration: c, group: group, logger: logs.logger(label: "udp"))
        try await h.start()
        let sockets = h.node.swarm.datagramSockets
        XCTAssertEqual(sockets.map(\.purpose), ["stun"])
        XCTAssertEqual(sockets.first?.local?.port, h.listenAddresses.first?.tcpEndpoint.map { Int($0.port) })
        XCTAssertEqual(h.portMapping?.note, "no IPv4 listen address beyond loopback")
        XCTAssertEqual(h.mdns?.note, "no IPv4 listen address beyond loopback")
        let channel = try XCTUnwrap(h.stunServers.first?.channel)
        await h.shutdown()
        XCTAssertTrue(h.node.swarm.datagramSockets.isEmpty)
        XCTAssertFalse(channel.isActive, "closed with the swarm")
    }

    // MARK: Event stream

    func testEventStreamDeliversEstablishedIdentifiedClosedInOrderUntilCancelled() async throws {
        let (a, _) = try await makeNode("a")
        let (b, bAddr) = try await makeNode("b")
        let seen = NIOLockedValueBox<[String]>([])
        let sub = a.events.subscribe { event in
            switch event {
            case .connectionEstablished(let c) where c.remotePeer == b.peerID: seen.withLockedValue { $0.append("established") }
            case .peerIdentified(let c, _) where c.remotePeer == b.peerID: seen.withLockedValue { $0.append("identified") }
            case .connectionClosed(let c, _) where c.remotePeer == b.peerID: seen.withLockedValue { $0.append("closed") }
            default: break
            }
        }
        let conn = try await a.dial(bAddr)
        _ = try await a.identify(conn)
        await conn.close()
        try await eventually { seen.withLockedValue { $0 }.count == 3 }
        XCTAssertEqual(seen.withLockedValue { $0 }, ["established", "identified", "closed"])

        sub.cancel()
        let again = try await a.dial(bAddr)
        _ = try await a.identify(again)
        await again.close()
        try await Task.sleep(nanoseconds: 200_000_000)
        XCTAssertEqual(seen.withLockedValue { $0 }.count, 3, "nothing after cancel: \(seen.withLockedValue { $0 })")
    }

    func testEventStreamAsAsyncSequenceEndsItsSubscriptionWhenTheConsumerStops() async throws {
        let (a, _) = try await makeNode("a")
        let (_, bAddr) = try await makeNode("b")
        let before = a.events.subscriberCount
        let consumer = Task { () -> [String] in
            var kinds: [String] = []
            for await e in a.events.stream() {
                if case .connectionEstablished = e { kinds.append("established") }
                if case .peerIdentified = e { kinds.append("identified"); break }
            }
            return kinds
        }
        try await eventually { a.events.subscriberCount == before + 1 }
        _ = try await a.dial(bAddr)
        let kinds = await consumer.value
        XCTAssertEqual(kinds, ["established", "identified"])
        try await eventually { a.events.subscriberCount == before }
    }

    func testLocalProtocolChangesAreEmittedAndPushedToPeers() async throws {
        let (a, _) = try await makeNode("a")
        let (b, bAddr) = try await makeNode("b")
        let conn = try await a.dial(bAddr)
        _ = try await a.identify(conn)
        let pushed = NIOLockedValueBox(false)
        let sub = a.events.subscribe { e in
            if case .peerIdentified(_, let info) = e, info.protocols.contains("/test/new/1.0.0") { pushed.withLockedValue { $0 = true } }
        }
        defer { sub.cancel() }
        b.swarm.handle("/test/new/1.0.0") { s in await s.closeWrite() }
        try await eventually { pushed.withLockedValue { $0 } }  // identify push followed the change
    }

    // MARK: Dialer

    func testTenConcurrentConnectsMakeOneConnection() async throws {
        let (a, _) = try await makeNode("a")
        let (b, bAddr) = try await makeNode("b")
        var options = DialOptions()
        options.addresses = [bAddr.withoutTrailingPeerID]
        let (dialer, peer, opts) = (a.dialer, b.peerID, options)
        let outcomes = try await withThrowingTaskGroup(of: DialOutcome.self) { g in
            for _ in 0..<10 { g.addTask { try await dialer.connect(to: peer, opts) } }
            var all: [DialOutcome] = []
            for try await o in g { all.append(o) }
            return all
        }
        XCTAssertEqual(Set(outcomes.map { ObjectIdentifier($0.connection) }).count, 1, "one connection for all ten calls")
        XCTAssertEqual(a.swarm.connections(to: b.peerID).count, 1)
        XCTAssertEqual(a.dialer.dialCount, 1, "the dials were coalesced")
        try await eventually { b.swarm.connections(to: a.peerID).count == 1 }
    }

    func testADeadAddressAndALiveOneGiveTheLiveOne() async throws {
        let (a, _) = try await makeNode("a")
        let (b, bAddr) = try await makeNode("b")
        // A port nobody listens on (bound, then closed).
        let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let deadPort = probe.localAddress!.port!
        try await probe.close()
        let dead = try Multiaddr("/ip4/127.0.0.1/tcp/\(deadPort)")
        var options = DialOptions()
        options.addresses = [dead, bAddr.withoutTrailingPeerID]
        let outcome = try await a.dialer.connect(to: b.peerID, options)
        XCTAssertEqual(outcome.path, .direct)
        XCTAssertEqual(outcome.connection.remoteAddress, bAddr.withoutTrailingPeerID)
        XCTAssertEqual(outcome.failures.map(\.address), [dead], "\(outcome.failures)")
    }

    /// Happy Eyeballs: an address that accepts TCP and then says nothing (its handshake would
    /// run to the timeout) does not hold the dial up: the next address starts `attemptDelay`
    /// later, wins, and is returned while the silent attempt is still waiting.
    func testASilentAddressDoesNotHoldUpTheNextOne() async throws {
        let (a, _) = try await makeNode("a")
        let (b, bAddr) = try await makeNode("b")
        let accepted = NIOLockedValueBox<[Channel]>([])
        let silent = try await ServerBootstrap(group: group)
            .childChannelInitializer { ch in accepted.withLockedValue { $0.append(ch) }; return ch.eventLoop.makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        let silentAddr = try Multiaddr("/ip4/127.0.0.1/tcp/\(silent.localAddress!.port!)")
        var options = DialOptions()
        options.addresses = [silentAddr, bAddr.withoutTrailingPeerID]
        // Loopback ranks both the same: the caller's order stands, the silent one first.
        let outcome = try await a.dialer.connect(to: b.peerID, options)
        XCTAssertEqual(outcome.connection.remoteAddress, bAddr.withoutTrailingPeerID)
        let pending = accepted.withLockedValue { $0 }
        XCTAssertEqual(pending.count, 1, "the silent address was dialed first")
        XCTAssertTrue(pending.allSatisfy(\.isActive), "and its attempt was still waiting when the dial returned")
        XCTAssertTrue(outcome.failures.isEmpty, "a straggler is not a failure: \(outcome.failures)")
        for c in pending { try? await c.close() }
        try await silent.close()
    }

    func testAPeerWithNoAddressIsRefusedWithAReason() async throws {
        let (a, _) = try await makeNode("a")
        do {
            _ = try await a.dialer.connect(to: PrivateKey.generate().peerID)
            XCTFail("dialed a peer nobody knows")
        } catch let e as DialError {
            guard case .noAddresses = e else { return XCTFail("\(e)") }
        }
    }

    /// In a network of three, the DHT join connects everyone: drop those connections so the
    /// seeker knows the target only through the DHT (it keeps no peer store).
    func disconnect(_ a: CairnHost, _ b: CairnHost) async {
        for c in a.node.swarm.connections(to: b.peerID) { await c.close() }
        XCTAssertNil(a.node.swarm.connection(to: b.peerID))
        XCTAssertNil(a.node.peerStore)
    }

    func testAPeerKnownOnlyThroughTheDHTIsFoundAndDialed() async throws {
        let boot = try await makeHost("boot")
        let target = try await makeHost("target", bootstrap: [address(of: boot)])
        XCTAssertTrue(target.isJoined)
        let seeker = try await makeHost("seeker", bootstrap: [address(of: boot)])
        await disconnect(seeker, target)
        // The target's presence record is published when it joins; give it a moment to land.
        var outcome: DialOutcome?
        let deadline = Date().addingTimeInterval(10)
        while outcome == nil {
            do { outcome = try await seeker.connect(to: target.peerID) } catch {
                if Date() > deadline { throw error }
                try await Task.sleep(nanoseconds: 100_000_000)
            }
        }
        let o = try XCTUnwrap(outcome)
        XCTAssertEqual(o.path, .direct)
        XCTAssertEqual(o.connection.remotePeer, target.peerID)
        guard case .presenceRecord? = o.routed?.source else { return XCTFail("found by \(String(describing: o.routed))") }
    }

    func testAPeerWithoutPresenceIsFoundByPeerRouting() async throws {
        let boot = try await makeHost("boot")
        let target = try await makeHost("target", bootstrap: [address(of: boot)], presence: false)
        XCTAssertTrue(target.isJoined)
        let seeker = try await makeHost("seeker", bootstrap: [address(of: boot)], presence: false)
        await disconnect(seeker, target)
        let o = try await seeker.connect(to: target.peerID)
        XCTAssertEqual(o.routed?.source, .peerRouting, "the bootstrap peer's routing table knew the target")
        XCTAssertEqual(o.connection.remotePeer, target.peerID)
    }

    // MARK: Keep-alive rule

    /// Relay R; B reserved on it; A dials B through it.
    func relayedPair() async throws -> (a: Node, b: Node, bAddr: Multiaddr, relayed: Connection) {
        let (r, rAddr) = try await makeNode("relay")
        let relay = RelayService(node: r, logger: logs.logger(label: "relay"))
        relay.setServing(true)
        let (a, _) = try await makeNode("a")
        let (b, bAddr) = try await makeNode("b")
        _ = RelayClient(node: a, logger: logs.logger(label: "a"))
        let bClient = RelayClient(node: b, logger: logs.logger(label: "b"))
        try await bClient.reserve(on: try await b.dial(rAddr))
        let relayed = try await a.dial(rAddr.appending(.p2pCircuit).appending(.p2p(b.peerID)))
        return (a, b, bAddr, relayed)
    }

    func testAnIdleRelayedConnectionClosesOnceADirectOneExists() async throws {
        let t = try await relayedPair()
        _ = try await t.a.identify(t.relayed)
        while await t.relayed.openStreamCount() > 0 { try await Task.sleep(nanoseconds: 20_000_000) }
        XCTAssertEqual(t.a.swarm.connections(to: t.b.peerID).count, 1)
        let direct = try await t.a.dial(t.bAddr)
        XCTAssertFalse(direct.isLimited)
        _ = try await t.relayed.closed.get()  // closed by the rule, no timer involved
        XCTAssertEqual(t.a.swarm.connections(to: t.b.peerID), [direct])
        XCTAssertFalse(logs.records(atLeast: .info, containing: ["a direct connection to the peer is up"]).isEmpty, "the reason is logged")
    }

    func testABusyRelayedConnectionClosesWhenItsLastStreamEnds() async throws {
        let t = try await relayedPair()
        _ = try await t.a.identify(t.relayed)
        let stream = try await t.relayed.openStream([Ping.protocolID])
        _ = try await t.a.dial(t.bAddr)
        try await Task.sleep(nanoseconds: 300_000_000)
        XCTAssertTrue(t.a.swarm.connections.contains(t.relayed), "a relayed connection carrying a stream stays")
        try await stream.write(Array(repeating: 7, count: Ping.payloadLength))
        _ = try await stream.readExactly(Ping.payloadLength)
        await stream.closeWrite()
        _ = try await t.relayed.closed.get()
    }

    // MARK: Streams for applications

    func testApplicationProtocolOverHostStreams() async throws {
        let server = try await makeHost("server")
        let client = try await makeHost("client")
        server.handle(protocol: "/test/upper/1.0.0") { stream in
            let bytes = try await stream.readToEnd(limit: 1024)
            try await stream.write(Array(String(decoding: bytes, as: UTF8.self).uppercased().utf8))
            await stream.closeWrite()
        }
        var options = DialOptions()
        options.addresses = server.listenAddresses
        let stream = try await client.openStream(to: server.peerID, protocols: ["/test/upper/1.0.0"], options: options)
        XCTAssertEqual(stream.protocolID, "/test/upper/1.0.0")
        try await stream.write(Array("cairn".utf8))
        await stream.closeWrite()
        let reply = try await stream.readToEnd(limit: 1024)
        XCTAssertEqual(String(decoding: reply, as: UTF8.self), "CAIRN")
    }

    // MARK: Data directory

    func testDataDirectoryDefaultHonoursCAIRNPATHThenHOME() {
        XCTAssertEqual(DataDirectory.defaultURL(environment: ["HOME": "/tmp/h"]).path, "/tmp/h/.cairn")
        XCTAssertEqual(DataDirectory.defaultURL(environment: ["HOME": "/tmp/h", "CAIRN_PATH": "/tmp/c"]).path, "/tmp/c")
    }

    func testASecondHostOnALockedDataDirectoryIsRefusedOrEphemeral() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("host-lock-" + UUID().uuidString)
        defer { try? FileManager.default.removeItem(at: dir) }
        var c = CairnHost.Configuration()
        c.dataDirectory = dir
        c.listenAddresses = []
        let first = try CairnHost(configuration: c, group: group, logger: logs.logger(label: "first"))
        hosts.append(first)
        XCTAssertThrowsError(try CairnHost(configuration: c, group: group, logger: logs.logger(label: "second"))) { e in
            XCTAssertTrue("\(e)".contains("pid \(getpid())"), "names the holder: \(e)")
        }
        c.whenDataDirectoryLocked = .ephemeral
        let beside = try CairnHost(configuration: c, group: group, logger: logs.logger(label: "beside"))
        hosts.append(beside)
        XCTAssertNil(beside.dataDirectory)
        XCTAssertNotEqual(beside.peerID, first.peerID, "never one identity in two places")
        await first.shutdown()
        c.whenDataDirectoryLocked = .fail
        let again = try CairnHost(configuration: c, group: group, logger: logs.logger(label: "again"))
        hosts.append(again)
        XCTAssertEqual(again.peerID, first.peerID, "the lock is released at shutdown")
    }

    /// Numbers from peers (a relay's expiry or data limit, a record's seq) never trap when the
    /// status or a report shows them.
    func testHostileNumbersInStatusAndReportsAreClamped() {
        XCTAssertEqual(Int(clampingSeconds: 1e30), Int.max)
        XCTAssertEqual(Int(clampingSeconds: -1e30), Int.min)
        XCTAssertEqual(Int(clampingSeconds: .nan), 0)
        XCTAssertEqual(Int(clampingSeconds: 12.7), 12)
        let key = PrivateKey.generate()
        let record = PeerRecord(peerID: key.peerID, seq: .max, addresses: [])
        XCTAssertEqual(Reports.resolve(record)["seq"] as? Int, Int.max)
    }
}
