import CairnCore
import Foundation
import NIOConcurrencyHelpers

/// What this node says about itself: the addresses it advertises (listen addresses plus the
/// extra ones each source sets) and its signed peer record, re-signed when they change.
public final class LocalPeer: Sendable {
    /// Where an advertised address beyond the listen addresses comes from; each source owns its list.
    public enum AddressSource: String, Sendable, CaseIterable {
        /// `/p2p/<relay>/p2p-circuit` addresses of the relays we hold reservations on.
        case relay
        /// External addresses confirmed by the observed-address vote.
        case observed
        /// Addresses a port-mapping gateway gave us (once confirmed).
        case portMapping
    }

    let swarm: Swarm
    private struct State {
        var record: VerifiedEnvelope?
        var recordAddresses: [Multiaddr] = []
        var extraAddresses: [AddressSource: [Multiaddr]] = [:]
    }
    private let state = NIOLockedValueBox(State())

    init(swarm: Swarm) { self.swarm = swarm }

    /// The listen addresses and the extra ones, in a stable order.
    public var advertisedAddresses: [Multiaddr] {
        let extra = state.withLockedValue { s in s.extraAddresses.sorted { $0.key.rawValue < $1.key.rawValue }.flatMap(\.value) }
        var out = swarm.listenAddresses
        for a in extra where !out.contains(a) { out.append(a) }
        return out
    }

    public func extraAddresses(from source: AddressSource) -> [Multiaddr] {
        state.withLockedValue { $0.extraAddresses[source, default: []] }
    }

    /// Replaces the extra addresses of `source`; when they change, the record is re-signed and
    /// `localAddressesChanged` emitted (identify push and presence follow).
    public func setExtraAddresses(_ addresses: [Multiaddr], source: AddressSource) {
        let changed = state.withLockedValue { s -> Bool in
            guard s.extraAddresses[source, default: []] != addresses else { return false }
            s.extraAddresses[source] = addresses
            return true
        }
        guard changed else { return }
        addressesChanged()
    }

    /// The listen addresses changed (or the extra ones did): re-sign and tell everyone.
    func addressesChanged() {
        refreshSignedRecord()
        swarm.events.emit(.localAddressesChanged(advertisedAddresses))
    }

    /// The current signed peer record (RFC 0003).
    public var signedPeerRecord: VerifiedEnvelope {
        if let r = state.withLockedValue({ $0.record }) { return r }
        return refreshSignedRecord()
    }

    /// Re-signs with a higher seq if the addresses changed (always, with `force`: presence
    /// records expire an hour after their seq time, so republishing needs a fresh one).
    @discardableResult
    func refreshSignedRecord(force: Bool = false) -> VerifiedEnvelope {
        state.withLockedValue { s in
            // Read under the lock that guards the record, so a record never goes back to an
            // older address set with a higher seq.
            let extra = s.extraAddresses.sorted { $0.key.rawValue < $1.key.rawValue }.flatMap(\.value)
            var addrs = swarm.listenAddresses
            for a in extra where !addrs.contains(a) { addrs.append(a) }
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
}
