import CairnCore
import CairnCrypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The core every libp2p node has: the swarm, its event stream and dialer, what the node says
/// about itself (`LocalPeer`), and the two protocols every peer speaks — identify (with push)
/// and ping — as services. `CairnHost` builds the rest on it.
public final class Node: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var swarm = Swarm.Configuration()
        public var identify = IdentifyService.Configuration()
        public var agentVersion: String {
            get { identify.agentVersion }
            set { identify.agentVersion = newValue }
        }
        /// Testing aid for adversarial tests only (see `IdentifyService.Configuration`).
        public var testingClaimedObservedAddress: Multiaddr? {
            get { identify.testingClaimedObservedAddress }
            set { identify.testingClaimedObservedAddress = newValue }
        }
        public init() {}
    }

    public let swarm: Swarm
    public let configuration: Configuration
    public let peerStore: PeerStore?
    /// The one way services and applications reach a peer by ID (addresses from the caller, the
    /// peer store and peer routing; concurrent dials coalesced).
    public let dialer: Dialer
    public let local: LocalPeer
    public let identifyService: IdentifyService
    public let pingService: PingService
    let logger: Logger

    public init(identity: PrivateKey, configuration: Configuration = Configuration(), peerStore: PeerStore? = nil,
                group: EventLoopGroup? = nil, logger: Logger) {
        self.configuration = configuration
        self.peerStore = peerStore
        self.logger = logger
        swarm = Swarm(identity: identity, configuration: configuration.swarm, group: group, logger: logger)
        dialer = Dialer(swarm: swarm, peerStore: peerStore, logger: logger)
        local = LocalPeer(swarm: swarm)
        pingService = PingService(swarm: swarm)
        identifyService = IdentifyService(swarm: swarm, local: local, peerStore: peerStore, configuration: configuration.identify, logger: logger)
    }

    /// The node's event stream (the swarm's).
    public var events: EventBus { swarm.events }
    public var peerID: PeerID { swarm.peerID }
    public var listenAddresses: [Multiaddr] { swarm.listenAddresses }

    // MARK: Addresses and record (LocalPeer)

    public typealias AddressSource = LocalPeer.AddressSource

    /// What the node tells others it can be reached at (identify, its signed peer record and so
    /// its presence record): the listen addresses and the extra ones set.
    public var advertisedAddresses: [Multiaddr] { local.advertisedAddresses }

    public func setExtraAddresses(_ addresses: [Multiaddr], source: AddressSource = .relay) {
        local.setExtraAddresses(addresses, source: source)
    }

    public func extraAddresses(from source: AddressSource) -> [Multiaddr] { local.extraAddresses(from: source) }

    /// The TCP listen addresses on an IPv4 network interface beyond loopback (wildcards expanded):
    /// where the LAN services (port mapping, mDNS) have something to do.
    public var lanListenAddresses: [Multiaddr] {
        listenAddresses.filter { a in
            guard let (ip, _) = a.tcpEndpoint, ip.count == 4 else { return false }
            return IPScope(ip) != .loopback && IPScope(ip) != .unspecified
        }
    }

    /// Why the LAN services stay silent when `lanListenAddresses` is empty.
    public static let noLANListenAddress = "no IPv4 listen address beyond loopback"

    public var signedPeerRecord: VerifiedEnvelope { local.signedPeerRecord }

    /// Re-signs the peer record with a fresh seq even if the addresses did not change.
    @discardableResult
    public func renewSignedPeerRecord() -> VerifiedEnvelope { local.refreshSignedRecord(force: true) }

    // MARK: Swarm

    @discardableResult
    public func listen(_ addresses: [Multiaddr]) async throws -> [Multiaddr] {
        var all: [Multiaddr] = []
        var skipped: [(Multiaddr, Error)] = []
        for a in addresses {
            do {
                all += try await swarm.listen(a)
            } catch where a.isIPv6Wildcard && addresses.contains(where: { !$0.isIPv6Wildcard }) {
                // The dual-stack default on a host without IPv6: IPv4 alone will do.
                skipped.append((a, error))
            }
        }
        for (a, e) in skipped { logger.warning("not listening on \(a) (no IPv6 here?): \(e)") }
        local.addressesChanged()
        return all
    }

    /// The connection new streams to `peer` should use: a direct one when there is one.
    public func bestConnection(to peer: PeerID) -> Connection? { swarm.bestConnection(to: peer) }

    public func dial(_ address: Multiaddr) async throws -> Connection {
        try await swarm.dial(address)
    }

    public func shutdown() async {
        await swarm.shutdown()
    }

    // MARK: Ping and identify (the services)

    public func ping(_ connection: Connection, count: Int = 1, interval: Duration = .zero) async throws -> [Duration] {
        try await pingService.ping(connection, count: count, interval: interval)
    }

    /// The result of the automatic identify exchange on `connection` (started when it came up).
    public func identify(_ connection: Connection) async throws -> IdentifyInfo {
        try await identifyService.identify(connection)
    }

    public func requestIdentify(_ connection: Connection) async throws -> IdentifyInfo {
        try await identifyService.requestIdentify(connection)
    }

    public func pushIdentify(to connection: Connection) async throws {
        try await identifyService.pushIdentify(to: connection)
    }

    public func identifyMessage(for connection: Connection) -> IdentifyInfo {
        identifyService.identifyMessage(for: connection)
    }
}
