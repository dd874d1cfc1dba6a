import CairnCrypto
import NIOCore

/// Why a connection was closed. Every case is logged by the node with the remote's address.
public enum ConnectionError: Error, Equatable, Sendable, CustomStringConvertible {
    case securityNegotiation(MultistreamSelect.Failure)
    case noise(NoiseError)
    case muxerNegotiation(MultistreamSelect.Failure)
    case yamux(YamuxError)
    case handshakeTimeout
    case closed
    /// Closed by this node's resource manager (the reason names the limit).
    case refused(String)

    public var description: String {
        switch self {
        case .securityNegotiation(let f): return "security negotiation failed: \(f)"
        case .noise(let e): return "noise: \(e)"
        case .muxerNegotiation(let f): return "muxer negotiation failed: \(f)"
        case .yamux(let e): return "yamux: \(e)"
        case .handshakeTimeout: return "connection upgrade timed out"
        case .closed: return "connection closed"
        case .refused(let why): return "refused by the resource manager: \(why)"
        }
    }
}

/// A raw byte-stream connection upgraded to a secure, multiplexed libp2p connection:
/// multistream-select `/noise`, the Noise XX handshake, multistream-select `/yamux/1.0.0` inside
/// the encrypted channel, then a Yamux session. Sans-I/O: callers feed bytes and commands and
/// carry out the returned actions.
///
/// `role` is the security/muxer role (who proposes, who starts the handshake), normally the TCP
/// dialer; it is kept apart from the socket's direction so simultaneous open can choose it.
public struct SecureConnectionMachine: Sendable {
    public enum Role: Sendable { case initiator, responder }

    public enum Action: Sendable, Equatable {
        /// Bytes for the socket.
        case send(ByteBuffer)
        /// The remote is authenticated and the session is ready for streams.
        case established(remote: PeerID)
        case stream(YamuxSession.Event)
        /// Close the socket; the error says why (`.closed` after a graceful GoAway).
        case close(ConnectionError)
    }

    enum State: Sendable {
        case idle
        case securityNegotiation(MultistreamSelect)
        case handshake(Libp2pNoiseHandshake)
        case muxerNegotiation(MultistreamSelect, NoiseTransport)
        case established(NoiseTransport, YamuxSession)
        case closed
    }

    public let role: Role
    let identity: PrivateKey
    let expectedRemote: PeerID?
    let yamuxConfig: YamuxConfig
    var state: State = .idle
    public private(set) var remotePeer: PeerID?

    public init(role: Role, identity: PrivateKey, expectedRemote: PeerID? = nil, yamuxConfig: YamuxConfig = YamuxConfig()) {
        self.role = role
        self.identity = identity
        self.expectedRemote = expectedRemote
        self.yamuxConfig = yamuxConfig
    }

    public var isEstablished: Bool { if case .established = state { return true }; return false }
    public var isClosed: Bool { if case .closed = state { return true }; return false }

    public mutating func start() -> [Action] {
        guard case .idle = state else { return [] }
        var ms = role == .initiator
            ? MultistreamSelect.dialer([Libp2pNoiseHandshake.protocolID])
            : MultistreamSelect.listener([Libp2pNoiseHandshake.protocolID])
        let first = ms.start()
        state = .securityNegotiation(ms)
        return [.send(ByteBuffer(bytes: first))]
    }

    public mutating func receive(_ bytes: ByteBuffer) -> [Action] {
        var actions: [Action] = []
        do {
            try feed(bytes, &actions)
        } catch {
            fail(error, &actions)
        }
        return actions
    }

    /// The handshake did not finish in time (the owner runs the timer).
    public mutating func handshakeTimedOut() -> [Action] {
        switch state {
        case .established, .closed: return []
        default:
            var actions: [Action] = []
            fail(.handshakeTimeout, &actions)
            return actions
        }
    }

    private mutating func fail(_ error: ConnectionError, _ actions: inout [Action]) {
        if case .established(var transport, var session) = state, case .yamux(let y) = error {
            var frames = ByteBuffer()
            session.goAway(code: y.goAwayCode, into: &frames)
            var out = ByteBuffer()
            if (try? transport.seal(frames, into: &out)) != nil { actions.append(.send(out)) }
        }
        state = .closed
        actions.append(.close(error))
    }

    private mutating func feed(_ bytes: ByteBuffer, _ actions: inout [Action]) throws(ConnectionError) {
        switch state {
        case .idle, .closed:
            return
        case .securityNegotiation(var ms):
            let out: MultistreamSelect.Output
            do { out = try ms.receive(Array(bytes.readableBytesView)) } catch { throw .securityNegotiation(error) }
            if !out.send.isEmpty { actions.append(.send(ByteBuffer(bytes: out.send))) }
            guard let agreed = out.agreed else { state = .securityNegotiation(ms); return }
            _ = agreed.protocolID  // only /noise is offered or accepted
            var hs = Libp2pNoiseHandshake(role: role == .initiator ? .initiator : .responder,
                                          identity: identity, expectedRemote: expectedRemote)
            do {
                let first = try hs.start()
                if first.readableBytes > 0 { actions.append(.send(first)) }
            } catch { throw .noise(error) }
            state = .handshake(hs)
            if !agreed.remainder.isEmpty { try feed(ByteBuffer(bytes: agreed.remainder), &actions) }
        case .handshake(var hs):
            let out: Libp2pNoiseHandshake.Output
            do { out = try hs.receive(bytes) } catch { throw .noise(error) }
            if out.send.readableBytes > 0 { actions.append(.send(out.send)) }
            guard let (remote, transport, plaintext) = out.established else { state = .handshake(hs); return }
            remotePeer = remote
            var ms = role == .initiator
                ? MultistreamSelect.dialer([YamuxSession.protocolID])
                : MultistreamSelect.listener([YamuxSession.protocolID])
            var t = transport
            let hello = ms.start()
            try Self.sealAndSend(ByteBuffer(bytes: hello), with: &t, &actions)
            state = .muxerNegotiation(ms, t)
            if plaintext.readableBytes > 0 { try feedPlaintext(plaintext, &actions) }
        case .muxerNegotiation(_, var t), .established(var t, _):
            var plaintext = ByteBuffer()
            do { try t.open(bytes, into: &plaintext) } catch { throw .noise(error) }
            replaceTransport(t)
            if plaintext.readableBytes > 0 { try feedPlaintext(plaintext, &actions) }
        }
    }

    private mutating func replaceTransport(_ t: NoiseTransport) {
        switch state {
        case .muxerNegotiation(let ms, _): state = .muxerNegotiation(ms, t)
        case .established(_, let s): state = .established(t, s)
        default: break
        }
    }

    private mutating func feedPlaintext(_ plaintext: ByteBuffer, _ actions: inout [Action]) throws(ConnectionError) {
        switch state {
        case .muxerNegotiation(var ms, var t):
            let out: MultistreamSelect.Output
            do { out = try ms.receive(Array(plaintext.readableBytesView)) } catch { throw .muxerNegotiation(error) }
            if !out.send.isEmpty { try Self.sealAndSend(ByteBuffer(bytes: out.send), with: &t, &actions) }
            guard let agreed = out.agreed else { state = .muxerNegotiation(ms, t); return }
            _ = agreed.protocolID
            let session = YamuxSession(role: role == .initiator ? .client : .server, config: yamuxConfig)
            state = .established(t, session)
            actions.append(.established(remote: remotePeer!))
            if !agreed.remainder.isEmpty { try feedPlaintext(ByteBuffer(bytes: agreed.remainder), &actions) }
        case .established:
            let (events, finished) = try withSession(&actions) { (session, frames) throws(YamuxError) in
                let events = try session.receive(plaintext, into: &frames)
                return (events, session.goAwayReceived && session.openStreamCount == 0)
            }
            actions += events.map { .stream($0) }
            if finished {
                state = .closed
                actions.append(.close(.closed))
            }
        default:
            return
        }
    }

    // MARK: Commands on the established session

    /// Runs `body` against the Yamux session and encrypts whatever frames it produced.
    private mutating func withSession<R>(_ actions: inout [Action], _ body: (inout YamuxSession, inout ByteBuffer) throws(YamuxError) -> R) throws(ConnectionError) -> R {
        guard case .established(var t, var session) = state else { throw .closed }
        var frames = ByteBuffer()
        let result: R
        do { result = try body(&session, &frames) } catch {
            state = .established(t, session)
            throw .yamux(error)
        }
        if frames.readableBytes > 0 { try Self.sealAndSend(frames, with: &t, &actions) }
        state = .established(t, session)
        return result
    }

    /// Encrypts `plaintext` into Noise frames and queues them for the socket.
    private static func sealAndSend(_ plaintext: ByteBuffer, with transport: inout NoiseTransport, _ actions: inout [Action]) throws(ConnectionError) {
        var cipher = ByteBuffer()
        do { try transport.seal(plaintext, into: &cipher) } catch { throw .noise(error) }
        actions.append(.send(cipher))
    }

    public mutating func openStream() throws(ConnectionError) -> (UInt32, [Action]) {
        var actions: [Action] = []
        let id = try withSession(&actions) { (s, out) throws(YamuxError) in try s.openStream(into: &out) }
        return (id, actions)
    }

    /// Queues data on a stream. The result says how many bytes are still waiting for window.
    public mutating func write(_ id: UInt32, _ data: ByteBuffer) throws(ConnectionError) -> (pending: Int, actions: [Action]) {
        var actions: [Action] = []
        let pending = try withSession(&actions) { (s, out) throws(YamuxError) in
            try s.write(id, data, into: &out)
            return s.pendingBytes(id)
        }
        return (pending, actions)
    }

    public mutating func closeWrite(_ id: UInt32) -> [Action] {
        var actions: [Action] = []
        try? withSession(&actions) { (s, out) throws(YamuxError) in s.closeWrite(id, into: &out) }
        return actions
    }

    public mutating func reset(_ id: UInt32) -> [Action] {
        var actions: [Action] = []
        try? withSession(&actions) { (s, out) throws(YamuxError) in s.reset(id, into: &out) }
        return actions
    }

    /// The application consumed `count` bytes of stream `id`; `now` (monotonic seconds) lets
    /// Yamux tune the stream's window.
    public mutating func consumed(_ id: UInt32, _ count: Int, now: Double? = nil) -> [Action] {
        var actions: [Action] = []
        try? withSession(&actions) { (s, out) throws(YamuxError) in s.consumed(id, count, now: now, into: &out) }
        return actions
    }

    /// The connection's round trip as the owner measured it (a Yamux ping), for window tuning.
    public mutating func setRoundTrip(_ seconds: Double) {
        guard case .established(let t, var session) = state else { return }
        session.rtt = seconds
        state = .established(t, session)
    }

    public mutating func ping(_ opaque: UInt32) -> [Action] {
        var actions: [Action] = []
        try? withSession(&actions) { (s, out) throws(YamuxError) in s.ping(opaque, into: &out) }
        return actions
    }

    /// Graceful close: GoAway, then close.
    public mutating func close() -> [Action] {
        var actions: [Action] = []
        try? withSession(&actions) { (s, out) throws(YamuxError) in s.goAway(code: 0, into: &out) }
        state = .closed
        actions.append(.close(.closed))
        return actions
    }

    public func pendingBytes(_ id: UInt32) -> Int {
        if case .established(_, let s) = state { return s.pendingBytes(id) }
        return 0
    }
}
