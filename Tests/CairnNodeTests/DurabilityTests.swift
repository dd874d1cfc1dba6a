import CairnCore
import CairnNode
import Foundation
import Logging
import NIOPosix
import XCTest

/// A `cairn node` process killed with SIGKILL between writes loses nothing it acknowledged.
final class DurabilityTests: XCTestCase {
    func testKillDashNineLosesNoAcknowledgedRecord() async throws {
        let bin = CLITests.productsDirectory.appendingPathComponent("cairn")
        guard FileManager.default.isExecutableFile(atPath: bin.path) else { return XCTFail("cairn not built at \(bin.path)") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = Process()
        p.executableURL = bin
        p.arguments = ["node", "--data-dir", dir.path, "--listen", "/ip4/127.0.0.1/tcp/0", "--peers-file", "/dev/null", "--log-level", "error"]
        let out = Pipe()
        p.standardOutput = out
        let errPipe = Pipe(); p.standardError = errPipe; let errs = LockedData(); errPipe.fileHandleForReading.readabilityHandler = { h in errs.append(h.availableData) }
        let lines = LockedData()
        out.fileHandleForReading.readabilityHandler = { h in lines.append(h.availableData) }
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        var addr: Multiaddr?
        let deadline = Date().addingTimeInterval(20)
        while addr == nil, Date() < deadline {
            if let l = lines.string.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }) {
                addr = try Multiaddr(String(l.dropFirst("listening on ".count)))
            } else {
                try await Task.sleep(nanoseconds: 20_000_000)
            }
        }
        let target = try XCTUnwrap(addr, "node did not start: \(lines.string)")

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = Node(identity: .generate(), group: group, logger: Logger(label: "client"))
        let conn = try await client.dial(target)
        var acknowledged: [[UInt8]] = []
        // Write until 150 are acknowledged, then kill without warning while more are in flight.
        let stream = try await conn.openStream(["/ipfs/kad/1.0.0"])
        var i = 0
        while acknowledged.count < 150 {
            let key = Array("/durable/\(i)".utf8)
            i += 1
            try await stream.writeLengthPrefixed(KadMessage(kind: .putValue, key: key, recordValue: Array("value \(i)".utf8)).encode())
            let reply = try KadMessage.decode(try await stream.readLengthPrefixed(maxLength: 65536))
            XCTAssertEqual(reply.kind, .putValue)
            acknowledged.append(key)
            if acknowledged.count % 40 == 0 {
                // Rate limit: 20/s with a burst of 40; pause so the writer is not cut off.
                try await Task.sleep(nanoseconds: 2_100_000_000)
            }
        }
        try await stream.writeLengthPrefixed(KadMessage(kind: .putValue, key: Array("/durable/unacked".utf8), recordValue: [1]).encode())
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal)
        await client.shutdown()
        try await group.shutdownGracefully()

        let store = try SQLiteDHTStore(path: dir.appendingPathComponent("dht.sqlite").path, validator: RecordValidator())
        let now = Date()
        let missing = try acknowledged.filter { try store.record(forKey: $0, now: now) == nil }
        XCTAssertEqual(missing.count, 0, "acknowledged but lost: \(missing.map { String(decoding: $0, as: UTF8.self) })")
    }
}
