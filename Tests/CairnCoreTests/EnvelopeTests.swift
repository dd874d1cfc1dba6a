import XCTest

@testable import CairnCore
import CairnCrypto

final class EnvelopeTests: XCTestCase {
    typealias V = SpecVectors.PeerRecordEnvelope

    var jsEnvelope: [UInt8] { bytes(hex: V.envelopeHex) }
    var jsSigner: PrivateKey { try! PrivateKey(protobufBytes: bytes(hex: V.signerPrivateKeyProtobufHex)) }

    func testJSPeerRecordVectorVerifies() throws {
        let (record, env) = try PeerRecord.open(envelopeBytes: jsEnvelope)
        let signer = jsSigner
        XCTAssertEqual(record.peerID, signer.peerID)
        XCTAssertTrue(record.peerID.base58.hasPrefix("12D3KooW"))
        // seq is the varint d8 b8 e0 bf 93 91 b6 97 16 in the record (a nanosecond timestamp).
        XCTAssertEqual(record.seq, 1_598_453_001_624_231_000)
        XCTAssertEqual(record.addresses.map(\.description), (0...9).map { "/ip4/1.2.3.4/tcp/\($0)" })
        XCTAssertEqual(env.signer, signer.peerID)
        XCTAssertEqual(env.publicKey, signer.publicKey)
        XCTAssertEqual(env.payloadType, bytes(hex: V.payloadTypeHex))
        XCTAssertEqual(env.payloadType, PeerRecord.payloadType)
        XCTAssertEqual(V.domain, PeerRecord.domain)
        XCTAssertEqual(env.bytes, jsEnvelope)
        XCTAssertEqual(env.signature, Array(jsEnvelope.suffix(64)))
        // The record re-encodes to the payload byte for byte (the same field order and varints).
        XCTAssertEqual(record.encode(), env.payload)
        XCTAssertEqual(try PeerRecord(envelope: env), record)
    }

    func testJSVectorWithFlippedSignatureByte() {
        for offset in [1, 32, 64] {
            var bad = jsEnvelope
            bad[bad.count - offset] ^= 0x01
            assertThrows(try PeerRecord.open(envelopeBytes: bad), EnvelopeError.invalidSignature)
        }
        // A flipped payload byte (the seq varint's last byte, 0x16 -> 0x17) also breaks the signature.
        var bad = jsEnvelope
        let seqEnd = bad.firstRange(of: bytes(hex: "b69716"))!.upperBound - 1
        bad[seqEnd] ^= 0x01
        assertThrows(try PeerRecord.open(envelopeBytes: bad), EnvelopeError.invalidSignature)
    }

    func testJSVectorUnderAnotherDomainOrPayloadType() throws {
        let unverified = try UnverifiedEnvelope(bytes: jsEnvelope)
        assertThrows(try unverified.verify(domain: "libp2p-routing-state", expectedPayloadType: PeerRecord.payloadType),
                     EnvelopeError.invalidSignature)
        assertThrows(try unverified.verify(domain: PeerRecord.domain, expectedPayloadType: [0x03, 0x02]),
                     EnvelopeError.wrongPayloadType)
        XCTAssertNoThrow(try unverified.verify(domain: PeerRecord.domain, expectedPayloadType: PeerRecord.payloadType))
    }

    func testOwnRecordRoundTrips() throws {
        let key = testKey(1)
        let record = PeerRecord(peerID: key.peerID, seq: 42, addresses: [
            try Multiaddr("/ip4/10.0.0.1/tcp/4001"),
            try Multiaddr("/ip6/::1/tcp/4001"),
            try Multiaddr("/dns4/example.com/tcp/443/wss"),
        ])
        let env = record.sign(with: key)
        XCTAssertEqual(env.signer, key.peerID)
        XCTAssertEqual(env.payload, record.encode())
        // The payload is the PeerRecord protobuf, checked against an independent encoding.
        XCTAssertEqual(env.payload, PB.peerRecord(peerID: key.peerID.bytes, seq: 42, addresses: record.addresses.map(\.bytes)))
        // And the envelope itself.
        XCTAssertEqual(env.bytes, PB.envelope(publicKey: key.publicKey.protobufBytes, payloadType: [0x03, 0x01],
                                              payload: env.payload, signature: env.signature))
        // The signature is over varint-prefixed domain, type and payload.
        let signed = [UInt8(18)] + utf8("libp2p-peer-record") + [2, 0x03, 0x01] + PB.varint(UInt64(env.payload.count)) + env.payload
        XCTAssertTrue(key.publicKey.isValidSignature(env.signature, for: signed))

        let (opened, verified) = try PeerRecord.open(envelopeBytes: env.bytes)
        XCTAssertEqual(opened, record)
        XCTAssertEqual(verified.bytes, env.bytes)
        XCTAssertEqual(verified.signer, key.peerID)
    }

    func testOwnRecordWithFlippedSignatureByte() {
        let key = testKey(2)
        var raw = PeerRecord(peerID: key.peerID, seq: 1, addresses: []).sign(with: key).bytes
        raw[raw.count - 10] ^= 0x40
        assertThrows(try PeerRecord.open(envelopeBytes: raw), EnvelopeError.invalidSignature)
    }

    func testWrongDomain() {
        let key = testKey(3)
        let record = PeerRecord(peerID: key.peerID, seq: 1, addresses: [])
        let env = VerifiedEnvelope(sealing: record.encode(), payloadType: PeerRecord.payloadType,
                                   domain: "libp2p-not-a-peer-record", key: key)
        assertThrows(try PeerRecord.open(envelopeBytes: env.bytes), EnvelopeError.invalidSignature)
    }

    func testWrongPayloadType() throws {
        let key = testKey(4)
        let record = PeerRecord(peerID: key.peerID, seq: 1, addresses: [])
        let env = VerifiedEnvelope(sealing: record.encode(), payloadType: [0x03, 0x02], domain: PeerRecord.domain, key: key)
        assertThrows(try PeerRecord.open(envelopeBytes: env.bytes), EnvelopeError.wrongPayloadType)
        // Also when a verified envelope of another type is handed to the record decoder.
        let verified = try UnverifiedEnvelope(bytes: env.bytes).verify(domain: PeerRecord.domain, expectedPayloadType: [0x03, 0x02])
        assertThrows(try PeerRecord(envelope: verified), EnvelopeError.wrongPayloadType)
    }

    func testSignerIsNotTheRecordPeer() {
        let alice = testKey(5), mallory = testKey(6)
        let record = PeerRecord(peerID: alice.peerID, seq: 9, addresses: [try! Multiaddr("/ip4/1.2.3.4/tcp/1")])
        let env = VerifiedEnvelope(sealing: record.encode(), payloadType: PeerRecord.payloadType,
                                   domain: PeerRecord.domain, key: mallory)
        assertThrows(try PeerRecord.open(envelopeBytes: env.bytes), EnvelopeError.signerMismatch)
    }

    func testOversizedEnvelope() {
        let key = testKey(7)
        let env = VerifiedEnvelope(sealing: [UInt8](repeating: 0x61, count: UnverifiedEnvelope.maxSize),
                                   payloadType: PeerRecord.payloadType, domain: PeerRecord.domain, key: key)
        XCTAssertGreaterThan(env.bytes.count, UnverifiedEnvelope.maxSize)
        assertThrows(try PeerRecord.open(envelopeBytes: env.bytes), EnvelopeError.tooLarge(env.bytes.count))
        assertThrows(try UnverifiedEnvelope(bytes: [UInt8](repeating: 0, count: UnverifiedEnvelope.maxSize + 1)),
                     EnvelopeError.tooLarge(UnverifiedEnvelope.maxSize + 1))
    }

    func testGarbage() {
        func isMalformed(_ e: EnvelopeError) -> Bool { if case .malformed = e { return true }; return false }
        let garbage: [[UInt8]] = [
            [0xde, 0xad, 0xbe, 0xef],           // wire type 6 does not exist
            [0x0a, 0x05, 0x01],                 // length past the end
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],  // overlong tag varint
            [],                                  // parses, but has no public key
            PB.field(2, [0x03, 0x01]) + PB.field(3, [0x0a]) + PB.field(5, [UInt8](repeating: 0, count: 64)),  // no key
            utf8("GET / HTTP/1.1\r\n\r\n"),
        ]
        for g in garbage {
            assertThrows(try PeerRecord.open(envelopeBytes: g), as: EnvelopeError.self, "\(g)", isMalformed)
        }
    }

    func testMalformedKeyOrPayload() {
        func isMalformed(_ e: EnvelopeError) -> Bool { if case .malformed = e { return true }; return false }
        let key = testKey(8)
        // A public key that is not a valid Ed25519 key.
        let badKey = PB.envelope(publicKey: PB.key(type: 1, data: [1, 2, 3]), payloadType: [0x03, 0x01],
                                 payload: [], signature: [UInt8](repeating: 0, count: 64))
        assertThrows(try PeerRecord.open(envelopeBytes: badKey), as: EnvelopeError.self, "bad key", isMalformed)
        // A correctly signed payload that is not a PeerRecord.
        let notARecord = VerifiedEnvelope(sealing: [0xff, 0xff], payloadType: PeerRecord.payloadType,
                                          domain: PeerRecord.domain, key: key)
        assertThrows(try PeerRecord.open(envelopeBytes: notARecord.bytes), as: EnvelopeError.self, "payload", isMalformed)
        // A record with an unparseable address.
        let badAddr = VerifiedEnvelope(sealing: PB.peerRecord(peerID: key.peerID.bytes, seq: 1, addresses: [[0x04, 0x01]]),
                                       payloadType: PeerRecord.payloadType, domain: PeerRecord.domain, key: key)
        assertThrows(try PeerRecord.open(envelopeBytes: badAddr.bytes), as: EnvelopeError.self, "address", isMalformed)
        // A record with a bad peer ID.
        let badID = VerifiedEnvelope(sealing: PB.peerRecord(peerID: [0x12, 0x01, 0x00], seq: 1, addresses: []),
                                     payloadType: PeerRecord.payloadType, domain: PeerRecord.domain, key: key)
        assertThrows(try PeerRecord.open(envelopeBytes: badID.bytes), as: EnvelopeError.self, "peer ID", isMalformed)
        // More addresses than allowed.
        let many = [[UInt8]](repeating: try! Multiaddr("/ip4/1.2.3.4/tcp/1").bytes, count: PeerRecord.maxAddresses + 1)
        let tooMany = VerifiedEnvelope(sealing: PB.peerRecord(peerID: key.peerID.bytes, seq: 1, addresses: many),
                                       payloadType: PeerRecord.payloadType, domain: PeerRecord.domain, key: key)
        assertThrows(try PeerRecord.open(envelopeBytes: tooMany.bytes), as: EnvelopeError.self, "too many", isMalformed)
        let justEnough = VerifiedEnvelope(sealing: PB.peerRecord(peerID: key.peerID.bytes, seq: 1, addresses: Array(many.dropLast())),
                                          payloadType: PeerRecord.payloadType, domain: PeerRecord.domain, key: key)
        XCTAssertEqual(try PeerRecord.open(envelopeBytes: justEnough.bytes).0.addresses.count, PeerRecord.maxAddresses)
    }

    func testNonEd25519SignerNeverVerifies() {
        // A secp256k1 key (from the peer-ids spec) with some signature: Cairn cannot verify it, so refuses it.
        let env = PB.envelope(publicKey: bytes(hex: SpecVectors.PeerIds.secp256k1.publicKeyProtobufHex),
                              payloadType: [0x03, 0x01], payload: [], signature: [UInt8](repeating: 1, count: 64))
        assertThrows(try PeerRecord.open(envelopeBytes: env), EnvelopeError.invalidSignature)
    }
}
