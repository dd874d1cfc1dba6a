import CairnCore
@testable import CairnNode
import Foundation
import NIOCore
import NIOPosix
import XCTest

/// The CLI as a client of the node running on its data directory, and `cairn p2p` forwarding,
/// with real `cairn node` processes on loopback.
final class DaemonCLITests: XCTestCase {
    let bin = CLITests.productsDirectory.appendingPathComponent("cairn").path
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("daemoncli-" + UUID().uuidString)
    var spawned: [NATLab.Spawned] = []

    override func tearDown() {
        for s in spawned { s.stop(grace: 2) }
        try? FileManager.default.removeItem(at: dir)
    }

    func data(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// `cairn node` on loopback; returns its /p2p address once the control API is up.
    func startNode(_ name: String, extra: [String] = []) throws -> String {
        let node = try NATLab.Spawned(executable: bin, arguments: ["node", "--data-dir", data(name), "--listen", "/ip4/127.0.0.1/tcp/0",
                                                                  "--peers-file", "/dev/null", "--no-stun", "--log-level", "warning"] + extra, label: name)
        spawned.append(node)
        var addr: String?
        while let line = node.nextLine(timeout: 20) {
            if line.hasPrefix("listening on ") { addr = String(line.dropFirst("listening on ".count)) }
            if line.hasPrefix("control api on "), let addr { return addr }
        }
        throw NATLab.LabError.setupFailed("\(name) did not start: \(node.stderr.string)")
    }

    func cairn(_ args: [String]) -> NATLab.Output { NATLab.execute(bin, args, timeout: 60) }

    func status(_ name: String) throws -> [String: Any] {
        let out = cairn(["status", "--data-dir", data(name), "--json"])
        XCTAssertEqual(out.status, 0, out.stderr)
        return try XCTUnwrap((try? JSONSerialization.jsonObject(with: Data(out.stdout.utf8))) as? [String: Any], out.stdout)
    }

    func testCommandsOnARunningNodeUseItsIdentityNotASecondOne() throws {
        let a = try startNode("a")
        let b = try startNode("b")
        let aID = try XCTUnwrap(a.split(separator: "/").last.map(String.init))
        let bID = try XCTUnwrap(b.split(separator: "/").last.map(String.init))
        // Through A's control socket: the node A pings B; no temporary identity appears.
        let ping = cairn(["ping", "--data-dir", data("a"), b, "-c", "2", "--interval", "0.05"])
        XCTAssertEqual(ping.status, 0, ping.stderr)
        XCTAssertTrue(ping.stdout.contains("connected to \(bID)"), ping.stdout)
        XCTAssertEqual(ping.stdout.components(separatedBy: "rtt=").count - 1, 2, ping.stdout)
        XCTAssertFalse(ping.stderr.contains("temporary identity"), ping.stderr)
        XCTAssertEqual(try status("b")["connected_peers"] as? [String], [aID], "B sees one peer: A itself")
        XCTAssertEqual(try status("a")["connections"] as? Int, 1)
        // identify --json has the same shape either way: through A, and one-shot from a fresh directory.
        let viaNode = cairn(["identify", "--data-dir", data("a"), b, "--json"])
        let oneShot = cairn(["identify", "--data-dir", data("fresh"), b, "--json"])
        XCTAssertEqual(viaNode.status, 0, viaNode.stderr)
        XCTAssertEqual(oneShot.status, 0, oneShot.stderr)
        let j1 = try XCTUnwrap((try? JSONSerialization.jsonObject(with: Data(viaNode.stdout.utf8))) as? [String: Any])
        let j2 = try XCTUnwrap((try? JSONSerialization.jsonObject(with: Data(oneShot.stdout.utf8))) as? [String: Any])
        XCTAssertEqual(Set(j1.keys), Set(j2.keys))
        XCTAssertEqual(j1["peer_id"] as? String, bID)
        XCTAssertEqual(j1["listen_addrs"] as? [String], j2["listen_addrs"] as? [String])
        XCTAssertEqual(try status("b")["connected_peers"] as? [String], [aID], "the one-shot identify came and went; A's connection stays")
        // Commands that need the DHT get the node's clear error, not a second node.
        let providers = cairn(["providers", "--data-dir", data("a"), "x"])
        XCTAssertEqual(providers.status, 0, providers.stderr)
        XCTAssertTrue(providers.stdout.contains("0 provider(s) of x"), providers.stdout)
    }

    /// One-shot `cairn ping` and `cairn identify` take `/p2p-circuit` addresses: they reach a peer
    /// that is reachable only through its relay.
    func testOneShotCommandsTakeRelayedAddresses() throws {
        let relay = try startNode("relay", extra: ["--relay", "--relay-when", "always", "--auto-relay", "off"])
        let relayID = try XCTUnwrap(relay.split(separator: "/").last.map(String.init))
        let b = try startNode("b", extra: ["--auto-relay", "always", "--connect", relay])
        let bID = try XCTUnwrap(b.split(separator: "/").last.map(String.init))
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !((try? status("b"))?["held"] as? [[String: Any]] ?? []).contains(where: { $0["relay"] as? String == relayID }) {
            usleep(200_000)
        }
        let circuit = "\(relay)/p2p-circuit/p2p/\(bID)"
        let ping = cairn(["ping", "--data-dir", data("c"), circuit, "-c", "2", "--interval", "0.05"])
        XCTAssertEqual(ping.status, 0, ping.stderr)
        XCTAssertTrue(ping.stdout.contains("connected to \(bID)"), ping.stdout)
        let identify = cairn(["identify", "--data-dir", data("c"), circuit, "--json"])
        XCTAssertEqual(identify.status, 0, identify.stderr)
        XCTAssertTrue(identify.stdout.contains("\"peer_id\":\"\(bID)\""), identify.stdout)
    }

    func testP2PForwardCarriesTenMiBBothWaysWithHalfClose() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let echo = try await ServerBootstrap(group: group)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(EchoHandler()) } }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { echo.close(promise: nil) }  // the singleton group lives on
        let echoPort = try XCTUnwrap(echo.localAddress?.port)
        _ = try startNode("a")
        let b = try startNode("b")
        let bID = try XCTUnwrap(b.split(separator: "/").last.map(String.init))
        XCTAssertEqual(cairn(["ping", "--data-dir", data("a"), b, "-c", "1"]).status, 0)  // A knows B's address now
        let listen = cairn(["p2p", "listen", "--data-dir", data("b"), "/x/echo", "/ip4/127.0.0.1/tcp/\(echoPort)"])
        XCTAssertEqual(listen.status, 0, listen.stderr)
        let forward = cairn(["p2p", "forward", "--data-dir", data("a"), "/x/echo", "/ip4/127.0.0.1/tcp/0", "/p2p/\(bID)"])
        XCTAssertEqual(forward.status, 0, forward.stderr)
        // "forward /ip4/127.0.0.1/tcp/PORT -> <peer> /x/echo (0 open)"
        let local = try XCTUnwrap(forward.stdout.split(separator: " ").first { $0.hasPrefix("/ip4/") }.map(String.init), forward.stdout)
        let port = try XCTUnwrap(Int(local.split(separator: "/").last ?? ""))

        let payload = (0..<(10 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }
        let started = ContinuousClock.now
        let got = try await Self.roundTrip(payload, port: port, group: group)
        let seconds = Double((ContinuousClock.now - started).components.attoseconds) / 1e18 + Double((ContinuousClock.now - started).components.seconds)
        XCTAssertEqual(got.count, payload.count)
        XCTAssertTrue(got == payload, "10 MiB came back intact through A → B → the echo service")
        print(String(format: "p2p forward: 10 MiB each way in %.2f s (%.1f MiB/s each way)", seconds, 10 / seconds))

        let ls = cairn(["p2p", "ls", "--data-dir", data("a"), "--json"])
        XCTAssertTrue(ls.stdout.contains("\"kind\":\"forward\""), ls.stdout)
        let close = cairn(["p2p", "close", "--data-dir", data("a"), "--all"])
        XCTAssertTrue(close.stdout.contains("closed 1 rule(s)"), close.stdout)
        // The forward's port is gone.
        do {
            _ = try await Self.roundTrip([1, 2, 3], port: port, group: group)
            XCTFail("the closed forward still accepted")
        } catch {}
    }

    /// Writes `bytes`, half-closes, reads to EOF.
    static func roundTrip(_ bytes: [UInt8], port: Int, group: EventLoopGroup) async throws -> [UInt8] {
        let conn = try await ClientBootstrap(group: group)
            .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .connect(host: "127.0.0.1", port: port) { ch in
                ch.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        return try await conn.executeThenClose { inbound, outbound in
            try await withThrowingTaskGroup(of: [UInt8].self) { g in
                g.addTask {
                    var i = 0
                    while i < bytes.count {
                        try await outbound.write(ByteBuffer(bytes: bytes[i..<min(i + 65536, bytes.count)]))
                        i += 65536
                    }
                    outbound.finish()
                    return []
                }
                var got: [UInt8] = []
                for try await chunk in inbound { got += chunk.readableBytesView }
                try await g.waitForAll()
                return got
            }
        }
    }
}

/// Echoes, and closes its output when the input ends.
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.writeAndFlush(data, promise: nil) }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { context.close(mode: .output, promise: nil) }
    }
}
