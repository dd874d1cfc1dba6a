import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest

/// The resource manager in a running node: floods from one address (raw TCP connects that stall
/// in the handshake, streams opened and never negotiated, many protocols negotiated) stay within
/// the caps while a peer from another address connects, pings and runs a DHT lookup; every count
/// returns to zero afterwards. Distinct 127.0.0.x addresses stand for distinct hosts: the limits
/// apply to loopback like any other address.
final class ResourceLimitNodeTests: LoopbackNodesTestCase {
    typealias RM = ResourceManager
    var hosts: [CairnHost] = []
    var raws: [RawPeer] = []

    override func tearDown() async throws {
        for r in raws { await r.close() }
        raws = []
        for h in hosts { await h.shutdown() }
        hosts = []
        try await super.tearDown()
    }

    func makeHost(_ name: String, ip: String, bootstrap: [Multiaddr] = [], presence: Bool = true,
                  limits: (inout RM.Limits) -> Void = { _ in }) async throws -> CairnHost {
        var c = try loopbackHostConfiguration(ip: ip)
        c.bootstrapPeers = bootstrap
        c.dht.publishPresence = presence
        c.node.swarm.negotiationTimeout = .seconds(1)
        limits(&c.node.swarm.resources)
        let h = try CairnHost(configuration: c, group: group, logger: logs.logger(label: name))
        hosts.append(h)
        try await h.start()
        return h
    }

    /// A bare node on `ip` with no limits of its own (an attacker does not limit itself).
    func makeAttacker(ip: String) async throws -> Node {
        var c = Node.Configuration()
        c.swarm.resources = .unlimited
        let n = Node(identity: .generate(), configuration: c, group: group, logger: logs.logger(label: "attacker"))
        nodes.append(n)
        _ = try await n.listen([Multiaddr("/ip4/\(ip)/tcp/0")])
        return n
    }

    func address(of h: CairnHost) -> Multiaddr { h.listenAddresses[0].appending(.p2p(h.peerID)) }

    override func eventually(timeout: Double = 5, _ condition: @escaping () -> Bool) async throws {
        do { try await super.eventually(timeout: timeout, condition) } catch {
            for h in hosts { print("resource usage when the condition failed:", h.node.swarm.resources.usage, h.node.swarm.resources.refusals) }
            throw error
        }
    }

    func refusals(_ h: CairnHost, _ scope: RM.Scope, _ limit: RM.Limit, name: String? = nil) -> Int {
        h.node.swarm.resources.refusals[RM.Refusal(scope: scope, limit: limit, name: name)] ?? 0
    }

    /// A peer on another address connects, pings and finds `other` through the DHT via `target`.
    func assertServesOthers(_ target: CairnHost, lookingUp other: CairnHost, from ip: String) async throws {
        let good = try await makeHost("good-\(ip)", ip: ip, bootstrap: [address(of: target)], presence: false)
        // Joining refreshes every bucket through the target at once, a burst of kad streams that
        // can exceed a tight per-peer limit of streams still negotiating (the tests set 8): let
        // the join finish, so what is measured is the attacker's flood, not the joiner's burst.
        try await eventually(timeout: 10) { good.dht!.behaviour.withLockedValue { $0.activeQueries } == 0 }
        guard let conn = good.node.swarm.directConnection(to: target.peerID) else { return XCTFail("not connected to the target") }
        let rtts = try await good.node.ping(conn, count: 2)
        XCTAssertEqual(rtts.count, 2)
        let found = try await good.dht!.findPeer(other.peerID)
        XCTAssertFalse(found.addresses.isEmpty, "the DHT lookup found \(other.peerID)")
    }

    /// Shuts every other host and node down, then waits until the target holds nothing.
    func assertEverythingReleased(_ target: CairnHost) async throws {
        for r in raws { await r.close() }
        for h in hosts where h !== target { await h.shutdown() }
        for n in nodes { await n.shutdown() }
        nodes = []
        let resources = target.node.swarm.resources
        try await eventually(timeout: 10) { resources.usage == RM.Usage() }
    }

    func testFloodOfStalledConnectsFromOneAddressIsCappedWhileAnotherAddressIsServed() async throws {
        let target = try await makeHost("target", ip: "127.0.0.1") { $0.connectionsPerIP = 4 }
        let other = try await makeHost("other", ip: "127.0.0.6", bootstrap: [address(of: target)])
        let targetAddress = address(of: target)
        for _ in 0..<30 { raws.append(try await RawPeer.connect(to: targetAddress, group: group, from: "127.0.0.2")) }
        // The 26 over the cap are closed at once, before any cryptography; 4 stall in the handshake.
        try await eventually { self.raws.filter(\.isClosed).count == 26 }
        let resources = target.node.swarm.resources
        XCTAssertEqual(resources.read { $0.connections(fromIP: [127, 0, 0, 2]) }, 4)
        XCTAssertEqual(refusals(target, .ip, .connections), 26)
        XCTAssertGreaterThanOrEqual(resources.usage.inboundHandshakes, 4)
        // Rate-limited: one warning for the burst, the rest at debug level.
        let warnings = logs.records(atLeast: .warning, containing: ["resource manager refused inbound connection"])
        XCTAssertEqual(warnings.count, 1, "\(warnings)")
        XCTAssertEqual(warnings.first?.metadata["refused"]?.description, "ip limit on connections reached")

        try await assertServesOthers(target, lookingUp: other, from: "127.0.0.3")
        XCTAssertEqual(resources.read { $0.connections(fromIP: [127, 0, 0, 2]) }, 4, "still capped")
        try await assertEverythingReleased(target)
    }

    func testStreamsNeverNegotiatedAndManyProtocolsStayWithinTheirCaps() async throws {
        let target = try await makeHost("target", ip: "127.0.0.1") { l in
            l.negotiatingStreamsPerPeer = 8
            l.services["flood"] = RM.StreamLimit(total: 100, perPeer: 6)
        }
        let protocols = (0..<20).map { "/flood/\($0)/1.0.0" }
        for p in protocols {
            // A handler that holds its stream until the peer ends it.
            target.node.swarm.handle(p, service: "flood") { stream in
                while try await stream.read() != nil {}
                await stream.closeWrite()
            }
        }
        let other = try await makeHost("other", ip: "127.0.0.6", bootstrap: [address(of: target)])
        let attacker = try await makeAttacker(ip: "127.0.0.4")
        // Identify runs both ways on a new connection; let it finish so that the counts below
        // are the flood's alone.
        let identified = NIOLockedValueBox<Set<PeerID>>([])
        let subscriptions = [(target.node.swarm.events, attacker.peerID), (attacker.swarm.events, target.peerID)].map { bus, peer in
            bus.subscribe { if case .peerIdentified(let c, _) = $0, c.remotePeer == peer { _ = identified.withLockedValue { $0.insert(peer) } } }
        }
        defer { subscriptions.forEach { $0.cancel() } }
        let conn = try await attacker.dial(address(of: target))
        let resources = target.node.swarm.resources
        try await eventually {
            identified.withLockedValue { $0.count } == 2 && resources.read { $0.inboundStreams(of: attacker.peerID) } == 0
        }

        // Streams opened and never read or negotiated: 8 are held, the rest reset at once.
        var stalled: [MuxedStream] = []
        for _ in 0..<40 { stalled.append(try await conn.openUnnegotiatedStream()) }
        try await eventually { self.refusals(target, .peer, .negotiatingStreams) == 32 }
        XCTAssertEqual(resources.usage.negotiatingStreams, 8)
        try await assertServesOthers(target, lookingUp: other, from: "127.0.0.3")
        // The negotiation timeout (1 s here) resets the stalled ones and frees their slots.
        try await eventually(timeout: 5) { resources.usage.negotiatingStreams == 0 }

        // Many protocols of one service: 6 streams per peer, the others reset after negotiation.
        var opened: [MuxedStream] = []
        for p in protocols { opened.append(try await conn.openStream([p])) }
        try await eventually { self.refusals(target, .service, .inboundStreams, name: "flood") == 14 }
        XCTAssertEqual(resources.read { $0.inboundStreams(onService: "flood") }, 6)
        for s in opened { await s.closeWrite() }
        try await eventually { resources.read { $0.inboundStreams(onService: "flood") } == 0 }
        try await assertEverythingReleased(target)
    }

    func testConnectionsPerPeerAreRefusedOnceAuthenticated() async throws {
        let target = try await makeHost("target", ip: "127.0.0.1") { $0.connectionsPerPeer = 2 }
        let attacker = try await makeAttacker(ip: "127.0.0.4")
        _ = try await attacker.swarm.dial(address(of: target), fromListenPort: false)
        _ = try await attacker.swarm.dial(address(of: target), fromListenPort: false)
        // The initiator finishes Noise before the responder has checked it, so the third dial
        // may complete on the attacker's side; the target closes it as soon as it knows the peer.
        let third = try? await attacker.swarm.dial(address(of: target), fromListenPort: false)
        if let third { _ = try await third.closed.get() }
        XCTAssertEqual(refusals(target, .peer, .connections), 1)
        try await eventually { target.node.swarm.resources.read { $0.connections(of: attacker.peerID) } == 2 }
        XCTAssertEqual(target.node.swarm.connections(to: attacker.peerID).count, 2)
        try await assertEverythingReleased(target)
    }

    func testOutboundConnectionLimitRefusesTheDialItself() async throws {
        let a = try await makeHost("a", ip: "127.0.0.1")
        let b = try await makeHost("b", ip: "127.0.0.2")
        let dialer = try await makeHost("dialer", ip: "127.0.0.3") { $0.outboundConnections = 1 }
        _ = try await dialer.node.swarm.dial(address(of: a))
        do {
            _ = try await dialer.node.swarm.dial(address(of: b))
            XCTFail("dialed past the outbound limit")
        } catch SwarmError.refused(let r) {
            XCTAssertEqual(r, RM.Refusal(scope: .system, limit: .outboundConnections, name: nil))
        }
    }

    func testAllowListedAddressesAreNeverRefused() async throws {
        let target = try await makeHost("target", ip: "127.0.0.1") { l in
            l.connectionsPerIP = 1
            l.allow = [RM.AllowEntry("127.0.0.5/32")!]
        }
        for _ in 0..<3 {
            let friend = try await makeAttacker(ip: "127.0.0.5")
            _ = try await friend.dial(address(of: target))
        }
        XCTAssertEqual(target.node.swarm.resources.usage.exemptConnections, 3)
        // Anyone else gets one connection per address.
        raws.append(try await RawPeer.connect(to: address(of: target), group: group, from: "127.0.0.7"))
        raws.append(try await RawPeer.connect(to: address(of: target), group: group, from: "127.0.0.7"))
        try await eventually { self.raws[1].isClosed }
        XCTAssertFalse(raws[0].isClosed)
        XCTAssertEqual(refusals(target, .ip, .connections), 1)
        try await assertEverythingReleased(target)
    }
}
