import CairnCrypto
import CairnNode
import CairnProto
import Foundation
import Logging
import NIOCore
import NIOPosix
import XCTest

@testable import CairnCore

/// A peer that misbehaves at any layer of the upgrade (multistream-select, Noise, Yamux) gets its
/// connection closed with a logged reason, and the node goes on serving everyone else. Each test
/// starts a node, breaks one rule from a raw TCP socket, checks the socket was closed and the
/// warning names the reason, then has a well-behaved node dial and ping the same node.
final class BadInputTests: XCTestCase {
    /// How long the node gets to react to bad input (it should be immediate).
    static let reactionTime: Duration = .seconds(5)

    var group: MultiThreadedEventLoopGroup!
    var nodes: [Node] = []
    var rawPeers: [RawPeer] = []

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        nodes = []
        rawPeers = []
    }

    override func tearDown() async throws {
        for r in rawPeers { await r.close() }
        for n in nodes { await n.shutdown() }
        rawPeers = []
        nodes = []
        try await group.shutdownGracefully()
        group = nil
    }

    // MARK: Harness

    struct Target {
        let node: Node
        let log: LogCapture
        /// The listen address, without the peer ID.
        let address: Multiaddr
        /// The listen address with `/p2p/<peer id>`.
        var fullAddress: Multiaddr { get throws { try Multiaddr("\(address)/p2p/\(node.peerID)") } }
    }

    func makeNode(_ log: LogCapture, label: String, _ configure: (inout Node.Configuration) -> Void = { _ in }) -> Node {
        var config = Node.Configuration()
        config.swarm.reuseListenPort = false
        configure(&config)
        let node = Node(identity: .generate(), configuration: config, group: group, logger: log.logger(label: label))
        nodes.append(node)
        return node
    }

    /// A node listening on 127.0.0.1 with an ephemeral port.
    func startTarget(_ configure: (inout Node.Configuration) -> Void = { _ in }) async throws -> Target {
        let log = LogCapture()
        let node = makeNode(log, label: "target", configure)
        let addrs = try await node.listen([Multiaddr("/ip4/127.0.0.1/tcp/0")])
        let address = try XCTUnwrap(addrs.first)
        return Target(node: node, log: log, address: address)
    }

    func connectRaw(_ target: Target) async throws -> RawPeer {
        let raw = try await RawPeer.connect(to: target.address, group: group)
        rawPeers.append(raw)
        return raw
    }

    /// The node closed the raw socket in time and logged a warning naming the reason.
    func assertClosed(_ raw: RawPeer, by target: Target, loggedWith needles: [String],
                      file: StaticString = #filePath, line: UInt = #line) async {
        let closed = await raw.awaitClose(timeout: Self.reactionTime)
        XCTAssertTrue(closed, "the node did not close the misbehaving peer's socket", file: file, line: line)
        let logged = await eventually { !target.log.records(atLeast: .warning, containing: ["closing connection"] + needles).isEmpty }
        XCTAssertTrue(logged, "no warning naming \(needles); the log was:\n\(target.log.dump)", file: file, line: line)
    }

    /// A well-behaved node can still dial the target and ping it.
    func assertStillServes(_ target: Target, file: StaticString = #filePath, line: UInt = #line) async throws {
        let goodLog = LogCapture()
        let good = makeNode(goodLog, label: "good")
        let conn = try await good.dial(try target.fullAddress)
        XCTAssertEqual(conn.remotePeer, target.node.peerID, file: file, line: line)
        let rtts = try await good.ping(conn, count: 2)
        XCTAssertEqual(rtts.count, 2, file: file, line: line)
        await conn.close()
    }

    /// Polls `condition` until it holds or `timeout` passes.
    func eventually(timeout: Duration = BadInputTests.reactionTime, _ condition: () -> Bool) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while !condition() {
            if clock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return true
    }

    /// Runs `body`, failing if it takes longer than `timeout`. On timeout the body is cancelled and
    /// abandoned, not awaited, so a wait that ignores cancellation cannot hang the test.
    func within<T: Sendable>(_ timeout: TimeAmount, _ what: String,
                             _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let loop = group.next()
        let promise = loop.makePromise(of: T.self)
        let task = Task {
            do { promise.succeed(try await body()) } catch { promise.fail(error) }
        }
        let timer = loop.scheduleTask(in: timeout) { promise.fail(RawPeerError.timeout(what)) }
        defer {
            timer.cancel()
            task.cancel()
        }
        return try await promise.futureResult.get()
    }

    static func noiseFrame(_ body: [UInt8]) -> [UInt8] {
        [UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
    }

    /// Agrees on `/noise` by hand: header plus proposal, then expects the listener's header and echo.
    func negotiateNoise(_ raw: RawPeer) async throws {
        try await raw.send(MultistreamSelect.encode(MultistreamSelect.protocolID) + MultistreamSelect.encode("/noise"))
        let expected = MultistreamSelect.encode(MultistreamSelect.protocolID) + MultistreamSelect.encode("/noise")
        let reply = try await raw.awaitBytes(count: expected.count)
        XCTAssertEqual(reply, expected, "the node did not accept /noise")
    }

    /// Plays the Noise initiator by hand up to the third message, whose payload carries a real
    /// identity key and its signature over our static key or, with `signWrongKey`, another key.
    func sendHandshake(_ raw: RawPeer, signWrongKey: Bool) async throws {
        let staticKey = X25519PrivateKey()
        var xx = NoiseXXHandshake(role: .initiator, staticKey: staticKey)
        try await raw.send(Self.noiseFrame(try xx.writeMessage(payload: [])))          // -> e
        let msg2 = try await raw.awaitNoiseFrame(timeout: Self.reactionTime)            // <- e, ee, s, es
        let responderPayload = try xx.readMessage(msg2)
        XCTAssertFalse(responderPayload.isEmpty, "the responder's payload carries its identity")

        let identity = PrivateKey.generate()
        let signed = signWrongKey ? X25519PrivateKey().publicKey : staticKey.publicKey
        var pb = Noise_Pb_NoiseHandshakePayload()
        pb.identityKey = Data(identity.publicKey.protobufBytes)
        pb.identitySig = Data(identity.sign(Array("noise-libp2p-static-key:".utf8) + signed))
        let payload: [UInt8] = try pb.serializedBytes()
        try await raw.send(Self.noiseFrame(try xx.writeMessage(payload: payload)))       // -> s, se
        XCTAssertTrue(xx.isComplete)
    }

    /// Runs a complete, correct upgrade (multistream, Noise XX, Yamux) as a raw initiator.
    func establish(_ raw: RawPeer) async throws -> SecureConnectionMachine {
        var machine = SecureConnectionMachine(role: .initiator, identity: .generate())
        try await carryOut(machine.start(), on: raw)
        let clock = ContinuousClock()
        let deadline = clock.now + Self.reactionTime
        while !machine.isEstablished {
            guard clock.now < deadline else { throw RawPeerError.timeout("the upgrade") }
            let bytes = try await raw.awaitAnyBytes(timeout: Self.reactionTime)
            try await carryOut(machine.receive(ByteBuffer(bytes: bytes)), on: raw)
        }
        return machine
    }

    func carryOut(_ actions: [SecureConnectionMachine.Action], on raw: RawPeer) async throws {
        for action in actions {
            switch action {
            case .send(let bytes): try await raw.send(bytes)
            case .close(let reason): throw reason
            case .established, .stream: break
            }
        }
    }

    /// Encrypts `plaintext` with the machine's transport, as one more message after whatever
    /// the machine itself sent. The machine must not send anything afterwards.
    func sealed(_ plaintext: ByteBuffer, by machine: SecureConnectionMachine) throws -> ByteBuffer {
        guard case .established(var transport, _) = machine.state else {
            throw ConnectionError.closed  // the raw session is not (or no longer) established
        }
        var out = ByteBuffer()
        try transport.seal(plaintext, into: &out)
        return out
    }

    static func yamuxHeader(version: UInt8 = 0, type: UInt8, flags: UInt16 = 0, stream: UInt32, length: UInt32) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(version)
        b.writeInteger(type)
        b.writeInteger(flags)
        b.writeInteger(stream)
        b.writeInteger(length)
        return b
    }

    // MARK: multistream-select

    func testMalformedMultistreamLineClosesConnection() async throws {
        let target = try await startTarget()
        let raw = try await connectRaw(target)
        // A length prefix and a line without its trailing newline.
        try await raw.send(Varint.encode(5) + Array("hello".utf8))
        await assertClosed(raw, by: target, loggedWith: ["multistream", "newline"])
        try await assertStillServes(target)
    }

    func testOverlongMultistreamLineClosesConnection() async throws {
        let target = try await startTarget()
        let raw = try await connectRaw(target)
        XCTAssertGreaterThan(5000, MultistreamSelect.maxMessageLength)
        // Only the prefix: the node must refuse the length without waiting for the body.
        try await raw.send(Varint.encode(5000) + Array("/multistream".utf8))
        await assertClosed(raw, by: target, loggedWith: ["multistream", "5000", "exceeds"])
        try await assertStillServes(target)
    }

    // MARK: Noise

    func testOversizedNoiseFrameClosesConnection() async throws {
        let target = try await startTarget()
        let raw = try await connectRaw(target)
        try await negotiateNoise(raw)
        XCTAssertGreaterThan(0xFFFF, Libp2pNoiseHandshake.maxHandshakeFrameLength)
        try await raw.send([0xFF, 0xFF] + [UInt8](repeating: 0, count: 100))
        await assertClosed(raw, by: target, loggedWith: ["noise", "frame", "65535"])
        try await assertStillServes(target)
    }

    func testTruncatedNoiseMessageClosesConnection() async throws {
        let target = try await startTarget()
        let raw = try await connectRaw(target)
        try await negotiateNoise(raw)
        // A complete frame of 10 bytes, where `-> e` needs a 32-byte key.
        try await raw.send(Self.noiseFrame([UInt8](repeating: 7, count: 10)))
        await assertClosed(raw, by: target, loggedWith: ["noise", "truncated"])
        try await assertStillServes(target)
    }

    /// Control for the test below: the hand-made handshake is accepted when it is signed right,
    /// so that the rejection really is about the signature.
    func testHandMadeHandshakeWithValidSignatureIsAccepted() async throws {
        let target = try await startTarget()
        let raw = try await connectRaw(target)
        try await negotiateNoise(raw)
        try await sendHandshake(raw, signWrongKey: false)
        // The node answers with the encrypted muxer negotiation and keeps the socket open.
        let frame = try await raw.awaitNoiseFrame(timeout: Self.reactionTime)
        XCTAssertGreaterThan(frame.count, 16)
        XCTAssertFalse(raw.isClosed)
        XCTAssertTrue(target.log.records(atLeast: .warning, containing: ["closing connection"]).isEmpty, target.log.dump)
    }

    func testBadIdentitySignatureClosesConnection() async throws {
        let target = try await startTarget()
        let raw = try await connectRaw(target)
        try await negotiateNoise(raw)
        try await sendHandshake(raw, signWrongKey: true)
        await assertClosed(raw, by: target, loggedWith: ["noise", "signature"])
        try await assertStillServes(target)
    }

    func testDialingTheWrongIdentityFails() async throws {
        let target = try await startTarget()
        let dialerLog = LogCapture()
        let dialer = makeNode(dialerLog, label: "dialer")
        let someoneElse = PrivateKey.generate().peerID
        let wrong = try Multiaddr("\(target.address)/p2p/\(someoneElse)")
        do {
            let conn = try await dialer.dial(wrong)
            XCTFail("dialing \(someoneElse) reached \(conn.remotePeer?.description ?? "?") and was accepted")
        } catch {
            let text = "\(error)"
            XCTAssertTrue(text.contains("dialed \(someoneElse) but the remote is \(target.node.peerID)"), text)
        }
        XCTAssertFalse(dialerLog.records(atLeast: .warning, containing: ["closing connection", "dialed", "\(someoneElse)", "but the remote is"]).isEmpty,
                       dialerLog.dump)
        XCTAssertTrue(dialer.swarm.connections.isEmpty)
        // The target saw its peer hang up and goes on serving.
        let targetDropped = await eventually { target.node.swarm.connections.isEmpty }
        XCTAssertTrue(targetDropped)
        try await assertStillServes(target)
        // And the same dialer reaches it under its real identity.
        let conn = try await dialer.dial(try target.fullAddress)
        let rtts = try await dialer.ping(conn)
        XCTAssertEqual(rtts.count, 1)
    }

    // MARK: Yamux

    func testInvalidYamuxVersionClosesConnection() async throws {
        let target = try await startTarget()
        let raw = try await connectRaw(target)
        let machine = try await establish(raw)
        let up = await eventually { target.node.swarm.connections.count == 1 }
        XCTAssertTrue(up, "the node did not establish the raw connection")
        try await raw.send(try sealed(Self.yamuxHeader(version: 1, type: 0, stream: 1, length: 0), by: machine))
        await assertClosed(raw, by: target, loggedWith: ["yamux", "version"])
        let dropped = await eventually { target.node.swarm.connections.isEmpty }
        XCTAssertTrue(dropped, "the node still lists the closed connection")
        try await assertStillServes(target)
    }

    func testDataBeyondTheWindowClosesConnection() async throws {
        let target = try await startTarget()
        let raw = try await connectRaw(target)
        var machine = try await establish(raw)
        let (id, actions) = try machine.openStream()
        try await carryOut(actions, on: raw)
        let window = YamuxConfig().receiveWindow
        let length = UInt32(300 * 1024)
        XCTAssertGreaterThan(length, window)
        var frame = Self.yamuxHeader(type: 0, stream: id, length: length)
        frame.writeBytes([UInt8](repeating: 0xAB, count: 4096))
        try await raw.send(try sealed(frame, by: machine))
        await assertClosed(raw, by: target, loggedWith: ["yamux", "window", "\(length)"])
        let dropped = await eventually { target.node.swarm.connections.isEmpty }
        XCTAssertTrue(dropped, "the node still lists the closed connection")
        try await assertStillServes(target)
    }

    // MARK: Length-prefixed messages on streams

    /// A stream-level violation (an identify push claiming 1 MiB) resets that stream only: the
    /// connection stays up and still carries a ping.
    func testOversizedIdentifyPushResetsOnlyTheStream() async throws {
        let target = try await startTarget()
        let pusherLog = LogCapture()
        let pusher = makeNode(pusherLog, label: "pusher")
        let conn = try await pusher.dial(try target.fullAddress)
        let stream = try await conn.openStream([IdentifyInfo.pushProtocolID])
        // The prefix claims 1 MiB; a little of the body follows, and the stream stays open.
        try await stream.write(Varint.encode(1 << 20) + [UInt8](repeating: 0x0A, count: 200))

        let outcome: String = try await within(.seconds(5), "the node to refuse the push") {
            do {
                while try await stream.read() != nil {}
                return "end of stream"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertEqual(outcome, "\(StreamError.reset)", "the node should reset the push stream")
        let logged = await eventually {
            !target.log.records(atLeast: .info, containing: [IdentifyInfo.pushProtocolID, "stream failed", "exceeds"]).isEmpty
        }
        XCTAssertTrue(logged, target.log.dump)
        XCTAssertTrue(target.log.records(atLeast: .warning, containing: ["closing connection"]).isEmpty, target.log.dump)

        // The connection itself is untouched.
        let rtts = try await pusher.ping(conn, count: 2)
        XCTAssertEqual(rtts.count, 2)
        XCTAssertEqual(target.node.swarm.connections(to: pusher.peerID).count, 1)
        try await assertStillServes(target)
    }

    /// A peer that opens a stream and never proposes a protocol gets that stream reset once the
    /// negotiation timeout passes; the connection stays up.
    func testSilentInboundStreamIsResetAfterNegotiationTimeout() async throws {
        let target = try await startTarget { $0.swarm.negotiationTimeout = .milliseconds(300) }
        let raw = try await connectRaw(target)
        var machine = try await establish(raw)
        let (id, actions) = try machine.openStream()
        try await carryOut(actions, on: raw)

        let clock = ContinuousClock()
        let deadline = clock.now + Self.reactionTime
        var wasReset = false
        while !wasReset, clock.now < deadline {
            let bytes = try await raw.awaitAnyBytes(timeout: deadline - clock.now)
            let actions = machine.receive(ByteBuffer(bytes: bytes))
            wasReset = actions.contains(.stream(.reset(id)))
            try await carryOut(actions, on: raw)
        }
        XCTAssertTrue(wasReset, "the node never reset the silent stream")
        let logged = !target.log.records(atLeast: .debug, containing: ["negotiation failed", "timed out"]).isEmpty
        XCTAssertTrue(logged, target.log.dump)
        XCTAssertFalse(raw.isClosed)
        XCTAssertEqual(target.node.swarm.connections.count, 1)
    }
}
