@testable import CairnCore
import Foundation
import XCTest

final class AutoNATTests: XCTestCase {
    let requester = PrivateKey.generate().peerID
    let now = Date()
    let ip: [UInt8] = [198, 18, 0, 11]

    func testCodecRoundTripAndLimits() throws {
        let dial = AutoNAT.Message.dial(peer: requester, addresses: [try Multiaddr("/ip4/198.18.0.11/tcp/4001")])
        XCTAssertEqual(try AutoNAT.decode(AutoNAT.encode(dial)).0, dial)
        let resp = AutoNAT.Message.dialResponse(status: .ok, text: "dialed", address: try Multiaddr("/ip4/198.18.0.11/tcp/4001"))
        XCTAssertEqual(try AutoNAT.decode(AutoNAT.encode(resp)).0, resp)
        let many = AutoNAT.Message.dial(peer: requester, addresses: (0..<17).map { try! Multiaddr("/ip4/198.18.0.11/tcp/\(4000 + $0)") })
        XCTAssertThrowsError(try AutoNAT.decode(AutoNAT.encode(many))) { XCTAssertEqual($0 as? AutoNAT.CodecError, .tooManyAddresses(17)) }
        XCTAssertThrowsError(try AutoNAT.decode([UInt8](repeating: 0, count: 5000))) { XCTAssertEqual($0 as? AutoNAT.CodecError, .tooLarge(5000)) }
        XCTAssertThrowsError(try AutoNAT.decode([0x08, 0x00]))  // DIAL without a peer
    }

    func testServerDialsOnlyTheRequestersObservedIP() throws {
        var policy = AutoNAT.ServerPolicy()
        let request = AutoNAT.Message.dial(peer: requester, addresses: [
            try Multiaddr("/ip4/198.18.0.11/tcp/4001"),
            try Multiaddr("/ip4/198.18.0.99/tcp/4001"),      // a third party: never dialed
            try Multiaddr("/ip4/198.18.0.11/udp/4001"),      // not TCP
            try Multiaddr("/ip4/198.18.0.11/tcp/0"),
        ])
        XCTAssertEqual(policy.decide(request: request, requester: requester, observedIP: ip, now: now),
                       .dial([try Multiaddr("/ip4/198.18.0.11/tcp/4001")]))
        // Only third parties: refused.
        let thirdParty = AutoNAT.Message.dial(peer: requester, addresses: [try Multiaddr("/ip4/198.18.0.99/tcp/4001")])
        guard case .refuse(.dialRefused, _) = policy.decide(request: thirdParty, requester: requester, observedIP: ip, now: now) else { return XCTFail() }
        // A DIAL naming another peer is a bad request.
        let other = AutoNAT.Message.dial(peer: PrivateKey.generate().peerID, addresses: [try Multiaddr("/ip4/198.18.0.11/tcp/4001")])
        guard case .refuse(.badRequest, _) = policy.decide(request: other, requester: requester, observedIP: ip, now: now) else { return XCTFail() }
        // Private requesters are refused unless allowed (labs).
        guard case .refuse(.dialRefused, _) = policy.decide(request: request, requester: requester, observedIP: [10, 0, 1, 2], now: now) else { return XCTFail() }
    }

    func testRateLimits() throws {
        var policy = AutoNAT.ServerPolicy()
        let request = AutoNAT.Message.dial(peer: requester, addresses: [try Multiaddr("/ip4/198.18.0.11/tcp/4001")])
        for _ in 0..<3 { guard case .dial = policy.decide(request: request, requester: requester, observedIP: ip, now: now) else { return XCTFail() } }
        guard case .refuse(.dialRefused, let why) = policy.decide(request: request, requester: requester, observedIP: ip, now: now) else { return XCTFail() }
        XCTAssertTrue(why.contains("per-peer"))
        guard case .dial = policy.decide(request: request, requester: requester, observedIP: ip, now: now.addingTimeInterval(61)) else { return XCTFail("limit resets after a minute") }
        // Global: 30 a minute across peers.
        var global = AutoNAT.ServerPolicy()
        var granted = 0
        for i in 0..<40 {
            let p = PrivateKey.generate().peerID
            let addr = try Multiaddr("/ip4/198.18.1.\(i + 1)/tcp/4001")
            if case .dial = global.decide(request: .dial(peer: p, addresses: [addr]), requester: p, observedIP: [198, 18, 1, UInt8(i + 1)], now: now) { granted += 1 }
        }
        XCTAssertEqual(granted, 30)
    }

    func testReachabilityHysteresis() {
        var t = AutoNAT.ReachabilityTracker()
        let s = (1...9).map { ObserverGroup(ip: [198, 18, 0, UInt8($0)]) }
        XCTAssertEqual(t.reachability, .unknown)
        for i in 0..<5 { t.record(.ok, server: s[i]) }
        XCTAssertEqual(t.reachability, .public)
        XCTAssertEqual(t.confidence, 3)
        // One lying server: confidence drops, the state holds.
        XCTAssertFalse(t.record(.dialError, server: s[5]))
        XCTAssertEqual(t.reachability, .public)
        t.record(.ok, server: s[0])
        XCTAssertEqual(t.confidence, 3)
        // Refusals say nothing.
        t.record(.dialRefused, server: s[1])
        XCTAssertEqual(t.confidence, 3)
        // Consistent failures flip it, after spending the confidence.
        var flips = 0
        for i in 0..<4 { if t.record(.dialError, server: s[5 + i]) { flips += 1 } }
        XCTAssertEqual(t.reachability, .private)
        XCTAssertEqual(flips, 1)
    }

    /// Leaving unknown takes a lead of two servers; one server (however many answers, however
    /// many identities on its host) never decides, and the first liar to answer cannot either.
    func testUnknownIsLeftOnlyByAgreeingServers() {
        let liar = ObserverGroup(ip: [198, 18, 0, 66])
        var t = AutoNAT.ReachabilityTracker()
        for _ in 0..<5 { XCTAssertFalse(t.record(.ok, server: liar)) }
        XCTAssertEqual(t.reachability, .unknown)
        // Honest servers say otherwise: the liar's answer is outvoted, never adopted.
        var seen: [AutoNAT.ReachabilityTracker.Reachability] = []
        for i in 1...4 { t.record(.dialError, server: ObserverGroup(ip: [198, 18, 0, UInt8(i)])); seen.append(t.reachability) }
        XCTAssertEqual(seen, [.unknown, .unknown, .private, .private])
        // An IPv6 host's servers in one /56 are one server.
        var v6 = AutoNAT.ReachabilityTracker()
        v6.record(.ok, server: ObserverGroup(ip: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x01] + [UInt8](repeating: 0, count: 8) + [1]))
        v6.record(.ok, server: ObserverGroup(ip: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x01] + [UInt8](repeating: 0, count: 8) + [2]))
        XCTAssertEqual(v6.reachability, .unknown)
        // A configured threshold of one restores the single-server behaviour.
        var one = AutoNAT.ReachabilityTracker(minServersToDecide: 1)
        XCTAssertTrue(one.record(.ok, server: liar))
        XCTAssertEqual(one.reachability, .public)
    }
}
