import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Identify (`/ipfs/id/1.0.0`) and identify push: every new connection is identified once,
/// automatically; what peers say goes to the peer store and out as `peerIdentified`; our own
/// changes (protocols, addresses) are pushed to every connected peer.
public final class IdentifyService: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var agentVersion = "cairn/0.1.0"
        public var protocolVersion = IdentifyInfo.defaultProtocolVersion
        public var timeout: Duration = .seconds(10)
        /// Testing aid for adversarial tests only: claim this as every peer's observed address
        /// instead of the truth (a lying observer). Never set in normal operation.
        public var testingClaimedObservedAddress: Multiaddr?
        public init() {}
    }

    let swarm: Swarm
    let local: LocalPeer
    let peerStore: PeerStore?
    public let configuration: Configuration
    let logger: Logger
    private struct State {
        var identifyTasks: [Connection: Task<IdentifyInfo, Error>] = [:]
        var pushPending = false
        /// The latest identify of each connected peer.
        var infos: [PeerID: IdentifyInfo] = [:]
    }
    private let state = NIOLockedValueBox(State())
    private var subscription: EventSubscription?

    init(swarm: Swarm, local: LocalPeer, peerStore: PeerStore?, configuration: Configuration, logger: Logger) {
        self.swarm = swarm
        self.local = local
        self.peerStore = peerStore
        self.configuration = configuration
        self.logger = logger
        swarm.handle(IdentifyInfo.protocolID, service: "identify") { [weak self] stream in
            guard let self else { throw StreamError.connectionClosed("identify is gone") }
            try await self.serveIdentify(stream)
        }
        swarm.handle(IdentifyInfo.pushProtocolID, service: "identify") { [weak self] stream in
            guard let self else { throw StreamError.connectionClosed("identify is gone") }
            try await self.receivePush(stream)
        }
        subscription = swarm.events.subscribe { [weak self] event in
            guard let self else { return }
            switch event {
            case .connectionEstablished(let c): self.connectionEstablished(c)
            case .connectionClosed(let c, _):
                if let p = c.remotePeer, self.swarm.connections(to: p).isEmpty {
                    _ = self.state.withLockedValue { $0.infos.removeValue(forKey: p) }
                }
            case .localProtocolsChanged, .localAddressesChanged: self.schedulePush()
            default: break
            }
        }
    }

    /// What a connected peer last said about itself (identify or push).
    public func lastInfo(from peer: PeerID) -> IdentifyInfo? { state.withLockedValue { $0.infos[peer] } }

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

    /// What this node tells `connection`'s peer about itself.
    public func identifyMessage(for connection: Connection) -> IdentifyInfo {
        IdentifyInfo(protocolVersion: configuration.protocolVersion, agentVersion: configuration.agentVersion,
                     publicKey: swarm.identity.publicKey, listenAddrs: local.advertisedAddresses,
                     observedAddr: configuration.testingClaimedObservedAddress ?? connection.remoteAddress,
                     protocols: swarm.supportedProtocols)
    }

    func serveIdentify(_ stream: MuxedStream) async throws {
        let message = identifyMessage(for: stream.connection).encode(signedRecord: local.signedPeerRecord)
        try await stream.writeLengthPrefixed(message)
        await stream.closeWrite()
    }

    func receivePush(_ stream: MuxedStream) async throws {
        guard let remote = stream.connection.remotePeer else { return }
        let bytes = try await withTimeout(configuration.timeout) {
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
        try await stream.resettingOnError {
            try await stream.writeLengthPrefixed(identifyMessage(for: connection).encode(signedRecord: local.signedPeerRecord))
        }
        await stream.closeWrite()
    }

    /// Asks the peer on `connection` to identify itself.
    public func requestIdentify(_ connection: Connection) async throws -> IdentifyInfo {
        guard let remote = connection.remotePeer else { throw StreamError.connectionClosed("not established") }
        let stream = try await connection.openStream([IdentifyInfo.protocolID])
        let bytes = try await stream.resettingOnError {
            try await withTimeout(configuration.timeout) { try await Self.readIdentifyStream(stream) }
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
        state.withLockedValue { $0.infos[remote] = info }
        // The store first, so a subscriber that looks the peer up finds what identify said.
        if let store = peerStore {
            do { try store.update(peer: remote, info: info, verifiedRecord: info.signedPeerRecordEnvelope) } catch {
                logger.error("peer store update failed: \(error)")
            }
        }
        swarm.events.emit(.peerIdentified(connection, info))
    }
}
