import CairnCore
import CairnNode
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest

/// A bare UDP socket for tests: sends what it is told and queues what arrives.
private final class UDPProbe: @unchecked Sendable {
    private final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let received = NIOLockedValueBox<[(from: SocketAddress, bytes: [UInt8], at: NIODeadline)]>([])
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let e = unwrapInboundIn(data)
            received.withLockedValue { $0.append((e.remoteAddress, Array(e.data.readableBytesView), .now())) }
        }
    }

    let channel: Channel
    private let collector: Collector
    private var taken = 0

    init(group: EventLoopGroup, host: String = "127.0.0.1") async throws {
        let collector = Collector()
        self.collector = collector
        channel = try await DatagramBootstrap(group: group)
            .channelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(collector) } }
            .bind(host: host, port: 0).get()
    }

    var port: UInt16 { UInt16(channel.localAddress!.port!) }
    var endpoint: STUNEndpoint { STUNEndpoint(channel.localAddress!)! }

    func send(_ bytes: [UInt8], to address: SocketAddress) async throws {
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: ByteBuffer(bytes: bytes))).get()
    }

    /// The next datagram not yet taken, waiting up to `timeout` seconds.
    func next(timeout: Double = 3) async throws -> (from: SocketAddress, bytes: [UInt8], at: NIODeadline)? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let all = collector.received.withLockedValue { $0 }
            if all.count > taken {
                taken += 1
                return all[taken - 1]
            }
            guard Date() < deadline else { return nil }
            try await Task.sleep(nanoseconds: 5_000_000)
        }
    }

    struct NothingArrived: Error, CustomStringConvertible {
        var why: String
        var description: String { why }
    }

    func expectNext(_ why: String = "no datagram arrived") async throws -> (from: SocketAddress, bytes: [UInt8], at: NIODeadline) {
        guard let d = try await next() else { throw NothingArrived(why: why) }
        return d
    }

    var receivedCount: Int { collector.received.withLockedValue { $0.count } }

    func close() async { try? await channel.close() }
}

/// A Binding success response for `request`, built without the server logic.
private func successResponse(to request: [UInt8], mapped: STUNEndpoint, tid: [UInt8]? = nil) throws -> [UInt8] {
    let m = try STUNMessage(decoding: request)
    let id = tid ?? m.transactionID
    return STUNMessage(messageClass: .successResponse, transactionID: id, attributes: [
        .init(type: STUN.AttributeType.xorMappedAddress, value: STUNMessage.encodeAddress(mapped, xorWith: id)),
    ]).encode()
}

/// Where an external tool is, or a skip saying why not — a failure when CAIRN_REQUIRE_LAB=1 (CI).
func requireTool(_ name: String, package: String) throws -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    for dir in path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin", "/bin"]
    where FileManager.default.isExecutableFile(atPath: dir + "/" + name) {
        return dir + "/" + name
    }
    let why = "\(name) not found: install Debian's \(package) (apt-get install -y \(package))"
    if ProcessInfo.processInfo.environment["CAIRN_REQUIRE_LAB"] == "1" {
        XCTFail(why + " (CAIRN_REQUIRE_LAB=1, so this fails instead of skipping)")
    }
    throw XCTSkip(why)
}

/// Runs a program to completion, bounded by `timeout` seconds; returns status and combined output.
private func runTool(_ path: String, _ args: [String], timeout: Double = 20) async throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    p.standardInput = FileHandle.nullDevice
    let data = NIOLockedValueBox(Data())
    pipe.fileHandleForReading.readabilityHandler = { h in
        let d = h.availableData
        data.withLockedValue { $0.append(d) }
    }
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { try await Task.sleep(nanoseconds: 20_000_000) }
    if p.isRunning {
        // turnutils_stunclient blocks SIGTERM while it waits for an answer: escalate to SIGKILL.
        p.terminate()
        let grace = Date().addingTimeInterval(1)
        while p.isRunning && Date() < grace { try await Task.sleep(nanoseconds: 20_000_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    }
    p.waitUntilExit()
    pipe.fileHandleForReading.readabilityHandler = nil
    let rest = pipe.fileHandleForReading.readDataToEndOfFile()
    return (p.terminationStatus, String(decoding: data.withLockedValue { $0 + rest }, as: UTF8.self))
}

final class STUNServerTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var logs: LogCapture!
    var server: STUNServer!

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        logs = LogCapture()
        server = try await STUNServer.start(bindingTo: try SocketAddress(ipAddress: "127.0.0.1", port: 0), group: group,
                                            logger: logs.logger(label: "stun-test"))
    }

    override func tearDown() async throws {
        await server?.close()
        try await group?.shutdownGracefully()
    }

    // MARK: Server

    func testClientLearnsItsAddressFromTheServer() async throws {
        let client = STUNClient(group: group)
        let (mapped, local) = try await client.exchange(server: server.localAddress, timeout: .seconds(3))
        XCTAssertEqual(mapped, STUNEndpoint(ip: "127.0.0.1", port: UInt16(local.port!)))
        XCTAssertNotEqual(mapped.port, 0)
        let again = try await client.query(server: server.localAddress)
        XCTAssertEqual(again.ipText, "127.0.0.1")
        XCTAssertEqual(server.stats.answered, 2)
        XCTAssertEqual(server.stats.rejections, [:])
        XCTAssertEqual(server.multiaddr?.description, "/ip4/127.0.0.1/udp/\(server.localAddress.port!)")
    }

    func testMalformedDatagramsAreCountedAndLoggedAndTheServerKeepsAnswering() async throws {
        let probe = try await UDPProbe(group: group)
        defer { Task { await probe.close() } }
        let tid = Array(UInt8(1)...UInt8(12))
        let headerOnly: [UInt8] = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42] + tid
        var badCookie = headerOnly
        badCookie[7] = 0x43
        let garbage: [(String, [UInt8], STUNRejectReason)] = [
            ("garbage", Array("hello, is this STUN?".utf8), .notSTUN),  // 'h' = 0x68 has bit 6 set
            ("short", Array(headerOnly.prefix(12)), .tooShort),
            ("bad cookie", badCookie, .badMagicCookie),
            ("RTP", [0x80, 0x00] + [UInt8](repeating: 0, count: 30), .notSTUN),
            ("oversized", headerOnly + [UInt8](repeating: 0, count: 1400), .tooLong),
            ("length lies", [0x00, 0x01, 0x00, 0x40] + headerOnly.dropFirst(4), .lengthMismatch),
        ]
        for (_, d, _) in garbage { try await probe.send(d, to: server.localAddress) }
        // A well-formed request with an unknown comprehension-required attribute: 420.
        let withPriority = STUNMessage(messageClass: .request, transactionID: tid, attributes: [.init(type: 0x0024, value: [0, 0, 0, 1])]).encode()
        try await probe.send(withPriority, to: server.localAddress)
        let refusal = try await probe.expectNext("no 420")
        let r = try STUNMessage(decoding: refusal.bytes)
        XCTAssertEqual(try r.errorCode()?.code, 420)
        XCTAssertEqual(try r.unknownAttributesList(), [0x0024])

        // Then a proper request is still answered with the probe's own address.
        let logic = STUNClientLogic()
        try await probe.send(logic.request(), to: server.localAddress)
        let answer = try await probe.expectNext("no answer after the garbage")
        XCTAssertEqual(try logic.parseResponse(answer.bytes), STUNEndpoint(ip: "127.0.0.1", port: probe.port))
        let extra = try await probe.next(timeout: 0.2)
        XCTAssertNil(extra, "malformed datagrams must not be answered")

        let stats = server.stats
        XCTAssertEqual(stats.answered, 1)
        XCTAssertEqual(stats.refused, 1)
        XCTAssertEqual(stats.ignored, garbage.count)
        XCTAssertEqual(stats.count(.notSTUN), 2)
        XCTAssertEqual(stats.count(.tooShort), 1)
        XCTAssertEqual(stats.count(.badMagicCookie), 1)
        XCTAssertEqual(stats.count(.tooLong), 1)
        XCTAssertEqual(stats.count(.lengthMismatch), 1)
        XCTAssertEqual(stats.count(.unknownAttributes), 1)
        // Each rejection is logged at debug with its reason and running count.
        let rejected = logs.records.filter { $0.level == .debug && $0.metadata["reason"] != nil }
        XCTAssertEqual(rejected.count, garbage.count + 1, logs.dump)
        XCTAssertEqual(rejected.filter { $0.metadata["reason"]?.description == "notSTUN" }.map { $0.metadata["count"]?.description },
                       ["1", "2"], logs.dump)
        XCTAssertTrue(rejected.allSatisfy { $0.level < .info }, "rejections are not logged loudly")
    }

    func testServerBesideTheNodesTCPPort() async throws {
        let node = Node(identity: .generate(), group: group, logger: Logger(label: "stun-node-test"))
        let tcp = try await node.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])[0]
        let udp = try await STUNServer.start(besideTCP: tcp, group: group, logger: logs.logger())
        XCTAssertEqual(udp.localAddress.port, Int(tcp.tcpEndpoint!.port))
        let mapped = try await STUNClient(group: group).query(server: udp.localAddress)
        XCTAssertEqual(mapped.ipText, "127.0.0.1")
        await udp.close()
        await node.shutdown()
    }

    func testWithoutReuseAddressASecondServerOnThePortIsRefused() async throws {
        let first = try await STUNServer.start(bindingTo: try SocketAddress(ipAddress: "127.0.0.1", port: 0), group: group,
                                               reuseAddress: false, logger: logs.logger())
        do {
            let second = try await STUNServer.start(bindingTo: first.localAddress, group: group, reuseAddress: false, logger: logs.logger())
            await second.close()
            XCTFail("two servers bound \(first.localAddress)")
        } catch let e as IOError {
            XCTAssertEqual(e.errnoCode, EADDRINUSE)
        }
        await first.close()
    }

    func testIPv6Loopback() async throws {
        let v6: STUNServer
        do {
            v6 = try await STUNServer.start(bindingTo: try SocketAddress(ipAddress: "::1", port: 0), group: group, logger: logs.logger())
        } catch {
            throw XCTSkip("no IPv6 loopback here: \(error)")
        }
        let (mapped, local) = try await STUNClient(group: group).exchange(server: v6.localAddress,
                                                                          from: try SocketAddress(ipAddress: "::1", port: 0))
        XCTAssertEqual(mapped, STUNEndpoint(ip: "::1", port: UInt16(local.port!)))
        await v6.close()
    }

    // MARK: Client

    func testClientRetransmitsALostRequest() async throws {
        let fake = try await UDPProbe(group: group)
        defer { Task { await fake.close() } }
        let (group, address) = (self.group!, fake.channel.localAddress!)
        let query = Task { try await STUNClient(group: group).exchange(server: address, timeout: .seconds(3)) }
        let first = try await fake.expectNext()  // dropped on the floor
        let second = try await fake.expectNext("no retransmission")
        XCTAssertEqual(first.bytes, second.bytes, "a retransmission repeats the request")
        let gap = Double((second.at - first.at).nanoseconds) / 1e9
        XCTAssertGreaterThan(gap, 0.4, "RTO is 500 ms")
        XCTAssertLessThan(gap, 1.0)
        let sender = try XCTUnwrap(STUNEndpoint(second.from))
        try await fake.send(try successResponse(to: second.bytes, mapped: sender), to: second.from)
        let (mapped, local) = try await query.value
        XCTAssertEqual(mapped.port, UInt16(local.port!))
    }

    func testQueryGivesUpAfterThreeRequests() async throws {
        let silent = try await UDPProbe(group: group)
        defer { Task { await silent.close() } }
        let start = NIODeadline.now()
        do {
            _ = try await STUNClient(group: group).query(server: silent.channel.localAddress!, timeout: .milliseconds(2000))
            XCTFail("answered by nobody?")
        } catch let e as STUNQueryError {
            XCTAssertEqual(e, .timeout(attempts: 3))
        }
        let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        XCTAssertGreaterThan(elapsed, 1.9)
        XCTAssertLessThan(elapsed, 3.0)
        XCTAssertEqual(silent.receivedCount, 3)
        // Sent at 0, 0.5 and 1.5 s.
        var times: [NIODeadline] = []
        while let d = try await silent.next(timeout: 0) { times.append(d.at) }
        let offsets = times.map { Double(($0 - times[0]).nanoseconds) / 1e9 }
        guard offsets.count == 3 else { return XCTFail("\(offsets)") }
        XCTAssertEqual(offsets[1], 0.5, accuracy: 0.15)
        XCTAssertEqual(offsets[2], 1.5, accuracy: 0.2)
    }

    func testClientIgnoresStraysAndForgeriesAndTakesTheRealAnswer() async throws {
        let fake = try await UDPProbe(group: group)
        let forger = try await UDPProbe(group: group)
        defer { Task { await fake.close(); await forger.close() } }
        let (group, address) = (self.group!, fake.channel.localAddress!)
        let query = Task { try await STUNClient(group: group).query(server: address, timeout: .seconds(3)) }
        let req = try await fake.expectNext()
        let liar = STUNEndpoint(ip: "6.6.6.6", port: 666)!
        // From another address, with the right transaction ID: not the server, ignored.
        try await forger.send(try successResponse(to: req.bytes, mapped: liar), to: req.from)
        // From the server: garbage, then another transaction's answer, then the real one.
        try await fake.send([1, 2, 3], to: req.from)
        try await fake.send(try successResponse(to: req.bytes, mapped: liar, tid: Array(1...12)), to: req.from)
        let truth = try XCTUnwrap(STUNEndpoint(req.from))
        try await fake.send(try successResponse(to: req.bytes, mapped: truth), to: req.from)
        let mapped = try await query.value
        XCTAssertEqual(mapped, truth)
    }

    func testClientReportsAnErrorResponse() async throws {
        let fake = try await UDPProbe(group: group)
        defer { Task { await fake.close() } }
        let (group, address) = (self.group!, fake.channel.localAddress!)
        let query = Task { try await STUNClient(group: group).query(server: address, timeout: .seconds(3)) }
        let req = try await fake.expectNext()
        var logic = STUNServerLogic()  // a request it cannot serve, to borrow a real 400
        let m = try STUNMessage(decoding: req.bytes)
        let bad = STUNMessage(method: 0x003, messageClass: .request, transactionID: m.transactionID).encode()
        let refusal = try XCTUnwrap(logic.handle(bad, from: STUNEndpoint(req.from)!).reply)
        // Rewrite the 400 as a Binding error response.
        var d = try STUNMessage(decoding: refusal)
        d.method = STUN.Method.binding
        try await fake.send(d.encode(), to: req.from)
        do {
            _ = try await query.value
            XCTFail("an error response is an answer")
        } catch let e as STUNQueryError {
            XCTAssertEqual(e, .failed(.errorResponse(code: 400, reason: "Bad Request")))
        }
    }

    // MARK: A standard client

    /// coturn's `turnutils_stunclient` (Debian package coturn) asks a Cairn node and must be
    /// told its own address: 127.0.0.1 and the source port the server saw.
    func testStandardSTUNClientGetsTheRightMappedAddress() async throws {
        let tool = try requireTool("turnutils_stunclient", package: "coturn")
        let port = server.localAddress.port!
        let r = try await runTool(tool, ["-p", "\(port)", "127.0.0.1"], timeout: 10)
        print("turnutils_stunclient -p \(port) 127.0.0.1 (exit \(r.status)):\n\(r.output)")
        XCTAssertEqual(r.status, 0, r.output)
        // The source address the server answered, from its trace log.
        let answered = logs.records.compactMap { $0.metadata["to"]?.description }
        XCTAssertFalse(answered.isEmpty, "server answered nothing: \(logs.dump)\n\(r.output)")
        let seen = try XCTUnwrap(answered.last)  // e.g. "[IPv4]127.0.0.1/127.0.0.1:54321"
        let seenPort = try XCTUnwrap(seen.split(separator: ":").last.flatMap { Int($0) }, seen)
        XCTAssertTrue(r.output.contains("UDP reflexive addr: 127.0.0.1:\(seenPort)"), "expected 127.0.0.1:\(seenPort) in:\n\(r.output)")
        XCTAssertGreaterThanOrEqual(server.stats.answered, 1)
        print("server stats: \(server.stats)")
    }
}
