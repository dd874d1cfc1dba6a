import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Upgrades relayed connections to direct ones (DCUtR over TCP simultaneous open), carrying out
/// `DCUtR.Initiator` / `DCUtR.Responder`. On an inbound relayed connection this node (B) first
/// tries connection reversal — dialing the peer's public addresses — and otherwise runs the
/// exchange; as A it answers and dials on SYNC. When a direct connection appears, new streams
/// should use it (`Node.bestConnection`), and the relayed one is closed once idle. Every outcome
/// is kept per peer, with its reason, for `cairn dial` and the connectivity matrix.
public final class HolePunchService: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Attempts per upgrade (the spec: 3).
        public var maxAttempts = 3
        /// How long one attempt's dials may take (go-libp2p: 5 s).
        public var attemptTimeout: TimeAmount = .seconds(5)
        /// Waiting for the peer's next message; a stalled peer is dropped after this.
        public var readTimeout: TimeAmount = .seconds(15)
        /// Offer and dial private addresses too (labs on one LAN, loopback tests).
        public var allowPrivateAddresses = false
        /// Close the relayed connection this long after the direct one is up, once it is idle.
        public var relayGrace: TimeInterval = 2
        /// Hole-punch dials leave from the listen port (what NATs need). Off only on one host
        /// (loopback), where our dial and the peer's would otherwise claim the same 4-tuple.
        public var dialFromListenPort = true
        public init() {}
    }

    public struct Outcome: Sendable {
        public enum Result: Sendable, Equatable {
            /// "reversal" (we dialed a public peer) or "hole punch" (after `attempts` exchanges).
            case direct(how: String, attempts: Int)
            case relayed(reason: String)
        }
        public var peer: PeerID
        public var role: String
        public var result: Result
        /// From the relayed connection's establishment to the direct one's (nil if none).
        public var elapsed: Duration?
        public var at: Date
    }

    let node: Node
    let nat: NATService?
    public let configuration: Configuration
    let logger: Logger
    private struct State {
        var outcomes: [PeerID: Outcome] = [:]
        var running: Set<PeerID> = []
        var relayedSince: [UInt64: ContinuousClock.Instant] = [:]
        var dialsStarted = 0
        var inFlight: Set<String> = []
    }
    private let state = NIOLockedValueBox(State())

    public init(node: Node, nat: NATService?, configuration: Configuration = Configuration(), logger: Logger) {
        self.node = node
        self.nat = nat
        self.configuration = configuration
        self.logger = logger
        node.swarm.handle(DCUtR.protocolID) { [weak self] stream in
            guard let self else { throw StreamError.connectionClosed("hole punching is gone") }
            try await self.serve(stream)
        }
        node.swarm.onConnected { [weak self] c in
            guard let self else { return }
            if c.isLimited {
                self.state.withLockedValue { $0.relayedSince[c.id] = .now }
            } else if let peer = c.remotePeer {
                self.directConnectionAppeared(to: peer)
            }
        }
        node.onIdentified { [weak self] c, info in
            guard let self, c.isLimited, c.direction == .inbound, let peer = c.remotePeer else { return }
            self.node.swarm.tasks.spawn { await self.upgrade(c, peer: peer, theirListenAddrs: info.listenAddrs) }
        }
    }

    static func flightKey(_ peer: PeerID, _ a: Multiaddr) -> String { "\(peer) \(a)" }

    public func outcome(for peer: PeerID) -> Outcome? { state.withLockedValue { $0.outcomes[peer] } }
    public var outcomes: [Outcome] { state.withLockedValue { Array($0.outcomes.values) } }
    /// Hole-punch dials started so far (bounded per attempt by `DCUtR.maxDialsPerAttempt`).
    public var dialsStarted: Int { state.withLockedValue { $0.dialsStarted } }

    /// The addresses we offer: voted external ones (TCP), plus with `allowPrivateAddresses` our
    /// listen addresses; never loopback or private ones otherwise.
    func ourAddresses() -> [Multiaddr] {
        var candidates = (nat?.externalAddresses ?? []).filter { $0.tcpEndpoint != nil }
        if configuration.allowPrivateAddresses { candidates += node.listenAddresses }
        return DCUtR.dialable(candidates, allowPrivate: configuration.allowPrivateAddresses).kept
    }

    private func hasDirect(to peer: PeerID) -> Bool { node.swarm.connections(to: peer).contains { !$0.isLimited } }

    private func record(_ peer: PeerID, role: String, _ result: Outcome.Result, relayed: Connection?) {
        let elapsed: Duration? = {
            guard case .direct = result, let relayed else { return nil }
            return state.withLockedValue { $0.relayedSince[relayed.id] }.map { ContinuousClock.now - $0 }
        }()
        state.withLockedValue { $0.outcomes[peer] = Outcome(peer: peer, role: role, result: result, elapsed: elapsed, at: Date()) }
        switch result {
        case .direct(let how, let attempts):
            logger.notice("direct connection to \(peer) by \(how)", metadata: ["attempts": "\(attempts)", "elapsed": "\(elapsed.map { "\($0)" } ?? "?")"])
        case .relayed(let reason):
            logger.notice("staying relayed with \(peer): \(reason)")
        }
    }

    /// A direct connection exists: the relayed ones to that peer close once idle.
    private func directConnectionAppeared(to peer: PeerID) {
        let relayed = node.swarm.connections(to: peer).filter(\.isLimited)
        guard !relayed.isEmpty else { return }
        let upgrading = state.withLockedValue { $0.running.contains(peer) }
        if !upgrading, outcome(for: peer) == nil || { if case .relayed = outcome(for: peer)!.result { return true }; return false }() {
            // The peer reached us directly (its punch or its reversal): note it from our side.
            record(peer, role: "either", .direct(how: "peer's dial", attempts: 0), relayed: relayed.first)
        }
        let grace = configuration.relayGrace
        node.swarm.tasks.spawn { [logger] in
            try? await Task.sleep(nanoseconds: UInt64(grace * 1e9))
            for r in relayed {
                var waited = 0
                while await r.openStreamCount() > 0 && waited < 60 {
                    if waited == 0 {
                        let busy = await r.openStreamProtocols()
                        logger.debug("relayed connection busy", metadata: ["streams": "\(busy)"])
                    }
                    try? await Task.sleep(nanoseconds: 1_000_000_000)
                    waited += 1
                }
                logger.info("closing the relayed connection: a direct one is up", metadata: ["peer": "\(peer)"])
                await r.close()
            }
        }
    }

    // MARK: B: the inbound side of the relayed connection

    func upgrade(_ relayed: Connection, peer: PeerID, theirListenAddrs: [Multiaddr]) async {
        guard state.withLockedValue({ $0.running.insert(peer).inserted }) else { return }
        defer { _ = state.withLockedValue { $0.running.remove(peer) } }
        if hasDirect(to: peer) { return }
        // Connection reversal: a peer with public addresses is simply dialed.
        let (publicAddrs, _) = DCUtR.dialable(theirListenAddrs, allowPrivate: false)
        if !publicAddrs.isEmpty {
            // Our dial may also come up after the attempt window (a slow handshake under load):
            // a direct connection is a direct connection.
            if await dialAny(peer, publicAddrs, role: .initiator) != nil || hasDirect(to: peer) {
                return record(peer, role: "initiator", .direct(how: "reversal", attempts: 0), relayed: relayed)
            }
        }
        let ours = ourAddresses()
        var machine = DCUtR.Initiator(ourAddresses: ours, maxAttempts: configuration.maxAttempts,
                                      allowPrivate: configuration.allowPrivateAddresses)
        let stream: MuxedStream
        do {
            stream = try await relayed.openStream([DCUtR.protocolID])
        } catch {
            if hasDirect(to: peer) {
                return record(peer, role: "initiator", .direct(how: publicAddrs.isEmpty ? "peer's dial" : "reversal", attempts: 0), relayed: relayed)
            }
            return record(peer, role: "initiator", .relayed(reason: "the peer does not speak DCUtR: \(error)"), relayed: relayed)
        }
        defer { stream.reset() }
        var actions = machine.start(now: .now)
        while !actions.isEmpty {
            var next: [DCUtR.Action] = []
            for action in actions {
                switch action {
                case .send(let m):
                    do {
                        try await stream.writeLengthPrefixed(DCUtR.encode(m))
                        if case .connect = m {
                            let reply = try await readMessage(stream)
                            next += machine.received(reply, now: .now)
                        }
                    } catch {
                        if hasDirect(to: peer) {
                            return record(peer, role: "initiator", .direct(how: "hole punch", attempts: machine.attempts), relayed: relayed)
                        }
                        return record(peer, role: "initiator", .relayed(reason: "exchange failed: \(error)"), relayed: relayed)
                    }
                case .dial(let addrs, let delay):
                    try? await Task.sleep(for: delay)
                    if hasDirect(to: peer) {
                        machine.succeeded()
                        return record(peer, role: "initiator", .direct(how: "hole punch", attempts: machine.attempts), relayed: relayed)
                    }
                    if addrs.isEmpty && ours.isEmpty {
                        machine.succeeded()
                        return record(peer, role: "initiator", .relayed(reason: "neither side has a public address to offer (symmetric NAT or no votes yet)"), relayed: relayed)
                    }
                    // Our dial meets the peer's in a simultaneous open when it can dial us; when we
                    // offered nothing it cannot, so ours lands on its listener: be the initiator then.
                    if await dialAny(peer, addrs, role: ours.isEmpty ? .initiator : .responder) != nil || hasDirect(to: peer) {
                        machine.succeeded()
                        return record(peer, role: "initiator", .direct(how: "hole punch", attempts: machine.attempts), relayed: relayed)
                    }
                    let why = addrs.isEmpty ? "the peer offered no usable address, and it did not reach ours" : "no dial to \(addrs.map(\.description).joined(separator: ", ")) got through"
                    next += machine.attemptFailed(now: .now, reason: why)
                case .giveUp(let reason):
                    return record(peer, role: "initiator", .relayed(reason: reason), relayed: relayed)
                }
            }
            actions = next
        }
    }

    // MARK: A: the side that dialed through the relay

    func serve(_ stream: MuxedStream) async throws {
        guard let peer = stream.connection.remotePeer else { return }
        guard stream.connection.isLimited else {
            logger.info("dcutr: refused over a direct connection", metadata: ["peer": "\(peer)"])
            stream.reset()
            return
        }
        var machine = DCUtR.Responder(ourAddresses: ourAddresses(), allowPrivate: configuration.allowPrivateAddresses)
        let relayed = stream.connection
        while true {
            let message: DCUtR.Message
            do {
                message = try await readMessage(stream)
            } catch StreamError.unexpectedEOF {
                return
            } catch where hasDirect(to: peer) {
                return  // the initiator is done with the stream: the punch worked
            } catch {
                logger.info("dcutr: \(error)", metadata: ["peer": "\(peer)"])
                if outcome(for: peer) == nil { record(peer, role: "responder", .relayed(reason: "\(error)"), relayed: relayed) }
                stream.reset()
                return
            }
            let actions = machine.received(message)
            if case .awaitingSync(let theirs) = machine.state {
                // From now on the initiator may dial us: its SYN can reach our listener before
                // SYNC reaches us (a full-cone NAT lets it in). That connection is the punched
                // one, and we are its Noise initiator all the same.
                node.swarm.expectInbound(from: theirs, role: .initiator,
                                         until: .now() + configuration.readTimeout + configuration.attemptTimeout)
            }
            for action in actions {
                switch action {
                case .send(let m):
                    try await stream.writeLengthPrefixed(DCUtR.encode(m))
                case .dial(let addrs, _):
                    guard !addrs.isEmpty else {
                        logger.info("dcutr: the peer offered no usable address; not dialing", metadata: ["peer": "\(peer)"])
                        record(peer, role: "responder", .relayed(reason: "the peer offered no usable address"), relayed: relayed)
                        continue
                    }
                    // Dial now, while the initiator waits RTT/2; keep reading for its retries.
                    let rounds = machine.rounds
                    state.withLockedValue { _ = $0.running.insert(peer) }
                    node.swarm.tasks.spawn { [self] in
                        defer { _ = state.withLockedValue { $0.running.remove(peer) } }
                        if await dialAny(peer, addrs, role: .initiator) != nil {
                            record(peer, role: "responder", .direct(how: "hole punch", attempts: rounds), relayed: relayed)
                        } else if !hasDirect(to: peer) {
                            record(peer, role: "responder", .relayed(reason: "no dial to \(addrs.map(\.description).joined(separator: ", ")) got through"), relayed: relayed)
                        }
                    }
                case .giveUp(let reason):
                    logger.info("dcutr: \(reason)", metadata: ["peer": "\(peer)"])
                    record(peer, role: "responder", .relayed(reason: reason), relayed: relayed)
                    stream.reset()
                    return
                }
            }
        }
    }

    // MARK: Shared

    private func readMessage(_ stream: MuxedStream) async throws -> DCUtR.Message {
        let bytes = try await withTimeout(configuration.readTimeout, on: stream.eventLoop) {
            try await stream.readLengthPrefixed(maxLength: DCUtR.maxMessageSize)
        }
        let (m, skipped) = try DCUtR.decode(bytes)
        if skipped > 0 { logger.info("dcutr: skipped \(skipped) unparseable addresses") }
        return m
    }

    /// Dials every address at once (from the listen port, with `role`) and returns as soon as a
    /// direct connection to the peer exists — ours, or the peer's dial arriving — or when the
    /// attempt's time is up. Dials still in their handshake finish (or time out) on their own.
    private func dialAny(_ peer: PeerID, _ addrs: [Multiaddr], role: SecureConnectionMachine.Role) async -> Connection? {
        guard !addrs.isEmpty else { return nil }
        let swarm = node.swarm
        let logger = self.logger
        let fromListenPort = configuration.dialFromListenPort
        // A dial still in flight from the previous attempt keeps its 4-tuple (and its SYN
        // retransmissions may yet meet the peer's): wait for it rather than dial that address again.
        let fresh = state.withLockedValue { s -> [Multiaddr] in
            let new = addrs.filter { !s.inFlight.contains(Self.flightKey(peer, $0)) }
            for a in new { s.inFlight.insert(Self.flightKey(peer, a)) }
            s.dialsStarted += new.count
            return new
        }
        let failures = NIOLockedValueBox(0)
        // Our own dial's connection counts even if the peer closes it before the next poll.
        let succeeded = NIOLockedValueBox<Connection?>(nil)
        for a in fresh {
            swarm.tasks.spawn { [weak self] in
                do {
                    let c = try await swarm.dial(a.appending(.p2p(peer)), role: role, fromListenPort: fromListenPort)
                    succeeded.withLockedValue { $0 = $0 ?? c }
                } catch {
                    logger.debug("dcutr: dial failed: \(error)", metadata: ["addr": "\(a)"])
                    failures.withLockedValue { $0 += 1 }
                }
                _ = self?.state.withLockedValue { $0.inFlight.remove(Self.flightKey(peer, a)) }
            }
        }
        let deadline = NIODeadline.now() + configuration.attemptTimeout
        while NIODeadline.now() < deadline && !Task.isCancelled {
            if let mine = succeeded.withLockedValue({ $0 }) { return mine }
            if let direct = swarm.connections(to: peer).first(where: { !$0.isLimited }) { return direct }
            if !fresh.isEmpty, failures.withLockedValue({ $0 }) == fresh.count, fresh.count == addrs.count { return nil }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return nil
    }
}

extension Node {
    /// The connection new streams to `peer` should use: a direct one when there is one.
    public func bestConnection(to peer: PeerID) -> Connection? {
        let all = swarm.connections(to: peer)
        return all.first { !$0.isLimited } ?? all.first
    }
}
