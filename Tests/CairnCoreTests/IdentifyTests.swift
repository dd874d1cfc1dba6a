import XCTest

@testable import CairnCore
import CairnCrypto

final class IdentifyTests: XCTestCase {
    let me = testKey(0x11), other = testKey(0x22)

    func sampleInfo(_ key: PrivateKey) throws -> IdentifyInfo {
        IdentifyInfo(protocolVersion: IdentifyInfo.defaultProtocolVersion, agentVersion: "cairn/0.1.0",
                     publicKey: key.publicKey,
                     listenAddrs: [try Multiaddr("/ip4/192.0.2.1/tcp/4001"), try Multiaddr("/ip6/2001:db8::1/tcp/4001")],
                     observedAddr: try Multiaddr("/ip4/198.51.100.7/tcp/53211"),
                     protocols: [IdentifyInfo.protocolID, IdentifyInfo.pushProtocolID, Ping.protocolID])
    }

    func testEncodeDecodeStreamWithSignedRecord() throws {
        var info = try sampleInfo(me)
        let record = PeerRecord(peerID: me.peerID, seq: 1234, addresses: info.listenAddrs)
        let envelope = record.sign(with: me)
        let message = info.encode(signedRecord: envelope)

        // The wire form matches an independent protobuf encoding (fields in field-number order).
        var expected = PB.field(1, me.publicKey.protobufBytes)
        for a in info.listenAddrs { expected += PB.field(2, a.bytes) }
        for p in info.protocols { expected += PB.field(3, p) }
        expected += PB.field(4, info.observedAddr!.bytes)
        expected += PB.field(5, "ipfs/0.1.0") + PB.field(6, "cairn/0.1.0") + PB.field(8, envelope.bytes)
        XCTAssertEqual(message, expected)

        let decoded = try IdentifyInfo.decodeStream(LengthPrefixedDecoder.frame(message), from: me.peerID)
        info.signedPeerRecord = record
        XCTAssertEqual(decoded, info)
        XCTAssertEqual(decoded.signedPeerRecord, record)
        XCTAssertNil(decoded.signedPeerRecordError)
        XCTAssertEqual(decoded.signedPeerRecordEnvelope?.bytes, envelope.bytes)
        XCTAssertEqual(decoded.signedPeerRecordEnvelope?.signer, me.peerID)
        XCTAssertEqual(decoded.skipped, [])
        XCTAssertEqual(decoded.agentVersion, "cairn/0.1.0")
        XCTAssertEqual(decoded.observedAddr?.description, "/ip4/198.51.100.7/tcp/53211")
    }

    func testMinimalMessage() throws {
        let decoded = try IdentifyInfo.decodeStream(LengthPrefixedDecoder.frame([]), from: me.peerID)
        XCTAssertNil(decoded.protocolVersion)
        XCTAssertNil(decoded.publicKey)
        XCTAssertEqual(decoded.listenAddrs, [])
        XCTAssertNil(decoded.signedPeerRecord)
        XCTAssertNil(decoded.signedPeerRecordError)
    }

    func testSeveralMessagesAreMerged() throws {
        let first = IdentifyInfo(protocolVersion: "ipfs/0.1.0", publicKey: me.publicKey,
                                 listenAddrs: [try Multiaddr("/ip4/192.0.2.1/tcp/1")], protocols: ["/a"])
        let second = IdentifyInfo(agentVersion: "go-libp2p/0.40", listenAddrs: [try Multiaddr("/ip4/192.0.2.2/tcp/2")],
                                  protocols: ["/b"])
        let record = PeerRecord(peerID: me.peerID, seq: 5, addresses: []).sign(with: me)
        let stream = LengthPrefixedDecoder.frame(first.encode(signedRecord: nil))
            + LengthPrefixedDecoder.frame(second.encode(signedRecord: record))
        let decoded = try IdentifyInfo.decodeStream(stream, from: me.peerID)
        XCTAssertEqual(decoded.protocolVersion, "ipfs/0.1.0")
        XCTAssertEqual(decoded.agentVersion, "go-libp2p/0.40")
        XCTAssertEqual(decoded.publicKey, me.publicKey)
        XCTAssertEqual(decoded.listenAddrs.map(\.description), ["/ip4/192.0.2.1/tcp/1", "/ip4/192.0.2.2/tcp/2"])
        XCTAssertEqual(decoded.protocols, ["/a", "/b"])
        XCTAssertEqual(decoded.signedPeerRecord?.seq, 5)
    }

    func testPublicKeyOfAnotherPeer() throws {
        let message = try sampleInfo(me).encode(signedRecord: nil)
        assertThrows(try IdentifyInfo.decodeStream(LengthPrefixedDecoder.frame(message), from: other.peerID),
                     IdentifyError.publicKeyMismatch)
        assertThrows(try IdentifyInfo.decode(message, from: other.peerID), IdentifyError.publicKeyMismatch)
    }

    func testRecordOfAnotherPeerIsDroppedNotFatal() throws {
        // A valid record, but for someone other than the connection's peer.
        let foreign = PeerRecord(peerID: other.peerID, seq: 1, addresses: [try Multiaddr("/ip4/203.0.113.9/tcp/1")]).sign(with: other)
        let decoded = try IdentifyInfo.decodeStream(LengthPrefixedDecoder.frame(try sampleInfo(me).encode(signedRecord: foreign)),
                                                    from: me.peerID)
        XCTAssertNil(decoded.signedPeerRecord)
        XCTAssertNil(decoded.signedPeerRecordEnvelope)
        let error = try XCTUnwrap(decoded.signedPeerRecordError)
        XCTAssertTrue(error.contains(other.peerID.base58), error)
        // The rest of the message is kept.
        XCTAssertEqual(decoded.publicKey, me.publicKey)
        XCTAssertEqual(decoded.listenAddrs.count, 2)

        // A record naming us but signed by another key.
        let forged = VerifiedEnvelope(sealing: PeerRecord(peerID: me.peerID, seq: 2, addresses: []).encode(),
                                      payloadType: PeerRecord.payloadType, domain: PeerRecord.domain, key: other)
        let decoded2 = try IdentifyInfo.decodeStream(LengthPrefixedDecoder.frame(try sampleInfo(me).encode(signedRecord: forged)),
                                                     from: me.peerID)
        XCTAssertNil(decoded2.signedPeerRecord)
        XCTAssertEqual(decoded2.signedPeerRecordError, EnvelopeError.signerMismatch.description)

        // Garbage in the record field.
        let garbage = PB.field(1, me.publicKey.protobufBytes) + PB.field(8, [0xde, 0xad, 0xbe, 0xef])
        let decoded3 = try IdentifyInfo.decode(garbage, from: me.peerID)
        XCTAssertNil(decoded3.signedPeerRecord)
        XCTAssertNotNil(decoded3.signedPeerRecordError)
    }

    func testMessageOverTheLimit() {
        // A real identify message, just over 8 KiB.
        var info = IdentifyInfo(publicKey: me.publicKey)
        info.protocols = (0..<100).map { "/proto/\($0)/" + String(repeating: "x", count: 80) }
        let message = info.encode(signedRecord: nil)
        XCTAssertGreaterThan(message.count, IdentifyInfo.maxMessageSize)
        assertThrows(try IdentifyInfo.decode(message, from: me.peerID), IdentifyError.tooLarge(message.count))
        let stream = LengthPrefixedDecoder.frame(message)
        assertThrows(try IdentifyInfo.decodeStream(stream, from: me.peerID), as: IdentifyError.self, "stream") {
            if case .tooLarge = $0 { return true }; return false
        }
        // The length prefix alone is enough to refuse it.
        assertThrows(try IdentifyInfo.decodeStream(PB.varint(UInt64(IdentifyInfo.maxMessageSize + 1)), from: me.peerID),
                     as: IdentifyError.self, "prefix only") {
            if case .tooLarge = $0 { return true }; return false
        }
        // Exactly at the limit is fine.
        var atLimit = PB.field(1, me.publicKey.protobufBytes)
        let filler = IdentifyInfo.maxMessageSize - atLimit.count - 4  // field 6 tag + 2-byte length + "a"
        atLimit += PB.field(6, "a" + String(repeating: "b", count: filler))
        XCTAssertEqual(atLimit.count, IdentifyInfo.maxMessageSize)
        XCTAssertNoThrow(try IdentifyInfo.decodeStream(LengthPrefixedDecoder.frame(atLimit), from: me.peerID))
    }

    func testTruncatedStream() throws {
        let framed = LengthPrefixedDecoder.frame(try sampleInfo(me).encode(signedRecord: nil))
        assertThrows(try IdentifyInfo.decodeStream(Array(framed.dropLast()), from: me.peerID),
                     IdentifyError.malformed("truncated length-prefixed message"))
        assertThrows(try IdentifyInfo.decodeStream([], from: me.peerID), IdentifyError.malformed("truncated length-prefixed message"))
        // A whole message followed by half of another.
        assertThrows(try IdentifyInfo.decodeStream(framed + Array(framed.prefix(10)), from: me.peerID),
                     IdentifyError.malformed("truncated length-prefixed message"))
    }

    func testMalformedProtobuf() {
        assertThrows(try IdentifyInfo.decodeStream(LengthPrefixedDecoder.frame([0x0a, 0x10, 0x01]), from: me.peerID),
                     as: IdentifyError.self, "protobuf") { if case .malformed = $0 { return true }; return false }
        // A public key that does not decode.
        assertThrows(try IdentifyInfo.decode(PB.field(1, PB.key(type: 1, data: [1, 2])), from: me.peerID),
                     as: IdentifyError.self, "key") { if case .malformed = $0 { return true }; return false }
    }

    func testInvalidListenAddrIsSkipped() throws {
        let good = try Multiaddr("/ip4/192.0.2.1/tcp/4001")
        let message = PB.field(1, me.publicKey.protobufBytes)
            + PB.field(2, [0x04, 0x01])                 // truncated ip4
            + PB.field(2, good.bytes)
            + PB.field(2, [0xd0, 0x03])                 // unknown protocol code 464
            + PB.field(4, [0x06])                       // truncated observed address
            + PB.field(3, "/ipfs/ping/1.0.0") + PB.field(3, "")
        let decoded = try IdentifyInfo.decode(message, from: me.peerID)
        XCTAssertEqual(decoded.listenAddrs, [good])
        XCTAssertNil(decoded.observedAddr)
        XCTAssertEqual(decoded.skipped.count, 3)
        XCTAssertEqual(decoded.skipped.filter { $0.hasPrefix("listen address") }.count, 2)
        XCTAssertEqual(decoded.protocols, ["/ipfs/ping/1.0.0"], "empty protocol names are dropped")
    }

    func testTooManyEntries() {
        let addr = try! Multiaddr("/ip4/192.0.2.1/tcp/1").bytes
        var message: [UInt8] = []
        for _ in 0...IdentifyInfo.maxListenAddrs { message += PB.field(2, addr) }
        assertThrows(try IdentifyInfo.decode(message, from: me.peerID), IdentifyError.tooManyEntries("listen addresses"))
        var protos: [UInt8] = []
        for i in 0...IdentifyInfo.maxProtocols { protos += PB.field(3, "/p\(i)") }
        assertThrows(try IdentifyInfo.decode(protos, from: me.peerID), IdentifyError.tooManyEntries("protocols"))
    }
}
