import CairnCore
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The swarm's one resource manager: a `ResourceManager` behind a lock, with refusals logged at a
/// rate-limited level and reported to observers (metrics). Every connection and stream the swarm
/// makes or accepts is granted here first.
public final class NodeResources: Sendable {
    private struct State {
        var manager: ResourceManager
        /// Per refusal kind: when it was last logged at warning level, and how many since.
        var lastLogged: [ResourceManager.Refusal: (at: NIODeadline, suppressed: Int)] = [:]
    }
    private let state: NIOLockedValueBox<State>
    private let logger: Logger
    private let observers = NIOLockedValueBox<[@Sendable (ResourceManager.Refusal) -> Void]>([])
    /// A refusal of one kind is logged at warning level at most this often (else at debug).
    static let logInterval = TimeAmount.seconds(10)

    public init(limits: ResourceManager.Limits, logger: Logger) {
        self.state = NIOLockedValueBox(State(manager: ResourceManager(limits: limits)))
        self.logger = logger
    }

    public var limits: ResourceManager.Limits { state.withLockedValue { $0.manager.limits } }
    public var usage: ResourceManager.Usage { state.withLockedValue { $0.manager.usage } }
    public var refusals: [ResourceManager.Refusal: Int] { state.withLockedValue { $0.manager.refusals } }

    /// Reads the manager (counts per IP, peer, protocol) under the lock.
    public func read<T>(_ body: (ResourceManager) -> T) -> T { state.withLockedValue { body($0.manager) } }

    /// Calls `observer` on every refusal (metrics), outside the lock.
    public func onRefusal(_ observer: @escaping @Sendable (ResourceManager.Refusal) -> Void) {
        observers.withLockedValue { $0.append(observer) }
    }

    func openConnection(_ direction: ResourceManager.Direction, ip: [UInt8]?) -> Result<ResourceManager.ConnectionID, ResourceManager.Refusal> {
        granted(state.withLockedValue { $0.manager.openConnection(direction, ip: ip) }, "\(direction.rawValue) connection",
                ip.map { ["ip": "\(IPAddressText.format($0))"] } ?? [:])
    }

    func establish(_ id: ResourceManager.ConnectionID, peer: PeerID) -> Result<Void, ResourceManager.Refusal> {
        granted(state.withLockedValue { $0.manager.establish(id, peer: peer) }, "connection", ["peer": "\(peer)"])
    }

    func closeConnection(_ id: ResourceManager.ConnectionID) { state.withLockedValue { $0.manager.closeConnection(id) } }

    func openStream(on connection: ResourceManager.ConnectionID, _ direction: ResourceManager.Direction,
                    peer: PeerID?) -> Result<ResourceManager.StreamID, ResourceManager.Refusal> {
        granted(state.withLockedValue { $0.manager.openStream(on: connection, direction) }, "\(direction.rawValue) stream",
                ["peer": "\(peer?.description ?? "?")"])
    }

    func setProtocol(_ id: ResourceManager.StreamID, _ protocolID: String, service: String?, peer: PeerID?) -> Result<Void, ResourceManager.Refusal> {
        granted(state.withLockedValue { $0.manager.setProtocol(id, protocolID, service: service) }, "stream for \(protocolID)",
                ["peer": "\(peer?.description ?? "?")"])
    }

    func closeStream(_ id: ResourceManager.StreamID) { state.withLockedValue { $0.manager.closeStream(id) } }

    private func granted<T>(_ result: Result<T, ResourceManager.Refusal>, _ what: String, _ metadata: Logger.Metadata) -> Result<T, ResourceManager.Refusal> {
        guard case .failure(let refusal) = result else { return result }
        let now = NIODeadline.now()
        let suppressed = state.withLockedValue { s -> Int? in
            if let last = s.lastLogged[refusal], now - last.at < Self.logInterval {
                s.lastLogged[refusal]!.suppressed += 1
                return nil
            }
            let n = s.lastLogged[refusal]?.suppressed ?? 0
            s.lastLogged[refusal] = (now, 0)
            return n
        }
        var m = metadata
        m["refused"] = "\(refusal)"
        if let suppressed {
            if suppressed > 0 { m["suppressed"] = "\(suppressed)" }
            logger.warning("resource manager refused \(what)", metadata: m)
        } else {
            logger.debug("resource manager refused \(what)", metadata: m)
        }
        for o in observers.withLockedValue({ $0 }) { o(refusal) }
        return result
    }
}
