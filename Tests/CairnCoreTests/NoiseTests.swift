import NIOCore
import XCTest

@testable import CairnCore
import CairnCrypto

/// Prepends the 2-byte big-endian length of libp2p Noise framing.
func noiseFrame(_ payload: [UInt8]) -> [UInt8] { [UInt8(payload.count >> 8), UInt8(payload.count & 0xff)] + payload }

final class NoiseXXVectorTests: XCTestCase {

    func replay(_ v: SpecVectors.NoiseVector, checkHandshakeHash: Bool) throws {
        XCTAssertEqual(v.protocolName, NoiseXXHandshake.protocolName)
        var initiator = NoiseXXHandshake(
            role: .initiator,
            staticKey: try X25519PrivateKey(rawRepresentation: bytes(hex: v.initStaticHex)),
            ephemeralKey: try X25519PrivateKey(rawRepresentation: bytes(hex: v.initEphemeralHex)),
            prologue: bytes(hex: v.initPrologueHex))
        var responder = NoiseXXHandshake(
            role: .responder,
            staticKey: try X25519PrivateKey(rawRepresentation: bytes(hex: v.respStaticHex)),
            ephemeralKey: try X25519PrivateKey(rawRepresentation: bytes(hex: v.respEphemeralHex)),
            prologue: bytes(hex: v.respPrologueHex))
        XCTAssertEqual(v.messages.count, 6)

        // Handshake: -> e ; <- e, ee, s, es ; -> s, se
        for (index, m) in v.messages.prefix(3).enumerated() {
            let payload = bytes(hex: m.payloadHex)
            let expected = bytes(hex: m.ciphertextHex)
            let initiatorSends = index % 2 == 0
            XCTAssertEqual(initiator.isOurTurn, initiatorSends, "message \(index)")
            XCTAssertEqual(responder.isOurTurn, !initiatorSends, "message \(index)")
            let wire: [UInt8], read: [UInt8]
            if initiatorSends {
                wire = try initiator.writeMessage(payload: payload)
                read = try responder.readMessage(wire)
            } else {
                wire = try responder.writeMessage(payload: payload)
                read = try initiator.readMessage(wire)
            }
            XCTAssertEqual(wire, expected, "handshake message \(index)")
            XCTAssertEqual(read, payload, "handshake message \(index)")
        }
        XCTAssertTrue(initiator.isComplete)
        XCTAssertTrue(responder.isComplete)
        XCTAssertEqual(initiator.handshakeHash, responder.handshakeHash)
        if checkHandshakeHash {
            XCTAssertEqual(initiator.handshakeHash, bytes(hex: v.handshakeHashHex))
        }
        // Each side learned the other's static public key.
        XCTAssertEqual(initiator.remoteStaticKey, responder.staticPublicKey)
        XCTAssertEqual(responder.remoteStaticKey, initiator.staticPublicKey)
        XCTAssertEqual(responder.remoteStaticKey, try X25519PrivateKey(rawRepresentation: bytes(hex: v.initStaticHex)).publicKey)

        // Transport messages, alternating from the responder, each with the split cipher states.
        var (iSend, iRecv) = initiator.split()
        var (rRecv, rSend) = responder.split()
        for (index, m) in v.messages.enumerated().dropFirst(3) {
            let payload = bytes(hex: m.payloadHex)
            let expected = bytes(hex: m.ciphertextHex)
            if index % 2 == 1 {
                let wire = try rSend.encrypt(ad: [], plaintext: payload)
                XCTAssertEqual(wire, expected, "transport message \(index)")
                XCTAssertEqual(try iRecv.decrypt(ad: [], ciphertext: wire), payload)
            } else {
                let wire = try iSend.encrypt(ad: [], plaintext: payload)
                XCTAssertEqual(wire, expected, "transport message \(index)")
                XCTAssertEqual(try rRecv.decrypt(ad: [], ciphertext: wire), payload)
            }
        }
        XCTAssertEqual(iSend.nonce, 1)
        XCTAssertEqual(rSend.nonce, 2)
    }

    func testNoiseCVector() throws {
        try replay(SpecVectors.NoiseXX.noiseC, checkHandshakeHash: true)
    }

    func testCacophonyVector() throws {
        // Its handshake_hash field is not the final hash (see SpecVectors), so only the bytes are compared.
        try replay(SpecVectors.NoiseXX.cacophony, checkHandshakeHash: false)
    }

    func testPrologueMattersForHandshakeCiphertexts() throws {
        // Same keys as the vectors, different prologue: message 2's encrypted parts differ.
        let v = SpecVectors.NoiseXX.noiseC
        var i = NoiseXXHandshake(role: .initiator, staticKey: try X25519PrivateKey(rawRepresentation: bytes(hex: v.initStaticHex)),
                                 ephemeralKey: try X25519PrivateKey(rawRepresentation: bytes(hex: v.initEphemeralHex)),
                                 prologue: utf8("other"))
        var r = NoiseXXHandshake(role: .responder, staticKey: try X25519PrivateKey(rawRepresentation: bytes(hex: v.respStaticHex)),
                                 ephemeralKey: try X25519PrivateKey(rawRepresentation: bytes(hex: v.respEphemeralHex)),
                                 prologue: bytes(hex: v.respPrologueHex))
        _ = try r.readMessage(try i.writeMessage(payload: []))
        let m2 = try r.writeMessage(payload: [])
        // The initiator, with another prologue, cannot authenticate the responder's static key.
        assertThrows(try i.readMessage(m2), NoiseError.decryptionFailed)
    }

    func testNonceLayout() {
        XCTAssertEqual(NoiseCipherState.nonceBytes(0), [UInt8](repeating: 0, count: 12))
        XCTAssertEqual(NoiseCipherState.nonceBytes(1), [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(NoiseCipherState.nonceBytes(0x0102030405060708), [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1])
    }

    func testCipherStateRefusesExhaustedNonce() {
        var c = NoiseCipherState(key: [UInt8](repeating: 1, count: 32))
        c.nonce = UInt64.max
        assertThrows(try c.encrypt(ad: [], plaintext: [1]), NoiseError.nonceExhausted)
        assertThrows(try c.decrypt(ad: [], ciphertext: [UInt8](repeating: 0, count: 17)), NoiseError.nonceExhausted)
        // A failed decryption does not advance the nonce.
        var d = NoiseCipherState(key: [UInt8](repeating: 1, count: 32))
        assertThrows(try d.decrypt(ad: [], ciphertext: [UInt8](repeating: 0, count: 17)), NoiseError.decryptionFailed)
        XCTAssertEqual(d.nonce, 0)
    }

    func testOutOfTurnMessages() throws {
        var i = NoiseXXHandshake(role: .initiator, staticKey: X25519PrivateKey())
        var r = NoiseXXHandshake(role: .responder, staticKey: X25519PrivateKey())
        assertThrows(try i.readMessage([UInt8](repeating: 1, count: 32)), NoiseError.unexpectedMessage)
        assertThrows(try r.writeMessage(payload: []), NoiseError.unexpectedMessage)
        _ = try r.readMessage(try i.writeMessage(payload: []))
        _ = try i.readMessage(try r.writeMessage(payload: []))
        _ = try r.readMessage(try i.writeMessage(payload: []))
        XCTAssertTrue(i.isComplete && r.isComplete)
        assertThrows(try i.writeMessage(payload: []), NoiseError.unexpectedMessage)
        assertThrows(try r.writeMessage(payload: []), NoiseError.unexpectedMessage)
    }

    func testLowOrderEphemeralKeysRejected() throws {
        // The responder accepts a zero ephemeral key in message 1 (no DH yet) but cannot answer it.
        var r = NoiseXXHandshake(role: .responder, staticKey: X25519PrivateKey())
        XCTAssertEqual(try r.readMessage([UInt8](repeating: 0, count: 32)), [])
        assertThrows(try r.writeMessage(payload: []), NoiseError.weakKey)
        // The initiator refuses a zero ephemeral key in message 2.
        var i = NoiseXXHandshake(role: .initiator, staticKey: X25519PrivateKey())
        _ = try i.writeMessage(payload: [])
        assertThrows(try i.readMessage([UInt8](repeating: 0, count: 32 + 48 + 16)), NoiseError.weakKey)
    }

    func testTruncatedHandshakeMessages() throws {
        var r = NoiseXXHandshake(role: .responder, staticKey: X25519PrivateKey())
        assertThrows(try r.readMessage([UInt8](repeating: 9, count: 31)), NoiseError.truncatedMessage("ephemeral key"))

        var i = NoiseXXHandshake(role: .initiator, staticKey: X25519PrivateKey())
        var r2 = NoiseXXHandshake(role: .responder, staticKey: X25519PrivateKey())
        _ = try r2.readMessage(try i.writeMessage(payload: []))
        let m2 = try r2.writeMessage(payload: [])
        XCTAssertEqual(m2.count, 32 + 48 + 16)
        var i2 = i
        assertThrows(try i.readMessage(Array(m2.prefix(32 + 47))), NoiseError.truncatedMessage("static key"))
        assertThrows(try i2.readMessage(Array(m2.prefix(32 + 48 + 15))), NoiseError.truncatedMessage("payload tag"))
    }
}

final class Libp2pNoiseTests: XCTestCase {
    typealias HS = Libp2pNoiseHandshake

    struct Established {
        var initiator: NoiseTransport
        var responder: NoiseTransport
        var initiatorSawRemote: PeerID
        var responderSawRemote: PeerID
    }

    /// Runs the three-message handshake between two machines, checking each step's shape.
    func handshake(_ i: inout HS, _ r: inout HS) throws -> Established {
        let m1 = try i.start()
        XCTAssertEqual(m1.readableBytes, 2 + 32)
        XCTAssertEqual(try r.start().readableBytes, 0)
        let r1 = try r.receive(m1)
        XCTAssertNil(r1.established)
        let i1 = try i.receive(r1.send)
        let iEst = try XCTUnwrap(i1.established)
        let r2 = try r.receive(i1.send)
        XCTAssertEqual(r2.send.readableBytes, 0)
        let rEst = try XCTUnwrap(r2.established)
        return Established(initiator: iEst.transport, responder: rEst.transport,
                           initiatorSawRemote: iEst.remote, responderSawRemote: rEst.remote)
    }

    func testHandshakeAuthenticatesBothPeers() throws {
        let a = testKey(1), b = testKey(2)
        var i = HS(role: .initiator, identity: a, expectedRemote: b.peerID)
        var r = HS(role: .responder, identity: b)
        var est = try handshake(&i, &r)
        XCTAssertEqual(est.initiatorSawRemote, b.peerID)
        XCTAssertEqual(est.responderSawRemote, a.peerID)
        XCTAssertEqual(i.remotePeer, b.peerID)
        XCTAssertEqual(r.remotePeer, a.peerID)

        // The transports are paired both ways.
        var wire = ByteBuffer()
        try est.initiator.seal(buffer("hello responder"), into: &wire)
        var plain = ByteBuffer()
        try est.responder.open(wire, into: &plain)
        XCTAssertEqual(plain.bytes, utf8("hello responder"))
        wire.clear()
        plain.clear()
        try est.responder.seal(buffer("hello initiator"), into: &wire)
        XCTAssertEqual(wire.readableBytes, 2 + 15 + 16)
        try est.initiator.open(wire, into: &plain)
        XCTAssertEqual(plain.bytes, utf8("hello initiator"))
    }

    func testHandshakePayloadIsTheSignedIdentity() throws {
        // Replays the libp2p handshake against a bare NoiseXXHandshake to inspect what Cairn sends.
        let identity = testKey(3)
        let rStatic = try X25519PrivateKey(rawRepresentation: [UInt8](repeating: 0x33, count: 32))
        var r = HS(role: .responder, identity: identity, staticKey: rStatic)
        var raw = NoiseXXHandshake(role: .initiator, staticKey: X25519PrivateKey())
        let m2 = try r.receive(buffer(noiseFrame(try raw.writeMessage(payload: [])))).send.bytes
        XCTAssertEqual(Int(m2[0]) << 8 | Int(m2[1]), m2.count - 2)
        let payload = try raw.readMessage(Array(m2.dropFirst(2)))
        XCTAssertEqual(raw.remoteStaticKey, rStatic.publicKey)
        let sig = identity.sign(utf8("noise-libp2p-static-key:") + rStatic.publicKey)
        XCTAssertEqual(payload, PB.noisePayload(identityKey: identity.publicKey.protobufBytes, identitySig: sig))
    }

    func testPlaintextAfterTheFinalHandshakeMessageIsKept() throws {
        let a = testKey(1), b = testKey(2)
        var i = HS(role: .initiator, identity: a)
        var r = HS(role: .responder, identity: b)
        let r1 = try r.receive(try i.start())
        let i1 = try i.receive(r1.send)
        var iTransport = try XCTUnwrap(i1.established).transport
        // The initiator's msg3 and its first transport frame arrive in one read.
        var combined = i1.send
        try iTransport.seal(buffer("early data"), into: &combined)
        let r2 = try r.receive(combined)
        let est = try XCTUnwrap(r2.established)
        XCTAssertEqual(est.remote, a.peerID)
        XCTAssertEqual(est.plaintext.bytes, utf8("early data"))
    }

    func testHandshakeByteAtATime() throws {
        let a = testKey(1), b = testKey(2)
        var i = HS(role: .initiator, identity: a)
        var r = HS(role: .responder, identity: b)
        var msg2 = ByteBuffer()
        for byte in try i.start().bytes {
            let out = try r.receive(buffer([byte]))
            XCTAssertNil(out.established)
            var s = out.send
            msg2.writeBuffer(&s)
        }
        var msg3 = ByteBuffer()
        var iRemote: PeerID?
        for byte in msg2.bytes {
            let out = try i.receive(buffer([byte]))
            if let e = out.established { iRemote = e.remote }
            var s = out.send
            msg3.writeBuffer(&s)
        }
        XCTAssertEqual(iRemote, b.peerID)
        var rRemote: PeerID?
        for byte in msg3.bytes {
            if let e = try r.receive(buffer([byte])).established { rRemote = e.remote }
        }
        XCTAssertEqual(rRemote, a.peerID)
    }

    func testExpectedRemoteMismatch() throws {
        let a = testKey(1), b = testKey(2), c = testKey(3)
        var i = HS(role: .initiator, identity: a, expectedRemote: c.peerID)
        var r = HS(role: .responder, identity: b)
        let r1 = try r.receive(try i.start())
        assertThrows(try i.receive(r1.send), NoiseError.wrongRemotePeer(expected: c.peerID, got: b.peerID))

        // A responder that expects someone else refuses the initiator's message 3.
        var i2 = HS(role: .initiator, identity: a)
        var r2 = HS(role: .responder, identity: b, expectedRemote: c.peerID)
        let out = try r2.receive(try i2.start())
        let i2out = try i2.receive(out.send)
        assertThrows(try r2.receive(i2out.send), NoiseError.wrongRemotePeer(expected: c.peerID, got: a.peerID))
    }

    /// Runs a handshake up to the message at `step` (2 or 3), flips one byte at `offset` into the
    /// frame (negative counts from the end), and delivers it.
    func tampered(step: Int, offset: Int) throws -> NoiseError? {
        var i = HS(role: .initiator, identity: testKey(1))
        var r = HS(role: .responder, identity: testKey(2))
        let r1 = try r.receive(try i.start())
        var m2 = r1.send.bytes
        if step == 2 {
            m2[offset >= 0 ? offset : m2.count + offset] ^= 0x01
            do { _ = try i.receive(buffer(m2)); return nil } catch { return error }
        }
        var m3 = try i.receive(buffer(m2)).send.bytes
        m3[offset >= 0 ? offset : m3.count + offset] ^= 0x01
        do { _ = try r.receive(buffer(m3)); return nil } catch { return error }
    }

    func testTamperedMessage2() throws {
        XCTAssertEqual(try tampered(step: 2, offset: 2), .decryptionFailed)        // ephemeral key
        XCTAssertEqual(try tampered(step: 2, offset: 2 + 32 + 5), .decryptionFailed)  // encrypted static key
        XCTAssertEqual(try tampered(step: 2, offset: 2 + 32 + 48 + 3), .decryptionFailed)  // payload
        XCTAssertEqual(try tampered(step: 2, offset: -1), .decryptionFailed)       // payload tag
    }

    func testTamperedMessage3() throws {
        XCTAssertEqual(try tampered(step: 3, offset: 2), .decryptionFailed)        // encrypted static key
        XCTAssertEqual(try tampered(step: 3, offset: 2 + 48 + 3), .decryptionFailed)  // payload
        XCTAssertEqual(try tampered(step: 3, offset: -1), .decryptionFailed)
    }

    /// A responder built from a bare NoiseXXHandshake, so its payload can be anything.
    func respondManually(to i: inout HS, staticKey: X25519PrivateKey, payload: [UInt8]) throws -> (NoiseXXHandshake, [UInt8]) {
        var raw = NoiseXXHandshake(role: .responder, staticKey: staticKey)
        let m1 = try i.start().bytes
        XCTAssertEqual(try raw.readMessage(Array(m1.dropFirst(2))), [])
        let m2 = noiseFrame(try raw.writeMessage(payload: payload))
        return (raw, m2)
    }

    func testBadIdentitySignatureFromResponder() throws {
        let mallory = testKey(9)
        let realStatic = X25519PrivateKey(), otherStatic = X25519PrivateKey()
        let prefix = utf8("noise-libp2p-static-key:")

        // Control: signed over the static key actually used, it is accepted.
        var i0 = HS(role: .initiator, identity: testKey(1))
        let good = PB.noisePayload(identityKey: mallory.publicKey.protobufBytes, identitySig: mallory.sign(prefix + realStatic.publicKey))
        let (raw0, m2good) = try respondManually(to: &i0, staticKey: realStatic, payload: good)
        let ok = try i0.receive(buffer(m2good))
        XCTAssertEqual(ok.established?.remote, mallory.peerID)
        // And the bare responder can read Cairn's message 3, which names the initiator.
        var raw0b = raw0
        let m3payload = try raw0b.readMessage(Array(ok.send.bytes.dropFirst(2)))
        let initiatorKey = testKey(1)
        XCTAssertEqual(m3payload, PB.noisePayload(identityKey: initiatorKey.publicKey.protobufBytes,
                                                  identitySig: initiatorKey.sign(prefix + raw0b.remoteStaticKey!)))

        // Signed over a different static key: refused.
        var i1 = HS(role: .initiator, identity: testKey(1))
        let bad = PB.noisePayload(identityKey: mallory.publicKey.protobufBytes, identitySig: mallory.sign(prefix + otherStatic.publicKey))
        let (_, m2bad) = try respondManually(to: &i1, staticKey: realStatic, payload: bad)
        assertThrows(try i1.receive(buffer(m2bad)), NoiseError.badIdentitySignature)

        // Signed without the prefix: refused.
        var i2 = HS(role: .initiator, identity: testKey(1))
        let noPrefix = PB.noisePayload(identityKey: mallory.publicKey.protobufBytes, identitySig: mallory.sign(realStatic.publicKey))
        let (_, m2np) = try respondManually(to: &i2, staticKey: realStatic, payload: noPrefix)
        assertThrows(try i2.receive(buffer(m2np)), NoiseError.badIdentitySignature)

        // Signed by another identity than the key presented: refused.
        var i3 = HS(role: .initiator, identity: testKey(1))
        let otherSigner = PB.noisePayload(identityKey: mallory.publicKey.protobufBytes,
                                          identitySig: testKey(10).sign(prefix + realStatic.publicKey))
        let (_, m2os) = try respondManually(to: &i3, staticKey: realStatic, payload: otherSigner)
        assertThrows(try i3.receive(buffer(m2os)), NoiseError.badIdentitySignature)
    }

    func testBadIdentitySignatureFromInitiator() throws {
        let mallory = testKey(9)
        var r = HS(role: .responder, identity: testKey(2))
        var raw = NoiseXXHandshake(role: .initiator, staticKey: X25519PrivateKey())
        let m2 = try r.receive(buffer(noiseFrame(try raw.writeMessage(payload: [])))).send
        _ = try raw.readMessage(Array(m2.bytes.dropFirst(2)))
        let sigOverWrongKey = mallory.sign(utf8("noise-libp2p-static-key:") + X25519PrivateKey().publicKey)
        let m3 = try raw.writeMessage(payload: PB.noisePayload(identityKey: mallory.publicKey.protobufBytes, identitySig: sigOverWrongKey))
        assertThrows(try r.receive(buffer(noiseFrame(m3))), NoiseError.badIdentitySignature)
    }

    func testInvalidPayloads() throws {
        func isInvalidPayload(_ e: NoiseError) -> Bool { if case .invalidPayload = e { return true }; return false }
        let s = X25519PrivateKey()
        for payload in [[0xff] as [UInt8],                                                       // not protobuf
                        PB.noisePayload(identityKey: testKey(9).publicKey.protobufBytes, identitySig: nil),  // no signature
                        PB.noisePayload(identityKey: nil, identitySig: [UInt8](repeating: 1, count: 64)),   // no key
                        PB.noisePayload(identityKey: PB.key(type: 1, data: [1, 2, 3]), identitySig: [1])] {  // bad key
            var i = HS(role: .initiator, identity: testKey(1))
            let (_, m2) = try respondManually(to: &i, staticKey: s, payload: payload)
            assertThrows(try i.receive(buffer(m2)), as: NoiseError.self, "\(payload)", isInvalidPayload)
        }
        // The first message must not carry a payload.
        var r = HS(role: .responder, identity: testKey(2))
        var raw = NoiseXXHandshake(role: .initiator, staticKey: s)
        assertThrows(try r.receive(buffer(noiseFrame(try raw.writeMessage(payload: [1])))),
                     NoiseError.invalidPayload("first message carries a payload"))
    }

    func testFrameTooLarge() throws {
        var r = HS(role: .responder, identity: testKey(2))
        // Refused on the length alone.
        let n = HS.maxHandshakeFrameLength + 1
        assertThrows(try r.receive(buffer([UInt8(n >> 8), UInt8(n & 0xff)])), NoiseError.frameTooLarge(n))
        // The limit itself is accepted (waits for the body).
        var r2 = HS(role: .responder, identity: testKey(2))
        let m = HS.maxHandshakeFrameLength
        XCTAssertEqual(try r2.receive(buffer([UInt8(m >> 8), UInt8(m & 0xff), 0x00])).send.readableBytes, 0)
        var i = HS(role: .initiator, identity: testKey(1))
        _ = try i.start()
        assertThrows(try i.receive(buffer([0xff, 0xff])), NoiseError.frameTooLarge(65535))
    }

    func testTruncatedMessages() throws {
        var r = HS(role: .responder, identity: testKey(2))
        assertThrows(try r.receive(buffer(noiseFrame([UInt8](repeating: 7, count: 31)))), NoiseError.truncatedMessage("ephemeral key"))
        var r0 = HS(role: .responder, identity: testKey(2))
        assertThrows(try r0.receive(buffer(noiseFrame([]))), NoiseError.truncatedMessage("ephemeral key"))
        var i = HS(role: .initiator, identity: testKey(1))
        _ = try i.start()
        assertThrows(try i.receive(buffer(noiseFrame([UInt8](repeating: 7, count: 40)))), NoiseError.truncatedMessage("static key"))
    }

    func testFrameBeforeStartIsUnexpected() {
        var i = HS(role: .initiator, identity: testKey(1))
        assertThrows(try i.receive(buffer(noiseFrame([UInt8](repeating: 1, count: 32)))), NoiseError.unexpectedMessage)
    }

    // MARK: Transport

    func establishedPair() throws -> Established {
        var i = HS(role: .initiator, identity: testKey(1))
        var r = HS(role: .responder, identity: testKey(2))
        return try handshake(&i, &r)
    }

    /// Splits a stream of Noise frames into their payloads (test-side parser).
    func frames(_ b: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var i = 0
        while i + 2 <= b.count {
            let n = Int(b[i]) << 8 | Int(b[i + 1])
            out.append(Array(b[i + 2..<min(b.count, i + 2 + n)]))
            i += 2 + n
        }
        XCTAssertEqual(i, b.count, "trailing partial frame")
        return out
    }

    func testTransportLargePayloadRoundTrip() throws {
        var est = try establishedPair()
        let payload = (0..<200 * 1024).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        var wire = ByteBuffer()
        try est.initiator.seal(buffer(payload), into: &wire)
        let f = frames(wire.bytes)
        // 204800 bytes in frames of at most 65519 plaintext bytes: 3 full frames and one of 8243.
        XCTAssertEqual(f.map(\.count), [65535, 65535, 65535, 8243 + 16])
        XCTAssertEqual(wire.readableBytes, payload.count + 4 * (16 + 2))

        // Delivered in uneven pieces, it comes out whole and in order.
        var plain = ByteBuffer()
        let bytesOnWire = wire.bytes
        var offset = 0
        var step = 1
        while offset < bytesOnWire.count {
            let end = min(bytesOnWire.count, offset + step)
            try est.responder.open(buffer(Array(bytesOnWire[offset..<end])), into: &plain)
            offset = end
            step = step * 3 + 1
        }
        XCTAssertEqual(plain.bytes, payload)
    }

    func testTransportTamperAndReorderDetected() throws {
        var est = try establishedPair()
        var first = ByteBuffer(), second = ByteBuffer()
        try est.initiator.seal(buffer("one"), into: &first)
        try est.initiator.seal(buffer("two"), into: &second)

        // A flipped ciphertext bit.
        var tamperedResponder = est.responder
        var bad = first.bytes
        bad[3] ^= 0x20
        var sink = ByteBuffer()
        assertThrows(try tamperedResponder.open(buffer(bad), into: &sink), NoiseError.decryptionFailed)

        // Out of order: the second frame uses nonce 1.
        var reorderResponder = est.responder
        assertThrows(try reorderResponder.open(second, into: &sink), NoiseError.decryptionFailed)

        // Replayed.
        var plain = ByteBuffer()
        try est.responder.open(first, into: &plain)
        assertThrows(try est.responder.open(first, into: &plain), NoiseError.decryptionFailed)

        // A frame too short to hold a tag.
        var shortResponder = est.responder
        assertThrows(try shortResponder.open(buffer(noiseFrame([1, 2, 3, 4, 5])), into: &sink), as: NoiseError.self) {
            if case .truncatedMessage = $0 { return true }; return false
        }
        // A frame sent by oneself (wrong direction key) does not open.
        var loop = ByteBuffer()
        try est.responder.seal(buffer("mirror"), into: &loop)
        var selfOpen = est.responder
        assertThrows(try selfOpen.open(loop, into: &sink), NoiseError.decryptionFailed)
    }

    func testEmptySealProducesNoFrames() throws {
        var est = try establishedPair()
        var wire = ByteBuffer()
        try est.initiator.seal(ByteBuffer(), into: &wire)
        XCTAssertEqual(wire.readableBytes, 0)
    }

    func testFrameDecoder() throws {
        var d = NoiseFrameDecoder(maxFrameLength: 10)
        d.append(buffer([0x00]))
        XCTAssertNil(try d.next())
        d.append(buffer([0x03, 0x61, 0x62]))
        XCTAssertNil(try d.next())
        d.append(buffer([0x63, 0x00, 0x00, 0x00, 0x01]))
        XCTAssertEqual(try d.next(), utf8("abc"))
        XCTAssertEqual(try d.next(), [])
        XCTAssertNil(try d.next())
        XCTAssertEqual(d.takeRemainder().bytes, [0x00, 0x01])
        d.append(buffer([0x00, 0x0b]))
        assertThrows(try d.next(), NoiseError.frameTooLarge(11))
    }
}
