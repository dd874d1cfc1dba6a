import NIOCore

public enum YamuxError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidVersion(UInt8)
    case invalidType(UInt8)
    case invalidStreamID(UInt32, String)
    case duplicateStream(UInt32)
    case windowExceeded(stream: UInt32, length: UInt32, window: UInt32)
    case windowOverflow(UInt32)
    case streamClosed(UInt32)
    case unknownStream(UInt32)
    case goingAway
    case streamIDsExhausted

    public var description: String {
        switch self {
        case .invalidVersion(let v): return "yamux frame version \(v) is not 0"
        case .invalidType(let t): return "yamux frame type \(t) is unknown"
        case .invalidStreamID(let id, let why): return "yamux stream ID \(id) invalid: \(why)"
        case .duplicateStream(let id): return "yamux SYN for existing stream \(id)"
        case .windowExceeded(let s, let l, let w): return "yamux stream \(s) sent \(l) bytes over a window of \(w)"
        case .windowOverflow(let s): return "yamux window update overflows stream \(s)"
        case .streamClosed(let s): return "yamux stream \(s) is closed for writing"
        case .unknownStream(let s): return "yamux stream \(s) does not exist"
        case .goingAway: return "yamux session is going away"
        case .streamIDsExhausted: return "yamux stream IDs exhausted"
        }
    }

    /// The GoAway code to send when this error ends the session.
    var goAwayCode: UInt32 { 1 }  // protocol error
}

public struct YamuxConfig: Sendable {
    /// Initial (and target) receive window per stream; the spec's 256 KiB.
    public var receiveWindow: UInt32 = 256 * 1024
    /// Most concurrently open streams the remote may open; further SYNs are reset.
    public var maxInboundStreams = 256
    /// Largest data frame this side sends.
    public var maxDataFrame = 64 * 1024
    /// Receive-window auto-tuning (as go-yamux): when a stream's reader used up half its window
    /// in less than four round trips, the window is what holds the sender back, so it doubles, up
    /// to this. At `receiveWindow` there is no tuning. It needs the round trip (`rtt`) and the
    /// time at each `consumed`.
    public var maxReceiveWindow: UInt32 = 16 * 1024 * 1024
    /// Most growth past `receiveWindow` granted over all of a session's streams: what auto-tuning
    /// can add to what a peer can make us buffer on one connection.
    public var maxWindowGrowth = 8 * 1024 * 1024

    public init() {}
}

/// One Yamux session (libp2p/specs yamux/README.md, hashicorp/yamux spec.md) as a sans-I/O state
/// machine. Inputs are received bytes and commands; outputs are frames appended to an outbound
/// buffer and events for the connection's owner. The receive window bounds what a peer can make
/// us buffer: data over the window closes the session with a protocol error.
public struct YamuxSession: Sendable {
    public static let protocolID = "/yamux/1.0.0"
    static let headerLength = 12

    public enum Role: Sendable { case client, server }

    enum FrameType: UInt8 { case data = 0, windowUpdate = 1, ping = 2, goAway = 3 }
    struct Flags: OptionSet {
        let rawValue: UInt16
        static let syn = Flags(rawValue: 1)
        static let ack = Flags(rawValue: 2)
        static let fin = Flags(rawValue: 4)
        static let rst = Flags(rawValue: 8)
    }

    public enum Event: Sendable, Equatable {
        case streamOpened(UInt32)
        case data(UInt32, ByteBuffer)
        /// The remote half-closed the stream (FIN): no more data will arrive.
        case remoteClosed(UInt32)
        case reset(UInt32)
        /// Queued bytes left for the network; writers waiting on this stream may go on.
        case flushed(UInt32)
        case pong(UInt32)
        case goAway(UInt32)
    }

    struct StreamState: Sendable {
        var sendWindow: UInt32
        var receiveWindow: UInt32
        /// Bytes the application consumed and that have not yet been returned as window.
        var consumedUncredited: UInt32 = 0
        /// The window this stream is tuned to (grows from `receiveWindow`).
        var target: UInt32 = 0
        /// When the last window update went out (auto-tuning's clock).
        var epochStart: Double?
        var pending = ByteBuffer()
        var finQueued = false
        var localClosed = false
        var remoteClosed = false
        var inbound: Bool
    }

    public let role: Role
    public let config: YamuxConfig
    var streams: [UInt32: StreamState] = [:]
    var nextStreamID: UInt32
    var highestRemoteID: UInt32 = 0
    var inbound = ByteBuffer()
    /// The connection's round trip, measured by the owner (Yamux ping): auto-tuning needs it.
    public var rtt: Double?
    /// Window granted past `receiveWindow` over the live streams.
    public private(set) var windowGrowth = 0
    public private(set) var goAwayReceived = false
    public private(set) var goAwaySent = false

    public init(role: Role, config: YamuxConfig = YamuxConfig()) {
        self.role = role
        self.config = config
        self.nextStreamID = role == .client ? 1 : 2
    }

    public var openStreamCount: Int { streams.count }
    public func hasStream(_ id: UInt32) -> Bool { streams[id] != nil }
    /// Bytes queued on a stream that its send window has not yet let out.
    public func pendingBytes(_ id: UInt32) -> Int { streams[id]?.pending.readableBytes ?? 0 }
    public func sendWindow(_ id: UInt32) -> UInt32? { streams[id]?.sendWindow }
    public func receiveWindow(_ id: UInt32) -> UInt32? { streams[id]?.receiveWindow }
    /// The window a stream is tuned to (its initial window until auto-tuning grows it).
    public func tunedWindow(_ id: UInt32) -> UInt32? { streams[id].map { max($0.target, config.receiveWindow) } }

    /// Forgets a stream, giving back the window growth it was granted.
    private mutating func dropStream(_ id: UInt32) {
        guard let s = streams.removeValue(forKey: id) else { return }
        if s.target > config.receiveWindow { windowGrowth -= Int(s.target - config.receiveWindow) }
    }

    static func writeHeader(_ type: FrameType, _ flags: Flags, _ stream: UInt32, _ length: UInt32, into out: inout ByteBuffer) {
        out.writeInteger(UInt8(0))
        out.writeInteger(type.rawValue)
        out.writeInteger(flags.rawValue)
        out.writeInteger(stream)
        out.writeInteger(length)
    }

    // MARK: Commands

    public mutating func openStream(into out: inout ByteBuffer) throws(YamuxError) -> UInt32 {
        guard !goAwayReceived, !goAwaySent else { throw .goingAway }
        guard nextStreamID < UInt32.max - 1 else { throw .streamIDsExhausted }
        let id = nextStreamID
        nextStreamID += 2
        streams[id] = StreamState(sendWindow: 256 * 1024, receiveWindow: config.receiveWindow, inbound: false)
        let extra = config.receiveWindow > 256 * 1024 ? config.receiveWindow - 256 * 1024 : 0
        Self.writeHeader(.windowUpdate, .syn, id, extra, into: &out)
        return id
    }

    public mutating func write(_ id: UInt32, _ data: ByteBuffer, into out: inout ByteBuffer) throws(YamuxError) {
        guard var s = streams[id] else { throw .unknownStream(id) }
        guard !s.localClosed, !s.finQueued else { throw .streamClosed(id) }
        if s.pending.readableBytes == 0 {
            s.pending = data  // nothing queued: keep the caller's buffer (flushed as slices of it)
        } else {
            var data = data
            s.pending.writeBuffer(&data)
        }
        streams[id] = s
        flush(id, into: &out)
    }

    /// Half-closes our side: FIN goes out after any queued data.
    public mutating func closeWrite(_ id: UInt32, into out: inout ByteBuffer) {
        guard var s = streams[id], !s.localClosed, !s.finQueued else { return }
        s.finQueued = true
        streams[id] = s
        flush(id, into: &out)
    }

    public mutating func reset(_ id: UInt32, into out: inout ByteBuffer) {
        guard streams[id] != nil else { return }
        dropStream(id)
        Self.writeHeader(.windowUpdate, .rst, id, 0, into: &out)
    }

    /// The application has consumed `count` received bytes: return them as window once at least
    /// half the window has been used, so updates are batched. `now` (seconds, any monotonic
    /// origin) drives auto-tuning: a window used up within four round trips doubles.
    public mutating func consumed(_ id: UInt32, _ count: Int, now: Double? = nil, into out: inout ByteBuffer) {
        guard var s = streams[id], !s.remoteClosed else { return }
        let target = max(s.target, config.receiveWindow)
        s.consumedUncredited += UInt32(count)
        if s.consumedUncredited >= target / 2 {
            var grow: UInt32 = 0
            if let now, let rtt, let start = s.epochStart, now - start < 4 * rtt, target < config.maxReceiveWindow {
                let room = max(0, config.maxWindowGrowth - windowGrowth)
                grow = UInt32(min(Int(min(target, config.maxReceiveWindow - target)), room))
                windowGrowth += Int(grow)
            }
            s.target = target + grow
            if let now { s.epochStart = now }
            let credit = s.consumedUncredited + grow
            Self.writeHeader(.windowUpdate, [], id, credit, into: &out)
            s.receiveWindow += credit
            s.consumedUncredited = 0
        }
        streams[id] = s
    }

    public mutating func ping(_ opaque: UInt32, into out: inout ByteBuffer) {
        Self.writeHeader(.ping, .syn, 0, opaque, into: &out)
    }

    public mutating func goAway(code: UInt32 = 0, into out: inout ByteBuffer) {
        guard !goAwaySent else { return }
        goAwaySent = true
        Self.writeHeader(.goAway, [], 0, code, into: &out)
    }

    private mutating func flush(_ id: UInt32, into out: inout ByteBuffer) {
        guard var s = streams[id] else { return }
        var sent = false
        while s.pending.readableBytes > 0, s.sendWindow > 0 {
            let n = min(s.pending.readableBytes, Int(s.sendWindow), config.maxDataFrame)
            var chunk = s.pending.readSlice(length: n)!
            Self.writeHeader(.data, [], id, UInt32(n), into: &out)
            out.writeBuffer(&chunk)
            s.sendWindow -= UInt32(n)
            sent = true
        }
        if s.pending.readableBytes == 0 {
            s.pending = ByteBuffer()
            if s.finQueued && !s.localClosed {
                Self.writeHeader(.windowUpdate, .fin, id, 0, into: &out)
                s.localClosed = true
            }
        } else if sent, s.pending.readerIndex > 1 << 20 {
            s.pending.discardReadBytes()
        }
        if s.localClosed && s.remoteClosed {
            dropStream(id)
        } else {
            streams[id] = s
        }
    }

    // MARK: Input

    /// Feeds received bytes. Frames to send go to `out`; returns the events, in order.
    /// A thrown error is a session-level protocol error: the caller sends GoAway and closes.
    public mutating func receive(_ bytes: ByteBuffer, into out: inout ByteBuffer) throws(YamuxError) -> [Event] {
        if inbound.readableBytes == 0 {
            inbound = bytes  // the usual case: frames are read as slices of the received buffer, no copy
        } else {
            var bytes = bytes
            inbound.writeBuffer(&bytes)
        }
        var events: [Event] = []
        while inbound.readableBytes >= Self.headerLength {
            let start = inbound.readerIndex
            let version = inbound.getInteger(at: start, as: UInt8.self)!
            let rawType = inbound.getInteger(at: start + 1, as: UInt8.self)!
            let flags = Flags(rawValue: inbound.getInteger(at: start + 2, as: UInt16.self)!)
            let id = inbound.getInteger(at: start + 4, as: UInt32.self)!
            let length = inbound.getInteger(at: start + 8, as: UInt32.self)!
            guard version == 0 else { throw .invalidVersion(version) }
            guard let type = FrameType(rawValue: rawType) else { throw .invalidType(rawType) }
            if type == .data {
                // Bound the payload before waiting for it: never more than the window allows.
                let limit = streams[id]?.receiveWindow ?? config.receiveWindow
                guard length <= limit else { throw .windowExceeded(stream: id, length: length, window: limit) }
                guard inbound.readableBytes >= Self.headerLength + Int(length) else { break }
            }
            inbound.moveReaderIndex(forwardBy: Self.headerLength)
            switch type {
            case .ping:
                guard id == 0 else { throw .invalidStreamID(id, "ping on a stream") }
                if flags.contains(.syn) {
                    Self.writeHeader(.ping, .ack, 0, length, into: &out)
                } else if flags.contains(.ack) {
                    events.append(.pong(length))
                }
            case .goAway:
                guard id == 0 else { throw .invalidStreamID(id, "go-away on a stream") }
                goAwayReceived = true
                events.append(.goAway(length))
            case .data, .windowUpdate:
                guard id != 0 else { throw .invalidStreamID(0, "stream frame on the session ID") }
                let payload = type == .data ? inbound.readSlice(length: Int(length))! : nil
                try handleStreamFrame(type, flags, id, length, payload, &events, &out)
            }
        }
        // Drop the reference when everything was read: data events hold slices of this storage,
        // and a later write into it would copy.
        if inbound.readableBytes == 0 { inbound = ByteBuffer() } else if inbound.readerIndex > 1 << 20 { inbound.discardReadBytes() }
        return events
    }

    private mutating func handleStreamFrame(_ type: FrameType, _ flags: Flags, _ id: UInt32, _ length: UInt32,
                                            _ payload: ByteBuffer?, _ events: inout [Event], _ out: inout ByteBuffer) throws(YamuxError) {
        if flags.contains(.syn) {
            let remoteParity: UInt32 = role == .client ? 0 : 1
            guard id % 2 == remoteParity else { throw .invalidStreamID(id, "wrong parity for a remote stream") }
            guard streams[id] == nil else { throw .duplicateStream(id) }
            guard id > highestRemoteID else { throw .invalidStreamID(id, "stream ID reused") }
            highestRemoteID = id
            let inboundCount = streams.values.lazy.filter { $0.inbound }.count
            if goAwaySent || inboundCount >= config.maxInboundStreams {
                Self.writeHeader(.windowUpdate, .rst, id, 0, into: &out)
                return
            }
            streams[id] = StreamState(sendWindow: 256 * 1024, receiveWindow: config.receiveWindow, inbound: true)
            let extra = config.receiveWindow > 256 * 1024 ? config.receiveWindow - 256 * 1024 : 0
            Self.writeHeader(.windowUpdate, .ack, id, extra, into: &out)
            events.append(.streamOpened(id))
        }
        guard var s = streams[id] else {
            return  // a frame for a stream already closed or reset: late, harmless, dropped
        }
        if flags.contains(.rst) {
            dropStream(id)
            events.append(.reset(id))
            return
        }
        switch type {
        case .windowUpdate:
            let (sum, overflow) = s.sendWindow.addingReportingOverflow(length)
            guard !overflow else { throw .windowOverflow(id) }
            s.sendWindow = sum
        case .data:
            guard length <= s.receiveWindow else { throw .windowExceeded(stream: id, length: length, window: s.receiveWindow) }
            if s.remoteClosed { throw .streamClosed(id) }
            s.receiveWindow -= length
            if length > 0 { events.append(.data(id, payload!)) }
        default:
            break
        }
        if flags.contains(.fin), !s.remoteClosed {
            s.remoteClosed = true
            events.append(.remoteClosed(id))
        }
        let hadPending = s.pending.readableBytes > 0
        streams[id] = s
        if type == .windowUpdate, hadPending {
            flush(id, into: &out)
            if pendingBytes(id) == 0 { events.append(.flushed(id)) }
        } else if s.localClosed && s.remoteClosed {
            dropStream(id)
        }
    }
}
