import CairnCore
import Foundation
import XCTest

final class DCUtRTests: XCTestCase {
    let pubA = try! Multiaddr("/ip4/198.18.0.11/tcp/4001")
    let pubB = try! Multiaddr("/ip4/198.18.0.12/tcp/4001")

    func testCodecAndWireBytes() throws {
        XCTAssertEqual(DCUtR.encode(.sync), [0x08, 0xac, 0x02])
        XCTAssertEqual(try DCUtR.decode(DCUtR.encode(.connect([pubA, pubB]))).0, .connect([pubA, pubB]))
        XCTAssertEqual(try DCUtR.decode(DCUtR.encode(.sync)).0, .sync)
        XCTAssertThrowsError(try DCUtR.decode([UInt8](repeating: 0, count: 5000)))
        XCTAssertThrowsError(try DCUtR.decode([0x12, 0x00]), "no type")
        XCTAssertThrowsError(try DCUtR.decode([0x08, 0x05]), "unknown type")
        let many = (0..<300).map { try! Multiaddr("/ip4/198.18.1.1/tcp/\(1000 + $0)") }
        XCTAssertThrowsError(try DCUtR.decode(DCUtR.encode(.connect(many)))) {
            XCTAssertEqual($0 as? DCUtR.CodecError, .tooManyAddresses(300))
        }
        // Garbage addresses are dropped and counted.
        var pb = DCUtR.encode(.connect([pubA]))
        pb += [0x12, 0x02, 0xff, 0xff]
        let (m, skipped) = try DCUtR.decode(pb)
        XCTAssertEqual(m, .connect([pubA]))
        XCTAssertEqual(skipped, 1)
    }

    func testDialablePolicy() throws {
        let addrs = try ["/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.1.2/tcp/4001", "/ip4/0.0.0.0/tcp/4001", "/ip4/198.18.0.11/tcp/0",
                         "/ip4/198.18.0.11/udp/4001", "/ip4/198.18.0.11/tcp/4001/p2p/\(PrivateKey.generate().peerID)",
                         "/ip4/198.18.0.11/tcp/4001", "/ip6/2001:db8::1/tcp/4001"].map { try Multiaddr($0) }
        let (kept, refused) = DCUtR.dialable(addrs, allowPrivate: false)
        XCTAssertEqual(kept, [pubA, try Multiaddr("/ip6/2001:db8::1/tcp/4001")])
        XCTAssertEqual(refused, 5)
        XCTAssertEqual(DCUtR.dialable(addrs, allowPrivate: true).kept.count, 4)
        // Never more than maxDialsPerAttempt.
        let lots = (0..<30).map { try! Multiaddr("/ip4/198.18.2.\($0 + 1)/tcp/4001") }
        XCTAssertEqual(DCUtR.dialable(lots, allowPrivate: false).kept.count, DCUtR.maxDialsPerAttempt)
    }

    func testInitiatorMeasuresRTTSyncsDialsAtHalfAndRetries() {
        var b = DCUtR.Initiator(ourAddresses: [pubB], maxAttempts: 3)
        let t0 = ContinuousClock.now
        XCTAssertEqual(b.start(now: t0), [.send(.connect([pubB]))])
        XCTAssertEqual(b.received(.connect([pubA, try! Multiaddr("/ip4/10.0.0.2/tcp/4001")]), now: t0 + .milliseconds(80)),
                       [.send(.sync), .dial([pubA], after: .milliseconds(40))])
        XCTAssertEqual(b.rtt, .milliseconds(80))
        XCTAssertEqual(b.attemptFailed(now: t0 + .seconds(6), reason: "x"), [.send(.connect([pubB]))])
        _ = b.received(.connect([pubA]), now: t0 + .seconds(6) + .milliseconds(20))
        XCTAssertEqual(b.attemptFailed(now: t0 + .seconds(12), reason: "x"), [.send(.connect([pubB]))])
        _ = b.received(.connect([pubA]), now: t0 + .seconds(12) + .milliseconds(20))
        XCTAssertEqual(b.attempts, 3)
        XCTAssertEqual(b.attemptFailed(now: t0 + .seconds(18), reason: "timed out"), [.giveUp("3 attempts failed; last: timed out")])
        // A SYNC sent to the initiator ends it.
        var c = DCUtR.Initiator(ourAddresses: [])
        _ = c.start(now: t0)
        XCTAssertEqual(c.received(.sync, now: t0), [.giveUp("peer sent SYNC to the initiator")])
    }

    func testResponderAnswersDialsOnSyncAndRefusesSyncWithoutConnect() {
        var a = DCUtR.Responder(ourAddresses: [pubA])
        XCTAssertEqual(a.received(.connect([pubB, try! Multiaddr("/ip4/127.0.0.1/tcp/1")])), [.send(.connect([pubA]))])
        XCTAssertEqual(a.received(.sync), [.dial([pubB], after: .zero)])
        // A retry: CONNECT again on the same stream.
        XCTAssertEqual(a.received(.connect([pubB])), [.send(.connect([pubA]))])
        XCTAssertEqual(a.received(.sync), [.dial([pubB], after: .zero)])
        XCTAssertEqual(a.rounds, 2)
        var fresh = DCUtR.Responder(ourAddresses: [pubA])
        XCTAssertEqual(fresh.received(.sync), [.giveUp("SYNC without CONNECT")])
        XCTAssertEqual(fresh.received(.connect([pubB])), [], "finished: nothing more")
    }

    // MARK: B's upgrade decisions (DCUtR.Upgrade)

    func testUpgradeTriesReversalFirstForAPublicPeer() {
        var u = DCUtR.Upgrade(theirListenAddrs: [pubA, try! Multiaddr("/ip4/10.0.0.2/tcp/4001")], ourAddresses: [pubB])
        XCTAssertEqual(u.start(hasDirect: false), [.dial([pubA], role: .initiator, after: .zero, purpose: .reversal)])
        XCTAssertEqual(u.dialed(connected: true, now: .now), [.finished(.direct(how: .reversal, attempts: 0))])
        XCTAssertEqual(u.state, .finished)
    }

    func testUpgradeFallsBackToTheExchangeAndPunchesWithFixedRoles() {
        let t0 = ContinuousClock.now
        var u = DCUtR.Upgrade(theirListenAddrs: [pubA], ourAddresses: [pubB])
        _ = u.start(hasDirect: false)
        XCTAssertEqual(u.dialed(connected: false, now: t0), [.openExchange], "reversal failed: the exchange next")
        XCTAssertEqual(u.exchangeOpened(now: t0), [.send(.connect([pubB]))])
        // The reply after 80 ms: SYNC, and our dial at RTT/2 as the Noise responder (the peer,
        // which dials us too, is the initiator of the punched connection).
        XCTAssertEqual(u.received(.connect([pubA]), now: t0 + .milliseconds(80)),
                       [.send(.sync), .dial([pubA], role: .responder, after: .milliseconds(40), purpose: .punch)])
        XCTAssertEqual(u.dialed(connected: true, now: t0 + .milliseconds(200)), [.finished(.direct(how: .holePunch, attempts: 1))])
    }

    func testUpgradeDialsAsInitiatorWhenWeOfferedNothing() {
        let t0 = ContinuousClock.now
        var u = DCUtR.Upgrade(theirListenAddrs: [], ourAddresses: [])
        XCTAssertEqual(u.start(hasDirect: false), [.openExchange], "no public address: no reversal")
        _ = u.exchangeOpened(now: t0)
        let actions = u.received(.connect([pubA]), now: t0)
        XCTAssertEqual(actions.last, .dial([pubA], role: .initiator, after: .zero, purpose: .punch))
    }

    func testUpgradeWithNoAddressOnEitherSideStaysRelayed() {
        var u = DCUtR.Upgrade(theirListenAddrs: [], ourAddresses: [])
        _ = u.start(hasDirect: false)
        _ = u.exchangeOpened(now: .now)
        XCTAssertEqual(u.received(.connect([]), now: .now), [.send(.sync), .finished(.relayed(reason: .noAddressEitherSide))])
    }

    func testUpgradeGivesUpAfterThreeAttemptsWithTheLastReason() {
        var u = DCUtR.Upgrade(theirListenAddrs: [], ourAddresses: [pubB], maxAttempts: 3)
        _ = u.start(hasDirect: false)
        var actions = u.exchangeOpened(now: .now)
        for attempt in 1...3 {
            XCTAssertEqual(actions, [.send(.connect([pubB]))], "attempt \(attempt)")
            _ = u.received(.connect([pubA]), now: .now)
            actions = u.dialed(connected: false, now: .now)
        }
        XCTAssertEqual(actions, [.finished(.relayed(reason: .gaveUp("3 attempts failed; last: no dial to /ip4/198.18.0.11/tcp/4001 got through")))])
        XCTAssertEqual(u.attempts, 3)
    }

    func testUpgradeWhenThePeerLacksDCUtROrReachedUsAnyway() {
        var lacking = DCUtR.Upgrade(theirListenAddrs: [], ourAddresses: [pubB])
        _ = lacking.start(hasDirect: false)
        XCTAssertEqual(lacking.exchangeFailed("protocol not supported", hasDirect: false),
                       [.finished(.relayed(reason: .peerLacksDCUtR("protocol not supported")))])
        var reached = DCUtR.Upgrade(theirListenAddrs: [], ourAddresses: [pubB])
        _ = reached.start(hasDirect: false)
        XCTAssertEqual(reached.exchangeFailed("stream reset", hasDirect: true), [.finished(.direct(how: .peersDial, attempts: 0))])
        var already = DCUtR.Upgrade(theirListenAddrs: [pubA], ourAddresses: [pubB])
        XCTAssertEqual(already.start(hasDirect: true), [], "a direct connection already: nothing to do")
        XCTAssertNil(already.result)
    }
}
