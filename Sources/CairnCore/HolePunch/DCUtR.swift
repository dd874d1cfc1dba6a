import CairnProto
import Foundation
import SwiftProtobuf

/// Direct Connection Upgrade through Relay (`/libp2p/dcutr`, libp2p/specs relay/DCUtR.md),
/// sans-I/O: the message codec, the address policy, and the two roles as plain state machines.
///
/// Roles. A dials B through a relay; B (inbound relayed connection) is the **initiator**: it
/// sends CONNECT with its addresses, A (the **responder**) answers CONNECT with its own, B
/// measures the round trip, sends SYNC and dials A after RTT/2; A dials B as soon as SYNC
/// arrives. Both dial from their listen port, so the two SYNs can cross in the NATs and meet as
/// one TCP connection (simultaneous open). Whatever the socket directions turn out to be, the
/// security handshake roles are fixed as rust- and py-libp2p fix them: A, the side that dials on
/// SYNC, is the Noise initiator; B dials as Noise responder. A's dial that lands on B's listener
/// is then an ordinary inbound connection there, with matching roles.
public enum DCUtR {
    public static let protocolID = "/libp2p/dcutr"
    /// Largest message accepted (the spec: 4 KiB).
    public static let maxMessageSize = 4096
    /// A CONNECT listing more addresses is refused as malformed.
    public static let maxAddresses = 32
    /// At most this many addresses are dialed per attempt (no dial storms).
    public static let maxDialsPerAttempt = 8

    public enum Message: Sendable, Equatable {
        case connect([Multiaddr])
        case sync
    }

    public enum CodecError: Error, Equatable, Sendable, CustomStringConvertible {
        case tooLarge(Int)
        case malformed(String)
        case tooManyAddresses(Int)

        public var description: String {
            switch self {
            case .tooLarge(let n): return "DCUtR message of \(n) bytes exceeds \(DCUtR.maxMessageSize)"
            case .malformed(let s): return "malformed DCUtR message: \(s)"
            case .tooManyAddresses(let n): return "DCUtR CONNECT lists \(n) addresses (max \(DCUtR.maxAddresses))"
            }
        }
    }

    public static func encode(_ m: Message) -> [UInt8] {
        var pb = Holepunch_Pb_HolePunch()
        switch m {
        case .connect(let addrs):
            pb.type = .connect
            pb.obsAddrs = addrs.map { Data($0.bytes) }
        case .sync:
            pb.type = .sync
        }
        return try! [UInt8](pb.serializedBytes() as [UInt8])
    }

    /// Decodes a message; unparseable addresses in a CONNECT are dropped (counted as `skipped`).
    public static func decode(_ bytes: [UInt8]) throws(CodecError) -> (Message, skipped: Int) {
        guard bytes.count <= maxMessageSize else { throw .tooLarge(bytes.count) }
        let pb: Holepunch_Pb_HolePunch
        do { pb = try Holepunch_Pb_HolePunch(serializedBytes: bytes) } catch { throw .malformed("protobuf") }
        guard pb.hasType else { throw .malformed("no type") }
        switch pb.type {
        case .connect:
            guard pb.obsAddrs.count <= maxAddresses else { throw .tooManyAddresses(pb.obsAddrs.count) }
            let addrs = pb.obsAddrs.compactMap { try? Multiaddr(bytes: [UInt8]($0)) }
            return (.connect(addrs), pb.obsAddrs.count - addrs.count)
        case .sync:
            guard pb.obsAddrs.isEmpty else { throw .malformed("SYNC with addresses") }
            return (.sync, 0)
        }
    }

    /// The addresses worth offering or dialing: `/ip4|ip6/…/tcp/…` (a trailing `/p2p` is
    /// dropped), deduplicated, public IPs only unless `allowPrivate` (labs on one LAN, loopback
    /// tests), at most `maxDialsPerAttempt`. Returns them and how many were refused.
    public static func dialable(_ addrs: [Multiaddr], allowPrivate: Bool) -> (kept: [Multiaddr], refused: Int) {
        var kept: [Multiaddr] = []
        var refused = 0
        for a in addrs {
            guard let (ip, port) = a.tcpEndpoint, port != 0 else { refused += 1; continue }
            let scope = IPScope(ip)
            guard scope.isPublic || (allowPrivate && scope != .unspecified) else { refused += 1; continue }
            let plain = Multiaddr(components: [ip.count == 4 ? .ip4(ip) : .ip6(ip), .tcp(port)])
            if kept.contains(plain) { continue }
            guard kept.count < maxDialsPerAttempt else { refused += 1; continue }
            kept.append(plain)
        }
        return (kept, refused)
    }

    public enum Action: Sendable, Equatable {
        case send(Message)
        /// Dial these addresses (each from the listen port) after `delay`.
        case dial([Multiaddr], after: Duration)
        /// The exchange is over without a direct connection, for this reason.
        case giveUp(String)
    }

    /// B's side: CONNECT, measure, SYNC, dial after RTT/2; retry up to `maxAttempts` in all.
    public struct Initiator: Sendable {
        public enum State: Sendable, Equatable { case idle, awaitingConnect(sentAt: ContinuousClock.Instant), dialing, finished }
        public let ourAddresses: [Multiaddr]
        public let maxAttempts: Int
        public let allowPrivate: Bool
        public private(set) var state: State = .idle
        public private(set) var attempts = 0
        /// The last measured round trip over the relay.
        public private(set) var rtt: Duration?

        public init(ourAddresses: [Multiaddr], maxAttempts: Int = 3, allowPrivate: Bool = false) {
            self.ourAddresses = ourAddresses
            self.maxAttempts = maxAttempts
            self.allowPrivate = allowPrivate
        }

        public mutating func start(now: ContinuousClock.Instant) -> [Action] {
            guard state == .idle else { return [] }
            attempts = 1
            state = .awaitingConnect(sentAt: now)
            return [.send(.connect(ourAddresses))]
        }

        public mutating func received(_ m: Message, now: ContinuousClock.Instant) -> [Action] {
            switch (state, m) {
            case (.awaitingConnect(let sentAt), .connect(let theirs)):
                let measured = now - sentAt
                rtt = measured
                let (addrs, _) = DCUtR.dialable(theirs, allowPrivate: allowPrivate)
                state = .dialing
                // SYNC goes out even with nothing to dial: the peer may still reach our addresses.
                return [.send(.sync), .dial(addrs, after: measured / 2)]
            case (_, .sync):
                state = .finished
                return [.giveUp("peer sent SYNC to the initiator")]
            default:
                state = .finished
                return [.giveUp("unexpected CONNECT")]
            }
        }

        /// This attempt's dials found no connection: try again (a new CONNECT) or give up.
        public mutating func attemptFailed(now: ContinuousClock.Instant, reason: String) -> [Action] {
            guard state == .dialing else { return [] }
            guard attempts < maxAttempts else {
                state = .finished
                return [.giveUp("\(attempts) attempts failed; last: \(reason)")]
            }
            attempts += 1
            state = .awaitingConnect(sentAt: now)
            return [.send(.connect(ourAddresses))]
        }

        public mutating func succeeded() { state = .finished }
    }

    /// A's side: answer CONNECT with our addresses, dial at once on SYNC; every retry starts with
    /// a new CONNECT on the same stream.
    public struct Responder: Sendable {
        public enum State: Sendable, Equatable { case awaitingConnect, awaitingSync([Multiaddr]), finished }
        public let ourAddresses: [Multiaddr]
        public let allowPrivate: Bool
        public private(set) var state: State = .awaitingConnect
        public private(set) var rounds = 0

        public init(ourAddresses: [Multiaddr], allowPrivate: Bool = false) {
            self.ourAddresses = ourAddresses
            self.allowPrivate = allowPrivate
        }

        public mutating func received(_ m: Message) -> [Action] {
            switch (state, m) {
            case (.awaitingConnect, .connect(let theirs)), (.awaitingSync, .connect(let theirs)):
                rounds += 1
                let (addrs, _) = DCUtR.dialable(theirs, allowPrivate: allowPrivate)
                state = .awaitingSync(addrs)
                return [.send(.connect(ourAddresses))]
            case (.awaitingSync(let addrs), .sync):
                state = .awaitingConnect
                return [.dial(addrs, after: .zero)]
            case (.awaitingConnect, .sync):
                state = .finished
                return [.giveUp("SYNC without CONNECT")]
            case (.finished, _):
                return []
            }
        }
    }
}
