import NIOCore
import XCTest

@testable import CairnCore

/// Receive-window auto-tuning over a link with a long round trip, in virtual time: two sessions
/// joined by a 50 ms one-way delay (no bandwidth limit), a sender that always has data queued
/// and a reader that consumes on arrival.
final class YamuxWindowTuningTests: XCTestCase {
    struct Run { var bytes = 0; var finalWindow: UInt32 = 0; var growth = 0 }

    /// Bytes delivered in `seconds` of virtual time; `consume` false leaves the reader idle.
    func run(_ config: YamuxConfig, seconds: Double, oneWay: Double = 0.05, consume: Bool = true) throws -> Run {
        var client = YamuxSession(role: .client, config: config)
        var server = YamuxSession(role: .server, config: config)
        client.rtt = 2 * oneWay
        server.rtt = 2 * oneWay
        // In flight on the link: (arrival time, towards the server?, bytes), in order.
        var link: [(Double, Bool, ByteBuffer)] = []
        var now = 0.0
        var out = ByteBuffer()
        let id = try client.openStream(into: &out)
        let chunk = ByteBuffer(repeating: 0x42, count: 256 * 1024)
        var result = Run()
        func topUp() throws {
            while client.pendingBytes(id) < 1 << 20 { try client.write(id, chunk, into: &out) }
        }
        try topUp()
        link.append((now + oneWay, true, out))
        out.clear()
        while let next = link.first, next.0 <= seconds {
            link.removeFirst()
            now = next.0
            var reply = ByteBuffer()
            if next.1 {
                for case .data(_, let b) in try server.receive(next.2, into: &reply) {
                    result.bytes += b.readableBytes
                    if consume { server.consumed(id, b.readableBytes, now: now, into: &reply) }
                }
                if reply.readableBytes > 0 { link.append((now + oneWay, false, reply)) }
            } else {
                _ = try client.receive(next.2, into: &reply)
                try topUp()
                reply.writeBuffer(&out)
                out.clear()
                if reply.readableBytes > 0 { link.append((now + oneWay, true, reply)) }
            }
            link.sort { $0.0 < $1.0 }
        }
        result.finalWindow = server.tunedWindow(id) ?? 0
        result.growth = server.windowGrowth
        return result
    }

    func testTheWindowGrowsWhenItIsTheBottleneckAndStaysWithinItsBounds() throws {
        var fixed = YamuxConfig()
        fixed.maxReceiveWindow = fixed.receiveWindow
        let before = try run(fixed, seconds: 10)
        let tuned = try run(YamuxConfig(), seconds: 10)
        print(String(format: "yamux over a 100 ms round trip, 10 s: fixed 256 KiB window %.1f MiB/s, tuned %.1f MiB/s (window %d KiB)",
                     Double(before.bytes) / 10 / 1_048_576, Double(tuned.bytes) / 10 / 1_048_576, tuned.finalWindow / 1024))
        // 256 KiB a round trip of 100 ms: about 2.5 MiB/s.
        XCTAssertEqual(Double(before.bytes) / 10 / 1_048_576, 2.5, accuracy: 0.3)
        XCTAssertEqual(before.finalWindow, 256 * 1024)
        // Tuned: the window doubles until the session's growth budget (8 MiB) is spent.
        XCTAssertEqual(tuned.finalWindow, 256 * 1024 + 8 * 1024 * 1024, "\(tuned)")
        XCTAssertEqual(tuned.growth, 8 * 1024 * 1024)
        XCTAssertGreaterThan(tuned.bytes, 20 * before.bytes, "tuned \(tuned.bytes) vs fixed \(before.bytes)")
    }

    func testAReaderThatDoesNotReadNeverGrowsItsWindow() throws {
        let idle = try run(YamuxConfig(), seconds: 10, consume: false)
        XCTAssertEqual(idle.bytes, 256 * 1024, "one window, then nothing")
        XCTAssertEqual(idle.finalWindow, 256 * 1024)
        XCTAssertEqual(idle.growth, 0)
    }

    func testWithoutARoundTripThereIsNoTuning() throws {
        var client = YamuxSession(role: .client), server = YamuxSession(role: .server)
        var toServer = ByteBuffer(), toClient = ByteBuffer()
        let id = try client.openStream(into: &toServer)
        _ = try server.receive(toServer, into: &toClient)
        for i in 0..<8 {
            server.consumed(id, 128 * 1024, now: Double(i) * 0.001, into: &toClient)
        }
        XCTAssertEqual(server.tunedWindow(id), 256 * 1024)
    }

    func testGrowthIsGivenBackWhenTheStreamEnds() throws {
        let pair = YamuxPair()
        pair.server.rtt = 0.1
        let id = try pair.openClientStream()
        // Half the window read twice within a round trip: it doubles once.
        pair.server.consumed(id, 128 * 1024, now: 0, into: &pair.toClient)
        pair.server.consumed(id, 128 * 1024, now: 0.01, into: &pair.toClient)
        XCTAssertEqual(pair.server.tunedWindow(id), 512 * 1024)
        XCTAssertEqual(pair.server.windowGrowth, 256 * 1024)
        pair.server.reset(id, into: &pair.toClient)
        XCTAssertEqual(pair.server.windowGrowth, 0)
    }
}
