import NIOCore
import XCTest

@testable import CairnCore
import CairnCrypto

/// Two connection machines connected in memory. `.send` actions are routed to the other side;
/// every other action is recorded per side.
final class ConnectionPair {
    typealias Action = SecureConnectionMachine.Action
    enum Side { case a, b }

    var a: SecureConnectionMachine
    var b: SecureConnectionMachine
    var toA: [UInt8] = []
    var toB: [UInt8] = []
    var aActions: [Action] = []
    var bActions: [Action] = []
    var byteAtATime = false

    init(a: SecureConnectionMachine, b: SecureConnectionMachine) {
        self.a = a
        self.b = b
    }

    func route(_ actions: [Action], from side: Side) {
        for action in actions {
            if case .send(let buf) = action {
                if side == .a { toB += buf.bytes } else { toA += buf.bytes }
            } else if side == .a {
                aActions.append(action)
            } else {
                bActions.append(action)
            }
        }
    }

    func start() {
        route(a.start(), from: .a)
        route(b.start(), from: .b)
    }

    func pump(limit: Int = 1_000_000) {
        var steps = 0
        while !toA.isEmpty || !toB.isEmpty {
            steps += 1
            if steps > limit { XCTFail("pump did not settle"); return }
            if !toB.isEmpty {
                let n = byteAtATime ? 1 : toB.count
                let chunk = Array(toB.prefix(n))
                toB.removeFirst(n)
                route(b.receive(buffer(chunk)), from: .b)
            }
            if !toA.isEmpty {
                let n = byteAtATime ? 1 : toA.count
                let chunk = Array(toA.prefix(n))
                toA.removeFirst(n)
                route(a.receive(buffer(chunk)), from: .a)
            }
        }
    }
}

final class SecureConnectionTests: XCTestCase {
    typealias Action = SecureConnectionMachine.Action

    let alice = testKey(0xa1), bob = testKey(0xb0), carol = testKey(0xc0)

    func makePair(expected: PeerID? = nil) -> ConnectionPair {
        ConnectionPair(a: SecureConnectionMachine(role: .initiator, identity: alice, expectedRemote: expected),
                       b: SecureConnectionMachine(role: .responder, identity: bob))
    }

    func establish(byteAtATime: Bool = false) -> ConnectionPair {
        let p = makePair(expected: bob.peerID)
        p.byteAtATime = byteAtATime
        p.start()
        p.pump()
        return p
    }

    func testBothSidesEstablishWithTheRightPeers() {
        let p = establish()
        XCTAssertEqual(p.aActions, [.established(remote: bob.peerID)])
        XCTAssertEqual(p.bActions, [.established(remote: alice.peerID)])
        XCTAssertTrue(p.a.isEstablished)
        XCTAssertTrue(p.b.isEstablished)
        XCTAssertEqual(p.a.remotePeer, bob.peerID)
        XCTAssertEqual(p.b.remotePeer, alice.peerID)
    }

    func testInitiatorOpensTheNegotiationWithNoise() {
        var m = SecureConnectionMachine(role: .initiator, identity: alice)
        let first = m.start()
        let expected = MultistreamSelect.encode("/multistream/1.0.0") + MultistreamSelect.encode("/noise")
        XCTAssertEqual(first, [.send(buffer(expected))])
        XCTAssertEqual(m.start(), [], "start is idempotent")
        var r = SecureConnectionMachine(role: .responder, identity: bob)
        XCTAssertEqual(r.start(), [.send(buffer(MultistreamSelect.encode("/multistream/1.0.0")))])
    }

    func exchangeData(_ p: ConnectionPair) throws {
        let (id, openActions) = try p.a.openStream()
        XCTAssertEqual(id, 1)
        p.route(openActions, from: .a)
        p.pump()
        XCTAssertEqual(p.bActions.last, .stream(.streamOpened(id)))

        let (pending, writeActions) = try p.a.write(id, buffer("ping from alice"))
        XCTAssertEqual(pending, 0)
        p.route(writeActions, from: .a)
        p.pump()
        let bData = p.bActions.compactMap { a -> [UInt8]? in
            if case .stream(.data(id, let buf)) = a { return buf.bytes }
            return nil
        }
        XCTAssertEqual(Array(bData.joined()), utf8("ping from alice"))

        let (_, reply) = try p.b.write(id, buffer("pong from bob"))
        p.route(reply, from: .b)
        p.route(p.b.closeWrite(id), from: .b)
        p.pump()
        let aData = p.aActions.compactMap { a -> [UInt8]? in
            if case .stream(.data(id, let buf)) = a { return buf.bytes }
            return nil
        }
        XCTAssertEqual(Array(aData.joined()), utf8("pong from bob"))
        XCTAssertEqual(p.aActions.last, .stream(.remoteClosed(id)))

        p.route(p.a.ping(99), from: .a)
        p.pump()
        XCTAssertEqual(p.aActions.last, .stream(.pong(99)))
    }

    func testOpenStreamAndExchangeData() throws {
        try exchangeData(establish())
    }

    func testOneByteAtATime() throws {
        let p = establish(byteAtATime: true)
        XCTAssertEqual(p.aActions, [.established(remote: bob.peerID)])
        XCTAssertEqual(p.bActions, [.established(remote: alice.peerID)])
        try exchangeData(p)
    }

    func testFlowControlThroughTheMachine() throws {
        let p = establish()
        let (id, open) = try p.a.openStream()
        p.route(open, from: .a)
        let big = [UInt8](repeating: 0x5a, count: 300 * 1024)
        let (pending, actions) = try p.a.write(id, buffer(big))
        XCTAssertEqual(pending, 300 * 1024 - 256 * 1024)
        XCTAssertEqual(p.a.pendingBytes(id), pending)
        p.route(actions, from: .a)
        p.pump()
        var received = 0
        for case .stream(.data(id, let buf)) in p.bActions { received += buf.readableBytes }
        XCTAssertEqual(received, 256 * 1024)
        p.route(p.b.consumed(id, received), from: .b)
        p.pump()
        received = 0
        for case .stream(.data(id, let buf)) in p.bActions { received += buf.readableBytes }
        XCTAssertEqual(received, big.count)
        XCTAssertEqual(p.aActions.last, .stream(.flushed(id)))
        XCTAssertEqual(p.a.pendingBytes(id), 0)
    }

    func testGarbageInsteadOfMultistream() {
        func isSecurityNegotiation(_ a: Action) -> Bool {
            if case .close(.securityNegotiation) = a { return true }; return false
        }
        // A responder that hears a line without its newline.
        var r = SecureConnectionMachine(role: .responder, identity: bob)
        _ = r.start()
        XCTAssertEqual(r.receive(buffer([0x05] + utf8("hello"))),
                       [.close(.securityNegotiation(.malformedMessage("missing newline")))])
        XCTAssertTrue(r.isClosed)
        XCTAssertEqual(r.receive(buffer("more")), [], "a closed machine ignores input")

        // An HTTP request.
        var r2 = SecureConnectionMachine(role: .responder, identity: bob)
        _ = r2.start()
        let actions = r2.receive(buffer("GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\nGET / HTTP/1.1\r\n"))
        XCTAssertEqual(actions.count, 1)
        XCTAssertTrue(actions.allSatisfy(isSecurityNegotiation), "\(actions)")
        XCTAssertTrue(r2.isClosed)

        // An initiator answered by a different multistream version.
        var i = SecureConnectionMachine(role: .initiator, identity: alice)
        _ = i.start()
        XCTAssertEqual(i.receive(buffer(MultistreamSelect.encode("/multistream/2.0.0"))),
                       [.close(.securityNegotiation(.unexpectedHeader("/multistream/2.0.0")))])

        // A listener that does not speak Noise.
        var i2 = SecureConnectionMachine(role: .initiator, identity: alice)
        _ = i2.start()
        XCTAssertEqual(i2.receive(buffer(MultistreamSelect.encode("/multistream/1.0.0") + MultistreamSelect.encode("na"))),
                       [.close(.securityNegotiation(.noProtocolAgreed(["/noise"])))])
    }

    func testGarbageDuringTheNoiseHandshake() {
        var r = SecureConnectionMachine(role: .responder, identity: bob)
        _ = r.start()
        let hello = MultistreamSelect.encode("/multistream/1.0.0") + MultistreamSelect.encode("/noise")
        // Negotiation succeeds, then a 5-byte "Noise message".
        let actions = r.receive(buffer(hello + [0x00, 0x05, 1, 2, 3, 4, 5]))
        XCTAssertEqual(actions.first, .send(buffer(MultistreamSelect.encode("/noise"))))
        XCTAssertEqual(actions.last, .close(.noise(.truncatedMessage("ephemeral key"))))
        XCTAssertTrue(r.isClosed)
    }

    func testWrongExpectedRemote() {
        let p = makePair(expected: carol.peerID)
        p.start()
        p.pump()
        XCTAssertEqual(p.aActions, [.close(.noise(.wrongRemotePeer(expected: carol.peerID, got: bob.peerID)))])
        XCTAssertTrue(p.a.isClosed)
        XCTAssertFalse(p.b.isEstablished, "the responder never receives message 3")
        XCTAssertEqual(p.bActions, [])
        XCTAssertThrowsError(try p.a.openStream())
    }

    func testHandshakeTimeout() {
        var m = SecureConnectionMachine(role: .initiator, identity: alice)
        _ = m.start()
        XCTAssertEqual(m.handshakeTimedOut(), [.close(.handshakeTimeout)])
        XCTAssertTrue(m.isClosed)
        XCTAssertEqual(m.handshakeTimedOut(), [], "already closed")

        // Mid-handshake: the responder has answered the negotiation but the Noise handshake is unfinished.
        let p = makePair()
        p.start()
        p.route(p.b.receive(buffer(p.toB)), from: .b)
        p.toB = []
        XCTAssertFalse(p.b.isEstablished)
        XCTAssertEqual(p.b.handshakeTimedOut(), [.close(.handshakeTimeout)])

        // After establishment the timer has no effect.
        let done = establish()
        XCTAssertEqual(done.a.handshakeTimedOut(), [])
        XCTAssertTrue(done.a.isEstablished)
    }

    func testCommandsBeforeEstablishment() {
        var m = SecureConnectionMachine(role: .initiator, identity: alice)
        _ = m.start()
        assertThrows(try m.openStream(), ConnectionError.closed)
        assertThrows(try m.write(1, buffer("x")), ConnectionError.closed)
        XCTAssertEqual(m.ping(1), [])
    }

    func testGracefulClose() throws {
        let p = establish()
        let actions = p.a.close()
        XCTAssertEqual(actions.count, 2)
        XCTAssertEqual(actions.last, .close(.closed))
        XCTAssertTrue(p.a.isClosed)
        p.route(actions, from: .a)
        p.pump()
        XCTAssertEqual(Array(p.bActions.dropFirst()), [.stream(.goAway(0)), .close(.closed)])
        XCTAssertTrue(p.b.isClosed)
    }

    func testYamuxProtocolErrorSendsGoAwayAndCloses() throws {
        let p = establish()
        // Make alice's transport send a frame with Yamux version 1.
        guard case .established(var transport, let session) = p.a.state else { return XCTFail("not established") }
        var wire = ByteBuffer()
        try transport.seal(buffer(yamuxFrame(type: Y.ping, flags: Y.syn, stream: 0, length: 1, version: 1)), into: &wire)
        p.a.state = .established(transport, session)

        let actions = p.b.receive(wire)
        XCTAssertEqual(actions.count, 2)
        XCTAssertEqual(actions.last, .close(.yamux(.invalidVersion(1))))
        guard case .send(let goAway)? = actions.first else { return XCTFail("no GoAway sent: \(actions)") }
        XCTAssertTrue(p.b.isClosed)
        // Alice reads a GoAway with the protocol-error code, and with no streams open she closes too.
        let aliceActions = p.a.receive(goAway)
        XCTAssertEqual(aliceActions, [.stream(.goAway(1)), .close(.closed)])
    }

    func testTamperedCiphertextClosesWithNoiseError() throws {
        let p = establish()
        var tampered = try XCTUnwrap(p.a.ping(5).compactMap { a -> [UInt8]? in if case .send(let b) = a { return b.bytes }; return nil }.first)
        tampered[4] ^= 0x01
        XCTAssertEqual(p.b.receive(buffer(tampered)), [.close(.noise(.decryptionFailed))])
        XCTAssertTrue(p.b.isClosed)
    }
}
