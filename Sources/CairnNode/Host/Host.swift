import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A part of the host with a lifecycle: started in order by `CairnHost.start()`, stopped in
/// reverse order by `shutdown()`, which waits for every task it started.
public protocol HostService: AnyObject, Sendable {
    func start() async throws
    func stop() async
}

/// A Cairn node as one value an application embeds: it owns the swarm and every service
/// (identify, ping, DHT, NAT/AutoNAT/STUN, relay service and client, auto-relay, hole punching),
/// their lifecycle and their policy. Built from one `Configuration`; `start()`, use, `shutdown()`.
///
/// ```swift
/// let host = try CairnHost(configuration: config, logger: logger)
/// try await host.start()
/// host.handle(protocol: "/my-app/echo/1.0.0") { stream in ... }
/// let stream = try await host.openStream(to: peer, protocols: ["/my-app/echo/1.0.0"])
/// await host.shutdown()
/// ```
public final class CairnHost: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Identity, stores and status file live here; nil keeps nothing on disk (an in-memory
        /// identity unless `identity` is given). `DataDirectory.defaultURL()` is `$CAIRN_PATH` or `~/.cairn`.
        public var dataDirectory: URL?
        /// Use this key instead of the data directory's.
        public var identity: PrivateKey?
        /// What to do when another process holds the data directory.
        public var whenDataDirectoryLocked: LockPolicy = .fail
        /// Dual stack by default; the IPv6 wildcard is skipped (with a warning) where IPv6 is off.
        public var listenAddresses: [Multiaddr] = [Multiaddr.unchecked("/ip4/0.0.0.0/tcp/4001"), Multiaddr.unchecked("/ip6/::/tcp/4001")]
        /// Peers to join the DHT through (`/p2p/<id>` required).
        public var bootstrapPeers: [Multiaddr] = []
        /// Peers to connect to once listening.
        public var connectAtStart: [Multiaddr] = []
        /// Keep a peer store (`peers.sqlite`) in the data directory.
        public var persistPeers = true
        public var node = Node.Configuration()
        public var dht = DHT()
        public var nat = NATService.Configuration()
        /// Ask peers for AutoNAT dial-backs on `nat.probeSchedule` (a running node does).
        public var autoNATProbing = true
        /// Answer STUN Binding requests on the UDP port beside each TCP listen port.
        public var stun = true
        /// Ask the default gateway (PCP, NAT-PMP, UPnP IGD) to forward the listen ports; nil
        /// turns it off. Nothing is asked for loopback-only listen addresses.
        public var portMapping: PortMappingService.Configuration? = PortMappingService.Configuration()
        /// Find peers on the LAN by libp2p mDNS (and connect to them); nil turns it off. Nothing
        /// is sent for loopback-only listen addresses.
        public var mdns: MDNSService.Configuration? = MDNSService.Configuration()
        public var relay = Relay()
        public var autoRelay: AutoRelay.Mode = .auto
        public var autoRelayConfiguration = AutoRelay.Configuration()
        /// Upgrade relayed connections (connection reversal, DCUtR); nil turns it off.
        public var holePunching: HolePunchService.Configuration? = HolePunchService.Configuration()
        public var connectionManager = ConnectionManager.Configuration()
        /// The libp2p daemon control API (`docs/daemon.md`).
        public var controlAPI = ControlAPI()
        /// Serve Prometheus metrics (`GET /metrics`) here; loopback only unless
        /// `metricsAllowRemote`.
        public var metricsAddress: Multiaddr?
        public var metricsAllowRemote = false
        /// Write `HostStatus` to `<data-dir>/relays.json` this often (nil: never).
        public var statusInterval: Duration? = .seconds(2)

        public enum LockPolicy: Sendable {
            /// Refuse to start (a node).
            case fail
            /// Run with a fresh in-memory identity and no stores (a one-shot command beside a running node).
            case ephemeral
        }

        public struct DHT: Sendable {
            public var enabled = true
            public var service = DHTService.Configuration()
            /// Join through `bootstrapPeers` (or the saved routing table) in `start()`; a failure
            /// is logged, not thrown (`joinDHT()` throws it).
            public var joinAtStart = true
            /// Publish our signed presence record once joined, every `service.republishInterval`
            /// and whenever our addresses change.
            public var publishPresence = true
            /// Server mode follows AutoNAT: server while public, client while private.
            public var followReachability = true
            /// kubo's dual DHT: the main table (`service`) admits only peers with public addresses,
            /// and a second one, `/ipfs/lan/kad/1.0.0`, only peers with private or loopback ones.
            public var dual = false
            public static let lanProtocolID = "/ipfs/lan/kad/1.0.0"
            public init() {}
        }

        public struct ControlAPI: Sendable {
            public var enabled = false
            /// Where to serve; empty: `/unix/<data-dir>/api.sock` (nothing without a data directory).
            public var addresses: [Multiaddr] = []
            public var server = ControlServer.Configuration()
            public init() {}
        }

        public struct Relay: Sendable {
            public enum When: String, Sendable { case `public`, always }
            /// Volunteer as a circuit relay (off by default).
            public var serve = false
            public var when: When = .public
            public var service = RelayService.Configuration()
            public var client = RelayClient.Configuration()
            public init() {}
        }

        public init() {}
    }

    public let configuration: Configuration
    public let node: Node
    public let dht: DHTService?
    /// The LAN half of a dual DHT (`Configuration.DHT.dual`).
    public let lanDHT: DHTService?
    public let nat: NATService
    public let relayClient: RelayClient
    public let relayService: RelayService
    /// The host's metrics (its own Prometheus registry; `metricsAddress` serves them).
    public let metrics: NodeMetrics
    public let autoRelay: AutoRelay
    public let holePunch: HolePunchService?
    /// Port mappings on the default gateway (`Configuration.portMapping`).
    public let portMapping: PortMappingService?
    /// LAN discovery (`Configuration.mdns`).
    public let mdns: MDNSService?
    public let connectionManager: ConnectionManager
    /// The data directory actually used (nil when ephemeral).
    public let dataDirectory: URL?
    /// Whether the identity was created by this host (first start).
    public let createdIdentity: Bool
    let logger: Logger
    private let lock: DataDirectoryLock?

    private struct State {
        var listening = false
        var started = false
        var stopped = false
        var running: [HostService] = []
        var stunServers: [STUNServer] = []
        var tasks: [Task<Void, Never>] = []
        var joined = false
        var control: ControlServer?
        var metricsServer: MetricsServer?
        var forwarding: Forwarding?
        var controlAddresses: [Multiaddr] = []
    }
    private let state = NIOLockedValueBox(State())

    /// Builds the node and its services (nothing listens or dials until `start()`).
    public init(configuration: Configuration, group: EventLoopGroup? = nil, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        // The data directory: locked for this process, or (when allowed) left alone.
        var dir = configuration.dataDirectory
        var lock: DataDirectoryLock?
        if let d = dir {
            do {
                lock = try DataDirectoryLock(directory: d, holder: "cairn, \(CommandLine.arguments.dropFirst().first ?? "host")")
            } catch DataDirectoryError.inUse(let path, let holder) where configuration.whenDataDirectoryLocked == .ephemeral {
                logger.notice("data directory \(path) is in use by \(holder): running with a temporary identity")
                dir = nil
            }
        }
        self.lock = lock
        self.dataDirectory = dir
        let key: PrivateKey
        var created = false
        if let k = configuration.identity {
            key = k
        } else if let d = dir {
            (key, created) = try IdentityStore(dataDirectory: d).loadOrCreate()
        } else {
            key = .generate()
        }
        createdIdentity = created
        let peerStore = try dir.flatMap { d in
            configuration.persistPeers ? try PeerStore(path: d.appendingPathComponent("peers.sqlite").path) : nil
        }
        node = Node(identity: key, configuration: configuration.node, peerStore: peerStore, group: group, logger: logger)
        if configuration.dht.enabled {
            let validator = configuration.dht.service.kademlia.validator
            let store: any DHTStore = try dir.map { try SQLiteDHTStore(path: $0.appendingPathComponent("dht.sqlite").path, validator: validator) }
                ?? InMemoryDHTStore()
            var main = configuration.dht.service
            if configuration.dht.dual { main.addressScope = .publicOnly }
            dht = DHTService(node: node, store: store, configuration: main, logger: logger)
            if configuration.dht.dual {
                var lan = configuration.dht.service
                lan.kademlia.protocolID = Configuration.DHT.lanProtocolID
                lan.additionalProtocols = []
                lan.addressScope = .privateOnly
                let lanStore: any DHTStore = try dir.map {
                    try SQLiteDHTStore(path: $0.appendingPathComponent("dht-lan.sqlite").path, validator: validator)
                } ?? InMemoryDHTStore()
                lanDHT = DHTService(node: node, store: lanStore, configuration: lan, logger: logger)
            } else {
                lanDHT = nil
            }
        } else {
            dht = nil
            lanDHT = nil
        }
        nat = NATService(node: node, dht: configuration.dht.followReachability ? dht : nil, configuration: configuration.nat, logger: logger)
        relayClient = RelayClient(node: node, configuration: configuration.relay.client, logger: logger)
        relayService = RelayService(node: node, configuration: configuration.relay.service, logger: logger)
        autoRelay = AutoRelay(node: node, client: relayClient, mode: configuration.autoRelay,
                              configuration: configuration.autoRelayConfiguration, logger: logger)
        let (n, nat) = (node, nat)
        holePunch = configuration.holePunching.map { HolePunchService(node: n, nat: nat, configuration: $0, logger: logger) }
        portMapping = configuration.portMapping.map {
            var c = $0
            if !configuration.stun { c.mapUDP = false }
            return PortMappingService(node: n, nat: nat, configuration: c, logger: logger)
        }
        mdns = configuration.mdns.map { MDNSService(node: n, configuration: $0, logger: logger) }
        connectionManager = ConnectionManager(swarm: node.swarm, configuration: configuration.connectionManager, logger: logger)
        metrics = NodeMetrics(swarm: node.swarm, dht: dht, lanDHT: lanDHT, relay: relayService, nat: nat)
        // The host protects what it relies on: its relays, peers relaying through it, punched connections.
        let (client, service, punch) = (relayClient, relayService, holePunch)
        connectionManager.addProtection {
            var keep = Set(client.reservations.map(\.relay))
            keep.formUnion(service.stats.reservations.map(\.peer))
            for o in punch?.outcomes ?? [] {
                if case .direct = o.result, n.swarm.directConnection(to: o.peer) != nil { keep.insert(o.peer) }
            }
            return keep
        }
    }

    public var peerID: PeerID { node.peerID }
    public var events: EventBus { node.events }
    public var listenAddresses: [Multiaddr] { node.listenAddresses }
    public var stunServers: [STUNServer] { state.withLockedValue { $0.stunServers } }
    public var isJoined: Bool { state.withLockedValue { $0.joined } }
    /// The control API's server and bound addresses (when enabled).
    public var controlServer: ControlServer? { state.withLockedValue { $0.control } }
    public var controlAddresses: [Multiaddr] { state.withLockedValue { $0.controlAddresses } }
    /// Where metrics are served (when `metricsAddress` is set and the services started).
    public var metricsServerAddress: Multiaddr? { state.withLockedValue { $0.metricsServer?.address } }

    /// TCP forwarding over peer streams (`cairn p2p`).
    public var forwarding: Forwarding {
        state.withLockedValue { s in
            if let f = s.forwarding { return f }
            let f = Forwarding(host: self, logger: logger)
            s.forwarding = f
            return f
        }
    }

    /// The default control socket of a data directory.
    public static func defaultControlAddress(dataDirectory: URL) -> Multiaddr {
        Multiaddr(components: [.unix(dataDirectory.appendingPathComponent("api.sock").path)])
    }

    // MARK: Lifecycle

    /// Listens, starts the STUN responders and the services, connects to `connectAtStart`, and
    /// joins the DHT (when configured). Returns the bound listen addresses.
    @discardableResult
    public func start() async throws -> [Multiaddr] {
        let bound = try await startListening()
        try await startServices()
        return bound
    }

    /// The first half of `start()`: listen and start the STUN responders beside the listen ports.
    @discardableResult
    public func startListening() async throws -> [Multiaddr] {
        guard state.withLockedValue({ s in defer { s.listening = true }; return !s.listening }) else { return listenAddresses }
        let bound = try await node.listen(configuration.listenAddresses)
        if configuration.stun { await startSTUN(bound) }
        return bound
    }

    /// The second half of `start()`: the services, the status file, `connectAtStart`, the DHT join.
    public func startServices() async throws {
        guard state.withLockedValue({ s in defer { s.started = true }; return !s.started }) else { return }
        var services: [HostService] = []
        if configuration.autoNATProbing { services.append(nat) }
        if let portMapping { services.append(portMapping) }
        if let mdns { services.append(mdns) }
        switch (configuration.relay.serve, configuration.relay.when) {
        case (true, .public): relayService.followReachability(of: nat)
        case (true, .always): relayService.setServing(true)
        case (false, _): break
        }
        services.append(relayService)
        autoRelay.followReachability(of: nat)
        if configuration.autoRelay != .off { services.append(autoRelay) }
        if let holePunch { services.append(holePunch) }
        if let dht { services.append(dht) }
        if let lanDHT { services.append(lanDHT) }
        for s in services { try await s.start() }
        state.withLockedValue { $0.running = services }
        if configuration.controlAPI.enabled { try await startControlAPI() }
        if let a = configuration.metricsAddress {
            let server = try await MetricsServer.start(on: a, allowRemote: configuration.metricsAllowRemote, group: node.swarm.group,
                                                       metrics: metrics, logger: logger)
            state.withLockedValue { $0.metricsServer = server }
        }
        if let dir = dataDirectory, let every = configuration.statusInterval {
            let path = dir.appendingPathComponent("relays.json")
            track(Task { [weak self] in
                while !Task.isCancelled {
                    guard let self else { return }
                    do { try self.status().write(to: path) } catch { self.logger.debug("status not written: \(error)") }
                    try? await Task.sleep(for: every)
                }
            })
        }
        for a in configuration.connectAtStart {
            do {
                let conn = try await node.dial(a)
                logger.info("connected", metadata: ["peer": "\(conn.remotePeer?.description ?? "?")", "addr": "\(a)"])
            } catch {
                logger.error("connect \(a) failed: \(error)")
            }
        }
        if dht != nil && configuration.dht.joinAtStart {
            do {
                try await joinDHT()
            } catch {
                logger.warning("not joined to the DHT yet: \(error); serving and waiting for peers")
            }
        }
    }

    /// Joins the DHT through `bootstrapPeers`, or the saved routing table when none are given;
    /// then keeps the presence record published (when configured).
    public func joinDHT() async throws {
        guard let dht else { throw DHTError.noPeers }
        if configuration.bootstrapPeers.isEmpty && dht.routingTable.count == 0 { throw DHTError.noPeers }
        if let lanDHT {
            // The LAN half joins through the same peers (its table keeps the private ones).
            do { try await lanDHT.bootstrap(configuration.bootstrapPeers) } catch {
                logger.info("LAN DHT not joined: \(error)")
            }
        }
        try await dht.bootstrap(configuration.bootstrapPeers)
        state.withLockedValue { $0.joined = true }
        if configuration.dht.publishPresence { track(dht.keepPresencePublished()) }
    }

    /// Stops every service (in reverse order), every task the host started, the STUN responders
    /// and the swarm; releases the data directory.
    public func shutdown() async {
        let (services, stun, tasks) = state.withLockedValue { s -> ([HostService], [STUNServer], [Task<Void, Never>]) in
            guard !s.stopped else { return ([], [], []) }
            s.stopped = true
            defer { s.running = []; s.stunServers = []; s.tasks = [] }
            return (s.running, s.stunServers, s.tasks)
        }
        for t in tasks { t.cancel() }
        if let control = state.withLockedValue({ $0.control }) { await control.close() }
        if let m = state.withLockedValue({ $0.metricsServer }) { await m.close() }
        metrics.stop()
        if let forwarding = state.withLockedValue({ $0.forwarding }) {
            await forwarding.close(proto: nil, local: nil, all: true)
            await forwarding.tasks.cancelAndWait()
        }
        for s in services.reversed() { await s.stop() }
        for t in tasks { await t.value }
        for s in stun { await s.close() }
        await node.shutdown()
        lock?.release()
    }

    private func startControlAPI() async throws {
        var addresses = configuration.controlAPI.addresses
        if addresses.isEmpty, let dir = dataDirectory { addresses = [Self.defaultControlAddress(dataDirectory: dir)] }
        guard !addresses.isEmpty else { return }
        let server = ControlServer(host: self, configuration: configuration.controlAPI.server, logger: logger)
        state.withLockedValue { $0.control = server }
        for a in addresses {
            let bound = try await server.listen(a)
            state.withLockedValue { $0.controlAddresses.append(bound) }
        }
    }

    private func track(_ task: Task<Void, Never>) {
        let keep = state.withLockedValue { s -> Bool in
            guard !s.stopped else { return false }
            s.tasks.append(task)
            return true
        }
        if !keep { task.cancel() }
    }

    private func startSTUN(_ bound: [Multiaddr]) async {
        for a in configuration.listenAddresses {
            // Beside the port actually bound (a configured port 0 becomes a real one).
            guard let (ip, _) = a.tcpEndpoint,
                  let port = bound.first(where: { $0.tcpEndpoint?.ip.count == ip.count })?.tcpEndpoint?.port else { continue }
            let udpBeside = Multiaddr(components: [ip.count == 4 ? .ip4(ip) : .ip6(ip), .tcp(port)])
            do {
                let s = try await STUNServer.start(besideTCP: udpBeside, group: node.swarm.group, logger: logger)
                state.withLockedValue { $0.stunServers.append(s) }
                node.swarm.adoptDatagramChannel(s.channel, purpose: "stun")
            } catch {
                logger.warning("STUN responder beside \(a) not started: \(error)")
            }
        }
    }

    // MARK: Reaching peers

    /// Connects to `peer` (addresses from `options`, the peer store and the DHT); see `Dialer`.
    public func connect(to peer: PeerID, _ options: DialOptions = DialOptions()) async throws -> DialOutcome {
        try await node.dialer.connect(to: peer, options)
    }

    /// Connects to the address (`…/p2p/<id>` checks the identity; a `/p2p-circuit` one goes
    /// through the relay).
    public func connect(_ address: Multiaddr) async throws -> Connection {
        try await node.dial(address)
    }

    // MARK: Streams for applications

    /// Serves `protocolID`: inbound streams that negotiate it are handed to `handler` (the same
    /// way the built-in protocols are served). Registering again replaces the handler.
    public func handle(protocol protocolID: String, _ handler: @escaping StreamHandler) {
        node.swarm.handle(protocolID, handler)
    }

    public func unhandle(protocol protocolID: String) { node.swarm.unhandle(protocolID) }

    /// Opens a stream to `peer` on the first of `protocols` it speaks, over the best connection
    /// (direct when there is one), connecting first if needed.
    public func openStream(to peer: PeerID, protocols: [String], options: DialOptions = DialOptions()) async throws -> MuxedStream {
        let conn = try await connect(to: peer, options).connection
        return try await conn.openStream(protocols)
    }

    // MARK: Status

    public func status(now: Date = Date()) -> HostStatus {
        let stats = relayService.stats
        let counts = relayClient.circuitCounts
        let c = stats.configuration
        return HostStatus(
            peerId: peerID.description, updated: now.timeIntervalSince1970,
            reachability: nat.reachability.reachability.rawValue,
            advertisedAddrs: node.advertisedAddresses.map(\.description),
            externalAddrs: nat.externalAddresses.map(\.description),
            listenAddrs: node.listenAddresses.map(\.description),
            connections: node.swarm.connections.count,
            connectedPeers: Array(Set(node.swarm.connections.compactMap { $0.remotePeer?.description })).sorted(),
            controlApi: controlAddresses.map(\.description),
            held: relayClient.reservations.sorted { $0.relay < $1.relay }.map { r in
                HostStatus.HeldReservation(relay: r.relay.description, expiresInS: Int(clampingSeconds: r.expires.timeIntervalSince(now)),
                                           addrs: r.addresses.map(\.description), voucherVerified: r.voucher != nil,
                                           limit: .init(durationS: r.limit?.duration.map { Int($0) }, dataBytes: r.limit?.data.map { Int(clamping: $0) }))
            },
            relayedConnections: node.swarm.connections.filter(\.isLimited).map {
                .init(peer: $0.remotePeer?.description ?? "?", relay: $0.relay?.description ?? "?", direction: $0.direction.rawValue)
            },
            holePunches: (holePunch?.outcomes ?? []).map(HostStatus.HolePunch.init),
            circuitsThroughRelays: .init(inbound: counts.inbound, outbound: counts.outbound),
            serving: .init(
                volunteering: stats.serving,
                reservations: stats.reservations.map { .init(peer: $0.peer.description, expiresInS: Int(clampingSeconds: $0.expires.timeIntervalSince(now))) },
                circuits: stats.circuits.map { .init(id: Int($0.id), from: $0.source.description, to: $0.destination.description,
                                                     ageS: Int(clampingSeconds: now.timeIntervalSince($0.opened))) },
                reservationsGranted: stats.reservationsGranted, circuitsOpened: stats.circuitsOpened,
                bytesForwarded: Int(clamping: stats.bytesForwarded),
                refused: Dictionary(uniqueKeysWithValues: stats.refused.map { ("\($0.key)", $0.value) }),
                circuitEnds: stats.circuitEnds,
                limits: .init(maxReservations: c.maxReservations, maxReservationsPerPeer: c.maxReservationsPerPeer,
                              maxReservationsPerIp: c.maxReservationsPerIP, maxCircuits: c.maxCircuits,
                              maxCircuitsPerPeer: c.maxCircuitsPerPeer, reservationTtlS: Int(c.reservationTTL),
                              circuitDurationS: Int(c.circuitDuration), circuitBytes: Int(clamping: c.circuitBytes))),
            portMappings: portMapping?.mappings.map(HostStatus.PortMapping.init),
            lanPeers: mdns?.discovered.map { .init(peer: $0.peer.description, addrs: $0.addresses.map(\.description),
                                                   ageS: Int(clampingSeconds: now.timeIntervalSince($0.at))) },
            mdnsDropped: mdns?.dropped)
    }
}

// MARK: Services' lifecycles

extension DHTService: HostService {}

extension NATService: HostService {}

extension RelayService: HostService {
    /// Serving is decided by `setServing` / `followReachability`; nothing to start.
    public func start() {}
}

extension AutoRelay: HostService {}

extension PortMappingService: HostService {}

extension MDNSService: HostService {}

extension HolePunchService: HostService {
    /// Hole punching reacts to events from construction on; nothing to start.
    public func start() {}
    /// Stops reacting to new relayed connections (exchanges under way finish with the swarm).
    public func stop() { subscription?.cancel() }
}

extension Multiaddr {
    /// A multiaddr from text known to be valid (constants in code).
    static func unchecked(_ text: String) -> Multiaddr {
        do { return try Multiaddr(text) } catch { preconditionFailure("invalid multiaddr constant \(text): \(error)") }
    }
}
