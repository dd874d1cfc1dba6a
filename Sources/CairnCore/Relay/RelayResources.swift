import Foundation

/// A relay's bookkeeping of reservations and circuits, and every limit on them (sans-I/O: the
/// node asks, this answers, and nothing is held that a later call does not release).
///
/// Reservations are keyed by peer ID: a refresh, or a restarted peer reserving again over a new
/// connection, replaces its reservation instead of taking a second slot; a reservation ends
/// when it expires or when the connection that made it closes. Circuits need a reservation at
/// their destination and are counted per peer at either end.
public struct RelayResources: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// Reservation lifetime (go/rust-libp2p: 1 h).
        public var reservationTTL: TimeInterval = 3600
        public var maxReservations = 128
        /// RESERVE requests one peer may make in `reserveWindow` (refreshes included): a flood
        /// guard, since a peer holds at most one reservation anyway.
        public var maxReservationsPerPeer = 4
        public var reserveWindow: TimeInterval = 60
        /// Reservations held by distinct peers from one IP address.
        public var maxReservationsPerIP = 8
        public var maxCircuits = 16
        public var maxCircuitsPerPeer = 4
        /// Per-circuit limits: seconds, and bytes in each direction.
        public var circuitDuration: UInt32 = 120
        public var circuitBytes: UInt64 = 128 * 1024
        public init() {}

        public var limit: CircuitRelay.Limit { CircuitRelay.Limit(duration: circuitDuration, data: circuitBytes) }
    }

    public struct Reservation: Sendable, Equatable {
        public let peer: PeerID
        public let ip: [UInt8]
        public let connection: UInt64
        public let expires: Date
    }

    public struct Circuit: Sendable, Equatable {
        public let id: UInt64
        public let source: PeerID
        public let destination: PeerID
        public let opened: Date
    }

    public enum Refusal: String, Error, Sendable, Hashable, CustomStringConvertible {
        case tooManyReservations = "relay holds its maximum of reservations"
        case peerReservingTooOften = "peer sent too many RESERVE requests"
        case tooManyReservationsForIP = "too many reservations from this IP"
        case noReservation = "destination holds no reservation"
        case tooManyCircuits = "relay carries its maximum of circuits"
        case tooManyCircuitsForPeer = "too many circuits for this peer"
        case circuitToSelf = "source and destination are the same peer"

        public var description: String { rawValue }

        public var status: CircuitRelay.Status {
            switch self {
            case .noReservation: return .noReservation
            case .circuitToSelf: return .permissionDenied
            default: return .resourceLimitExceeded
            }
        }
    }

    public var configuration: Configuration
    public private(set) var reservations: [PeerID: Reservation] = [:]
    public private(set) var circuits: [UInt64: Circuit] = [:]
    /// Refusals so far, by reason (for operators and tests).
    public private(set) var refused: [Refusal: Int] = [:]
    public private(set) var reservationsGranted = 0
    public private(set) var circuitsOpened = 0
    private var reserveRequests: [PeerID: [Date]] = [:]
    private var nextCircuit: UInt64 = 1

    public init(configuration: Configuration = Configuration()) { self.configuration = configuration }

    /// A RESERVE from `peer` (authenticated) at `ip` over `connection`: the reservation granted,
    /// or why not.
    public mutating func reserve(peer: PeerID, ip: [UInt8], connection: UInt64, now: Date) -> Result<Reservation, Refusal> {
        expire(now: now)
        var recent = reserveRequests[peer, default: []].filter { now.timeIntervalSince($0) < configuration.reserveWindow }
        defer { reserveRequests[peer] = recent.isEmpty ? nil : recent }
        guard recent.count < configuration.maxReservationsPerPeer else { return refuse(.peerReservingTooOften) }
        recent.append(now)
        if reservations[peer] == nil {
            guard reservations.count < configuration.maxReservations else { return refuse(.tooManyReservations) }
            guard reservations.values.filter({ $0.ip == ip }).count < configuration.maxReservationsPerIP else {
                return refuse(.tooManyReservationsForIP)
            }
        }
        let r = Reservation(peer: peer, ip: ip, connection: connection, expires: now.addingTimeInterval(configuration.reservationTTL))
        reservations[peer] = r
        reservationsGranted += 1
        return .success(r)
    }

    /// The reservation `peer` holds now, if any.
    public mutating func reservation(of peer: PeerID, now: Date) -> Reservation? {
        expire(now: now)
        return reservations[peer]
    }

    /// A CONNECT from `source` to `destination`: a circuit slot, or why not.
    public mutating func openCircuit(from source: PeerID, to destination: PeerID, now: Date) -> Result<Circuit, Refusal> {
        expire(now: now)
        guard source != destination else { return refuse(.circuitToSelf) }
        guard reservations[destination] != nil else { return refuse(.noReservation) }
        guard circuits.count < configuration.maxCircuits else { return refuse(.tooManyCircuits) }
        for p in [source, destination] {
            let n = circuits.values.filter { $0.source == p || $0.destination == p }.count
            guard n < configuration.maxCircuitsPerPeer else { return refuse(.tooManyCircuitsForPeer) }
        }
        let c = Circuit(id: nextCircuit, source: source, destination: destination, opened: now)
        nextCircuit += 1
        circuits[c.id] = c
        circuitsOpened += 1
        return .success(c)
    }

    public mutating func closeCircuit(_ id: UInt64) { circuits[id] = nil }

    /// The connection that made reservations closed: they end (unless replaced meanwhile over
    /// another connection).
    public mutating func connectionClosed(_ connection: UInt64) {
        reservations = reservations.filter { $0.value.connection != connection }
    }

    public mutating func expire(now: Date) {
        reservations = reservations.filter { $0.value.expires > now }
        reserveRequests = reserveRequests.compactMapValues { d in
            let kept = d.filter { now.timeIntervalSince($0) < configuration.reserveWindow }
            return kept.isEmpty ? nil : kept
        }
    }

    private mutating func refuse<T>(_ why: Refusal) -> Result<T, Refusal> {
        refused[why, default: 0] += 1
        return .failure(why)
    }
}
