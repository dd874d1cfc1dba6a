import CairnCore
import CairnProto
import Foundation

/// Cairn's own requests (type `CAIRN`, field 64): what the `cairn` commands ask a running node,
/// answered with the same JSON reports a one-shot command prints (`Reports`).
extension ControlServer {
    func cairn(_ request: P2pd_Pb_Request) async throws -> P2pd_Pb_Response {
        guard request.hasCairn, request.cairn.hasType else { throw ControlRequestError("Malformed request; missing parameters") }
        let c = request.cairn
        for (name, v) in [("interval", c.interval), ("timeout", c.timeout), ("seconds", c.seconds)] where !(v.isFinite && v >= 0 && v <= 86400 * 365) {
            throw ControlRequestError("invalid \(name): \(v)")
        }
        guard c.count >= 0 && c.count <= 100_000 else { throw ControlRequestError("invalid count: \(c.count)") }
        var value: [UInt8]?
        let report: Reports.Object
        func dht() throws -> DHTService {
            guard let d = host.dht else { throw ControlRequestError("DHT not enabled") }
            return d
        }
        func key() throws -> [UInt8] {
            guard c.hasKey, !c.key.isEmpty else { throw ControlRequestError("Malformed request; missing key parameter") }
            return [UInt8](c.key)
        }
        switch c.type {
        case .status:
            report = Reports.parse(String(decoding: try host.status().encoded(pretty: false), as: UTF8.self)) ?? [:]
        case .ping:
            let conn = try await connection(c)
            let rtts = try await host.node.ping(conn, count: max(1, Int(c.count)), interval: .milliseconds(Int64(c.interval * 1000)))
            report = Reports.ping(peer: conn.remotePeer!, address: conn.remoteAddress, rtts: rtts)
        case .identifyPeer:
            let conn = try await connection(c)
            let info = try await host.node.identify(conn)
            report = Reports.identify(info, peer: conn.remotePeer!, localAddress: conn.localAddress)
        case .resolve:
            let peer = try peerID(c.peer)
            report = Reports.found(peer, try await dht().findPeer(peer))
        case .get:
            let k = try key()
            guard let r = try await dht().getValue(k) else { throw ControlRequestError("no valid record for \(String(decoding: k, as: UTF8.self))") }
            report = Reports.get(r)
            value = Reports.getValue(r)
        case .publish:
            guard c.hasName, !c.name.isEmpty else { throw ControlRequestError("Malformed request; missing namespace") }
            let seq = UInt64(Date().timeIntervalSince1970 * 1e9)
            let ttl = c.hasSeconds && c.seconds > 0 ? c.seconds : 24 * 3600
            let (k, env) = c.name == "ipns"
                ? Reports.ipnsRecord(value: [UInt8](c.value), lifetime: ttl, key: host.node.swarm.identity)
                : RecordValidator.signApplicationRecord(namespace: c.name, value: [UInt8](c.value), seq: seq,
                                                        expires: Date().addingTimeInterval(ttl), key: host.node.swarm.identity)
            let (acks, attempted) = try await dht().putValue(k, env)
            report = Reports.stored(key: k, acks: acks, attempted: attempted)
        case .provide:
            let k = try key()
            let (acks, attempted) = try await dht().provide(k)
            report = Reports.stored(key: k, acks: acks, attempted: attempted)
        case .providers:
            report = Reports.providers(try await dht().providers(try key()))
        case .routingTable:
            report = Reports.routingTable(try dht().routingTable)
        case .dial:
            let target = try peerID(c.peer)
            var options = DialOptions()
            options.portUse = .ephemeral
            if c.hasTimeout, c.timeout > 0 { options.connectTimeout = .milliseconds(Int64(c.timeout * 1000)) }
            options.relayedOnly = c.viaRelay
            options.waitForUpgrade = .milliseconds(Int64((c.hasSeconds ? c.seconds : 20) * 1000))
            options.waitForExternalAddress = .seconds(3)
            options.timeout = .seconds(3600)
            let outcome = try await host.connect(to: target, options)
            let rtts = try await host.node.ping(outcome.connection, count: max(1, Int(c.count)), interval: .milliseconds(Int64(c.interval * 1000)))
            report = Reports.dial(outcome, target: target, rtts: rtts, host: host)
        case .p2PListen:
            let rule = try host.forwarding.listen(proto: try proto(c), target: try textAddress(c.target))
            report = try Self.object(rule)
        case .p2PForward:
            let rule = try await host.forwarding.forward(proto: try proto(c), listen: try textAddress(c.target), peer: try peerID(c.peer))
            report = try Self.object(rule)
        case .p2PLs:
            report = ["rules": try host.forwarding.rules.map(Self.object)]
        case .p2PClose:
            let closed = await host.forwarding.close(proto: c.hasName ? c.name : nil, local: c.hasTarget ? c.target : nil, all: c.all)
            report = ["closed": try closed.map(Self.object)]
        }
        var r = P2pd_Pb_Response.ok
        r.cairn.json = Reports.json(report)
        if let value { r.cairn.value = Data(value) }
        return r
    }

    /// The peer to ping or identify: an address (dialled, identity checked), else an ID.
    private func connection(_ c: P2pd_Pb_CairnRequest) async throws -> Connection {
        if let first = c.addrs.first { return try await host.connect(try multiaddr(first)) }
        return try await host.connect(to: try peerID(c.peer)).connection
    }

    private func proto(_ c: P2pd_Pb_CairnRequest) throws -> String {
        guard c.hasName, c.name.hasPrefix("/") else { throw ControlRequestError("a protocol name starts with '/'") }
        return c.name
    }

    private func textAddress(_ s: String) throws -> Multiaddr {
        do { return try Multiaddr(s) } catch { throw ControlRequestError("invalid multiaddr '\(s)': \(error)") }
    }

    static func object(_ rule: Forwarding.Rule) throws -> Reports.Object {
        Reports.parse(String(decoding: try JSONEncoder().encode(rule), as: UTF8.self)) ?? [:]
    }
}
