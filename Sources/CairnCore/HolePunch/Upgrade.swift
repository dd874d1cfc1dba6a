import Foundation

extension DCUtR {
    /// How a relayed connection became a direct one.
    public enum Method: String, Sendable, Equatable {
        /// We dialed the peer's public address (no punch needed).
        case reversal
        /// DCUtR: both sides dialed at once (simultaneous open).
        case holePunch = "hole punch"
        /// The peer's dial reached us (its punch or its reversal).
        case peersDial = "peer's dial"
    }

    /// Why a connection stays relayed.
    public enum StayRelayed: Sendable, Equatable, CustomStringConvertible {
        case peerLacksDCUtR(String)
        case exchangeFailed(String)
        case noAddressEitherSide
        case peerOfferedNoAddress
        case peerOfferedNoAddressAndDidNotReachUs
        case dialsFailed([Multiaddr])
        case gaveUp(String)
        case streamError(String)

        public var description: String {
            switch self {
            case .peerLacksDCUtR(let e): return "the peer does not speak DCUtR: \(e)"
            case .exchangeFailed(let e): return "exchange failed: \(e)"
            case .noAddressEitherSide: return "neither side has a public address to offer (symmetric NAT or no votes yet)"
            case .peerOfferedNoAddress: return "the peer offered no usable address"
            case .peerOfferedNoAddressAndDidNotReachUs: return "the peer offered no usable address, and it did not reach ours"
            case .dialsFailed(let a): return "no dial to \(a.map(\.description).joined(separator: ", ")) got through"
            case .gaveUp(let r): return r
            case .streamError(let e): return e
            }
        }
    }

    /// How an upgrade ended.
    public enum UpgradeResult: Sendable, Equatable {
        /// Direct, by `how` (after `attempts` DCUtR exchanges; 0 without one).
        case direct(how: Method, attempts: Int)
        case relayed(reason: StayRelayed)
    }

    /// B's whole decision on an inbound relayed connection, as a machine (the service only
    /// carries out its actions): connection reversal first when the peer has public addresses,
    /// else (or when that fails) the DCUtR exchange through `Initiator`, with the dial role fixed
    /// by what each side offered; every way out is an `UpgradeResult`.
    public struct Upgrade: Sendable {
        public enum Action: Sendable, Equatable {
            /// Dial these addresses at once (after `delay`), with this security role; report with
            /// `dialed(connected:)`.
            case dial([Multiaddr], role: Role, after: Duration, purpose: Purpose)
            /// Open the DCUtR stream on the relayed connection; report `exchangeOpened` or `exchangeFailed`.
            case openExchange
            /// Write this message on the exchange stream (a CONNECT's reply is then expected:
            /// report it with `received`).
            case send(Message)
            case finished(UpgradeResult)
        }
        /// The Noise role on a hole-punch dial: on a simultaneous open the punch decides it.
        public enum Role: Sendable, Equatable { case initiator, responder }
        public enum Purpose: Sendable, Equatable { case reversal, punch }

        public enum State: Sendable, Equatable { case idle, reversing, opening, exchanging, finished }
        public private(set) var state: State = .idle
        public private(set) var result: UpgradeResult?
        let theirPublicAddresses: [Multiaddr]
        let ourAddresses: [Multiaddr]
        var initiator: Initiator
        var lastDial: [Multiaddr] = []

        /// `theirListenAddrs`: what identify said of the peer; `ourAddresses`: what we offer.
        public init(theirListenAddrs: [Multiaddr], ourAddresses: [Multiaddr], maxAttempts: Int = 3, allowPrivate: Bool = false) {
            theirPublicAddresses = DCUtR.dialable(theirListenAddrs, allowPrivate: false).kept
            self.ourAddresses = ourAddresses
            initiator = Initiator(ourAddresses: ourAddresses, maxAttempts: maxAttempts, allowPrivate: allowPrivate)
        }

        public var attempts: Int { initiator.attempts }

        /// Starts, unless a direct connection already exists (then there is nothing to do).
        public mutating func start(hasDirect: Bool) -> [Action] {
            guard state == .idle else { return [] }
            if hasDirect { return finish(nil) }
            if !theirPublicAddresses.isEmpty {
                state = .reversing
                return [.dial(theirPublicAddresses, role: .initiator, after: .zero, purpose: .reversal)]
            }
            state = .opening
            return [.openExchange]
        }

        /// A dial of ours finished (or a direct connection appeared meanwhile: `connected`).
        public mutating func dialed(connected: Bool, now: ContinuousClock.Instant) -> [Action] {
            switch state {
            case .reversing:
                if connected { return finish(.direct(how: .reversal, attempts: 0)) }
                state = .opening
                return [.openExchange]
            case .exchanging:
                if connected {
                    initiator.succeeded()
                    return finish(.direct(how: .holePunch, attempts: initiator.attempts))
                }
                let why: StayRelayed = lastDial.isEmpty ? .peerOfferedNoAddressAndDidNotReachUs : .dialsFailed(lastDial)
                return translate(initiator.attemptFailed(now: now, reason: why.description))
            default:
                return []
            }
        }

        public mutating func exchangeOpened(now: ContinuousClock.Instant) -> [Action] {
            guard state == .opening else { return [] }
            state = .exchanging
            return translate(initiator.start(now: now))
        }

        /// Opening or using the stream failed; `hasDirect` tells whether the peer reached us anyway.
        public mutating func exchangeFailed(_ error: String, hasDirect: Bool) -> [Action] {
            switch state {
            case .opening:
                if hasDirect { return finish(.direct(how: theirPublicAddresses.isEmpty ? .peersDial : .reversal, attempts: 0)) }
                return finish(.relayed(reason: .peerLacksDCUtR(error)))
            case .exchanging:
                if hasDirect { return finish(.direct(how: .holePunch, attempts: initiator.attempts)) }
                return finish(.relayed(reason: .exchangeFailed(error)))
            default:
                return []
            }
        }

        /// The peer's reply to our CONNECT.
        public mutating func received(_ m: Message, now: ContinuousClock.Instant) -> [Action] {
            guard state == .exchanging else { return [] }
            return translate(initiator.received(m, now: now))
        }

        /// The initiator's actions, with the dial role and the no-address case decided.
        mutating func translate(_ actions: [DCUtR.Action]) -> [Action] {
            var out: [Action] = []
            for a in actions {
                switch a {
                case .send(let m):
                    out.append(.send(m))
                case .dial(let addrs, let delay):
                    if addrs.isEmpty && ourAddresses.isEmpty {
                        initiator.succeeded()
                        return out + finish(.relayed(reason: .noAddressEitherSide))
                    }
                    lastDial = addrs
                    // Our dial meets the peer's in a simultaneous open when it can dial us; when
                    // we offered nothing it cannot, so ours lands on its listener: initiator then.
                    out.append(.dial(addrs, role: ourAddresses.isEmpty ? .initiator : .responder, after: delay, purpose: .punch))
                case .giveUp(let reason):
                    return out + finish(.relayed(reason: .gaveUp(reason)))
                }
            }
            return out
        }

        mutating func finish(_ r: UpgradeResult?) -> [Action] {
            state = .finished
            result = r
            return r.map { [.finished($0)] } ?? []
        }
    }
}
