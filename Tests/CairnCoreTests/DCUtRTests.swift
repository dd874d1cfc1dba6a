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
}
