import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import XCTest

/// DCUtR between Swift nodes on loopback (private addresses allowed, as on one LAN): a relayed
/// connection is upgraded to a direct one; hostile and stalled peers are refused or timed out.
final class HolePunchNodeTests: LoopbackNodesTestCase {
    func config() -> HolePunchService.Configuration {
        var c = HolePunchService.Configuration()
        c.allowPrivateAddresses = true
        c.readTimeout = .seconds(2)
        return c
    }

    /// Relay R; B reserved on it; A dials B through it.
    func relayedPair(_ bConfig: HolePunchService.Configuration? = nil, a aConfig: HolePunchService.Configuration? = nil)
        async throws -> (a: Node, aPunch: HolePunchService, b: Node, bPunch: HolePunchService, relayed: Connection, relay: RelayService) {
        let (r, rAddr) = try await makeNode("relay")
        let relay = RelayService(node: r, logger: logs.logger(label: "relay"))
        relay.setServing(true)
        let (a, _) = try await makeNode("a")
        let (b, _) = try await makeNode("b")
        let aPunch = HolePunchService(node: a, nat: nil, configuration: aConfig ?? config(), logger: logs.logger(label: "a"))
        let bPunch = HolePunchService(node: b, nat: nil, configuration: bConfig ?? config(), logger: logs.logger(label: "b"))
        _ = RelayClient(node: a, logger: logs.logger(label: "a"))
        let bClient = RelayClient(node: b, logger: logs.logger(label: "b"))
        try await bClient.reserve(on: try await b.dial(rAddr))
        let relayed = try await a.dial(rAddr.appending(.p2pCircuit).appending(.p2p(b.peerID)))
        return (a, aPunch, b, bPunch, relayed, relay)
    }

    func testRelayedConnectionIsUpgradedAndTheRelayedOneClosedWhenIdle() async throws {
        let t = try await relayedPair()
        XCTAssertTrue(t.relayed.isLimited)
        try await eventually(timeout: 15) { t.a.swarm.connections(to: t.b.peerID).contains { !$0.isLimited } }
        let direct = try XCTUnwrap(t.a.bestConnection(to: t.b.peerID))
        XCTAssertFalse(direct.isLimited, "new streams use the direct connection")
        _ = try await t.a.ping(direct)
        try await eventually(timeout: 10) { t.bPunch.outcome(for: t.a.peerID) != nil }
        let outcome = try XCTUnwrap(t.bPunch.outcome(for: t.a.peerID))
        XCTAssertEqual(outcome.result, .direct(how: .holePunch, attempts: 1), "\(outcome)")
        XCTAssertNotNil(outcome.elapsed)
        // The relayed connection closes once idle; the relay's circuit ends with it.
        _ = try await t.relayed.closed.get()
        try await eventually(timeout: 5) { t.relay.stats.circuits.isEmpty }
        XCTAssertLessThanOrEqual(t.bPunch.dialsStarted + t.aPunch.dialsStarted, 2 * DCUtR.maxDialsPerAttempt)
    }

    /// Without any address to offer or dial (public-only policy on loopback), the pair stays
    /// relayed, with the reason recorded.
    func testNoUsableAddressesStaysRelayedWithAReason() async throws {
        var strict = config()
        strict.allowPrivateAddresses = false
        let t = try await relayedPair(strict)
        try await eventually(timeout: 10) { t.bPunch.outcome(for: t.a.peerID) != nil }
        guard case .relayed(let reason) = t.bPunch.outcome(for: t.a.peerID)?.result else { return XCTFail("\(String(describing: t.bPunch.outcome(for: t.a.peerID)))") }
        XCTAssertTrue("\(reason)".contains("address"), "\(reason)")
        XCTAssertFalse(t.a.swarm.connections(to: t.b.peerID).contains { !$0.isLimited })
        _ = try await t.a.ping(t.relayed)  // the relayed connection still carries traffic
    }

    /// Hostile initiators against A's responder: SYNC without CONNECT, garbage, a CONNECT with
    /// hundreds of addresses, one with 30 public addresses then SYNC (at most 8 dials), and a peer
    /// that goes silent. Each is refused or timed out with a logged reason; A keeps serving.
    func testHostileDCUtRMessagesAreRefused() async throws {
        var strict = config()
        strict.allowPrivateAddresses = false  // loopback is never dialed: the relayed connection stays
        let t = try await relayedPair(strict, a: strict)
        try await eventually(timeout: 15) { t.bPunch.outcome(for: t.a.peerID) != nil }  // the honest run gave up
        let bSide = try XCTUnwrap(t.b.swarm.connections(to: t.a.peerID).first { $0.isLimited })
        func exchange(_ messages: [[UInt8]]) async throws -> [UInt8]? {
            let s = try await bSide.openStream([DCUtR.protocolID])
            for m in messages { try await s.writeLengthPrefixed(m) }
            return try? await s.readLengthPrefixed(maxLength: 4096)
        }
        let before = t.aPunch.dialsStarted
        _ = try await exchange([DCUtR.encode(.sync)])
        _ = try await exchange([[0xff, 0x01]])
        let many = (0..<300).map { try! Multiaddr("/ip4/198.18.\($0 / 200).\($0 % 200 + 1)/tcp/4001") }
        _ = try await exchange([DCUtR.encode(.connect(many))])
        XCTAssertEqual(t.aPunch.dialsStarted, before, "refused messages cause no dials")
        _ = try await exchange([DCUtR.encode(.connect(Array(many.prefix(30)))), DCUtR.encode(.sync)])
        try await Task.sleep(nanoseconds: 300_000_000)
        XCTAssertEqual(t.aPunch.dialsStarted - before, DCUtR.maxDialsPerAttempt, "a bounded number of dials per attempt")
        // Silent after CONNECT: A answers, then times out waiting for SYNC.
        let silent = try await exchange([DCUtR.encode(.connect([]))])
        XCTAssertNotNil(silent, "A answers a CONNECT with its own")
        try await Task.sleep(nanoseconds: 2_500_000_000)
        for needle in ["SYNC without CONNECT", "malformed DCUtR message", "lists 300 addresses", "stream timed out"] {
            XCTAssertFalse(logs.records(atLeast: .info, containing: [needle]).isEmpty, "no log for \(needle): \(logs.dump.suffix(3000))")
        }
        // Still serving: A answers an honest CONNECT.
        let ok = try await exchange([DCUtR.encode(.connect([]))])
        XCTAssertNotNil(ok)

        // Round after round, each naming new addresses: A dials for at most the initiator's 3
        // rounds on this relayed connection (whatever the streams), then refuses and resets, so a
        // peer cannot make it dial without end.
        let roundsBefore = t.aPunch.dialsStarted
        let looping = try await bSide.openStream([DCUtR.protocolID])
        for round in 0..<6 {
            let addrs = (0..<8).map { try! Multiaddr("/ip4/198.18.9.\(round * 8 + $0 + 1)/tcp/4001") }
            try? await looping.writeLengthPrefixed(DCUtR.encode(.connect(addrs)))
            _ = try? await looping.readLengthPrefixed(maxLength: 4096)
            try? await looping.writeLengthPrefixed(DCUtR.encode(.sync))
        }
        try await Task.sleep(nanoseconds: 300_000_000)
        XCTAssertLessThanOrEqual(t.aPunch.dialsStarted - before, strict.maxAttempts * DCUtR.maxDialsPerAttempt, "3 rounds' dials at most")
        XCTAssertGreaterThan(t.aPunch.dialsStarted, roundsBefore, "the rounds left were dialed")
        XCTAssertFalse(logs.records(atLeast: .info, containing: ["more than 3 rounds"]).isEmpty, "\(logs.dump.suffix(2000))")
    }
}
