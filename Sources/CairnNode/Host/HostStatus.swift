import CairnCore
import Foundation

/// What a running node says about itself (`<data-dir>/relays.json`, rewritten atomically every
/// few seconds; `cairn relays` reads it). One `Codable` type for writer and reader; the JSON keys
/// are snake_case.
public struct HostStatus: Codable, Sendable, Equatable {
    public struct HeldReservation: Codable, Sendable, Equatable {
        public var relay: String
        public var expiresInS: Int
        public var addrs: [String]
        public var voucherVerified: Bool
        public var limit: Limit
    }
    public struct Limit: Codable, Sendable, Equatable {
        public var durationS: Int?
        public var dataBytes: Int?
    }
    public struct RelayedConnection: Codable, Sendable, Equatable {
        public var peer: String
        public var relay: String
        public var direction: String
    }
    public struct HolePunch: Codable, Sendable, Equatable {
        public var peer: String
        public var role: String
        public var at: Double
        /// "direct" or "relayed".
        public var result: String
        public var how: String?
        public var attempts: Int?
        public var reason: String?
        public var elapsedMs: Double?
    }
    public struct CircuitCounts: Codable, Sendable, Equatable {
        public var inbound: Int
        public var outbound: Int
    }
    public struct ServedReservation: Codable, Sendable, Equatable {
        public var peer: String
        public var expiresInS: Int
    }
    public struct ServedCircuit: Codable, Sendable, Equatable {
        public var id: Int
        public var from: String
        public var to: String
        public var ageS: Int
    }
    public struct RelayLimits: Codable, Sendable, Equatable {
        public var maxReservations: Int
        public var maxReservationsPerPeer: Int
        public var maxReservationsPerIp: Int
        public var maxCircuits: Int
        public var maxCircuitsPerPeer: Int
        public var reservationTtlS: Int
        public var circuitDurationS: Int
        public var circuitBytes: Int
    }
    public struct Serving: Codable, Sendable, Equatable {
        public var volunteering: Bool
        public var reservations: [ServedReservation]
        public var circuits: [ServedCircuit]
        public var reservationsGranted: Int
        public var circuitsOpened: Int
        public var bytesForwarded: Int
        public var refused: [String: Int]
        public var circuitEnds: [String: Int]
        public var limits: RelayLimits
    }

    /// A port mapping on the gateway (`PortMappingService.Mapping`).
    public struct PortMapping: Codable, Sendable, Equatable {
        public var proto: String
        public var internalPort: Int
        public var gateway: String
        /// mapping, mapped, confirmed or failed.
        public var state: String
        public var dialect: String?
        public var externalPort: Int?
        public var claimedAddress: String?
        public var confirmed: String?
        public var detail: String?
        public var summary: String
    }

    public var peerId: String
    /// Seconds since 1970.
    public var updated: Double
    public var reachability: String
    public var advertisedAddrs: [String]
    public var externalAddrs: [String]
    public var listenAddrs: [String]
    public var connections: Int
    /// Connected peers, each once.
    public var connectedPeers: [String]
    /// Where the control API listens.
    public var controlApi: [String]
    public var held: [HeldReservation]
    public var relayedConnections: [RelayedConnection]
    public var holePunches: [HolePunch]
    public var circuitsThroughRelays: CircuitCounts
    public var serving: Serving
    /// Absent from files written before port mapping existed.
    public var portMappings: [PortMapping]?
    /// Peers found on the LAN by mDNS (absent when mDNS is off or in older files).
    public var lanPeers: [LANPeer]?
    /// mDNS datagrams dropped as malformed (absent when mDNS is off).
    public var mdnsDropped: Int?

    public struct LANPeer: Codable, Sendable, Equatable {
        public var peer: String
        public var addrs: [String]
        public var ageS: Int
    }

    public static func decode(_ data: Data) throws -> HostStatus {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try d.decode(HostStatus.self, from: data)
    }

    public func encoded(pretty: Bool = true) throws -> Data {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted] : [.sortedKeys]
        return try e.encode(self)
    }

    /// Writes atomically (a temporary file renamed into place): readers never see half a file.
    public func write(to url: URL) throws {
        let tmp = url.appendingPathExtension("tmp")
        try encoded().write(to: tmp)
        guard rename(tmp.path, url.path) == 0 else { throw CocoaError(.fileWriteUnknown) }
    }
}

extension HostStatus.PortMapping {
    init(_ m: PortMappingService.Mapping) {
        proto = m.proto == .tcp ? "tcp" : "udp"
        internalPort = Int(m.internalPort)
        gateway = IPAddressText.format(m.gateway)
        state = m.state.rawValue
        dialect = m.dialect?.rawValue
        externalPort = m.externalPort.map(Int.init)
        claimedAddress = m.claimedAddress.map(IPAddressText.format)
        confirmed = m.confirmed?.description
        detail = m.detail
        summary = m.summary
    }
}

extension HostStatus.HolePunch {
    init(_ o: HolePunchService.Outcome) {
        peer = o.peer.description
        role = o.role.rawValue
        at = o.at.timeIntervalSince1970
        switch o.result {
        case .direct(let how, let attempts):
            result = "direct"; self.how = how.rawValue; self.attempts = attempts
        case .relayed(let why):
            result = "relayed"; reason = "\(why)"
        }
        elapsedMs = o.elapsed.map { Double($0.components.seconds) * 1000 + Double($0.components.attoseconds) / 1e15 }
    }
}

extension Int {
    /// Whole seconds of a time that may come from a peer (a relay's expiry): NaN is 0, and
    /// anything beyond `Int`'s range is clamped to it instead of trapping.
    init(clampingSeconds s: Double) {
        if s.isNaN { self = 0 } else if s >= Double(Int.max) { self = .max } else if s <= Double(Int.min) { self = .min } else { self = Int(s) }
    }
}
