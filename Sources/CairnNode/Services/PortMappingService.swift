import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Asks the default gateway to forward the node's listen ports (TCP, and UDP for the STUN
/// responder beside it): PCP first, NAT-PMP when the gateway does not speak PCP, UPnP IGD when it
/// speaks neither. Keeps each mapping renewed, makes it again after a gateway restart or a
/// failure, and deletes it on `stop()`.
///
/// A gateway's answer is a claim: a mapped TCP address is advertised only once a peer has dialed
/// it back (AutoNAT, asked for that address alone) or the observed-address vote adopted it. The
/// gateway's claimed external IP is one candidate among the IPs peers observe us at; a gateway
/// that lies about it therefore never gets its address advertised.
///
/// The protocols are CairnCore's `PortMappingClient` and `UPnPMappingClient`; this class moves
/// their datagrams and HTTP exchanges, one event loop per mapping.
public final class PortMappingService: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Try PCP, then NAT-PMP (each can be turned off).
        public var pcp = true
        public var natpmp = true
        /// Try UPnP IGD when PCP and NAT-PMP fail.
        public var upnp = true
        /// Lifetime asked for (seconds); renewed at half of what the gateway grants.
        public var lifetime: UInt32 = 7200
        /// After every dialect failed (or a mapping was lost), try again this much later.
        public var retryInterval: Duration = .seconds(300)
        /// While a mapping is unconfirmed, ask peers for a dial-back this often.
        public var confirmInterval: Duration = .seconds(10)
        /// Peers asked per confirmation round.
        public var confirmPeers = 3
        /// Also map the UDP port beside each TCP port (the STUN responder's).
        public var mapUDP = true
        /// The gateway to ask; nil reads the default route (`/proc/net/route`).
        public var gateway: [UInt8]?
        /// Where the default route is read from.
        public var routeTable = "/proc/net/route"
        /// SSDP search timeout per attempt (seconds) and the timeout of each HTTP exchange.
        public var upnpSearchTimeout = 1.0
        public var httpTimeout: TimeAmount = .seconds(5)
        public init() {}
    }

    public enum State: String, Sendable {
        /// Asking the gateway.
        case mapping
        /// The gateway granted it; not yet confirmed from outside.
        case mapped
        /// A peer reached the mapped address (or the vote adopted it): advertised.
        case confirmed
        /// No dialect worked; retried after `retryInterval`.
        case failed
    }

    /// One mapping as the node sees it.
    public struct Mapping: Sendable, Equatable {
        public var proto: PortMapping.TransportProtocol
        public var internalPort: UInt16
        public var gateway: [UInt8]
        public var state: State
        public var dialect: PortMappingClient.Dialect?
        public var externalPort: UInt16?
        /// What the gateway claims our external IP is (unverified).
        public var claimedAddress: [UInt8]?
        /// The address advertised, once confirmed.
        public var confirmed: Multiaddr?
        /// How it was confirmed, or why it failed.
        public var detail: String?

        /// "port mapping: UPnP IGD on 10.0.1.1, mapped 198.18.0.11:4001, confirmed (…)".
        public var summary: String {
            let protoName = proto == .tcp ? "tcp" : "udp"
            var s = "\(protoName) \(internalPort): "
            let gw = IPAddressText.format(gateway)
            switch state {
            case .mapping: s += "asking \(gw)"
            case .failed: s += "failed on \(gw)" + (detail.map { ": \($0)" } ?? "")
            case .mapped, .confirmed:
                let ext = (claimedAddress.map(IPAddressText.format) ?? "?") + ":\(externalPort ?? 0)"
                s += "\(dialect?.rawValue ?? "?") on \(gw), mapped \(ext)"
                if state == .confirmed {
                    s += ", confirmed as \(confirmed?.description ?? "?")" + (detail.map { " (\($0))" } ?? "")
                } else {
                    s += ", unconfirmed" + (detail.map { " (\($0))" } ?? "")
                }
            }
            return s
        }
    }

    let node: Node
    let nat: NATService
    let configuration: Configuration
    let logger: Logger

    private struct State_ {
        var drivers: [PortMappingDriver] = []
        var mappings: [Int: Mapping] = [:]
        var tasks: [Task<Void, Never>] = []
        var stopped = false
        var note: String?
    }
    private let state = NIOLockedValueBox(State_())

    public init(node: Node, nat: NATService, configuration: Configuration = Configuration(), logger: Logger) {
        self.node = node
        self.nat = nat
        self.configuration = configuration
        self.logger = logger
    }

    /// Every mapping, TCP first, by port.
    public var mappings: [Mapping] {
        state.withLockedValue { s in s.mappings.sorted { $0.key < $1.key }.map(\.value) }
    }

    /// Why nothing is mapped when there is nothing to map (no gateway, loopback only).
    public var note: String? { state.withLockedValue { $0.note } }

    /// True once every mapping has an outcome: TCP confirmed or failed, UDP mapped or failed
    /// (nothing dials UDP back to confirm it); or there is nothing to map.
    public var isSettled: Bool {
        state.withLockedValue { s in
            if s.note != nil { return true }
            guard s.mappings.count == s.drivers.count else { return false }
            return s.mappings.values.allSatisfy { m in
                m.state == .confirmed || m.state == .failed || (m.proto == .udp && m.state == .mapped)
            }
        }
    }

    // MARK: Lifecycle

    /// Starts a mapping for each IPv4, non-loopback TCP listen port (and its UDP twin).
    public func start() async {
        let ports = node.lanListenAddresses.compactMap { $0.tcpEndpoint?.port }
        guard !ports.isEmpty else {
            state.withLockedValue { $0.note = Node.noLANListenAddress }
            return
        }
        let gateway = configuration.gateway ?? Self.defaultGateway(routeTable: configuration.routeTable)
        guard let gateway else {
            state.withLockedValue { $0.note = "no IPv4 default gateway" }
            logger.info("port mapping: no IPv4 default gateway")
            return
        }
        var protos: [PortMapping.TransportProtocol] = [.tcp]
        if configuration.mapUDP { protos.append(.udp) }
        var drivers: [PortMappingDriver] = []
        for port in Set(ports).sorted() {
            for proto in protos {
                let key = Self.key(proto, port)
                let d = PortMappingDriver(proto: proto, internalPort: port, gateway: gateway, configuration: configuration,
                                          swarm: node.swarm, logger: logger) { [weak self] m in self?.changed(key, m) }
                drivers.append(d)
            }
        }
        let started = state.withLockedValue { s -> Bool in
            guard !s.stopped else { return false }
            s.drivers = drivers
            return true
        }
        guard started else { return }
        for d in drivers { d.start() }
    }

    /// Deletes every mapping on its gateway (waiting a moment for each) and stops advertising.
    public func stop() async {
        let (drivers, tasks) = state.withLockedValue { s -> ([PortMappingDriver], [Task<Void, Never>]) in
            s.stopped = true
            defer { s.drivers = []; s.tasks = [] }
            return (s.drivers, s.tasks)
        }
        for t in tasks { t.cancel() }
        for t in tasks { await t.value }
        await withTaskGroup(of: Void.self) { g in
            for d in drivers { g.addTask { await d.stop() } }
        }
        node.setExtraAddresses([], source: .portMapping)
    }

    static func key(_ proto: PortMapping.TransportProtocol, _ port: UInt16) -> Int { Int(proto.rawValue) << 16 | Int(port) }

    static func defaultGateway(routeTable: String) -> [UInt8]? {
        guard let text = try? String(contentsOfFile: routeTable, encoding: .utf8) else { return nil }
        return PortMapping.defaultGateways(procNetRoute: text).first?.gateway
    }

    // MARK: Confirmation

    /// A driver's mapping changed: keep the status, and confirm or withdraw its address.
    private func changed(_ key: Int, _ m: Mapping) {
        let (previous, stopped) = state.withLockedValue { s -> (Mapping?, Bool) in
            let p = s.mappings[key]
            var m = m
            // A renewal keeps what confirmation found.
            if let p, p.state == .confirmed, m.state == .mapped, p.externalPort == m.externalPort {
                m.state = .confirmed
                m.confirmed = p.confirmed
                m.detail = p.detail
            }
            s.mappings[key] = m
            return (p, s.stopped)
        }
        if stopped { return }
        if m.state == .mapped && !(previous?.state == .confirmed && previous?.externalPort == m.externalPort) {
            logger.notice("port mapping: \(m.summary)")
            if m.proto == .tcp { confirm(key) }
        } else if m.state == .failed, previous?.state != .failed {
            logger.info("port mapping: \(m.summary)")
        }
        publish()
    }

    /// Advertises the confirmed TCP addresses (and nothing else).
    private func publish() {
        let addrs = state.withLockedValue { s in s.mappings.sorted { $0.key < $1.key }.compactMap { $0.value.state == .confirmed ? $0.value.confirmed : nil } }
        node.setExtraAddresses(addrs, source: .portMapping)
    }

    /// Until the mapping is confirmed (or gone): check the vote, then ask a few peers to dial
    /// the candidates back, every `confirmInterval`.
    private func confirm(_ key: Int) {
        let task = Task { [weak self] in
            while !Task.isCancelled {
                guard let self else { return }
                guard let m = self.state.withLockedValue({ $0.mappings[key] }), m.state == .mapped, let port = m.externalPort else { return }
                let candidates = self.candidates(m, port: port)
                var how: (Multiaddr, String)?
                if let voted = self.nat.externalAddresses.first(where: { candidates.contains($0) }) {
                    how = (voted, "adopted by the observed-address vote")
                } else {
                    how = await self.askDialBacks(candidates)
                }
                let finished = self.state.withLockedValue { s -> Bool in
                    guard var cur = s.mappings[key], cur.state == .mapped, cur.externalPort == port else { return true }
                    if let (addr, why) = how {
                        cur.state = .confirmed
                        cur.confirmed = addr
                        cur.detail = why
                    } else {
                        cur.detail = "no peer reached \(candidates.map(\.description).joined(separator: " ")) yet"
                    }
                    s.mappings[key] = cur
                    return how != nil
                }
                if finished {
                    if let (addr, why) = how {
                        self.logger.notice("port mapping confirmed: \(addr) (\(why))")
                        self.node.events.emit(.externalAddressConfirmed(addr))
                    }
                    self.publish()
                    return
                }
                try? await Task.sleep(for: self.configuration.confirmInterval)
            }
        }
        let keep = state.withLockedValue { s -> Bool in
            guard !s.stopped else { return false }
            s.tasks.removeAll { $0.isCancelled }
            s.tasks.append(task)
            return true
        }
        if !keep { task.cancel() }
    }

    /// The mapped port at the gateway's claimed IP and at every IP peers observe us at (a gateway
    /// behind another NAT, or one that lies, claims the wrong one).
    func candidates(_ m: Mapping, port: UInt16) -> [Multiaddr] {
        var ips: [[UInt8]] = []
        if let c = m.claimedAddress { ips.append(c) }
        for ip in nat.observedIPs where ip.count == 4 && !ips.contains(ip) { ips.append(ip) }
        return ips.filter { IPScope($0) != .unspecified && IPScope($0) != .loopback }
            .map { Multiaddr(components: [.ip4($0), .tcp(port)]) }
    }

    /// Asks up to `confirmPeers` direct peers (with routable addresses) to dial the candidates;
    /// the first success names the address reached.
    private func askDialBacks(_ candidates: [Multiaddr]) async -> (Multiaddr, String)? {
        guard !candidates.isEmpty else { return nil }
        let peers = node.swarm.connections.filter { c in
            guard !c.isLimited, let (ip, _) = c.remoteAddress?.tcpEndpoint else { return false }
            return IPScope(ip) == .publicRange
        }.shuffled().prefix(configuration.confirmPeers)
        for c in peers {
            do {
                let (status, reached) = try await nat.probe(c, addresses: candidates)
                if status == .ok, let reached, candidates.contains(reached) {
                    return (reached, "dialed back by \(c.remotePeer?.description ?? "?")")
                }
                logger.debug("port mapping: dial-back refused", metadata: ["peer": "\(c.remotePeer?.description ?? "?")", "status": "\(status)"])
            } catch {
                logger.debug("port mapping: dial-back request failed: \(error)", metadata: ["peer": "\(c.remotePeer?.description ?? "?")"])
            }
        }
        return nil
    }
}

// MARK: - One mapping's I/O

/// Drives one mapping's state machines on one event loop: a UDP socket connected to the
/// gateway's port 5351 (PCP, NAT-PMP), an SSDP socket and HTTP exchanges (UPnP), and a timer.
final class PortMappingDriver: @unchecked Sendable {
    enum Machine {
        case none
        case pmp(PortMappingClient)
        case upnp(UPnPMappingClient)
    }

    let proto: PortMapping.TransportProtocol
    let internalPort: UInt16
    let gateway: [UInt8]
    let configuration: PortMappingService.Configuration
    let loop: EventLoop
    /// Owns the sockets (closes them at shutdown).
    let swarm: Swarm
    let logger: Logger
    let report: @Sendable (PortMappingService.Mapping) -> Void

    // Everything below is touched on `loop` only.
    private var machine = Machine.none
    private var pmpChannel: Channel?
    private var ssdpChannel: Channel?
    private var clientAddress: [UInt8]?
    private var timer: Scheduled<Void>?
    private var retry: Scheduled<Void>?
    private var stopped = false
    private var failures: [String] = []

    init(proto: PortMapping.TransportProtocol, internalPort: UInt16, gateway: [UInt8], configuration: PortMappingService.Configuration,
         swarm: Swarm, logger: Logger, report: @escaping @Sendable (PortMappingService.Mapping) -> Void) {
        self.swarm = swarm
        let loop = swarm.group.next()
        self.proto = proto
        self.internalPort = internalPort
        self.gateway = gateway
        self.configuration = configuration
        self.loop = loop
        self.logger = logger
        self.report = report
    }

    private var now: Double { Double(NIODeadline.now().uptimeNanoseconds) / 1e9 }
    private var gatewaySocket: SocketAddress? { try? SocketAddress(ipAddress: IPAddressText.format(gateway), port: Int(PortMapping.port)) }

    func start() { loop.execute { self.begin() } }

    /// A fresh attempt: PCP/NAT-PMP (or straight to UPnP).
    private func begin() {
        guard !stopped else { return }
        failures = []
        report(.init(proto: proto, internalPort: internalPort, gateway: gateway, state: .mapping))
        guard configuration.pcp || configuration.natpmp, let gw = gatewaySocket else { return beginUPnP() }
        let bootstrap = DatagramBootstrap(group: loop).channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(DatagramRelay(
                    received: { [weak self] bytes, from in self?.pmpReceived(bytes, from: from) },
                    refused: { [weak self] in self?.pmpRefused() }))
            }
        }
        bootstrap.connect(to: gw).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let ch):
                guard !self.stopped, self.swarm.adoptDatagramChannel(ch, purpose: "pcp/nat-pmp") else { ch.close(promise: nil); return }
                self.pmpChannel = ch
                guard let local = ch.localAddress?.ipAddress.flatMap(IPAddressText.parse4) else {
                    return self.dialectFailed("no local IPv4 address towards the gateway")
                }
                self.clientAddress = local
                var c = PortMappingClient.Configuration(proto: self.proto, internalPort: self.internalPort, clientAddress: local)
                c.lifetime = self.configuration.lifetime
                c.pcp = self.configuration.pcp
                c.natpmp = self.configuration.natpmp
                var client = PortMappingClient(configuration: c, nonce: (0..<12).map { _ in UInt8.random(in: 0...255) })
                let actions = client.start(now: self.now)
                self.machine = .pmp(client)
                self.perform(pmp: actions)
            case .failure(let e):
                self.dialectFailed("PCP/NAT-PMP socket: \(e)")
            }
        }
    }

    private func beginUPnP() {
        closePMP()
        guard configuration.upnp else { return allFailed() }
        // Our LAN address (the mapping's internal client) is known from the PCP/NAT-PMP socket;
        // without one, a UDP socket connected to the gateway tells it (connecting sends nothing).
        guard clientAddress == nil, let gw = gatewaySocket else { return openSSDP() }
        DatagramBootstrap(group: loop).connect(to: gw).assumeIsolated().whenComplete { result in
            if case .success(let ch) = result {
                self.clientAddress = ch.localAddress?.ipAddress.flatMap(IPAddressText.parse4)
                ch.close(promise: nil)
            }
            self.openSSDP()
        }
    }

    private func openSSDP() {
        guard !stopped else { return }
        let bootstrap = DatagramBootstrap(group: loop)
            .channelOption(SocketOptions.reuseAddr, value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DatagramRelay(
                        received: { [weak self] bytes, from in self?.ssdpReceived(bytes, from: from) }, refused: {}))
                }
            }
        bootstrap.bind(host: "0.0.0.0", port: 0).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let ch):
                guard !self.stopped, self.swarm.adoptDatagramChannel(ch, purpose: "ssdp") else { ch.close(promise: nil); return }
                self.ssdpChannel = ch
                let local = self.clientAddress ?? [0, 0, 0, 0]
                var c = UPnPMappingClient.Configuration(proto: self.proto, internalPort: self.internalPort, internalClient: local, gateway: self.gateway)
                c.lifetime = self.configuration.lifetime
                c.searchTimeout = self.configuration.upnpSearchTimeout
                var client = UPnPMappingClient(configuration: c)
                let actions = client.start(now: self.now)
                self.machine = .upnp(client)
                self.perform(upnp: actions)
            case .failure(let e):
                self.failures.append("UPnP: SSDP socket: \(e)")
                self.allFailed()
            }
        }
    }

    // MARK: PCP / NAT-PMP

    private func pmpReceived(_ bytes: [UInt8], from: SocketAddress) {
        guard case .pmp(var client) = machine else { return }
        do {
            let actions = try client.received(bytes, now: now)
            machine = .pmp(client)
            perform(pmp: actions)
        } catch {
            logger.info("port mapping: dropped a datagram from the gateway: \(error)", metadata: ["from": "\(from)"])
        }
    }

    private func pmpRefused() {
        guard case .pmp(var client) = machine else { return }
        let actions = client.unreachable(now: now)
        machine = .pmp(client)
        perform(pmp: actions)
    }

    private func perform(pmp actions: [PortMappingClient.Action]) {
        for a in actions {
            switch a {
            case .send(let bytes):
                guard let ch = pmpChannel, let gw = gatewaySocket else { continue }
                ch.writeAndFlush(AddressedEnvelope(remoteAddress: gw, data: ch.allocator.buffer(bytes: bytes)), promise: nil)
            case .mapped(let m):
                mapped(m)
            case .failed(let why):
                return dialectFailed(why)
            }
        }
        rearm()
    }

    private func dialectFailed(_ why: String) {
        failures.append(why)
        beginUPnP()
    }

    private func closePMP() {
        pmpChannel?.close(promise: nil)
        pmpChannel = nil
        if case .pmp = machine { machine = .none }
    }

    // MARK: UPnP

    private func ssdpReceived(_ bytes: [UInt8], from: SocketAddress) {
        guard case .upnp(var client) = machine else { return }
        do {
            let actions = try client.ssdpReceived(bytes, now: now)
            machine = .upnp(client)
            perform(upnp: actions)
        } catch {
            logger.info("port mapping: dropped an SSDP answer: \(error)", metadata: ["from": "\(from)"])
        }
    }

    private func perform(upnp actions: [UPnPMappingClient.Action]) {
        for a in actions {
            switch a {
            case .search(let bytes):
                guard let ch = ssdpChannel else { continue }
                // Multicast as the spec says, and unicast to the gateway (the only answer we take).
                var targets = [try? SocketAddress(ipAddress: UPnP.ssdpAddress, port: Int(UPnP.ssdpPort))]
                targets.append(try? SocketAddress(ipAddress: IPAddressText.format(gateway), port: Int(UPnP.ssdpPort)))
                for t in targets.compactMap({ $0 }) {
                    ch.writeAndFlush(AddressedEnvelope(remoteAddress: t, data: ch.allocator.buffer(bytes: bytes)), promise: nil)
                }
            case .http(let url, let bytes):
                exchange(url, bytes).assumeIsolated().whenComplete { result in
                    guard !self.stopped, case .upnp(var client) = self.machine else { return }
                    let next: [UPnPMappingClient.Action]
                    switch result {
                    case .success(let answer): next = client.httpResponse(answer, now: self.now)
                    case .failure(let e): next = client.httpFailed("\(e)")
                    }
                    self.machine = .upnp(client)
                    self.perform(upnp: next)
                }
            case .mapped(let m, _):
                mapped(m)
            case .failed(let why):
                failures.append("UPnP: " + why)
                return allFailed()
            }
        }
        rearm()
    }

    /// One HTTP/1.1 request with `Connection: close`; the whole answer, at most the UPnP limit.
    private func exchange(_ url: UPnP.URLParts, _ request: [UInt8]) -> EventLoopFuture<[UInt8]> {
        let promise = loop.makePromise(of: [UInt8].self)
        let limit = UPnP.maxDocumentLength + 8192
        let timeout = loop.scheduleTask(in: configuration.httpTimeout) { promise.fail(ChannelError.connectTimeout(self.configuration.httpTimeout)) }
        promise.futureResult.whenComplete { _ in timeout.cancel() }
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(configuration.httpTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTPCollector(limit: limit, promise: promise))
                }
            }
        bootstrap.connect(host: IPAddressText.format(url.host), port: Int(url.port)).whenComplete { result in
            switch result {
            case .success(let ch):
                ch.writeAndFlush(ch.allocator.buffer(bytes: request), promise: nil)
                promise.futureResult.whenComplete { _ in ch.close(promise: nil) }
            case .failure(let e):
                promise.fail(e)
            }
        }
        return promise.futureResult
    }

    // MARK: Outcomes

    private func mapped(_ m: PortMappingClient.Mapping) {
        retry?.cancel()
        var s = PortMappingService.Mapping(proto: proto, internalPort: internalPort, gateway: gateway, state: .mapped)
        s.dialect = m.dialect
        s.externalPort = m.externalPort
        s.claimedAddress = m.externalAddress
        report(s)
    }

    private func allFailed() {
        timer?.cancel()
        ssdpChannel?.close(promise: nil)
        ssdpChannel = nil
        closePMP()
        machine = .none
        var s = PortMappingService.Mapping(proto: proto, internalPort: internalPort, gateway: gateway, state: .failed)
        s.detail = failures.joined(separator: "; ")
        report(s)
        guard !stopped else { return }
        let wait = TimeAmount.nanoseconds(Int64(configuration.retryInterval.components.seconds) * 1_000_000_000
                                          + configuration.retryInterval.components.attoseconds / 1_000_000_000)
        retry = loop.scheduleTask(in: wait) { self.begin() }
    }

    /// Arms the timer at the machine's next deadline.
    private func rearm() {
        timer?.cancel()
        timer = nil
        let deadline: Double?
        switch machine {
        case .pmp(let c): deadline = c.nextDeadline()
        case .upnp(let c): deadline = c.nextDeadline()
        case .none: deadline = nil
        }
        guard let deadline, !stopped else { return }
        let wait = TimeAmount.nanoseconds(max(0, Int64((deadline - now) * 1e9)))
        timer = loop.scheduleTask(in: wait) { self.fire() }
    }

    private func fire() {
        guard !stopped else { return }
        switch machine {
        case .pmp(var c):
            let a = c.tick(now: now)
            machine = .pmp(c)
            perform(pmp: a)
        case .upnp(var c):
            let a = c.tick(now: now)
            machine = .upnp(c)
            perform(upnp: a)
        case .none:
            break
        }
    }

    /// Deletes the mapping (PCP/NAT-PMP: lifetime 0; UPnP: DeletePortMapping), waiting at most
    /// two seconds, then closes the sockets.
    func stop() async {
        let done: EventLoopFuture<Void> = loop.flatSubmit {
            self.stopped = true
            self.timer?.cancel()
            self.retry?.cancel()
            var pending: [EventLoopFuture<Void>] = []
            switch self.machine {
            case .pmp(var c):
                for case .send(let bytes) in c.stop() {
                    if let ch = self.pmpChannel, let gw = self.gatewaySocket {
                        pending.append(ch.writeAndFlush(AddressedEnvelope(remoteAddress: gw, data: ch.allocator.buffer(bytes: bytes))))
                    }
                }
                self.machine = .pmp(c)
            case .upnp(var c):
                for case .http(let url, let bytes) in c.stop() {
                    pending.append(self.exchange(url, bytes).map { _ in })
                }
                self.machine = .upnp(c)
            case .none:
                break
            }
            let all = EventLoopFuture.whenAllComplete(pending, on: self.loop)
            let bounded = self.loop.makePromise(of: Void.self)
            let guardTimer = self.loop.scheduleTask(in: .seconds(2)) { bounded.succeed(()) }
            all.whenComplete { _ in guardTimer.cancel(); bounded.succeed(()) }
            return bounded.futureResult.flatMap {
                let closes = [self.pmpChannel, self.ssdpChannel].compactMap { $0 }.map { $0.close() }
                self.pmpChannel = nil
                self.ssdpChannel = nil
                return EventLoopFuture.whenAllComplete(closes, on: self.loop).map { _ in }
            }
        }
        try? await done.get()
    }
}

/// Hands each datagram to `received`; ECONNREFUSED (ICMP port unreachable on a connected
/// socket) to `refused`.
private final class DatagramRelay: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let received: ([UInt8], SocketAddress) -> Void
    let refused: () -> Void

    init(received: @escaping ([UInt8], SocketAddress) -> Void, refused: @escaping () -> Void) {
        self.received = received
        self.refused = refused
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let e = unwrapInboundIn(data)
        // Larger than any PCP or SSDP message we accept: not read into an array at all.
        guard e.data.readableBytes <= max(PCP.maxMessageLength, UPnP.maxSSDPLength) else { return }
        received(Array(e.data.readableBytesView), e.remoteAddress)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let e = error as? IOError, e.errnoCode == ECONNREFUSED { refused() }
    }
}

/// Collects an HTTP answer until the server closes; fails past `limit` bytes.
private final class HTTPCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let limit: Int
    let promise: EventLoopPromise<[UInt8]>
    var bytes: [UInt8] = []

    init(limit: Int, promise: EventLoopPromise<[UInt8]>) {
        self.limit = limit
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let b = unwrapInboundIn(data)
        guard bytes.count + b.readableBytes <= limit else {
            promise.fail(UPnP.ParseError.tooLong(bytes.count + b.readableBytes))
            context.close(promise: nil)
            return
        }
        bytes += b.readableBytesView
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.succeed(bytes)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
