import CairnCore
import Foundation
import XCTest

final class CircuitRelayTests: XCTestCase {
    func testHopAndStopMessagesRoundTrip() throws {
        let peer = PrivateKey.generate().peerID
        let addr = try Multiaddr("/ip4/198.18.0.101/tcp/4001/p2p/\(peer)")
        let messages: [CircuitRelay.HopMessage] = [
            .reserve,
            .connect(CircuitRelay.Peer(id: peer, addresses: [addr])),
            .status(.ok, reservation: CircuitRelay.Reservation(expire: 1_800_000_000, addresses: [addr], voucher: [1, 2, 3]),
                    limit: CircuitRelay.Limit(duration: 120, data: 131072)),
            .status(.noReservation, reservation: nil, limit: nil),
        ]
        for m in messages { XCTAssertEqual(try CircuitRelay.decodeHop(CircuitRelay.encode(m)), m) }
        let stops: [CircuitRelay.StopMessage] = [.connect(CircuitRelay.Peer(id: peer), limit: CircuitRelay.Limit(duration: 5)), .status(.connectionFailed)]
        for m in stops { XCTAssertEqual(try CircuitRelay.decodeStop(CircuitRelay.encode(m)), m) }
        // Wire bytes per the spec's protobuf: RESERVE is just `type = 0`.
        XCTAssertEqual(CircuitRelay.encode(.reserve), [0x08, 0x00])
        XCTAssertEqual(CircuitRelay.encode(.status(.ok)), [0x08, 0x01, 0x20, 0x64])
    }

    func testMalformedMessagesAreRefused() {
        XCTAssertThrowsError(try CircuitRelay.decodeHop([UInt8](repeating: 0, count: 5000))) { XCTAssertEqual($0 as? CircuitRelay.CodecError, .tooLarge(5000)) }
        XCTAssertThrowsError(try CircuitRelay.decodeHop([0xff, 0xff]))
        XCTAssertThrowsError(try CircuitRelay.decodeHop([0x08, 0x01]), "CONNECT without a peer")
        XCTAssertThrowsError(try CircuitRelay.decodeHop([0x08, 0x02]), "STATUS without a status")
        XCTAssertThrowsError(try CircuitRelay.decodeHop([0x08, 0x02, 0x28, 0x07]), "an unknown status")
        XCTAssertThrowsError(try CircuitRelay.decodeStop([0x08, 0x00, 0x12, 0x02, 0x0a, 0x00]), "a peer ID of no bytes")
        // Too many addresses.
        let peer = PrivateKey.generate().peerID
        let many = (0..<40).map { try! Multiaddr("/ip4/10.0.0.1/tcp/\(1000 + $0)") }
        XCTAssertThrowsError(try CircuitRelay.decodeHop(CircuitRelay.encode(.connect(CircuitRelay.Peer(id: peer, addresses: many)))))
    }

    func testVoucherIsSignedByTheRelayAndTamperingIsCaught() throws {
        let relayKey = PrivateKey.generate(), peer = PrivateKey.generate().peerID
        let env = ReservationVoucher.seal(peer: peer, expiration: 1_800_000_000, relayKey: relayKey)
        let v = try ReservationVoucher.open(env.bytes)
        XCTAssertEqual([v.relay, v.peer], [relayKey.peerID, peer])
        XCTAssertEqual(v.expiration, 1_800_000_000)
        XCTAssertEqual(env.payloadType, [0x03, 0x02])
        // Any flipped byte breaks it.
        for i in stride(from: 0, to: env.bytes.count, by: 7) {
            var b = env.bytes
            b[i] ^= 0x01
            if let w = try? ReservationVoucher.open(b) { XCTAssertEqual(w, v, "byte \(i) changed the voucher yet it verified") }
        }
        // Signed by someone else for the relay's name: refused.
        let other = PrivateKey.generate()
        let forged = VerifiedEnvelope(sealing: try XCTUnwrap(try? UnverifiedEnvelope(bytes: env.bytes).verify(domain: ReservationVoucher.domain, expectedPayloadType: [3, 2])).payload,
                                      payloadType: [3, 2], domain: ReservationVoucher.domain, key: other)
        XCTAssertThrowsError(try ReservationVoucher.open(forged.bytes)) { XCTAssertEqual($0 as? ReservationVoucher.OpenError, .signerIsNotTheRelay) }
        // A peer record envelope is not a voucher (domain separation).
        let record = PeerRecord(peerID: relayKey.peerID, seq: 1, addresses: []).sign(with: relayKey)
        XCTAssertThrowsError(try ReservationVoucher.open(record.bytes))
    }

    func testResourcesLimitsRefreshAndRelease() {
        var c = RelayResources.Configuration()
        c.maxReservations = 3
        c.maxReservationsPerIP = 2
        c.maxCircuits = 3
        c.maxCircuitsPerPeer = 2
        var r = RelayResources(configuration: c)
        let now = Date()
        let p = (0..<6).map { _ in PrivateKey.generate().peerID }
        let ipA: [UInt8] = [198, 18, 0, 1], ipB: [UInt8] = [198, 18, 0, 2]
        XCTAssertNotNil(try? r.reserve(peer: p[0], ip: ipA, connection: 1, now: now).get())
        XCTAssertNotNil(try? r.reserve(peer: p[1], ip: ipA, connection: 2, now: now).get())
        XCTAssertEqual(r.reserve(peer: p[2], ip: ipA, connection: 3, now: now), .failure(.tooManyReservationsForIP))
        XCTAssertNotNil(try? r.reserve(peer: p[2], ip: ipB, connection: 3, now: now).get())
        XCTAssertEqual(r.reserve(peer: p[3], ip: ipB, connection: 4, now: now), .failure(.tooManyReservations))
        // Refreshing and reconnecting keep one slot.
        XCTAssertNotNil(try? r.reserve(peer: p[0], ip: ipA, connection: 9, now: now).get())
        XCTAssertEqual(r.reservations.count, 3)
        r.connectionClosed(1)  // the old connection: the reservation moved to 9
        XCTAssertEqual(r.reservations[p[0]]?.connection, 9)
        // Circuits need a reservation, a free slot, and per-peer room.
        XCTAssertEqual(r.openCircuit(from: p[4], to: p[5], now: now), .failure(.noReservation))
        XCTAssertEqual(r.openCircuit(from: p[0], to: p[0], now: now), .failure(.circuitToSelf))
        let c1 = try! r.openCircuit(from: p[4], to: p[0], now: now).get()
        _ = try! r.openCircuit(from: p[5], to: p[0], now: now).get()
        XCTAssertEqual(r.openCircuit(from: p[3], to: p[0], now: now), .failure(.tooManyCircuitsForPeer))
        _ = try! r.openCircuit(from: p[4], to: p[1], now: now).get()
        XCTAssertEqual(r.openCircuit(from: p[5], to: p[2], now: now), .failure(.tooManyCircuits))
        r.closeCircuit(c1.id)
        XCTAssertNotNil(try? r.openCircuit(from: p[5], to: p[2], now: now).get())
        // Expiry and disconnection free everything.
        r.connectionClosed(2)
        XCTAssertNil(r.reservations[p[1]])
        XCTAssertTrue(r.reservation(of: p[0], now: now.addingTimeInterval(3601)) == nil)
        XCTAssertTrue(r.reservations.isEmpty)
        XCTAssertEqual(RelayResources.Refusal.noReservation.status, .noReservation)
        XCTAssertEqual(RelayResources.Refusal.tooManyCircuits.status, .resourceLimitExceeded)
    }
}
