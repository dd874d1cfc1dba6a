/// multistream-select 1.0 (`/multistream/1.0.0`) as a sans-I/O state machine.
///
/// Messages are a uvarint length then UTF-8 text ending in "\n". The dialer pipelines the header
/// and its first proposal; the listener answers the header and, per proposal, echoes it (agreed)
/// or says `na`. `ls` is answered with the supported list. Bytes after the agreement belong to the
/// next protocol and are handed back as `remainder`.
public struct MultistreamSelect: Sendable {
    public static let protocolID = "/multistream/1.0.0"
    /// Hard limit on one message (as go-multistream): longer lines close the stream.
    public static let maxMessageLength = 1024
    /// How many proposals a listener hears out before giving up.
    public static let maxProposals = 32

    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        case messageTooLong(Int)
        case malformedMessage(String)
        case unexpectedHeader(String)
        case noProtocolAgreed([String])
        case tooManyProposals

        public var description: String {
            switch self {
            case .messageTooLong(let n): return "multistream message of \(n) bytes exceeds \(MultistreamSelect.maxMessageLength)"
            case .malformedMessage(let s): return "malformed multistream message: \(s)"
            case .unexpectedHeader(let h): return "expected /multistream/1.0.0, got '\(h)'"
            case .noProtocolAgreed(let p): return "peer supports none of \(p)"
            case .tooManyProposals: return "too many multistream proposals"
            }
        }
    }

    public struct Output: Sendable {
        public var send: [UInt8] = []
        /// Set once: the agreed protocol and any bytes already received past the negotiation.
        public var agreed: (protocolID: String, remainder: [UInt8])?
    }

    enum Role: Sendable {
        case dialer(remaining: [String], tried: [String])
        case listener(supported: [String])
    }

    private var role: Role
    private var buffer: [UInt8] = []
    private var headerReceived = false
    private var proposals = 0
    public private(set) var isDone = false

    private init(role: Role) { self.role = role }

    /// A dialer proposing `protocols` in order of preference.
    public static func dialer(_ protocols: [String]) -> MultistreamSelect {
        precondition(!protocols.isEmpty)
        return MultistreamSelect(role: .dialer(remaining: protocols, tried: []))
    }

    public static func listener(_ supported: [String]) -> MultistreamSelect {
        MultistreamSelect(role: .listener(supported: supported))
    }

    public static func encode(_ line: String) -> [UInt8] {
        let body = Array(line.utf8) + [0x0a]
        return Varint.encode(body.count) + body
    }

    /// The bytes to send first: header (and, for a dialer, its first proposal).
    public mutating func start() -> [UInt8] {
        switch role {
        case .dialer(let remaining, _):
            return Self.encode(Self.protocolID) + Self.encode(remaining[0])
        case .listener:
            return Self.encode(Self.protocolID)
        }
    }

    public mutating func receive(_ bytes: [UInt8]) throws(Failure) -> Output {
        buffer += bytes
        var out = Output()
        while !isDone, let line = try nextMessage() {
            try handle(line, &out)
        }
        if isDone, out.agreed != nil {
            out.agreed!.remainder = buffer
            buffer = []
        }
        return out
    }

    private mutating func nextMessage() throws(Failure) -> String? {
        let length: UInt64, n: Int
        do { (length, n) = try Varint.decode(buffer) } catch {
            if case .truncated = error {
                if buffer.count >= 3 { throw .messageTooLong(Int.max) }  // 3 varint bytes > 1024
                return nil
            }
            throw .malformedMessage("bad length prefix")
        }
        guard length <= UInt64(Self.maxMessageLength) else { throw .messageTooLong(Int(clamping: length)) }
        guard buffer.count >= n + Int(length) else { return nil }
        let body = buffer[n..<n + Int(length)]
        buffer.removeFirst(n + Int(length))
        guard body.last == 0x0a else { throw .malformedMessage("missing newline") }
        guard let text = String(validating: body.dropLast(), as: UTF8.self) else { throw .malformedMessage("not UTF-8") }
        guard !text.contains("\n") else { throw .malformedMessage("embedded newline") }
        return text
    }

    private mutating func handle(_ line: String, _ out: inout Output) throws(Failure) {
        if !headerReceived {
            guard line == Self.protocolID else { throw .unexpectedHeader(String(line.prefix(64))) }
            headerReceived = true
            return
        }
        switch role {
        case .dialer(var remaining, var tried):
            let proposed = remaining.removeFirst()
            tried.append(proposed)
            if line == proposed {
                isDone = true
                out.agreed = (proposed, [])
            } else if line == "na" {
                guard let next = remaining.first else { throw .noProtocolAgreed(tried) }
                out.send += Self.encode(next)
            } else {
                throw .malformedMessage("unexpected reply '\(line.prefix(64))' to '\(proposed)'")
            }
            role = .dialer(remaining: remaining, tried: tried)
        case .listener(let supported):
            proposals += 1
            guard proposals <= Self.maxProposals else { throw .tooManyProposals }
            if line == "ls" {
                var list: [UInt8] = []
                for p in supported { list += Self.encode(p) }
                out.send += Varint.encode(list.count + 1) + list + [0x0a]
            } else if supported.contains(line) {
                out.send += Self.encode(line)
                isDone = true
                out.agreed = (line, [])
            } else {
                out.send += Self.encode("na")
            }
        }
    }
}
