import CairnCore
import Foundation
import NIOConcurrencyHelpers

/// Everything a service may want to hear about the node, on one typed stream (go-libp2p's event
/// bus, rust-libp2p's `FromSwarm`). Services react to these instead of polling.
public enum NodeEvent: Sendable, CustomStringConvertible {
    /// A connection finished its upgrade (Noise + Yamux). `connection.isLimited` tells a relayed one.
    case connectionEstablished(Connection)
    /// An established connection closed, with its reason.
    case connectionClosed(Connection, reason: ConnectionError)
    /// A dial failed (the peer, when the address named one).
    case dialFailed(peer: PeerID?, address: Multiaddr, reason: String)
    /// The automatic identify exchange (or an identify push) told us about the peer.
    case peerIdentified(Connection, IdentifyInfo)
    /// The protocols we serve changed (a handler added or removed).
    case localProtocolsChanged([String])
    /// The addresses we advertise changed (listening, relayed or confirmed external addresses).
    case localAddressesChanged([Multiaddr])
    /// An external address was confirmed by the observed-address vote.
    case externalAddressConfirmed(Multiaddr)
    /// A confirmed external address lost its votes.
    case externalAddressExpired(Multiaddr)
    /// AutoNAT's verdict changed.
    case reachabilityChanged(AutoNAT.ReachabilityTracker.Reachability)
    /// A relayed connection to the peer was upgraded to a direct one, or stays relayed.
    case holePunchFinished(HolePunchService.Outcome)
    /// A connection closed before its upgrade finished (a failed handshake, a timeout).
    case handshakeFailed(direction: Connection.Direction, reason: ConnectionError)
    /// The DHT answered (or refused) one request of a peer.
    case dhtRequestServed(type: String, answered: Bool)
    /// A DHT query finished: its type, how long it ran and how many requests it sent.
    case dhtQueryFinished(type: String, duration: Duration, requests: Int)

    public var description: String {
        switch self {
        case .connectionEstablished(let c): return "established \(c)"
        case .connectionClosed(let c, let r): return "closed \(c): \(r)"
        case .dialFailed(let p, let a, let r): return "dial \(p?.description ?? "?") at \(a) failed: \(r)"
        case .peerIdentified(let c, _): return "identified \(c.remotePeer?.description ?? "?")"
        case .localProtocolsChanged(let p): return "protocols now \(p.joined(separator: " "))"
        case .localAddressesChanged(let a): return "addresses now \(a.map(\.description).joined(separator: " "))"
        case .externalAddressConfirmed(let a): return "external address confirmed \(a)"
        case .externalAddressExpired(let a): return "external address expired \(a)"
        case .reachabilityChanged(let r): return "reachability \(r.rawValue)"
        case .holePunchFinished(let o): return "hole punch with \(o.peer): \(o.result)"
        case .handshakeFailed(let d, let r): return "\(d.rawValue) handshake failed: \(r)"
        case .dhtRequestServed(let t, let answered): return "DHT \(t) request \(answered ? "answered" : "refused")"
        case .dhtQueryFinished(let t, let d, let n): return "DHT \(t) query finished in \(d) after \(n) requests"
        }
    }
}

/// A cancellable registration on the `EventBus`. After `cancel()` returns, no event emitted
/// later reaches the handler (one being delivered on another thread at that moment may finish).
public final class EventSubscription: Sendable, Hashable {
    let id: UInt64
    private let bus: EventBus?
    init(id: UInt64, bus: EventBus?) { self.id = id; self.bus = bus }
    public func cancel() { bus?.remove(id) }
    public static func == (a: EventSubscription, b: EventSubscription) -> Bool { a === b }
    public func hash(into h: inout Hasher) { h.combine(ObjectIdentifier(self)) }
}

/// The one event stream of a node. Handlers run synchronously, in the order events are emitted
/// (per connection that is its event loop's order), so they must be quick: a handler that has
/// real work to do starts a task. `stream()` gives the same events as an `AsyncStream`.
public final class EventBus: Sendable {
    public typealias Handler = @Sendable (NodeEvent) -> Void

    private struct State {
        var next: UInt64 = 1
        var handlers: [(UInt64, Handler)] = []
    }
    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Registers `handler` for every event from now on.
    @discardableResult
    public func subscribe(_ handler: @escaping Handler) -> EventSubscription {
        let id = state.withLockedValue { s -> UInt64 in
            let id = s.next
            s.next += 1
            s.handlers.append((id, handler))
            return id
        }
        return EventSubscription(id: id, bus: self)
    }

    /// The events from now on as an async sequence; ending the iteration (or cancelling its task)
    /// cancels the subscription. At most `buffer` undelivered events are kept (the oldest dropped).
    public func stream(buffer: Int = 1024) -> AsyncStream<NodeEvent> {
        let (stream, continuation) = AsyncStream<NodeEvent>.makeStream(bufferingPolicy: .bufferingNewest(buffer))
        let sub = subscribe { continuation.yield($0) }
        continuation.onTermination = { _ in sub.cancel() }
        return stream
    }

    /// Delivers `event` to every current subscriber. Never called with a lock held, so a handler
    /// may take any lock, emit, subscribe or cancel.
    public func emit(_ event: NodeEvent) {
        let handlers = state.withLockedValue { $0.handlers }
        for (id, h) in handlers where state.withLockedValue({ s in s.handlers.contains { $0.0 == id } }) {
            h(event)
        }
    }

    public var subscriberCount: Int { state.withLockedValue { $0.handlers.count } }

    func remove(_ id: UInt64) {
        state.withLockedValue { $0.handlers.removeAll { $0.0 == id } }
    }
}
