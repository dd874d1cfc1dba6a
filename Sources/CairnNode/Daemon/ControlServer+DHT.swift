import CairnCore
import CairnProto
import Foundation

/// DHT requests (go-libp2p-daemon `specs/DHT.md` as go and p2pclient speak it): FIND_PEER,
/// GET_PUBLIC_KEY and GET_VALUE answer one `Response{dht: VALUE}`; FIND_PROVIDERS,
/// GET_CLOSEST_PEERS and SEARCH_VALUE answer `Response{dht: BEGIN}`, then bare `DHTResponse`
/// VALUEs and a bare END; PUT_VALUE and PROVIDE answer a plain OK.
extension ControlServer {
    func dht(_ request: P2pd_Pb_Request, outbound: Outbound) async throws {
        guard request.hasDht else { throw ControlRequestError("Malformed request; missing parameters") }
        guard let dht = host.dht else { throw ControlRequestError("DHT not enabled") }
        let d = request.dht
        let limit = timeout(d.hasTimeout ? d.timeout : nil)
        func key() throws -> [UInt8] {
            guard d.hasKey, !d.key.isEmpty else { throw ControlRequestError("Malformed request; missing key parameter") }
            return [UInt8](d.key)
        }
        func cidKey() throws -> [UInt8] {
            guard d.hasCid, !d.cid.isEmpty else { throw ControlRequestError("Malformed request; missing cid parameter") }
            return Self.providerKey(cid: [UInt8](d.cid))
        }
        switch d.type {
        case .findPeer:
            let peer = try peerID(d.peer)
            let found = try await withTimeout(limit) { try await dht.findPeer(peer) }
            try await send(single { $0.peer = peerInfo(peer, found.addresses) }, on: outbound)
        case .getPublicKey:
            let peer = try peerID(d.peer)
            guard let key = publicKey(of: peer) else { throw ControlRequestError("public key of \(peer) not known") }
            try await send(single { $0.value = Data(key.protobufBytes) }, on: outbound)
        case .getValue:
            let k = try key()
            guard let record = try await withTimeout(limit, { try await dht.getValue(k) }) else { throw ControlRequestError("routing: not found") }
            try await send(single { $0.value = Data(record.value) }, on: outbound)
        case .searchValue:
            let k = try key()
            let record = try await withTimeout(limit) { try await dht.getValue(k) }
            try await stream(record.map { r in [item { $0.value = Data(r.value) }] } ?? [], on: outbound)
        case .findProviders:
            let k = try cidKey()
            let count = d.hasCount && d.count > 0 ? Int(d.count) : 20
            let providers = try await withTimeout(limit) { try await dht.providers(k) }
            try await stream(providers.prefix(count).map { p in item { $0.peer = peerInfo(p.provider, p.addresses) } }, on: outbound)
        case .getClosestPeers:
            let k = try key()
            let peers = try await withTimeout(limit) { try await dht.findClosest(key: k) }
            try await stream(peers.map { p in item { $0.value = Data(p.id.bytes) } }, on: outbound)
        case .putValue:
            let k = try key()
            guard d.hasValue else { throw ControlRequestError("Malformed request; missing value parameter") }
            let value = [UInt8](d.value)
            let (acks, attempted) = try await withTimeout(limit) { try await dht.putValue(k, value) }
            if acks == 0 && attempted > 0 { throw ControlRequestError("put value: no peer stored it (0 of \(attempted))") }
            try await send(.ok, on: outbound)
        case .provide:
            let k = try cidKey()
            _ = try await withTimeout(limit) { try await dht.provide(k) }
            try await send(.ok, on: outbound)
        case .findPeersConnectedToPeer:
            // Kademlia has no such query; go-libp2p-daemon answers the same.
            throw ControlRequestError("FIND_PEERS_CONNECTED_TO_PEER is not supported")
        }
    }

    private func item(_ fill: (inout P2pd_Pb_DHTResponse) -> Void) -> P2pd_Pb_DHTResponse {
        var v = P2pd_Pb_DHTResponse()
        v.type = .value
        fill(&v)
        return v
    }

    private func single(_ fill: (inout P2pd_Pb_DHTResponse) -> Void) -> P2pd_Pb_Response {
        var r = P2pd_Pb_Response.ok
        r.dht = item(fill)
        return r
    }

    /// BEGIN (inside a Response), the items and END (bare DHTResponses).
    private func stream(_ items: [P2pd_Pb_DHTResponse], on outbound: Outbound) async throws {
        var begin = P2pd_Pb_Response.ok
        begin.dht.type = .begin
        try await send(begin, on: outbound)
        for i in items { try await sendBare(i, on: outbound) }
        var end = P2pd_Pb_DHTResponse()
        end.type = .end
        try await sendBare(end, on: outbound)
    }

    /// An identity peer ID holds its key; otherwise identify told us (connected or stored peers).
    func publicKey(of peer: PeerID) -> PublicKey? {
        if let k = peer.inlinedPublicKey { return k }
        return host.node.identifyService.lastInfo(from: peer)?.publicKey
    }

    /// kad-dht keys provider records by the CID's multihash: CIDv0 is a bare sha2-256 multihash,
    /// CIDv1 is <version><codec><multihash>. Anything else is used as it is.
    static func providerKey(cid: [UInt8]) -> [UInt8] { CID.multihash(binary: cid) ?? cid }
}
