import NIOCore
import XCTest

@testable import CairnCore

/// A Yamux frame built by hand: version, type, flags, stream ID, length (all big-endian), then body.
func yamuxFrame(type: UInt8, flags: UInt16 = 0, stream: UInt32, length: UInt32, version: UInt8 = 0, body: [UInt8] = []) -> [UInt8] {
    [version, type, UInt8(flags >> 8), UInt8(flags & 0xff),
     UInt8(stream >> 24), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff),
     UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)] + body
}

enum Y {
    static let data: UInt8 = 0, windowUpdate: UInt8 = 1, ping: UInt8 = 2, goAway: UInt8 = 3
    static let syn: UInt16 = 1, ack: UInt16 = 2, fin: UInt16 = 4, rst: UInt16 = 8
}

/// A client and a server session wired back to back through their outbound buffers.
final class YamuxPair {
    typealias Event = YamuxSession.Event
    var client: YamuxSession
    var server: YamuxSession
    var toServer = ByteBuffer()
    var toClient = ByteBuffer()

    init(client: YamuxConfig = YamuxConfig(), server: YamuxConfig = YamuxConfig()) {
        self.client = YamuxSession(role: .client, config: client)
        self.server = YamuxSession(role: .server, config: server)
    }

    /// Delivers queued bytes both ways until both directions are quiet.
    @discardableResult
    func pump() throws -> (client: [Event], server: [Event]) {
        var c: [Event] = [], s: [Event] = []
        while toServer.readableBytes > 0 || toClient.readableBytes > 0 {
            if toServer.readableBytes > 0 {
                let b = toServer
                toServer = ByteBuffer()
                s += try server.receive(b, into: &toClient)
            }
            if toClient.readableBytes > 0 {
                let b = toClient
                toClient = ByteBuffer()
                c += try client.receive(b, into: &toServer)
            }
        }
        return (c, s)
    }

    /// Opens a client stream and completes its SYN/ACK exchange.
    func openClientStream() throws -> UInt32 {
        let id = try client.openStream(into: &toServer)
        let (c, s) = try pump()
        XCTAssertEqual(c, [])
        XCTAssertEqual(s, [.streamOpened(id)])
        return id
    }
}

func dataBytes(_ events: [YamuxSession.Event], stream: UInt32) -> [UInt8] {
    var out: [UInt8] = []
    for case .data(let id, let b) in events where id == stream { out += b.bytes }
    return out
}

final class YamuxTests: XCTestCase {

    // MARK: Normal operation

    func testOpenStreamFrames() throws {
        let p = YamuxPair()
        let id = try p.client.openStream(into: &p.toServer)
        XCTAssertEqual(id, 1)
        XCTAssertEqual(p.toServer.bytes, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 1, length: 0))
        var ack = ByteBuffer()
        let events = try p.server.receive(p.toServer, into: &ack)
        p.toServer.clear()
        XCTAssertEqual(events, [.streamOpened(1)])
        XCTAssertEqual(ack.bytes, yamuxFrame(type: Y.windowUpdate, flags: Y.ack, stream: 1, length: 0))
        XCTAssertEqual(try p.client.receive(ack, into: &p.toServer), [])
        XCTAssertTrue(p.client.hasStream(1))
        XCTAssertTrue(p.server.hasStream(1))
        // IDs: odd for the client, even for the server, increasing by two.
        XCTAssertEqual(try p.client.openStream(into: &p.toServer), 3)
        XCTAssertEqual(try p.server.openStream(into: &p.toClient), 2)
        XCTAssertEqual(try p.server.openStream(into: &p.toClient), 4)
        let (c, s) = try p.pump()
        XCTAssertEqual(c, [.streamOpened(2), .streamOpened(4)])
        XCTAssertEqual(s, [.streamOpened(3)])
        XCTAssertEqual(p.client.openStreamCount, 4)
    }

    func testDataBothWays() throws {
        let p = YamuxPair()
        let id = try p.openClientStream()
        try p.client.write(id, buffer("hello"), into: &p.toServer)
        XCTAssertEqual(p.toServer.bytes, yamuxFrame(type: Y.data, stream: 1, length: 5, body: utf8("hello")))
        var (c, s) = try p.pump()
        XCTAssertEqual(s, [.data(1, buffer("hello"))])
        XCTAssertEqual(c, [])
        try p.server.write(id, buffer("world!"), into: &p.toClient)
        (c, s) = try p.pump()
        XCTAssertEqual(c, [.data(1, buffer("world!"))])
        XCTAssertEqual(s, [])
        // The receive window shrank by what arrived; the send window by what left.
        XCTAssertEqual(p.server.receiveWindow(1), 256 * 1024 - 5)
        XCTAssertEqual(p.client.sendWindow(1), 256 * 1024 - 5)
        XCTAssertEqual(p.client.receiveWindow(1), 256 * 1024 - 6)
    }

    func testByteAtATimeDelivery() throws {
        var client = YamuxSession(role: .client)
        var server = YamuxSession(role: .server)
        var wire = ByteBuffer()
        let id = try client.openStream(into: &wire)
        try client.write(id, buffer("hello"), into: &wire)
        var events: [YamuxSession.Event] = []
        var replies = ByteBuffer()
        for (i, b) in wire.bytes.enumerated() {
            let e = try server.receive(buffer([b]), into: &replies)
            if i == 11 { XCTAssertEqual(e, [.streamOpened(1)]) }
            else if i == wire.readableBytes - 1 { XCTAssertEqual(e, [.data(1, buffer("hello"))]) }
            else { XCTAssertEqual(e, [], "byte \(i)") }
            events += e
        }
        XCTAssertEqual(events.count, 2)
    }

    func testHalfCloseFromClient() throws {
        let p = YamuxPair()
        let id = try p.openClientStream()
        p.client.closeWrite(id, into: &p.toServer)
        XCTAssertEqual(p.toServer.bytes, yamuxFrame(type: Y.windowUpdate, flags: Y.fin, stream: 1, length: 0))
        var (c, s) = try p.pump()
        XCTAssertEqual(s, [.remoteClosed(1)])
        assertThrows(try p.client.write(id, buffer("late"), into: &p.toServer), YamuxError.streamClosed(1))
        // The other direction still works.
        try p.server.write(id, buffer("still here"), into: &p.toClient)
        (c, s) = try p.pump()
        XCTAssertEqual(c, [.data(1, buffer("still here"))])
        p.server.closeWrite(id, into: &p.toClient)
        (c, s) = try p.pump()
        XCTAssertEqual(c, [.remoteClosed(1)])
        XCTAssertEqual(s, [])
        // Closed both ways: forgotten by both sides.
        XCTAssertFalse(p.client.hasStream(1))
        XCTAssertFalse(p.server.hasStream(1))
        XCTAssertEqual(p.client.openStreamCount, 0)
        XCTAssertEqual(p.server.openStreamCount, 0)
    }

    func testHalfCloseFromServer() throws {
        let p = YamuxPair()
        let id = try p.openClientStream()
        p.server.closeWrite(id, into: &p.toClient)
        var (c, s) = try p.pump()
        XCTAssertEqual(c, [.remoteClosed(1)])
        assertThrows(try p.server.write(id, buffer("x"), into: &p.toClient), YamuxError.streamClosed(1))
        try p.client.write(id, buffer("request"), into: &p.toServer)
        p.client.closeWrite(id, into: &p.toServer)
        (c, s) = try p.pump()
        XCTAssertEqual(s, [.data(1, buffer("request")), .remoteClosed(1)])
        XCTAssertFalse(p.client.hasStream(1))
        XCTAssertFalse(p.server.hasStream(1))
    }

    func testDataAfterFinIsAProtocolError() throws {
        let p = YamuxPair()
        let id = try p.openClientStream()
        p.client.closeWrite(id, into: &p.toServer)
        try p.pump()
        var out = ByteBuffer()
        assertThrows(try p.server.receive(buffer(yamuxFrame(type: Y.data, stream: 1, length: 1, body: [0x61])), into: &out),
                     YamuxError.streamClosed(1))
    }

    func testReset() throws {
        let p = YamuxPair()
        let id = try p.openClientStream()
        p.client.reset(id, into: &p.toServer)
        XCTAssertEqual(p.toServer.bytes, yamuxFrame(type: Y.windowUpdate, flags: Y.rst, stream: 1, length: 0))
        XCTAssertFalse(p.client.hasStream(1))
        let (_, s) = try p.pump()
        XCTAssertEqual(s, [.reset(1)])
        XCTAssertFalse(p.server.hasStream(1))
        assertThrows(try p.server.write(id, buffer("x"), into: &p.toClient), YamuxError.unknownStream(1))
        // Frames still in flight for the reset stream are dropped quietly.
        var out = ByteBuffer()
        XCTAssertEqual(try p.client.receive(buffer(yamuxFrame(type: Y.data, stream: 1, length: 3, body: [1, 2, 3])), into: &out), [])
        XCTAssertEqual(out.readableBytes, 0)
        // Resetting an unknown stream sends nothing.
        p.client.reset(99, into: &out)
        XCTAssertEqual(out.readableBytes, 0)

        // And from the server side.
        let id2 = try p.openClientStream()
        p.server.reset(id2, into: &p.toClient)
        let (c, _) = try p.pump()
        XCTAssertEqual(c, [.reset(id2)])
        XCTAssertFalse(p.client.hasStream(id2))
    }

    func testWindowExhaustionAndCredit() throws {
        let p = YamuxPair()
        let id = try p.openClientStream()
        let window = 256 * 1024
        let payload = (0..<1024 * 1024).map { UInt8(truncatingIfNeeded: $0 ^ ($0 >> 8)) }
        try p.client.write(id, buffer(payload), into: &p.toServer)
        // Only the initial window leaves, in frames of at most 64 KiB.
        XCTAssertEqual(p.toServer.readableBytes, window + 4 * 12)
        XCTAssertEqual(p.client.pendingBytes(id), payload.count - window)
        XCTAssertEqual(p.client.sendWindow(id), 0)

        var (c, s) = try p.pump()
        var received = dataBytes(s, stream: id)
        XCTAssertEqual(received.count, window)
        XCTAssertEqual(s.count, 4)
        XCTAssertEqual(c, [])
        XCTAssertEqual(p.server.receiveWindow(id), 0)
        XCTAssertEqual(p.toServer.readableBytes, 0)

        // Consuming less than half the window returns nothing yet.
        p.server.consumed(id, 100_000, into: &p.toClient)
        XCTAssertEqual(p.toClient.readableBytes, 0)
        // Reaching half (here, all of it) sends one update for everything consumed.
        p.server.consumed(id, window - 100_000, into: &p.toClient)
        XCTAssertEqual(p.toClient.bytes, yamuxFrame(type: Y.windowUpdate, stream: 1, length: UInt32(window)))
        XCTAssertEqual(p.server.receiveWindow(id), UInt32(window))

        var clientEvents: [YamuxSession.Event] = []
        var rounds = 0
        while received.count < payload.count {
            (c, s) = try p.pump()
            clientEvents += c
            let chunk = dataBytes(s, stream: id)
            XCTAssertEqual(chunk.count, window, "each credit lets exactly one window through")
            received += chunk
            p.server.consumed(id, chunk.count, into: &p.toClient)
            rounds += 1
            XCTAssertLessThan(rounds, 10)
        }
        XCTAssertEqual(received, payload)
        XCTAssertEqual(clientEvents, [.flushed(id)])
        XCTAssertEqual(p.client.pendingBytes(id), 0)
    }

    func testFinWaitsBehindQueuedData() throws {
        let p = YamuxPair()
        let id = try p.openClientStream()
        let window = 256 * 1024
        try p.client.write(id, buffer([UInt8](repeating: 7, count: window + 1000)), into: &p.toServer)
        p.client.closeWrite(id, into: &p.toServer)
        var (c, s) = try p.pump()
        XCTAssertEqual(dataBytes(s, stream: id).count, window)
        XCTAssertFalse(s.contains(.remoteClosed(id)))
        p.server.consumed(id, window, into: &p.toClient)
        (c, s) = try p.pump()
        XCTAssertEqual(dataBytes(s, stream: id).count, 1000)
        XCTAssertEqual(s.last, .remoteClosed(id))
        XCTAssertEqual(c, [.flushed(id)])
    }

    func testDataBeyondTheCurrentWindowIsRefused() throws {
        let p = YamuxPair()
        let id = try p.openClientStream()
        try p.client.write(id, buffer([UInt8](repeating: 1, count: 256 * 1024)), into: &p.toServer)
        try p.pump()
        XCTAssertEqual(p.server.receiveWindow(id), 0)
        // The peer ignores the window: refused on the header, before the body arrives.
        var out = ByteBuffer()
        assertThrows(try p.server.receive(buffer(yamuxFrame(type: Y.data, stream: 1, length: 1)), into: &out),
                     YamuxError.windowExceeded(stream: 1, length: 1, window: 0))
    }

    func testLargerConfiguredWindowIsAdvertisedInTheSYN() throws {
        var config = YamuxConfig()
        config.receiveWindow = 1024 * 1024
        let p = YamuxPair(client: config)
        _ = try p.client.openStream(into: &p.toServer)
        XCTAssertEqual(p.toServer.bytes, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 1, length: 768 * 1024))
        try p.pump()
        XCTAssertEqual(p.server.sendWindow(1), 1024 * 1024)
        XCTAssertEqual(p.client.sendWindow(1), 256 * 1024)
    }

    func testPingPong() throws {
        let p = YamuxPair()
        p.client.ping(42, into: &p.toServer)
        XCTAssertEqual(p.toServer.bytes, yamuxFrame(type: Y.ping, flags: Y.syn, stream: 0, length: 42))
        var reply = ByteBuffer()
        XCTAssertEqual(try p.server.receive(p.toServer, into: &reply), [])
        p.toServer.clear()
        XCTAssertEqual(reply.bytes, yamuxFrame(type: Y.ping, flags: Y.ack, stream: 0, length: 42))
        p.toClient = reply
        let (c, s) = try p.pump()
        XCTAssertEqual(c, [.pong(42)])
        XCTAssertEqual(s, [])
    }

    func testGoAwayStopsNewStreams() throws {
        let p = YamuxPair()
        let existing = try p.openClientStream()
        p.server.goAway(code: 0, into: &p.toClient)
        XCTAssertEqual(p.toClient.bytes, yamuxFrame(type: Y.goAway, stream: 0, length: 0))
        XCTAssertTrue(p.server.goAwaySent)
        p.server.goAway(code: 0, into: &p.toClient)  // only once
        XCTAssertEqual(p.toClient.readableBytes, 12)
        let (c, _) = try p.pump()
        XCTAssertEqual(c, [.goAway(0)])
        XCTAssertTrue(p.client.goAwayReceived)
        assertThrows(try p.client.openStream(into: &p.toServer), YamuxError.goingAway)
        assertThrows(try p.server.openStream(into: &p.toClient), YamuxError.goingAway)
        // Streams already open keep working.
        try p.client.write(existing, buffer("after goaway"), into: &p.toServer)
        let (_, s) = try p.pump()
        XCTAssertEqual(s, [.data(existing, buffer("after goaway"))])
    }

    func testSYNCrossingAGoAwayIsReset() throws {
        let p = YamuxPair()
        p.server.goAway(code: 2, into: &p.toClient)
        _ = try p.client.openStream(into: &p.toServer)  // the client has not seen the GoAway yet
        let (c, s) = try p.pump()
        XCTAssertEqual(s, [])
        XCTAssertFalse(p.server.hasStream(1))
        XCTAssertEqual(c, [.goAway(2), .reset(1)])
        XCTAssertFalse(p.client.hasStream(1))
    }

    // MARK: Protocol errors

    func receive(_ session: inout YamuxSession, _ frames: [UInt8]...) throws -> ([YamuxSession.Event], [UInt8]) {
        var out = ByteBuffer()
        var events: [YamuxSession.Event] = []
        for f in frames { events += try session.receive(buffer(f), into: &out) }
        return (events, out.bytes)
    }

    func isInvalidStreamID(_ id: UInt32) -> (YamuxError) -> Bool {
        { if case .invalidStreamID(id, _) = $0 { return true }; return false }
    }

    func testBadVersion() {
        var s = YamuxSession(role: .server)
        assertThrows(try receive(&s, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 1, length: 0, version: 1)),
                     YamuxError.invalidVersion(1))
    }

    func testUnknownType() {
        var s = YamuxSession(role: .server)
        assertThrows(try receive(&s, yamuxFrame(type: 4, stream: 1, length: 0)), YamuxError.invalidType(4))
    }

    func testOversizedDataFrameRefusedOnTheHeader() {
        var s = YamuxSession(role: .server)
        // Only the 12-byte header is delivered: the error does not wait for 256 KiB + 1 of body.
        assertThrows(try receive(&s, yamuxFrame(type: Y.data, flags: Y.syn, stream: 1, length: 256 * 1024 + 1)),
                     YamuxError.windowExceeded(stream: 1, length: 256 * 1024 + 1, window: 256 * 1024))
        var s2 = YamuxSession(role: .server)
        assertThrows(try receive(&s2, yamuxFrame(type: Y.data, stream: 7, length: UInt32.max)),
                     YamuxError.windowExceeded(stream: 7, length: UInt32.max, window: 256 * 1024))
    }

    func testSYNWithWrongParity() {
        var server = YamuxSession(role: .server)
        assertThrows(try receive(&server, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 2, length: 0)),
                     as: YamuxError.self, "server receiving an even SYN", isInvalidStreamID(2))
        var client = YamuxSession(role: .client)
        assertThrows(try receive(&client, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 1, length: 0)),
                     as: YamuxError.self, "client receiving an odd SYN", isInvalidStreamID(1))
    }

    func testDuplicateSYN() throws {
        var s = YamuxSession(role: .server)
        let syn = yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 1, length: 0)
        XCTAssertEqual(try receive(&s, syn).0, [.streamOpened(1)])
        assertThrows(try receive(&s, syn), YamuxError.duplicateStream(1))
    }

    func testReusedStreamID() throws {
        var s = YamuxSession(role: .server)
        _ = try receive(&s, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 3, length: 0))
        assertThrows(try receive(&s, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 1, length: 0)),
                     as: YamuxError.self, "lower ID", isInvalidStreamID(1))
        // Reset, then opened again under the same ID.
        _ = try receive(&s, yamuxFrame(type: Y.windowUpdate, flags: Y.rst, stream: 3, length: 0))
        XCTAssertFalse(s.hasStream(3))
        assertThrows(try receive(&s, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 3, length: 0)),
                     as: YamuxError.self, "reused ID", isInvalidStreamID(3))
    }

    func testWindowUpdateOverflow() throws {
        var s = YamuxSession(role: .server)
        _ = try receive(&s, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 1, length: 0))
        // 256 KiB + (2^32 - 256 KiB - 1) is the largest window; one more overflows.
        _ = try receive(&s, yamuxFrame(type: Y.windowUpdate, stream: 1, length: UInt32.max - 256 * 1024))
        XCTAssertEqual(s.sendWindow(1), UInt32.max)
        assertThrows(try receive(&s, yamuxFrame(type: Y.windowUpdate, stream: 1, length: 1)), YamuxError.windowOverflow(1))
        var s2 = YamuxSession(role: .server)
        assertThrows(try receive(&s2, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 1, length: UInt32.max)),
                     YamuxError.windowOverflow(1))
    }

    func testInboundStreamLimit() throws {
        var config = YamuxConfig()
        config.maxInboundStreams = 2
        var s = YamuxSession(role: .server, config: config)
        for id: UInt32 in [1, 3] {
            let (events, out) = try receive(&s, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: id, length: 0))
            XCTAssertEqual(events, [.streamOpened(id)])
            XCTAssertEqual(out, yamuxFrame(type: Y.windowUpdate, flags: Y.ack, stream: id, length: 0))
        }
        // The third is reset, with no event and no state.
        let (events, out) = try receive(&s, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 5, length: 0))
        XCTAssertEqual(events, [])
        XCTAssertEqual(out, yamuxFrame(type: Y.windowUpdate, flags: Y.rst, stream: 5, length: 0))
        XCTAssertFalse(s.hasStream(5))
        XCTAssertEqual(s.openStreamCount, 2)
        // A SYN carrying data beyond the limit is also refused without an event.
        let (e2, out2) = try receive(&s, yamuxFrame(type: Y.data, flags: Y.syn, stream: 7, length: 2, body: [1, 2]))
        XCTAssertEqual(e2, [])
        XCTAssertEqual(out2, yamuxFrame(type: Y.windowUpdate, flags: Y.rst, stream: 7, length: 0))
        // Outbound streams do not count against the inbound limit.
        var sink = ByteBuffer()
        XCTAssertEqual(try s.openStream(into: &sink), 2)
        // Once one closes, a new one is accepted.
        _ = try receive(&s, yamuxFrame(type: Y.windowUpdate, flags: Y.rst, stream: 1, length: 0))
        XCTAssertEqual(try receive(&s, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 9, length: 0)).0, [.streamOpened(9)])
    }

    func testPingOnAStream() {
        var s = YamuxSession(role: .server)
        assertThrows(try receive(&s, yamuxFrame(type: Y.ping, flags: Y.syn, stream: 1, length: 7)),
                     as: YamuxError.self, "ping on stream 1", isInvalidStreamID(1))
    }

    func testGoAwayOnAStreamAndStreamFramesOnSessionID() {
        var s = YamuxSession(role: .server)
        assertThrows(try receive(&s, yamuxFrame(type: Y.goAway, stream: 3, length: 0)),
                     as: YamuxError.self, "go-away on stream 3", isInvalidStreamID(3))
        var s2 = YamuxSession(role: .server)
        assertThrows(try receive(&s2, yamuxFrame(type: Y.data, stream: 0, length: 1, body: [0])),
                     as: YamuxError.self, "data on stream 0", isInvalidStreamID(0))
        var s3 = YamuxSession(role: .server)
        assertThrows(try receive(&s3, yamuxFrame(type: Y.windowUpdate, flags: Y.syn, stream: 0, length: 0)),
                     as: YamuxError.self, "SYN on stream 0", isInvalidStreamID(0))
    }
}
