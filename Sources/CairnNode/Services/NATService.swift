import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Address inference and reachability on a running node: records identify's observed address per
/// connection into the voting book, notes inbound connections from hosts never contacted (proof of
/// endpoint-independent filtering), serves AutoNAT dial-backs and asks peers for them, and lets
/// the DHT's server/client mode follow the resulting reachability.
public final class NATService: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var observed = ObservedAddressBook.Configuration()
        public var serveAutoNAT = true
        public var policy = AutoNAT.ServerPolicy()
        public var dialBackTimeout: Duration = .seconds(15)
        /// How many more AutoNAT servers must agree than disagree before reachability leaves unknown.
        public var minServersToDecide = 2
        /// Adversarial testing only: answer every dial-back request with this status, dialing nobody.
        public var testingAutoNATAnswer: AutoNAT.Status?
        /// After `start()`: when to ask peers for dial-backs (seconds after the previous round);
        /// the last entry repeats. Soon after joining, often at first, then every 15 minutes.
        public var probeSchedule: [Duration] = [.seconds(5), .seconds(30), .seconds(60), .seconds(60), .seconds(60), .seconds(900)]
        /// Peers asked per round.
        public var probesPerRound = 3
        /// Advertise confirmed external addresses (identify, peer record, presence): a running
        /// node does; a one-shot dialer does not (a peer's reversal towards our NAT's address
        /// would only leave state on the 4-tuple a hole punch needs).
        public var advertiseExternalAddresses = false
        /// How often confirmed addresses are re-checked for age (votes expire with time, too).
        public var externalAddressRecheck: Duration = .seconds(10)
        public init() {}
    }

    /// One AutoNAT answer this node received, and the state it left.
    public struct AutoNATAnswer: Sendable {
        public var server: PeerID
        public var serverGroup: ObserverGroup
        public var status: AutoNAT.Status
        public var reachability: AutoNAT.ReachabilityTracker.Reachability
        public var confidence: Int
        public var at: Date
    }

    public struct Report: Sendable {
        public var votes: [ObservedAddressBook.Vote]
        public var external: [Multiaddr]
        public var classification: NATClassification
        public var reachability: AutoNAT.ReachabilityTracker
        public var rejectedObservations: [ObservedAddressBook.Rejection: Int]
        /// The latest AutoNAT answers, oldest first (at most `maxAnswerHistory`).
        public var autonatAnswers: [AutoNATAnswer]
        public var generatedAt: Date
    }

    let node: Node
    weak var dht: DHTService?
    let configuration: Configuration
    let logger: Logger

    private struct State {
        var stunVotes: UInt64 = 0
        var book: ObservedAddressBook
        var tracker: AutoNAT.ReachabilityTracker
        var answers: [AutoNATAnswer] = []
        var policy: AutoNAT.ServerPolicy
        var contacted: Set<[UInt8]> = []
        var inboundFromUncontacted = false
        var confirmed: [Multiaddr] = []
        var tasks: [Task<Void, Never>] = []
    }
    private let state: NIOLockedValueBox<State>

    public init(node: Node, dht: DHTService?, configuration: Configuration = Configuration(), logger: Logger) {
        self.node = node
        self.dht = dht
        self.configuration = configuration
        self.logger = logger
        self.state = NIOLockedValueBox(State(book: ObservedAddressBook(configuration: configuration.observed),
                                             tracker: AutoNAT.ReachabilityTracker(minServersToDecide: configuration.minServersToDecide),
                                             policy: configuration.policy))
        subscription = node.events.subscribe { [weak self] event in
            switch event {
            case .peerIdentified(let c, let info): self?.identified(c, info)
            case .connectionEstablished(let c): self?.connected(c)
            case .connectionClosed: self?.refreshExternalAddresses()
            default: break
            }
        }
        node.dialer.setExternalAddressSource { [weak self] in self?.externalAddresses ?? [] }
        node.dialer.setObservedIPSource { [weak self] in self?.observedIPs ?? [] }
        if configuration.serveAutoNAT {
            node.swarm.handle(AutoNAT.protocolID, service: "autonat") { [weak self] stream in
                guard let self else { throw StreamError.connectionClosed("AutoNAT service is gone") }
                try await self.serve(stream)
            }
        }
    }

    private var subscription: EventSubscription?

    // MARK: Lifecycle

    /// Starts asking peers for dial-backs on `probeSchedule` and re-checking confirmed addresses.
    public func start() {
        let probing = Task { [weak self] in
            var round = 0
            while !Task.isCancelled {
                guard let schedule = self?.configuration.probeSchedule, !schedule.isEmpty else { return }
                try? await Task.sleep(for: schedule[min(round, schedule.count - 1)])
                round += 1
                guard let self, !Task.isCancelled else { return }
                await self.probeRound()
            }
        }
        let recheck = Task { [weak self] in
            while !Task.isCancelled {
                guard let every = self?.configuration.externalAddressRecheck else { return }
                try? await Task.sleep(for: every)
                self?.refreshExternalAddresses()
            }
        }
        state.withLockedValue { $0.tasks += [probing, recheck] }
    }

    public func stop() async {
        let tasks = state.withLockedValue { s -> [Task<Void, Never>] in defer { s.tasks = [] }; return s.tasks }
        for t in tasks { t.cancel() }
        for t in tasks { await t.value }
    }

    /// Asks a few (direct) peers to dial us back, at once.
    public func probeRound() async {
        let peers = node.swarm.connections.filter { !$0.isLimited }.shuffled().prefix(configuration.probesPerRound)
        await withTaskGroup(of: Void.self) { g in
            for c in peers { g.addTask { _ = try? await self.probe(c) } }
        }
    }

    /// Emits confirmed / expired external addresses and advertises the confirmed ones.
    func refreshExternalAddresses() {
        // Compared and stored in one critical section: concurrent refreshes never undo each other.
        let (added, removed) = state.withLockedValue { s -> ([Multiaddr], [Multiaddr]) in
            let now = s.book.externalAddresses(now: Date())
            defer { s.confirmed = now }
            return (now.filter { !s.confirmed.contains($0) }, s.confirmed.filter { !now.contains($0) })
        }
        guard !added.isEmpty || !removed.isEmpty else { return }
        for a in added { node.events.emit(.externalAddressConfirmed(a)) }
        for a in removed { node.events.emit(.externalAddressExpired(a)) }
        if configuration.advertiseExternalAddresses {
            // The newest confirmed set (another refresh may have moved on meanwhile).
            let current = state.withLockedValue { $0.confirmed }
            node.setExtraAddresses(current.filter { $0.tcpEndpoint != nil }, source: .observed)
        }
    }

    // MARK: Observations

    private func connected(_ c: Connection) {
        guard let (ip, _) = c.remoteAddress?.tcpEndpoint else { return }
        state.withLockedValue { s in
            if c.direction == .outbound {
                s.contacted.insert(ip)
            } else if !s.contacted.contains(ip) && IPScope(ip).isPublic && !s.inboundFromUncontacted {
                s.inboundFromUncontacted = true
            }
        }
        c.closed.whenComplete { [weak self] _ in
            self?.state.withLockedValue { $0.book.connectionClosed(c.id) }
        }
    }

    private func identified(_ c: Connection, _ info: IdentifyInfo) {
        guard let observed = info.observedAddr, let local = c.localAddress, let remote = c.remoteAddress else { return }
        let rejection = state.withLockedValue { s in
            s.book.record(connection: c.id, local: local, remote: remote, observed: observed,
                          outbound: c.direction == .outbound, relayed: c.isLimited, now: Date())
        }
        if let rejection {
            logger.info("ignored an observed address: \(rejection)", metadata: ["peer": "\(c.remotePeer?.description ?? "?")", "observed": "\(observed)"])
        }
        refreshExternalAddresses()
    }

    public var externalAddresses: [Multiaddr] { state.withLockedValue { $0.book.externalAddresses(now: Date()) } }

    /// The public IPs live votes observe us at, adopted or not (address ranking's "same NAT").
    public var observedIPs: [[UInt8]] {
        state.withLockedValue { s in
            var out: [[UInt8]] = []
            for v in s.book.liveVotes(Date()) {
                if let (ip, _) = v.observed.tcpEndpoint ?? v.observed.udpEndpoint, IPScope(ip).isPublic, !out.contains(ip) { out.append(ip) }
            }
            return out
        }
    }
    public var reachability: AutoNAT.ReachabilityTracker { state.withLockedValue { $0.tracker } }
    public static let maxAnswerHistory = 64

    public func report() -> Report {
        let now = Date()
        return state.withLockedValue { s in
            s.book.expire(now: now)
            let votes = s.book.liveVotes(now)
            return Report(votes: votes, external: s.book.externalAddresses(now: now),
                          classification: NATClassification.classify(votes: votes, minObservers: configuration.observed.minObservers,
                                                                     inboundFromUncontacted: s.inboundFromUncontacted),
                          reachability: s.tracker, rejectedObservations: s.book.rejected, autonatAnswers: s.answers, generatedAt: now)
        }
    }

    // MARK: STUN voters

    /// Asks the STUN responders of `peers` (the UDP port beside each peer's TCP port) where our
    /// UDP socket on `localPort` appears. One query at a time from that same port, so their
    /// answers describe one mapping; each answer is one more vote (never trusted alone). Returns
    /// how many answered.
    @discardableResult
    public func querySTUN(peers: [Multiaddr], localPort: Int, timeout: TimeAmount = .seconds(2)) async -> Int {
        let client = STUNClient(group: node.swarm.group)
        var answered = 0
        for peer in peers {
            guard let (ip, port) = peer.tcpEndpoint else { continue }
            do {
                let server = try SocketAddress(ipAddress: IPAddressText.format(ip), port: Int(port))
                let local = try SocketAddress(ipAddress: ip.count == 4 ? "0.0.0.0" : "::", port: localPort)
                let (mapped, bound) = try await client.exchange(server: server, timeout: timeout, from: local)
                let m = Multiaddr(components: [mapped.ip.count == 4 ? .ip4(mapped.ip) : .ip6(mapped.ip), .udp(mapped.port)])
                let serverAddr = Multiaddr(components: [ip.count == 4 ? .ip4(ip) : .ip6(ip), .udp(port)])
                guard let boundTCPish = Multiaddr(tcp: bound), let (lip, lport) = boundTCPish.tcpEndpoint else { continue }
                let localAddr = Multiaddr(components: [lip.count == 4 ? .ip4(lip) : .ip6(lip), .udp(lport)])
                let rejection = state.withLockedValue { s -> ObservedAddressBook.Rejection? in
                    s.stunVotes += 1
                    return s.book.recordSTUN(id: ObservedAddressBook.stunVoteID(s.stunVotes), local: localAddr, server: serverAddr, mapped: m, now: Date())
                }
                if let rejection { logger.info("ignored a STUN answer: \(rejection)", metadata: ["server": "\(serverAddr)"]) } else { answered += 1 }
            } catch {
                logger.debug("STUN query failed: \(error)", metadata: ["peer": "\(peer)"])
            }
            refreshExternalAddresses()
        }
        return answered
    }

    // MARK: AutoNAT server

    func serve(_ stream: MuxedStream) async throws {
        guard let requester = stream.connection.remotePeer, let (observedIP, _) = stream.connection.remoteAddress?.tcpEndpoint else { return }
        let bytes = try await withTimeout(.seconds(10)) {
            try await stream.readLengthPrefixed(maxLength: AutoNAT.maxMessageSize)
        }
        let reply: AutoNAT.Message
        do {
            let (request, skipped) = try AutoNAT.decode(bytes)
            if skipped > 0 { logger.info("autonat: skipped \(skipped) unparseable addresses", metadata: ["peer": "\(requester)"]) }
            let decision = state.withLockedValue { $0.policy.decide(request: request, requester: requester, observedIP: observedIP, now: Date()) }
            switch decision {
            case _ where configuration.testingAutoNATAnswer != nil:
                let lie = configuration.testingAutoNATAnswer!
                logger.warning("autonat: testing mode, answering \(lie) without dialing", metadata: ["peer": "\(requester)"])
                reply = .dialResponse(status: lie, text: "testing answer", address: nil)
            case .refuse(let status, let why):
                logger.info("autonat: refused a dial-back: \(why)", metadata: ["peer": "\(requester)"])
                reply = .dialResponse(status: status, text: why, address: nil)
            case .dial(let targets):
                reply = await dialBack(requester, targets)
            }
        } catch {
            logger.info("autonat: bad request: \(error)", metadata: ["peer": "\(requester)"])
            reply = .dialResponse(status: .badRequest, text: "\(error)", address: nil)
        }
        try await stream.writeLengthPrefixed(AutoNAT.encode(reply))
        await stream.closeWrite()
    }

    /// Dials the requester back on new connections to all targets at once, within one overall
    /// `dialBackTimeout`; the first success answers (the others are cancelled).
    private func dialBack(_ peer: PeerID, _ targets: [Multiaddr]) async -> AutoNAT.Message {
        let swarm = node.swarm
        let logger = self.logger
        let reached: Multiaddr? = try? await withTimeout(configuration.dialBackTimeout) {
            await withTaskGroup(of: Multiaddr?.self) { g in
                for t in targets {
                    g.addTask {
                        do {
                            let conn = try await swarm.dial(t.appending(.p2p(peer)))
                            await conn.close()
                            return t
                        } catch {
                            logger.debug("autonat: dial-back failed: \(error)", metadata: ["peer": "\(peer)", "addr": "\(t)"])
                            return nil
                        }
                    }
                }
                for await r in g where r != nil {
                    g.cancelAll()
                    return r
                }
                return nil
            }
        }
        if let reached {
            logger.debug("autonat: dialed back", metadata: ["peer": "\(peer)", "addr": "\(reached)"])
            return .dialResponse(status: .ok, text: nil, address: reached)
        }
        return .dialResponse(status: .dialError, text: "dial back failed", address: nil)
    }

    // MARK: AutoNAT client

    /// The addresses to ask others to dial: adopted external addresses, else every observed one,
    /// and our listen addresses.
    func candidateAddresses() -> [Multiaddr] {
        let (external, observed) = state.withLockedValue { s in
            (s.book.externalAddresses(now: Date()), s.book.liveVotes(Date()).map(\.observed))
        }
        var out: [Multiaddr] = []
        for a in external + observed + node.listenAddresses where !out.contains(a) && a.tcpEndpoint != nil && !a.isUnspecifiedIP {
            out.append(a)
        }
        return Array(out.prefix(AutoNAT.maxAddresses))
    }

    /// Asks the peer on `connection` to dial us back; feeds the answer to the tracker and lets
    /// the DHT mode follow a change. Returns the status.
    @discardableResult
    public func probe(_ connection: Connection) async throws -> AutoNAT.Status {
        try await probe(connection, addresses: candidateAddresses()).status
    }

    /// Asks the peer on `connection` to dial us back at `addresses` only (a port mapping's
    /// claimed address, say); the answer counts towards reachability like any other. Returns the
    /// status and the address the server reached.
    public func probe(_ connection: Connection, addresses: [Multiaddr]) async throws -> (status: AutoNAT.Status, reached: Multiaddr?) {
        let stream = try await connection.openStream([AutoNAT.protocolID])
        let bytes = try await stream.resettingOnError {
            try await stream.writeLengthPrefixed(AutoNAT.encode(.dial(peer: node.peerID, addresses: Array(addresses.prefix(AutoNAT.maxAddresses)))))
            return try await withTimeout(configuration.dialBackTimeout + .seconds(5)) {
                try await stream.readLengthPrefixed(maxLength: AutoNAT.maxMessageSize)
            }
        }
        await stream.closeWrite()
        guard case (.dialResponse(let status, let text, let addr), _) = try AutoNAT.decode(bytes) else {
            throw StreamError.protocolViolation("autonat: expected DIAL_RESPONSE")
        }
        guard let server = connection.remotePeer, let (serverIP, _) = connection.remoteAddress?.tcpEndpoint else {
            throw StreamError.protocolViolation("autonat: the server's address is unknown")
        }
        let group = ObserverGroup(ip: serverIP)
        let (changed, now) = state.withLockedValue { s in
            let changed = s.tracker.record(status, address: addr, server: group)
            s.answers.append(AutoNATAnswer(server: server, serverGroup: group, status: status, reachability: s.tracker.reachability,
                                           confidence: s.tracker.confidence, at: Date()))
            if s.answers.count > Self.maxAnswerHistory { s.answers.removeFirst(s.answers.count - Self.maxAnswerHistory) }
            return (changed, s.tracker)
        }
        logger.info("autonat answer", metadata: ["peer": "\(connection.remotePeer?.description ?? "?")", "status": "\(status)",
                                                 "text": "\(text ?? "")", "reachability": "\(now.reachability.rawValue)", "confidence": "\(now.confidence)"])
        if changed {
            logger.notice("reachability is now \(now.reachability.rawValue)")
            switch now.reachability {
            case .public: dht?.setMode(.server)
            case .private: dht?.setMode(.client)
            case .unknown: break
            }
            node.events.emit(.reachabilityChanged(now.reachability))
        }
        return (status, addr)
    }
}
