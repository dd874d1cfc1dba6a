import CairnCore
import NIOCore

public enum StreamError: Error, Equatable, Sendable, CustomStringConvertible {
    case reset
    case connectionClosed(String)
    case closedForWriting
    case messageTooLarge(Int)
    case unexpectedEOF
    case negotiation(MultistreamSelect.Failure)
    case timeout
    case protocolViolation(String)
    /// The resource manager refused the stream.
    case refused(String)

    public var description: String {
        switch self {
        case .reset: return "stream reset"
        case .connectionClosed(let r): return "connection closed: \(r)"
        case .closedForWriting: return "stream closed for writing"
        case .messageTooLarge(let n): return "message exceeds \(n) bytes"
        case .unexpectedEOF: return "stream ended early"
        case .negotiation(let f): return "protocol negotiation: \(f)"
        case .timeout: return "stream timed out"
        case .protocolViolation(let s): return s
        case .refused(let why): return "refused by the resource manager: \(why)"
        }
    }
}

/// One Yamux stream as the application sees it: async reads and writes with back-pressure.
/// Its state lives on the connection's event loop; public methods hop there.
///
/// Received bytes stay in `inbound` until read; only then is the window returned to the sender,
/// so a slow reader bounds what the peer can make us buffer to one window.
public final class MuxedStream: @unchecked Sendable, CustomStringConvertible {
    public let id: UInt32
    public let connection: Connection
    public let isInbound: Bool
    /// The protocol agreed by multistream-select, once negotiated.
    public internal(set) var protocolID: String?

    // Event-loop confined.
    var inbound = ByteQueue()
    var remoteClosed = false
    var localClosed = false
    var failure: StreamError?
    var readWaiter: EventLoopPromise<Void>?
    /// Bytes at the front of `inbound` whose window was already returned (put back by `unread`).
    var creditedInbound = 0
    /// Push mode (a relayed circuit runs over this stream): received bytes go straight here.
    var sink: ((ByteBuffer) -> Void)?
    var onSinkEnd: ((StreamError?) -> Void)?
    var writeWaiters: [EventLoopPromise<Void>] = []

    var eventLoop: EventLoop { connection.eventLoop }

    /// The resource manager's grant for this stream (released when the stream ends).
    let resourceID: ResourceManager.StreamID?

    init(id: UInt32, connection: Connection, isInbound: Bool, resourceID: ResourceManager.StreamID? = nil) {
        self.resourceID = resourceID
        self.id = id
        self.connection = connection
        self.isInbound = isInbound
    }

    public var description: String { "stream \(id) \(protocolID ?? "?") on \(connection)" }

    // MARK: Called by the connection on its event loop

    func received(_ data: ByteBuffer) {
        if let sink {
            sink(data)
            connection.streamConsumed(id, data.readableBytes)
            return
        }
        inbound.append(data)
        wakeReader()
    }

    func receivedFIN() {
        remoteClosed = true
        endSink(nil)
        wakeReader()
    }

    func fail(_ error: StreamError) {
        if failure == nil { failure = error }
        endSink(error)
        wakeReader()
        let waiters = writeWaiters
        writeWaiters = []
        waiters.forEach { $0.fail(error) }
    }

    func flushed() {
        let waiters = writeWaiters
        writeWaiters = []
        waiters.forEach { $0.succeed() }
    }

    private func endSink(_ error: StreamError?) {
        guard let end = onSinkEnd else { return }
        onSinkEnd = nil
        sink = nil
        end(error)
    }

    /// Switches to push mode (event loop): what is buffered and everything received later goes
    /// to `sink` at once, its window returned as it is delivered (the consumer, a relayed
    /// connection, has windows of its own); `onEnd` runs once at FIN (nil), reset or failure.
    func divert(to sink: @escaping (ByteBuffer) -> Void, onEnd: @escaping (StreamError?) -> Void) {
        eventLoop.assertInEventLoop()
        if inbound.readableBytes > 0 {
            let uncredited = inbound.readableBytes - creditedInbound
            let pending = inbound.takeAll()
            creditedInbound = 0
            pending.forEach(sink)
            if uncredited > 0 { connection.streamConsumed(id, uncredited) }
        }
        if let failure { onEnd(failure); return }
        if remoteClosed { onEnd(nil); return }
        self.sink = sink
        self.onSinkEnd = onEnd
    }

    private func wakeReader() {
        if let w = readWaiter {
            readWaiter = nil
            w.succeed()
        }
    }

    // MARK: Reading

    private func readOnLoop(max: Int, _ call: PendingCall) -> EventLoopFuture<ByteBuffer?> {
        eventLoop.assertInEventLoop()
        if call.cancelled { return eventLoop.makeFailedFuture(CancellationError()) }
        if inbound.readableBytes > 0 {
            // One queued chunk (or a slice of it): possibly fewer bytes than asked for, and only
            // those are consumed.
            let chunk = inbound.read(upTo: max)
            let n = chunk.readableBytes
            let credited = Swift.min(n, creditedInbound)
            creditedInbound -= credited
            if n > credited { connection.streamConsumed(id, n - credited) }
            return eventLoop.makeSucceededFuture(chunk)
        }
        if let failure { return eventLoop.makeFailedFuture(failure) }
        if remoteClosed { return eventLoop.makeSucceededFuture(nil) }
        let p = eventLoop.makePromise(of: Void.self)
        readWaiter = p
        return p.futureResult.flatMap { self.readOnLoop(max: max, call) }
    }

    /// One read or write waiting on the event loop, so that task cancellation can end the wait
    /// (event-loop futures ignore cancellation; without this a timeout could never interrupt a
    /// read from a silent peer). Event-loop confined.
    final class PendingCall: @unchecked Sendable {
        var cancelled = false
        var writeWaiter: EventLoopPromise<Void>?
    }

    /// Reads up to `max` bytes; nil at the end of the stream. Throws if the stream was reset,
    /// and `CancellationError` if the task is cancelled while waiting.
    public func read(max: Int = 64 * 1024) async throws -> ByteBuffer? {
        let call = PendingCall()
        return try await withTaskCancellationHandler {
            try await eventLoop.flatSubmit { self.readOnLoop(max: max, call) }.get()
        } onCancel: {
            self.eventLoop.execute {
                call.cancelled = true
                self.wakeReader()
            }
        }
    }

    /// Puts bytes back in front of the unread data (bytes read past a message boundary).
    func unread(_ bytes: [UInt8]) async {
        guard !bytes.isEmpty else { return }
        try? await eventLoop.submit {
            self.inbound.prepend(ByteBuffer(bytes: bytes))
            // The window for these bytes was already returned when they were first read.
            self.creditedInbound += bytes.count
        }.get()
    }

    /// Reads exactly `count` bytes.
    public func readExactly(_ count: Int) async throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            guard let chunk = try await read(max: count - out.count) else { throw StreamError.unexpectedEOF }
            out += chunk.readableBytesView
        }
        return out
    }

    /// Reads until the remote closes, refusing more than `limit` bytes.
    public func readToEnd(limit: Int) async throws -> [UInt8] {
        var out: [UInt8] = []
        while let chunk = try await read() {
            out += chunk.readableBytesView
            if out.count > limit { throw StreamError.messageTooLarge(limit) }
        }
        return out
    }

    /// Reads one uvarint-length-prefixed message of at most `maxLength` bytes.
    public func readLengthPrefixed(maxLength: Int) async throws -> [UInt8] {
        var decoder = LengthPrefixedDecoder(maxLength: maxLength)
        while true {
            do {
                if let message = try decoder.next() {
                    await unread(decoder.takeRemainder())
                    return message
                }
            } catch { throw StreamError.messageTooLarge(maxLength) }
            guard let chunk = try await read() else { throw StreamError.unexpectedEOF }
            decoder.append(chunk.readableBytesView)
        }
    }

    // MARK: Writing

    /// Writes `bytes`; returns once they have left for the network (waits while the peer's
    /// window is closed; task cancellation ends the wait, the bytes stay queued).
    public func write(_ bytes: ByteBuffer) async throws {
        let call = PendingCall()
        try await withTaskCancellationHandler {
            try await writeOnLoop(bytes, call)
        } onCancel: {
            self.eventLoop.execute {
                call.cancelled = true
                if let p = call.writeWaiter, let i = self.writeWaiters.firstIndex(of: p) {
                    self.writeWaiters.remove(at: i)
                    p.fail(CancellationError())
                }
            }
        }
    }

    private func writeOnLoop(_ bytes: ByteBuffer, _ call: PendingCall) async throws {
        try await eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            if call.cancelled { return self.eventLoop.makeFailedFuture(CancellationError()) }
            if let failure = self.failure { return self.eventLoop.makeFailedFuture(failure) }
            if self.localClosed { return self.eventLoop.makeFailedFuture(StreamError.closedForWriting) }
            do {
                let pending = try self.connection.streamWrite(self.id, bytes)
                if pending == 0 { return self.eventLoop.makeSucceededVoidFuture() }
                let p = self.eventLoop.makePromise(of: Void.self)
                self.writeWaiters.append(p)
                call.writeWaiter = p
                return p.futureResult
            } catch {
                return self.eventLoop.makeFailedFuture(error)
            }
        }.get()
    }

    public func write(_ bytes: [UInt8]) async throws { try await write(ByteBuffer(bytes: bytes)) }

    public func writeLengthPrefixed(_ message: [UInt8]) async throws {
        try await write(LengthPrefixedDecoder.frame(message))
    }

    /// Half-closes: sends FIN after queued data. Reading goes on.
    public func closeWrite() async {
        try? await eventLoop.submit {
            guard !self.localClosed else { return }
            self.localClosed = true
            self.connection.streamCloseWrite(self.id)
        }.get()
    }

    /// Writes at once on the event loop, queueing beyond the window (a relayed connection's
    /// bytes: its own Yamux windows bound them). False if the stream can no longer write.
    @discardableResult
    func writeNow(_ bytes: ByteBuffer) -> Bool {
        eventLoop.assertInEventLoop()
        guard failure == nil, !localClosed else { return false }
        return (try? connection.streamWrite(id, bytes)) != nil
    }

    /// Half-closes at once on the event loop.
    func closeWriteNow() {
        eventLoop.assertInEventLoop()
        guard !localClosed else { return }
        localClosed = true
        connection.streamCloseWrite(id)
    }

    /// Aborts the stream in both directions (RST).
    public func reset() {
        eventLoop.execute {
            self.fail(.reset)
            self.connection.streamReset(self.id)
        }
    }

    // MARK: Protocol negotiation

    /// Proposes `protocols` in order; returns the agreed one.
    func negotiateOutbound(_ protocols: [String]) async throws -> String {
        var ms = MultistreamSelect.dialer(protocols)
        try await write(ms.start())
        return try await runNegotiation(&ms)
    }

    /// Answers the remote's proposals with `supported`; returns the agreed protocol.
    func negotiateInbound(_ supported: [String]) async throws -> String {
        var ms = MultistreamSelect.listener(supported)
        try await write(ms.start())
        return try await runNegotiation(&ms)
    }

    private func runNegotiation(_ ms: inout MultistreamSelect) async throws -> String {
        while true {
            guard let chunk = try await read() else { throw StreamError.unexpectedEOF }
            let out: MultistreamSelect.Output
            do { out = try ms.receive(Array(chunk.readableBytesView)) } catch { throw StreamError.negotiation(error) }
            if !out.send.isEmpty { try await write(out.send) }
            if let agreed = out.agreed {
                await unread(agreed.remainder)
                // Set on the connection's loop, where every other reader of the stream's state runs.
                try? await eventLoop.submit { self.protocolID = agreed.protocolID }.get()
                return agreed.protocolID
            }
        }
    }
}

extension MuxedStream {
    /// Runs `body` on this stream; if it fails (a timeout, a bad answer), the stream is reset so
    /// it does not stay open on both sides (and keep an idle connection alive).
    public func resettingOnError<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch {
            reset()
            throw error
        }
    }
}

/// Received chunks in order, kept as they arrived: reading hands out the chunks (or slices of
/// them) instead of copying every byte into one growing buffer.
struct ByteQueue {
    private var chunks = CircularBuffer<ByteBuffer>(initialCapacity: 4)
    private(set) var readableBytes = 0

    mutating func append(_ b: ByteBuffer) {
        guard b.readableBytes > 0 else { return }
        chunks.append(b)
        readableBytes += b.readableBytes
    }

    mutating func prepend(_ b: ByteBuffer) {
        guard b.readableBytes > 0 else { return }
        chunks.prepend(b)
        readableBytes += b.readableBytes
    }

    /// At most `max` bytes from the front (one chunk or a slice of it); empty when nothing is queued.
    mutating func read(upTo max: Int) -> ByteBuffer {
        guard var first = chunks.first else { return ByteBuffer() }
        if first.readableBytes <= max {
            chunks.removeFirst()
            readableBytes -= first.readableBytes
            return first
        }
        let slice = first.readSlice(length: max)!
        chunks[chunks.startIndex] = first
        readableBytes -= max
        return slice
    }

    mutating func takeAll() -> [ByteBuffer] {
        defer { chunks.removeAll(); readableBytes = 0 }
        return Array(chunks)
    }
}
