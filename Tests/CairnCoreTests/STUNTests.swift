import XCTest

@testable import CairnCore

/// Hex as RFCs print it: bytes separated by spaces and line breaks.
private func spacedHex(_ s: String, file: StaticString = #filePath, line: UInt = #line) -> [UInt8] {
    bytes(hex: String(s.unicodeScalars.filter { !CharacterSet.whitespacesAndNewlines.contains($0) }.map(Character.init)),
          file: file, line: line)
}

// RFC 5769 ("Test Vectors for Session Traversal Utilities for NAT (STUN)", April 2010),
// sections 2.1–2.3, byte for byte. Their FINGERPRINTs are checked here; their
// MESSAGE-INTEGRITY (HMAC-SHA1) is not, as Cairn uses no STUN credentials. SOFTWARE and
// USERNAME are padded with 0x20 in the RFC on purpose: receivers must ignore padding.
private enum RFC5769 {
    static let transactionID = spacedHex("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")

    /// 2.1 Sample Request: SOFTWARE "STUN test client", PRIORITY, ICE-CONTROLLED, USERNAME
    /// "evtj:h6vY", MESSAGE-INTEGRITY, FINGERPRINT.
    static let request = spacedHex("""
        00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
        00 24 00 04 6e 00 01 ff
        80 29 00 08 93 2f f9 b1 51 26 3b 36
        00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
        00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
        80 28 00 04 e5 7a 3b cf
        """)

    /// 2.2 Sample IPv4 Response: SOFTWARE "test vector", XOR-MAPPED-ADDRESS 192.0.2.1:32853.
    static let ipv4Response = spacedHex("""
        01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
        00 20 00 08 00 01 a1 47 e1 12 a6 43
        00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
        80 28 00 04 c0 7d 4c 96
        """)

    /// 2.3 Sample IPv6 Response: XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    static let ipv6Response = spacedHex("""
        01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
        00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
        00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
        80 28 00 04 c8 fb 0b 4c
        """)
}

/// A STUN header built by hand (not by the code under test), for malformed cases.
private func header(type: UInt16 = 0x0001, length: Int, cookie: UInt32 = 0x2112_A442, tid: [UInt8] = Array(1...12)) -> [UInt8] {
    [UInt8(type >> 8), UInt8(type & 0xFF), UInt8(length >> 8), UInt8(length & 0xFF),
     UInt8(cookie >> 24), UInt8((cookie >> 16) & 0xFF), UInt8((cookie >> 8) & 0xFF), UInt8(cookie & 0xFF)] + tid
}

private func attr(_ type: UInt16, _ value: [UInt8]) -> [UInt8] {
    [UInt8(type >> 8), UInt8(type & 0xFF), UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
        + [UInt8](repeating: 0, count: (4 - value.count % 4) % 4)
}

/// Header plus attributes with a correct length field.
private func message(type: UInt16 = 0x0001, tid: [UInt8] = Array(1...12), _ attrs: [UInt8]...) -> [UInt8] {
    let body = attrs.flatMap { $0 }
    return header(type: type, length: body.count, tid: tid) + body
}

private func decodeError(_ datagram: [UInt8]) -> STUNError? {
    do {
        _ = try STUNMessage(decoding: datagram)
        return nil
    } catch {
        return error
    }
}

final class STUNTests: XCTestCase {
    let client = STUNEndpoint(ip: "192.0.2.7", port: 4242)!

    // MARK: CRC-32

    func testCRC32KnownAnswers() {
        XCTAssertEqual(STUN.crc32(Array("123456789".utf8)), 0xCBF4_3926)  // the CRC-32/ISO-HDLC check value
        XCTAssertEqual(STUN.crc32([UInt8]()), 0)
        XCTAssertEqual(STUN.crc32(Array("The quick brown fox jumps over the lazy dog".utf8)), 0x414F_A339)
    }

    func testRFC5769FingerprintsAreTheCRCOfThePrecedingBytes() {
        for (vector, expected) in [(RFC5769.request, 0xe57a_3bcf), (RFC5769.ipv4Response, 0xc07d_4c96), (RFC5769.ipv6Response, 0xc8fb_0b4c)] as [([UInt8], UInt32)] {
            XCTAssertEqual(STUN.crc32(vector.dropLast(8)) ^ 0x5354_554E, expected)
        }
    }

    // MARK: RFC 5769 vectors

    func testRFC5769SampleRequest() throws {
        let m = try STUNMessage(decoding: RFC5769.request)
        XCTAssertEqual(m.method, STUN.Method.binding)
        XCTAssertEqual(m.messageClass, .request)
        XCTAssertEqual(m.transactionID, RFC5769.transactionID)
        XCTAssertTrue(m.hadFingerprint)
        XCTAssertEqual(m.attributes.map(\.type), [0x8022, 0x0024, 0x8029, 0x0006, 0x0008])
        XCTAssertEqual(try m.software(), "STUN test client")
        XCTAssertEqual(m.value(of: STUN.AttributeType.username), utf8("evtj:h6vY"))  // padding not included
        XCTAssertEqual(m.value(of: 0x0024), [0x6e, 0x00, 0x01, 0xff])
        // PRIORITY (ICE) is comprehension-required and not ours; ICE-CONTROLLED is optional.
        XCTAssertEqual(m.unknownComprehensionRequired, [0x0024])
    }

    func testRFC5769SampleRequestGetsA420NamingPriority() throws {
        var server = STUNServerLogic()
        let outcome = server.handle(RFC5769.request, from: client)
        guard case .refuse(let reply, let why) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(why.reason, .unknownAttributes)
        let r = try STUNMessage(decoding: reply)
        XCTAssertEqual(r.messageClass, .errorResponse)
        XCTAssertEqual(r.method, STUN.Method.binding)
        XCTAssertEqual(r.transactionID, RFC5769.transactionID)
        XCTAssertEqual(try r.errorCode()?.code, 420)
        XCTAssertEqual(try r.unknownAttributesList(), [0x0024])
        XCTAssertTrue(r.hadFingerprint)
        XCTAssertEqual(server.stats.refused, 1)
        XCTAssertEqual(server.stats.count(.unknownAttributes), 1)
    }

    func testRFC5769IPv4Response() throws {
        let m = try STUNMessage(decoding: RFC5769.ipv4Response)
        XCTAssertEqual(m.messageClass, .successResponse)
        XCTAssertEqual(m.transactionID, RFC5769.transactionID)
        XCTAssertTrue(m.hadFingerprint)
        XCTAssertEqual(try m.software(), "test vector")
        let expected = STUNEndpoint(ip: "192.0.2.1", port: 32853)!
        XCTAssertEqual(try m.xorMappedAddress(), expected)
        XCTAssertNil(try m.mappedAddress())
        // Encoding the address gives the RFC's attribute value.
        XCTAssertEqual(STUNMessage.encodeAddress(expected, xorWith: RFC5769.transactionID), spacedHex("00 01 a1 47 e1 12 a6 43"))
        // And the client accepts it as the answer to its transaction.
        XCTAssertEqual(try STUNClientLogic(transactionID: RFC5769.transactionID).parseResponse(RFC5769.ipv4Response), expected)
    }

    func testRFC5769IPv6Response() throws {
        let m = try STUNMessage(decoding: RFC5769.ipv6Response)
        XCTAssertTrue(m.hadFingerprint)
        let expected = STUNEndpoint(ip: "2001:db8:1234:5678:11:2233:4455:6677", port: 32853)!
        XCTAssertEqual(try m.xorMappedAddress(), expected)
        XCTAssertEqual(STUNMessage.encodeAddress(expected, xorWith: RFC5769.transactionID),
                       spacedHex("00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9"))
        XCTAssertEqual(try STUNClientLogic(transactionID: RFC5769.transactionID).parseResponse(RFC5769.ipv6Response), expected)
    }

    func testRFC5769VectorsWithAnyFlippedBitFailTheFingerprint() {
        for vector in [RFC5769.request, RFC5769.ipv4Response, RFC5769.ipv6Response] {
            // Flip bits in the transaction ID and in attribute values (not in the header's
            // type/length/cookie, which fail earlier checks, nor in attribute lengths).
            for i in [8, 19, 24, vector.count - 9] {
                var v = vector
                v[i] ^= 0x01
                guard case .badFingerprint? = decodeError(v) else { return XCTFail("byte \(i): \(String(describing: decodeError(v)))") }
            }
        }
    }

    // MARK: Message type and round trips

    func testMessageTypeBits() {
        XCTAssertEqual(STUNMessage.messageType(method: 0x001, class: .request), 0x0001)
        XCTAssertEqual(STUNMessage.messageType(method: 0x001, class: .indication), 0x0011)
        XCTAssertEqual(STUNMessage.messageType(method: 0x001, class: .successResponse), 0x0101)
        XCTAssertEqual(STUNMessage.messageType(method: 0x001, class: .errorResponse), 0x0111)
        XCTAssertEqual(STUNMessage.messageType(method: 0x003, class: .request), 0x0003)  // TURN Allocate
        XCTAssertEqual(STUNMessage.messageType(method: 0xFFF, class: .errorResponse), 0x3FFF)
        for method in [0x000, 0x001, 0x07F, 0x080, 0xABC, 0xFFF] as [UInt16] {
            for c in [STUNMessage.Class.request, .indication, .successResponse, .errorResponse] {
                let (m, cc) = STUNMessage.split(messageType: STUNMessage.messageType(method: method, class: c))
                XCTAssertEqual(m, method)
                XCTAssertEqual(cc, c)
            }
        }
    }

    func testRoundTrips() throws {
        let tid = Array(UInt8(100)...UInt8(111))
        for ep in [STUNEndpoint(ip: "203.0.113.9", port: 1)!, STUNEndpoint(ip: "2001:db8::1", port: 65535)!,
                   STUNEndpoint(ip: "0.0.0.0", port: 0)!] {
            for fp in [true, false] {
                let m = STUNMessage(messageClass: .successResponse, transactionID: tid, attributes: [
                    .init(type: STUN.AttributeType.software, value: utf8("odd length")),
                    .init(type: STUN.AttributeType.xorMappedAddress, value: STUNMessage.encodeAddress(ep, xorWith: tid)),
                    .init(type: STUN.AttributeType.mappedAddress, value: STUNMessage.encodeAddress(ep, xorWith: nil)),
                    .init(type: 0x8123, value: []),
                ])
                let wire = m.encode(fingerprint: fp)
                XCTAssertEqual(wire.count % 4, 0)
                XCTAssertEqual(Int(wire[2]) << 8 | Int(wire[3]), wire.count - 20)
                var d = try STUNMessage(decoding: wire)
                XCTAssertEqual(d.hadFingerprint, fp)
                d.hadFingerprint = false
                XCTAssertEqual(d, m)
                XCTAssertEqual(try d.xorMappedAddress(), ep)
                XCTAssertEqual(try d.mappedAddress(), ep)
                XCTAssertEqual(try d.software(), "odd length")
            }
        }
    }

    func testPaddingIsZeroWhenEncodedAndIgnoredWhenDecoded() throws {
        let m = STUNMessage(messageClass: .request, transactionID: Array(1...12), attributes: [.init(type: 0x8022, value: [0x41])])
        XCTAssertEqual(m.encode(fingerprint: false), header(length: 8) + [0x80, 0x22, 0x00, 0x01, 0x41, 0, 0, 0])
        let odd = header(length: 8) + [0x80, 0x22, 0x00, 0x01, 0x41, 0xAA, 0xBB, 0xCC]
        XCTAssertEqual(try STUNMessage(decoding: odd).value(of: 0x8022), [0x41])
    }

    func testAttributesAfterMessageIntegrityAreIgnored() throws {
        let d = try STUNMessage(decoding: message(
            attr(0x8022, utf8("x")), attr(0x0008, [UInt8](repeating: 7, count: 20)), attr(0x0024, [0, 0, 0, 1]), attr(0x8029, [1, 2, 3, 4])))
        XCTAssertEqual(d.attributes.map(\.type), [0x8022, 0x0008])
        XCTAssertEqual(d.unknownComprehensionRequired, [])
    }

    // MARK: Malformed datagrams, each with its reason

    func testMalformedDatagramsEachHaveTheirError() {
        let fp = STUNMessage(messageClass: .request, transactionID: Array(1...12)).encode(fingerprint: true)
        var badFP = fp
        badFP[badFP.count - 1] ^= 0xFF
        // A correct FINGERPRINT (over a header whose length counts the later attribute too),
        // then one more attribute.
        let prefix = header(length: 16)
        let crc = STUN.crc32(prefix) ^ 0x5354_554E
        let afterFP = prefix + attr(0x8028, [UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)])
            + attr(0x8022, utf8("late"))

        let cases: [(String, [UInt8], STUNError)] = [
            ("empty", [], .tooShort(0)),
            ("19 bytes", Array(header(length: 0).prefix(19)), .tooShort(19)),
            ("over 1280 bytes", header(length: 1264) + [UInt8](repeating: 0, count: 1264 - 3), .tooLong(1281)),
            ("RTP-like first byte", [0x80] + header(length: 0).dropFirst(), .notSTUN(firstByte: 0x80)),
            ("second top bit", [0x40] + header(length: 0).dropFirst(), .notSTUN(firstByte: 0x40)),
            ("bad cookie", header(length: 0, cookie: 0x2112_A443), .badMagicCookie(0x2112_A443)),
            ("RFC 3489 (no cookie)", header(length: 0, cookie: 0x0102_0304), .badMagicCookie(0x0102_0304)),
            ("length 2", header(length: 2) + [0, 0], .lengthNotMultipleOf4(2)),
            ("length past the datagram", header(length: 8) + [0x80, 0x22, 0, 0], .lengthMismatch(declared: 8, available: 4)),
            ("trailing bytes", header(length: 0) + [0x80, 0x22, 0, 0], .lengthMismatch(declared: 0, available: 4)),
            ("attribute overrun", header(length: 8) + [0x80, 0x22, 0x00, 0x08, 1, 2, 3, 4], .attributeOverrun(type: 0x8022, length: 8, offset: 20)),
            ("padding overrun", header(length: 8) + [0x80, 0x22, 0x00, 0x05, 1, 2, 3, 4], .attributeOverrun(type: 0x8022, length: 5, offset: 20)),
            ("huge attribute length", header(length: 4) + [0x00, 0x20, 0xFF, 0xFF], .attributeOverrun(type: 0x0020, length: 65535, offset: 20)),
            ("bad fingerprint", badFP, .badFingerprint(expected: STUN.crc32(fp.dropLast(8)) ^ 0x5354_554E,
                                                       received: (STUN.crc32(fp.dropLast(8)) ^ 0x5354_554E) ^ 0xFF)),
            ("attribute after FINGERPRINT", afterFP, .attributeAfterFingerprint(0x8022)),
            ("short FINGERPRINT", message(attr(0x8028, [1, 2])), .malformedAttribute(type: 0x8028, "FINGERPRINT is 2 bytes, not 4")),
        ]
        for (name, datagram, expected) in cases {
            XCTAssertEqual(decodeError(datagram), expected, name)
        }
    }

    func testMalformedAddressAttributes() throws {
        for (value, why) in [([0, 3, 0, 1, 1, 2, 3, 4], "family"), ([0, 1, 0, 1, 1, 2, 3], "short IPv4"),
                             ([0, 2, 0, 1, 1, 2, 3, 4], "IPv6 family with IPv4 length"), ([0, 1], "too short")] as [([UInt8], String)] {
            let m = try STUNMessage(decoding: message(type: 0x0101, attr(0x0020, value), attr(0x0001, value)))
            XCTAssertThrowsError(try m.xorMappedAddress(), why) { e in
                guard case .malformedAttribute(0x0020, _)? = e as? STUNError else { return XCTFail("\(e)") }
            }
            XCTAssertThrowsError(try m.mappedAddress(), why)
        }
    }

    // MARK: Server logic

    func testServerAnswersWithTheSendersAddress() throws {
        var server = STUNServerLogic()
        for source in [client, STUNEndpoint(ip: "2001:db8::42", port: 5)!] {
            let req = STUNClientLogic()
            let outcome = server.handle(req.request(), from: source)
            guard case .answer(let reply) = outcome else { return XCTFail("\(outcome)") }
            let m = try STUNMessage(decoding: reply)
            XCTAssertEqual(m.messageClass, .successResponse)
            XCTAssertEqual(m.transactionID, req.transactionID)
            XCTAssertEqual(try m.xorMappedAddress(), source)
            XCTAssertEqual(try m.software(), "cairn")
            XCTAssertTrue(m.hadFingerprint)
            XCTAssertEqual(m.attributes.map(\.type), [0x0020, 0x8022])
            XCTAssertEqual(try req.parseResponse(reply), source)
        }
        XCTAssertEqual(server.stats.answered, 2)
        XCTAssertEqual(server.stats.rejections, [:])
    }

    func testServerUnmapsIPv4MappedIPv6Senders() throws {
        var server = STUNServerLogic(software: nil)
        let req = STUNClientLogic()
        let reply = try XCTUnwrap(server.handle(req.request(), from: STUNEndpoint(ip: "::ffff:198.51.100.3", port: 999)!).reply)
        XCTAssertEqual(reply[25], 1, "family IPv4")
        XCTAssertEqual(try req.parseResponse(reply), STUNEndpoint(ip: "198.51.100.3", port: 999))
        XCTAssertNil(try STUNMessage(decoding: reply).software())
    }

    func testServerAnswersMinimalRequestsWithoutFingerprint() throws {
        var server = STUNServerLogic()
        let reply = try XCTUnwrap(server.handle(header(length: 0), from: client).reply)
        XCTAssertEqual(try STUNClientLogic(transactionID: Array(1...12)).parseResponse(reply), client)
    }

    func testUnknownComprehensionRequiredAttributesGet420() throws {
        var server = STUNServerLogic()
        // CHANGE-REQUEST (RFC 5780), PRIORITY twice, an optional unknown (ignored), USERNAME (understood).
        let req = message(attr(0x0003, [0, 0, 0, 6]), attr(0x0024, [0, 0, 0, 1]), attr(0x0024, [0, 0, 0, 2]),
                          attr(0xC001, [9]), attr(0x0006, utf8("user")))
        let outcome = server.handle(req, from: client)
        guard case .refuse(let reply, let why) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(why.reason, .unknownAttributes)
        let r = try STUNMessage(decoding: reply)
        XCTAssertEqual(r.messageClass, .errorResponse)
        XCTAssertEqual(r.transactionID, Array(1...12))
        let ec = try XCTUnwrap(try r.errorCode())
        XCTAssertEqual(ec.code, 420)
        XCTAssertEqual(ec.reason, "Unknown Attribute")
        XCTAssertEqual(try r.unknownAttributesList(), [0x0003, 0x0024])
        XCTAssertThrowsError(try STUNClientLogic(transactionID: Array(1...12)).parseResponse(reply)) {
            XCTAssertEqual($0 as? STUNClientError, .errorResponse(code: 420, reason: "Unknown Attribute"))
        }
    }

    func testUnknownComprehensionOptionalAttributesAreIgnored() {
        var server = STUNServerLogic()
        guard case .answer = server.handle(message(attr(0x8029, [1, 2, 3, 4, 5, 6, 7, 8]), attr(0xFFFF, [])), from: client) else {
            return XCTFail()
        }
    }

    func testUnknownAttributesListIsBounded() throws {
        var server = STUNServerLogic()
        let attrs = (0x4000..<0x4000 + 200).map { attr(UInt16($0), []) }
        let req = header(length: attrs.count * 4) + attrs.flatMap { $0 }
        let reply = try XCTUnwrap(server.handle(req, from: client).reply)
        XCTAssertEqual(try STUNMessage(decoding: reply).unknownAttributesList()?.count, STUN.maxUnknownAttributesListed)
        XCTAssertLessThan(reply.count, req.count)
    }

    func testOtherMethodsGet400AndNonRequestsAreDropped() throws {
        var server = STUNServerLogic()
        let allocate = server.handle(header(type: 0x0003, length: 0), from: client)
        guard case .refuse(let reply, let why) = allocate else { return XCTFail("\(allocate)") }
        XCTAssertEqual(why.reason, .unsupportedMethod)
        let r = try STUNMessage(decoding: reply)
        XCTAssertEqual(r.method, 0x003)
        XCTAssertEqual(try r.errorCode()?.code, 400)

        for type: UInt16 in [0x0011, 0x0101, 0x0111] {  // indication (keep-alive), success, error
            XCTAssertEqual(server.handle(header(type: type, length: 0), from: client).rejection?.reason, .notARequest)
        }
        XCTAssertEqual(server.stats.refused, 1)
        XCTAssertEqual(server.stats.ignored, 3)
        XCTAssertEqual(server.stats.count(.notARequest), 3)
    }

    func testServerCountsEachMalformedDatagramByReason() {
        var server = STUNServerLogic()
        let datagrams: [([UInt8], STUNRejectReason)] = [
            ([1, 2, 3], .tooShort),
            ([UInt8](repeating: 0, count: 1500), .tooLong),
            ([0xC0] + header(length: 0).dropFirst(), .notSTUN),
            (header(length: 0, cookie: 0), .badMagicCookie),
            (header(length: 1) + [0], .lengthNotMultipleOf4),
            (header(length: 4), .lengthMismatch),
            (header(length: 4) + [0, 0x20, 0, 8], .attributeOverrun),
            (message(attr(0x8028, [0, 0, 0, 0])), .badFingerprint),
            (message(attr(0x8028, [0])), .malformedAttribute),
        ]
        for (d, reason) in datagrams {
            let outcome = server.handle(d, from: client)
            guard case .ignore(let r) = outcome else { XCTFail("\(reason): \(outcome)"); continue }
            XCTAssertEqual(r.reason, reason)
            XCTAssertFalse(r.detail.isEmpty)
        }
        XCTAssertEqual(server.handle(header(length: 0), from: STUNEndpoint(ip: [1, 2, 3], port: 1)).rejection?.reason, .unusableSource)
        XCTAssertEqual(server.stats.ignored, datagrams.count + 1)
        for (_, reason) in datagrams { XCTAssertEqual(server.stats.count(reason), 1, "\(reason)") }
        // And it still answers.
        XCTAssertNotNil(server.handle(STUNClientLogic().request(), from: client).reply)
        XCTAssertEqual(server.stats.answered, 1)
    }

    func testRandomAndMutatedDatagramsNeverCrash() {
        var server = STUNServerLogic()
        var rng = SystemRandomNumberGenerator()
        let valid = STUNMessage(messageClass: .request, transactionID: Array(1...12), attributes: [
            .init(type: 0x8022, value: utf8("abcde")), .init(type: 0x0020, value: [0, 1, 2, 3, 4, 5, 6, 7]),
        ]).encode(fingerprint: true)
        let n = 20_000
        for i in 0..<n {
            var d: [UInt8]
            if i % 2 == 0 {
                d = (0..<Int.random(in: 0...80, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if i % 4 == 0, d.count >= 8 {  // make the header plausible so deeper checks run
                    d[0] &= 0x3F
                    d.replaceSubrange(4..<8, with: [0x21, 0x12, 0xA4, 0x42])
                    if d.count >= 20 { d[2] = 0; d[3] = UInt8((d.count - 20) & 0xFC) }
                }
            } else {
                d = valid
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    d[Int.random(in: 0..<d.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
                if i % 3 == 0 { d = Array(d.prefix(Int.random(in: 0...d.count, using: &rng))) }
            }
            let outcome = server.handle(d, from: client)
            if let reply = outcome.reply { XCTAssertNoThrow(try STUNMessage(decoding: reply)) }
            _ = try? STUNClientLogic(transactionID: Array(1...12)).parseResponse(d)
        }
        let s = server.stats
        XCTAssertEqual(s.answered + s.refused + s.ignored, n)
        XCTAssertEqual(s.rejections.values.reduce(0, +), s.refused + s.ignored)
    }

    // MARK: Client logic

    func testClientRequestIsAFingerprintedBindingRequestWithARandomID() throws {
        let a = STUNClientLogic(), b = STUNClientLogic()
        XCTAssertNotEqual(a.transactionID, b.transactionID)
        XCTAssertEqual(a.transactionID.count, 12)
        let m = try STUNMessage(decoding: a.request())
        XCTAssertEqual(m.messageClass, .request)
        XCTAssertEqual(m.method, STUN.Method.binding)
        XCTAssertEqual(m.transactionID, a.transactionID)
        XCTAssertTrue(m.hadFingerprint)
        XCTAssertEqual(a.request(), a.request(), "retransmissions are identical")
        XCTAssertEqual(try STUNMessage(decoding: STUNClientLogic(software: "cairn").request()).software(), "cairn")
    }

    func testClientChecksTheResponse() throws {
        let tid = Array(UInt8(50)...UInt8(61))
        let logic = STUNClientLogic(transactionID: tid)
        let addr = STUNEndpoint(ip: "198.51.100.1", port: 7)!
        func check(_ d: [UInt8], _ expected: STUNClientError, _ name: String) {
            XCTAssertThrowsError(try logic.parseResponse(d), name) { XCTAssertEqual($0 as? STUNClientError, expected, name) }
        }
        let xor = attr(0x0020, STUNMessage.encodeAddress(addr, xorWith: tid))
        XCTAssertEqual(try logic.parseResponse(message(type: 0x0101, tid: tid, xor)), addr)
        // An RFC 3489-style MAPPED-ADDRESS is accepted when there is no XOR-MAPPED-ADDRESS.
        XCTAssertEqual(try logic.parseResponse(message(type: 0x0101, tid: tid, attr(0x0001, STUNMessage.encodeAddress(addr, xorWith: nil)))), addr)
        check(message(type: 0x0101, tid: Array(1...12), xor), .transactionMismatch, "other transaction")
        check(message(type: 0x0001, tid: tid), .notAResponse, "a request")
        check(message(type: 0x0103, tid: tid, xor), .unexpectedMethod(3), "Allocate response")
        check(message(type: 0x0111, tid: tid, attr(0x0009, [0, 0, 4, 20] + utf8("Unknown Attribute"))),
              .errorResponse(code: 420, reason: "Unknown Attribute"), "error")
        check(message(type: 0x0101, tid: tid), .noMappedAddress, "no address")
        check(message(type: 0x0101, tid: tid, xor, attr(0x7777, [])), .unknownComprehensionRequired([0x7777]), "unknown attribute")
        check([1, 2, 3], .malformed(.tooShort(3)), "garbage")
        // Strays are dropped while waiting; a real answer that fails ends the query.
        XCTAssertTrue(STUNClientError.transactionMismatch.isIgnorable)
        XCTAssertTrue(STUNClientError.notAResponse.isIgnorable)
        XCTAssertTrue(STUNClientError.malformed(.tooShort(3)).isIgnorable)
        XCTAssertFalse(STUNClientError.errorResponse(code: 420, reason: "").isIgnorable)
        XCTAssertFalse(STUNClientError.noMappedAddress.isIgnorable)
    }
}
