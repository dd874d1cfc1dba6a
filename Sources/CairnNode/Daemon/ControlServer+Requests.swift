import CairnCore
import CairnProto
import Foundation
import NIOCore

/// The requests: each turns a control message into host calls and a response.
extension ControlServer {
    func peerID(_ bytes: Data, _ what: String = "peer") throws -> PeerID {
        guard !bytes.isEmpty else { throw ControlRequestError("malformed request: missing \(what)") }
        do { return try PeerID(bytes: [UInt8](bytes)) } catch { throw ControlRequestError("invalid \(what) id: \(error)") }
    }

    func multiaddr(_ bytes: Data) throws -> Multiaddr {
        do { return try Multiaddr(bytes: [UInt8](bytes)) } catch { throw ControlRequestError("invalid multiaddr: \(error)") }
    }

    func timeout(_ seconds: Int64?) -> Duration {
        guard let seconds, seconds > 0 else { return configuration.defaultTimeout }
        return .seconds(min(seconds, 3600))
    }

    func peerInfo(_ id: PeerID, _ addrs: [Multiaddr]) -> P2pd_Pb_PeerInfo {
        var p = P2pd_Pb_PeerInfo()
        p.id = Data(id.bytes)
        p.addrs = addrs.map { Data($0.withoutTrailingPeerID.bytes) }
        return p
    }

    // MARK: Identity and connections

    func identify() -> P2pd_Pb_Response {
        var r = P2pd_Pb_Response.ok
        r.identify.id = Data(host.peerID.bytes)
        r.identify.addrs = host.node.advertisedAddresses.map { Data($0.bytes) }
        return r
    }

    func connect(_ request: P2pd_Pb_Request) async throws -> P2pd_Pb_Response {
        guard request.hasConnect else { throw ControlRequestError("Malformed request; missing parameters") }
        let peer = try peerID(request.connect.peer)
        var options = DialOptions()
        options.addresses = try request.connect.addrs.map(multiaddr)
        options.timeout = timeout(request.connect.hasTimeout ? request.connect.timeout : nil)
        _ = try await host.connect(to: peer, options)
        return .ok
    }

    func disconnect(_ request: P2pd_Pb_Request) async throws -> P2pd_Pb_Response {
        guard request.hasDisconnect else { throw ControlRequestError("Malformed request; missing parameters") }
        let peer = try peerID(request.disconnect.peer)
        for c in host.node.swarm.connections(to: peer) { await c.close() }
        return .ok
    }

    /// One entry per connected peer, with the remote address of each connection to it.
    func listPeers() -> P2pd_Pb_Response {
        var byPeer: [PeerID: [Multiaddr]] = [:]
        var order: [PeerID] = []
        for c in host.node.swarm.connections {
            guard let p = c.remotePeer else { continue }
            if byPeer[p] == nil { order.append(p) }
            byPeer[p, default: []] += c.remoteAddress.map { [$0] } ?? []
        }
        var r = P2pd_Pb_Response.ok
        r.peers = order.map { peerInfo($0, byPeer[$0] ?? []) }
        return r
    }

    // MARK: Streams

    func streamOpen(_ request: P2pd_Pb_Request) async throws -> (P2pd_Pb_Response, MuxedStream) {
        guard request.hasStreamOpen, !request.streamOpen.proto.isEmpty else { throw ControlRequestError("Malformed request; missing parameters") }
        let peer = try peerID(request.streamOpen.peer)
        var options = DialOptions()
        options.timeout = timeout(request.streamOpen.hasTimeout ? request.streamOpen.timeout : nil)
        let stream = try await host.openStream(to: peer, protocols: request.streamOpen.proto, options: options)
        var r = P2pd_Pb_Response.ok
        r.streamInfo.peer = Data(peer.bytes)
        r.streamInfo.addr = Data(stream.connection.remoteAddress?.bytes ?? [])
        r.streamInfo.proto = stream.protocolID ?? request.streamOpen.proto[0]
        return (r, stream)
    }

    /// Registers (or re-registers: the last address wins) the client's socket for protocols.
    func streamHandler(_ request: P2pd_Pb_Request) throws -> P2pd_Pb_Response {
        guard request.hasStreamHandler, !request.streamHandler.proto.isEmpty else { throw ControlRequestError("Malformed request; missing parameters") }
        let address = try multiaddr(request.streamHandler.addr)
        switch address.components.first {
        case .unix? where address.components.count == 1: break
        default: guard address.tcpEndpoint != nil else { throw ControlRequestError("handler address must be /unix/… or /ip4|ip6/…/tcp/…: \(address)") }
        }
        for proto in request.streamHandler.proto {
            registerHandler(proto, address)
        }
        return .ok
    }

    // MARK: Connection manager

    func connManager(_ request: P2pd_Pb_Request) async throws -> P2pd_Pb_Response {
        guard request.hasConnManager else { throw ControlRequestError("Malformed request; missing parameters") }
        let m = request.connManager
        let manager = host.connectionManager
        switch m.type {
        case .tagPeer:
            guard m.hasTag, !m.tag.isEmpty else { throw ControlRequestError("Malformed request; missing tag parameter") }
            manager.tag(try peerID(m.peer), m.tag, weight: Int(m.weight))
        case .untagPeer:
            guard m.hasTag, !m.tag.isEmpty else { throw ControlRequestError("Malformed request; missing tag parameter") }
            manager.untag(try peerID(m.peer), m.tag)
        case .trim:
            await manager.trim()
        }
        return .ok
    }

    // MARK: Peer store

    func peerStore(_ request: P2pd_Pb_Request) throws -> P2pd_Pb_Response {
        guard request.hasPeerStore else { throw ControlRequestError("Malformed request; missing parameters") }
        let peer = try peerID(request.peerStore.id)
        let known = knownPeer(peer)
        var r = P2pd_Pb_Response.ok
        switch request.peerStore.type {
        case .getProtocols:
            r.peerStore.protos = known.protocols
        case .getPeerInfo:
            r.peerStore.peer = peerInfo(peer, known.addresses)
        }
        return r
    }

    /// What we know of a peer: the peer store's record, else its live connections' identify.
    func knownPeer(_ peer: PeerID) -> (addresses: [Multiaddr], protocols: [String]) {
        if let stored = try? host.node.peerStore?.peer(peer) { return (stored.addresses, stored.protocols) }
        if let info = host.node.identifyService.lastInfo(from: peer) { return (info.listenAddrs, info.protocols) }
        return (host.node.swarm.connections(to: peer).compactMap(\.remoteAddress), [])
    }
}
