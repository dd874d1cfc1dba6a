import XCTest

@testable import CairnCore

final class MultistreamTests: XCTestCase {
    typealias MS = MultistreamSelect

    /// A multistream message built by hand: uvarint length of (text + "\n"), then text and "\n".
    func msg(_ s: String) -> [UInt8] { PB.varint(UInt64(s.utf8.count + 1)) + utf8(s) + [0x0a] }

    let header = "/multistream/1.0.0"

    func testEncodeIsLengthPrefixedLine() {
        XCTAssertEqual(MS.encode("/noise"), [0x07] + utf8("/noise\n"))
        XCTAssertEqual(MS.encode(header), [0x13] + utf8("/multistream/1.0.0\n"))
        let long = String(repeating: "a", count: 200)
        XCTAssertEqual(MS.encode(long), [0xc9, 0x01] + utf8(long) + [0x0a])
    }

    func testDialerAndListenerAgree() throws {
        var dialer = MS.dialer(["/noise"])
        var listener = MS.listener(["/noise", "/tls/1.0.0"])
        let dialerHello = dialer.start()
        XCTAssertEqual(dialerHello, msg(header) + msg("/noise"))  // header and proposal pipelined
        let listenerHello = listener.start()
        XCTAssertEqual(listenerHello, msg(header))

        let l = try listener.receive(dialerHello)
        XCTAssertEqual(l.send, msg("/noise"))
        XCTAssertEqual(l.agreed?.protocolID, "/noise")
        XCTAssertEqual(l.agreed?.remainder, [])
        XCTAssertTrue(listener.isDone)

        // The listener's header and echo arrive together.
        XCTAssertFalse(dialer.isDone)
        let d = try dialer.receive(listenerHello + l.send)
        XCTAssertEqual(d.send, [])
        XCTAssertEqual(d.agreed?.protocolID, "/noise")
        XCTAssertEqual(d.agreed?.remainder, [])
        XCTAssertTrue(dialer.isDone)
    }

    func testNaThenFallbackToSecondProposal() throws {
        var dialer = MS.dialer(["/tls/1.0.0", "/noise"])
        var listener = MS.listener(["/noise"])
        let l1 = try listener.receive(dialer.start())
        XCTAssertEqual(l1.send, msg("na"))
        XCTAssertNil(l1.agreed)

        let d1 = try dialer.receive(listener.start() + l1.send)
        XCTAssertEqual(d1.send, msg("/noise"))
        XCTAssertNil(d1.agreed)

        let l2 = try listener.receive(d1.send)
        XCTAssertEqual(l2.send, msg("/noise"))
        XCTAssertEqual(l2.agreed?.protocolID, "/noise")

        let d2 = try dialer.receive(l2.send)
        XCTAssertEqual(d2.agreed?.protocolID, "/noise")
    }

    func testLs() throws {
        var listener = MS.listener(["/noise", "/yamux/1.0.0"])
        let out = try listener.receive(msg(header) + msg("ls"))
        // One message whose body is the list of length-prefixed protocol lines, then "\n".
        let list = msg("/noise") + msg("/yamux/1.0.0")
        XCTAssertEqual(out.send, PB.varint(UInt64(list.count + 1)) + list + [0x0a])
        XCTAssertNil(out.agreed)
        XCTAssertFalse(listener.isDone)
        // A proposal after ls is still answered.
        let next = try listener.receive(msg("/yamux/1.0.0"))
        XCTAssertEqual(next.agreed?.protocolID, "/yamux/1.0.0")
    }

    func testPipelinedHeaderProtocolAndApplicationData() throws {
        var listener = MS.listener(["/noise"])
        let appData: [UInt8] = [0x00, 0x20, 0xde, 0xad, 0xbe, 0xef]
        let out = try listener.receive(msg(header) + msg("/noise") + appData)
        XCTAssertEqual(out.send, msg("/noise"))
        XCTAssertEqual(out.agreed?.protocolID, "/noise")
        XCTAssertEqual(out.agreed?.remainder, appData)
    }

    func testRemainderHandedBackToDialer() throws {
        var dialer = MS.dialer(["/yamux/1.0.0"])
        _ = dialer.start()
        let trailing = utf8("first bytes of the next protocol")
        let out = try dialer.receive(msg(header) + msg("/yamux/1.0.0") + trailing)
        XCTAssertEqual(out.agreed?.protocolID, "/yamux/1.0.0")
        XCTAssertEqual(out.agreed?.remainder, trailing)
    }

    func testByteAtATime() throws {
        var listener = MS.listener(["/noise"])
        let input = msg(header) + msg("/noise") + [0x42]
        var sent: [UInt8] = []
        var agreed: (String, [UInt8])?
        for (i, b) in input.enumerated() {
            let out = try listener.receive([b])
            sent += out.send
            if let a = out.agreed {
                XCTAssertNil(agreed, "agreed twice")
                agreed = (a.protocolID, a.remainder)
                XCTAssertEqual(i, msg(header).count + msg("/noise").count - 1, "agreed on the last byte of the proposal")
            }
        }
        XCTAssertEqual(sent, msg("/noise"))
        XCTAssertEqual(agreed?.0, "/noise")
        XCTAssertEqual(agreed?.1, [])
        XCTAssertTrue(listener.isDone)

        var dialer = MS.dialer(["/a", "/noise"])
        _ = dialer.start()
        var dialerSent: [UInt8] = []
        var dialerAgreed: String?
        for b in msg(header) + msg("na") + msg("/noise") {
            let out = try dialer.receive([b])
            dialerSent += out.send
            if let a = out.agreed { dialerAgreed = a.protocolID }
        }
        XCTAssertEqual(dialerSent, msg("/noise"))
        XCTAssertEqual(dialerAgreed, "/noise")
    }

    func testMessageTooLong() {
        // Refused as soon as the length is read, without waiting for the body.
        var listener = MS.listener(["/noise"])
        assertThrows(try listener.receive(msg(header) + PB.varint(1025)), MS.Failure.messageTooLong(1025))
        var listener2 = MS.listener(["/noise"])
        assertThrows(try listener2.receive(PB.varint(70_000)), MS.Failure.messageTooLong(70_000))
        // Three bytes of unfinished varint already mean more than 1024.
        var listener3 = MS.listener(["/noise"])
        assertThrows(try listener3.receive([0xff, 0xff, 0xff]), as: MS.Failure.self) {
            if case .messageTooLong = $0 { return true }; return false
        }
        // Exactly 1024 bytes (1023 characters and "\n") is allowed: an unknown protocol, answered "na".
        var listener4 = MS.listener(["/noise"])
        let maxLine = "/" + String(repeating: "x", count: 1022)
        XCTAssertEqual(msg(maxLine).count, 2 + 1024)
        XCTAssertEqual(try listener4.receive(msg(header) + msg(maxLine)).send, msg("na"))
    }

    func testMissingNewline() {
        var listener = MS.listener(["/noise"])
        assertThrows(try listener.receive([0x13] + utf8("/multistream/1.0.0 ")),
                     MS.Failure.malformedMessage("missing newline"))
        var dialer = MS.dialer(["/noise"])
        _ = dialer.start()
        assertThrows(try dialer.receive(msg(header) + [0x06] + utf8("/noise")),
                     MS.Failure.malformedMessage("missing newline"))
    }

    func testBadHeader() {
        var listener = MS.listener(["/noise"])
        assertThrows(try listener.receive(msg("/multistream/2.0.0")), MS.Failure.unexpectedHeader("/multistream/2.0.0"))
        var dialer = MS.dialer(["/noise"])
        _ = dialer.start()
        // A listener that skips the header and answers the proposal directly.
        assertThrows(try dialer.receive(msg("/noise")), MS.Failure.unexpectedHeader("/noise"))
    }

    func testNonUTF8() {
        var listener = MS.listener(["/noise"])
        assertThrows(try listener.receive(msg(header) + [0x03, 0xff, 0xfe, 0x0a]), MS.Failure.malformedMessage("not UTF-8"))
        var listener2 = MS.listener(["/noise"])
        assertThrows(try listener2.receive([0x03, 0x61, 0x0a, 0x0a]), MS.Failure.malformedMessage("embedded newline"))
        var listener3 = MS.listener(["/noise"])
        assertThrows(try listener3.receive([0x80, 0x00]), MS.Failure.malformedMessage("bad length prefix"))
    }

    func testTooManyProposals() throws {
        var listener = MS.listener(["/noise"])
        var input = msg(header)
        for i in 0..<MS.maxProposals { input += msg("/unknown/\(i)") }
        let out = try listener.receive(input)
        XCTAssertEqual(out.send, Array([[UInt8]](repeating: msg("na"), count: MS.maxProposals).joined()))
        assertThrows(try listener.receive(msg("/noise")), MS.Failure.tooManyProposals)
    }

    func testNoProtocolAgreed() throws {
        var dialer = MS.dialer(["/a", "/b"])
        XCTAssertEqual(dialer.start(), msg(header) + msg("/a"))
        let out = try dialer.receive(msg(header) + msg("na"))
        XCTAssertEqual(out.send, msg("/b"))
        assertThrows(try dialer.receive(msg("na")), MS.Failure.noProtocolAgreed(["/a", "/b"]))
    }

    func testDialerRejectsAnUnexpectedReply() {
        var dialer = MS.dialer(["/noise"])
        _ = dialer.start()
        assertThrows(try dialer.receive(msg(header) + msg("/tls/1.0.0")), as: MS.Failure.self) {
            if case .malformedMessage = $0 { return true }; return false
        }
    }
}
