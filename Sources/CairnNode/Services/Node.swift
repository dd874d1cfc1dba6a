import CairnCore
import CairnCrypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A Cairn node: the swarm plus the basic protocols every libp2p node speaks — ping and identify
/// (with push) — identifying every new connection automatically and keeping what it learns.
public final class Node: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var agentVersion = "cairn/0.1.0"
        public var protocolVersion = IdentifyInfo.defaultProtocolVersion
        public var swarm = Swarm.Configuration()
        public var identifyTimeout: TimeAmount = .seconds(10)
        /// Testing aid for adversarial tests only: claim this as every peer's observed address
        /// instead of the truth (a lying observer). Never set in normal operation.
        public var testingClaimedObservedAddress: Multiaddr?
        public init() {}
    }

    public let swarm: Swarm
    public let configuration: Configuration
    public let peerStore: PeerStore?
    let logger: Logger

    private struct State {
        var identifyTasks: [Connection: Task<IdentifyInfo, Error>] = [:]
        var record: VerifiedEnvelope?
        var recordAddresses: [Multiaddr] = []
        var extraAddresses: [AddressSource: [Multiaddr]] = [:]
        var pushPending = false
    }
    private let state = NIOLockedValueBox(State())

    public init(identity: PrivateKey, configuration: Configuration = Configuration(), peerStore: PeerStore? = nil,
                group: EventLoopGroup? = nil, logger: Logger) {
        self.configuration = configuration
        self.peerStore = peerStore
        self.logger = logger
        self.swarm = Swarm(identity: identity, configuration: configuration.swarm, group: group, logger: logger)
        self.dialer = Dialer(swarm: swarm, peerStore: peerStore, logger: logger)
        swarm.handle(Ping.protocolID) { stream in try await Self.servePing(stream) }
        swarm.handle(IdentifyInfo.protocolID) { [weak self] stream in
            guard let self else { throw StreamError.connectionClosed("node is gone") }
            try await self.serveIdentify(stream)
        }
        swarm.handle(IdentifyInfo.pushProtocolID) { [weak self] stream in
            guard let self else { throw StreamError.connectionClosed("node is gone") }
            try await self.receivePush(stream)
        }
        swarm.events.subscribe { [weak self] event in
            guard let self else { return }
            switch event {
            case .connectionEstablished(let c): self.connectionEstablished(c)
            case .localProtocolsChanged, .localAddressesChanged: self.schedulePush()
            default: break
            }
        }
    }

    /// The one way services and applications reach a peer by ID (addresses from the caller, the
    /// peer store and peer routing; concurrent dials coalesced).
    public let dialer: Dialer

    /// The node's event stream (the swarm's).
    public var events: EventBus { swarm.events }

    public var peerID: PeerID { swarm.peerID }
    public var listenAddresses: [Multiaddr] { swarm.listenAddresses }

    /// What the node tells others it can be reached at (identify, its signed peer record and so
    /// its presence record): the listen addresses and the extra ones set (relayed addresses).
    public var advertisedAddresses: [Multiaddr] {
        let extra = state.withLockedValue { s in s.extraAddresses.sorted { $0.key.rawValue < $1.key.rawValue }.flatMap(\.value) }
        var out = swarm.listenAddresses
        for a in extra where !out.contains(a) { out.append(a) }
        return out
    }

    /// Where an advertised address beyond the listen addresses comes from; each source owns its list.
    public enum AddressSource: String, Sendable, CaseIterable {
        /// `/p2p/<relay>/p2p-circuit` addresses of the relays we hold reservations on.
        case relay
        /// External addresses confirmed by the observed-address vote.
        case observed
        /// Addresses a port-mapping gateway gave us (once confirmed).
        case portMapping
    }

    /// Replaces the extra advertised addresses of `source`; when they change, the peer record is
    /// re-signed and `localAddressesChanged` emitted (identify push and presence follow).
    public func setExtraAddresses(_ addresses: [Multiaddr], source: AddressSource = .relay) {
        let changed = state.withLockedValue { s -> Bool in
            guard s.extraAddresses[source, default: []] != addresses else { return false }
            s.extraAddresses[source] = addresses
            return true
        }
        guard changed else { return }
        refreshSignedRecord()
        events.emit(.localAddressesChanged(advertisedAddresses))
    }

    public func extraAddresses(from source: AddressSource) -> [Multiaddr] {
        state.withLockedValue { $0.extraAddresses[source, default: []] }
    }

    /// Identify push follows every change of our protocols or addresses; changes that come in a
    /// burst (a service registering several handlers) make one push.
    private func schedulePush() {
        let start = state.withLockedValue { s -> Bool in
            guard !s.pushPending else { return false }
            s.pushPending = true
            return true
        }
        guard start else { return }
        swarm.tasks.spawn { [weak self] in
            try? await Task.sleep(nanoseconds: 20_000_000)
            guard let self else { return }
            self.state.withLockedValue { $0.pushPending = false }
            for c in self.swarm.connections {
                do { try await self.pushIdentify(to: c) } catch {
                    self.logger.debug("identify push failed: \(error)", metadata: ["peer": "\(c.remotePeer?.description ?? "?")"])
                }
            }
        }
    }

    @discardableResult
    public func listen(_ addresses: [Multiaddr]) async throws -> [Multiaddr] {
        var all: [Multiaddr] = []
        for a in addresses { all += try await swarm.listen(a) }
        refreshSignedRecord()
        events.emit(.localAddressesChanged(advertisedAddresses))
        return all
    }

    /// The connection new streams to `peer` should use: a direct one when there is one.
    public func bestConnection(to peer: PeerID) -> Connection? { swarm.bestConnection(to: peer) }

    public func dial(_ address: Multiaddr) async throws -> Connection {
        try await swarm.dial(address)
    }

    public func shutdown() async {
        let tasks = state.withLockedValue { Array($0.identifyTasks.values) }
        tasks.forEach { $0.cancel() }
        await swarm.shutdown()
    }

    // MARK: Signed peer record

    /// The node's current signed peer record (RFC 0003), re-signed with a higher seq whenever
    /// its addresses change.
    public var signedPeerRecord: VerifiedEnvelope {
        if let r = state.withLockedValue({ $0.record }) { return r }
        return refreshSignedRecord()
    }

    /// Re-signs the peer record with a fresh seq even if the addresses did not change (presence
    /// records expire an hour after their seq time, so republishing needs a new one).
    @discardableResult
    public func renewSignedPeerRecord() -> VerifiedEnvelope { refreshSignedRecord(force: true) }

    @discardableResult
    func refreshSignedRecord(force: Bool = false) -> VerifiedEnvelope {
        let addrs = advertisedAddresses
        return state.withLockedValue { s in
            if !force, let r = s.record, s.recordAddresses == addrs { return r }
            // seq is the time in nanoseconds (as go- and py-libp2p), kept strictly increasing.
            var seq = UInt64(Date().timeIntervalSince1970 * 1_000_000_000)
            if let old = s.record, let oldRecord = try? PeerRecord(envelope: old), oldRecord.seq >= seq { seq = oldRecord.seq + 1 }
            let record = PeerRecord(peerID: swarm.peerID, seq: seq, addresses: addrs).sign(with: swarm.identity)
            s.record = record
            s.recordAddresses = addrs
            return record
        }
    }

    // MARK: Ping

    static func servePing(_ stream: MuxedStream) async throws {
        while true {
            let payload: [UInt8]
            do { payload = try await stream.readExactly(Ping.payloadLength) } catch StreamError.unexpectedEOF { break }
            try await stream.write(payload)
        }
        await stream.closeWrite()
    }

    /// Pings the peer on `connection` `count` times; returns each round-trip time.
    public func ping(_ connection: Connection, count: Int = 1, interval: Duration = .zero) async throws -> [Duration] {
        let stream = try await connection.openStream([Ping.protocolID])
        var rtts: [Duration] = []
        let clock = ContinuousClock()
        for i in 0..<count {
            if i > 0, interval > .zero { try await Task.sleep(for: interval) }
            let payload = secureRandomBytes(Ping.payloadLength)
            let start = clock.now
            try await stream.write(payload)
            let echo = try await withTimeout(.seconds(10)) { try await stream.readExactly(Ping.payloadLength) }
            guard echo == payload else {
                stream.reset()
                throw StreamError.protocolViolation("ping reply does not match the payload")
            }
            rtts.append(clock.now - start)
        }
        await stream.closeWrite()
        return rtts
    }

    // MARK: Identify

    /// What this node tells `connection`'s peer about itself.
    public func identifyMessage(for connection: Connection) -> IdentifyInfo {
        IdentifyInfo(protocolVersion: configuration.protocolVersion, agentVersion: configuration.agentVersion,
                     publicKey: swarm.identity.publicKey, listenAddrs: advertisedAddresses,
                     observedAddr: configuration.testingClaimedObservedAddress ?? connection.remoteAddress,
                     protocols: swarm.supportedProtocols)
    }

    func serveIdentify(_ stream: MuxedStream) async throws {
        let message = identifyMessage(for: stream.connection).encode(signedRecord: signedPeerRecord)
        try await stream.writeLengthPrefixed(message)
        await stream.closeWrite()
    }

    func receivePush(_ stream: MuxedStream) async throws {
        guard let remote = stream.connection.remotePeer else { return }
        let bytes = try await withTimeout(configuration.identifyTimeout) {
            try await Self.readIdentifyStream(stream)
        }
        await stream.closeWrite()  // done: the stream is freed on both sides
        let info = try IdentifyInfo.decodeStream(bytes, from: remote)
        logger.info("identify push", metadata: ["peer": "\(remote)", "addrs": "\(info.listenAddrs.count)"])
        record(info, from: remote, on: stream.connection)
    }

    /// Reads an identify stream to its end: length-prefixed messages of at most
    /// `IdentifyInfo.maxMessageSize` each, a prefix over the limit refused as soon as it arrives.
    static func readIdentifyStream(_ stream: MuxedStream) async throws -> [UInt8] {
        let limit = IdentifyInfo.maxMessageSize
        var decoder = LengthPrefixedDecoder(maxLength: limit)
        var bytes: [UInt8] = []
        while let chunk = try await stream.read() {
            bytes += chunk.readableBytesView
            if bytes.count > limit * 4 { throw StreamError.messageTooLarge(limit * 4) }
            decoder.append(chunk.readableBytesView)
            do { while try decoder.next() != nil {} } catch { throw StreamError.messageTooLarge(limit) }
        }
        return bytes
    }

    /// Sends our current identify message to the peer unprompted (`/ipfs/id/push/1.0.0`).
    public func pushIdentify(to connection: Connection) async throws {
        let stream = try await connection.openStream([IdentifyInfo.pushProtocolID])
        try await stream.writeLengthPrefixed(identifyMessage(for: connection).encode(signedRecord: signedPeerRecord))
        await stream.closeWrite()
    }

    /// Asks the peer on `connection` to identify itself.
    public func requestIdentify(_ connection: Connection) async throws -> IdentifyInfo {
        guard let remote = connection.remotePeer else { throw StreamError.connectionClosed("not established") }
        let stream = try await connection.openStream([IdentifyInfo.protocolID])
        let bytes = try await withTimeout(configuration.identifyTimeout) {
            try await Self.readIdentifyStream(stream)
        }
        await stream.closeWrite()  // done: the stream is freed on both sides
        let info = try IdentifyInfo.decodeStream(bytes, from: remote)
        for why in info.skipped { logger.info("identify: skipped \(why)", metadata: ["peer": "\(remote)"]) }
        if let err = info.signedPeerRecordError {
            logger.warning("identify: rejected signed peer record: \(err)", metadata: ["peer": "\(remote)"])
        }
        return info
    }

    /// The result of the automatic identify exchange on `connection` (started when it came up).
    public func identify(_ connection: Connection) async throws -> IdentifyInfo {
        try await identifyTask(for: connection).value
    }

    /// The one identify exchange per connection: started by whoever asks first (normally the
    /// connection coming up); its result goes to the peer store and the observers.
    private func identifyTask(for connection: Connection) -> Task<IdentifyInfo, Error> {
        state.withLockedValue { s -> Task<IdentifyInfo, Error> in
            if let t = s.identifyTasks[connection] { return t }
            let t = Task { () throws -> IdentifyInfo in
                let info = try await self.requestIdentify(connection)
                if let remote = connection.remotePeer { self.record(info, from: remote, on: connection) }
                return info
            }
            s.identifyTasks[connection] = t
            track(t)
            return t
        }
    }

    private func connectionEstablished(_ connection: Connection) {
        _ = identifyTask(for: connection)
        connection.closed.whenComplete { [weak self] _ in
            _ = self?.state.withLockedValue { $0.identifyTasks.removeValue(forKey: connection) }
        }
    }

    /// Has the swarm's shutdown cancel `task` and wait for it before the event loops go away.
    private func track<T: Sendable>(_ task: Task<T, Error>) {
        let tracked = swarm.tasks.spawn {
            await withTaskCancellationHandler { _ = await task.result } onCancel: { task.cancel() }
        }
        if !tracked { task.cancel() }
    }

    private func record(_ info: IdentifyInfo, from remote: PeerID, on connection: Connection) {
        logger.info("identified peer", metadata: [
            "peer": "\(remote)", "agent": "\(info.agentVersion ?? "?")",
            "protocols": "\(info.protocols.joined(separator: ","))",
            "observed": "\(info.observedAddr?.description ?? "-")",
        ])
        // The store first, so a subscriber that looks the peer up finds what identify said.
        if let store = peerStore {
            do { try store.update(peer: remote, info: info, verifiedRecord: info.signedPeerRecordEnvelope) } catch {
                logger.error("peer store update failed: \(error)")
            }
        }
        events.emit(.peerIdentified(connection, info))
    }
}
