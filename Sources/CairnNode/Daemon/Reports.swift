import CairnCore
import Foundation

/// What the `cairn` commands report, as JSON objects: built here, the same way whether a
/// one-shot command did the work or a running node did it for the command (the daemon's Cairn
/// requests answer with these). The CLI prints them.
public enum Reports {
    public typealias Object = [String: Any]

    public static func millis(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    }

    public static func json(_ o: Object) -> String {
        (try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    public static func parse(_ text: String) -> Object? {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? Object
    }

    /// `cairn identify`: what the peer said about itself.
    public static func identify(_ info: IdentifyInfo, peer: PeerID, localAddress: Multiaddr?) -> Object {
        var obj: Object = [
            "peer_id": peer.base58,
            "protocol_version": info.protocolVersion ?? NSNull(),
            "agent_version": info.agentVersion ?? NSNull(),
            "public_key": info.publicKey.map { Hex.encode($0.protobufBytes) } ?? NSNull(),
            "listen_addrs": info.listenAddrs.map(\.description),
            "protocols": info.protocols,
            "observed_addr": info.observedAddr?.description ?? NSNull(),
            "local_addr": localAddress?.description ?? NSNull(),
        ]
        if let r = info.signedPeerRecord {
            obj["signed_peer_record"] = ["valid": true, "peer_id": r.peerID.base58, "seq": r.seq, "addrs": r.addresses.map(\.description)] as Object
        } else if let e = info.signedPeerRecordError {
            obj["signed_peer_record"] = ["valid": false, "error": e] as Object
        } else {
            obj["signed_peer_record"] = NSNull()
        }
        return obj
    }

    /// `cairn ping`: the connection and each round trip.
    public static func ping(peer: PeerID, address: Multiaddr?, rtts: [Duration]) -> Object {
        ["peer": peer.base58, "address": address?.description ?? NSNull(), "rtts_ms": rtts.map(millis)]
    }

    /// `cairn resolve`: a verified presence record.
    public static func resolve(_ record: PeerRecord) -> Object {
        ["peer": record.peerID.base58, "seq": Int(clamping: record.seq), "addrs": record.addresses.map(\.description)]
    }

    /// `cairn resolve` of any libp2p peer: its presence record when it has one, else what peer
    /// routing found (unsigned hints from the closest peers).
    public static func found(_ peer: PeerID, _ r: RoutedAddresses) -> Object {
        var o: Object = ["peer": peer.base58, "addrs": r.addresses.map(\.description), "source": "\(r.source)"]
        if case .presenceRecord(let seq) = r.source { o["seq"] = Int(clamping: seq) }
        return o
    }

    /// `cairn get`: the record's kind and what verified it (the value travels as bytes).
    public static func get(_ r: DHTRecord) -> Object {
        let keyText = IPNS.name(ofKey: r.key).map { "/ipns/\($0.base58)" } ?? String(decoding: r.key, as: UTF8.self)
        var o: Object = ["key": keyText, "seq": Int(clamping: r.seq), "expires": r.expiresAt.timeIntervalSince1970]
        switch r.kind {
        case .presence(let rec):
            o["kind"] = "presence"
            o["presence"] = resolve(rec)
        case .application(let namespace, let signer, _):
            o["kind"] = "application"
            o["namespace"] = namespace
            o["signer"] = signer.base58
        case .ipns(let rec):
            o["kind"] = "ipns"
            o["name"] = rec.name.base58
            o["ttl_ns"] = Int(clamping: rec.ttl)
        case .opaque:
            o["kind"] = "opaque"
        }
        return o
    }

    /// The bytes `cairn get` writes to stdout.
    public static func getValue(_ r: DHTRecord) -> [UInt8] {
        switch r.kind {
        case .application(_, _, let value): return value
        case .ipns(let rec): return rec.value
        default: return r.value
        }
    }

    /// A DHT key from the command line: `/ipns/<peer-id>` becomes IPNS's binary key.
    public static func dhtKey(_ text: String) -> [UInt8] {
        if text.hasPrefix("/ipns/"), let id = try? PeerID(string: String(text.dropFirst(6))) { return IPNS.key(id) }
        return Array(text.utf8)
    }

    /// `cairn publish ipns FILE`: an IPNS record of our own name (value: the file's bytes, e.g.
    /// `/ipfs/<cid>`), valid for `lifetime`, sequence from the clock so it only goes up.
    public static func ipnsRecord(value: [UInt8], lifetime: TimeInterval, key: PrivateKey) -> (key: [UInt8], record: [UInt8]) {
        let seq = UInt64(Date().timeIntervalSince1970 * 1e9)
        let record = IPNS.create(value: value, sequence: seq, validUntil: Date().addingTimeInterval(lifetime), ttl: .seconds(300), key: key)
        return (IPNS.key(key.peerID), record)
    }

    public static func stored(key: [UInt8], acks: Int, attempted: Int) -> Object {
        let keyText = IPNS.name(ofKey: key).map { "/ipns/\($0.base58)" } ?? String(decoding: key, as: UTF8.self)
        return ["key": keyText, "acks": acks, "attempted": attempted]
    }

    public static func providers(_ ps: [ProviderRecord]) -> Object {
        ["providers": ps.map { ["peer": $0.provider.base58, "addrs": $0.addresses.map(\.description)] as Object }]
    }

    /// `cairn peers`: the routing table.
    public static func routingTable(_ table: RoutingTable) -> Object {
        ["entries": table.allEntries.map { e in
            ["peer": e.peer.base58, "addrs": e.addresses.map(\.description), "bucket": table.localKey.commonPrefixLength(with: e.key)] as Object
        }]
    }

    /// `cairn dial`: how the peer was reached, and why.
    /// Which path the connection took and why: `lan`, `ipv6`, `port-mapped`, `public`, `loopback`,
    /// `punched`, `reversed`, `upgraded` (the peer's own dial) or `relayed`.
    public static func path(_ o: DialOutcome, host: CairnHost) -> (String, String) {
        switch o.path {
        case .relayed:
            return ("relayed", o.whyRelayed ?? "no direct path")
        case .upgraded(.holePunch?):
            return ("punched", "relayed first, then a hole punch (DCUtR simultaneous open)")
        case .upgraded(.reversal?):
            return ("reversed", "relayed first, then we dialed its public address (connection reversal)")
        case .upgraded:
            return ("upgraded", "relayed first, then the peer's own dial reached us")
        case .existing, .direct:
            break
        }
        return path(of: o.connection, knownAddresses: o.routed?.addresses ?? [], host: host)
    }

    /// The path of a direct connection: `lan`, `ipv6`, `port-mapped` or `public` (and why), from
    /// its remote address and what the peer advertises (`knownAddresses` and identify).
    public static func path(of connection: Connection, knownAddresses: [Multiaddr] = [], host: CairnHost) -> (String, String) {
        if connection.isLimited { return ("relayed", "through relay \(connection.relay?.description ?? "?")") }
        guard let (ip, _) = connection.remoteAddress?.tcpEndpoint else { return ("direct", "a direct connection") }
        let peerAddrs = knownAddresses + (connection.remotePeer.flatMap { host.node.identifyService.lastInfo(from: $0)?.listenAddrs } ?? [])
        let context = host.node.dialer.rankingContext()
        switch IPScope(ip) {
        case .loopback, .unspecified:
            return ("loopback", "the peer is on this host")
        case .privateRange, .linkLocal:
            if AddressRanking.sameNAT(peerAddrs, context) {
                return ("lan", "a private address: the peer is behind our NAT (it advertises a public IP we are observed at)")
            }
            return ("lan", "a private address on our network")
        case .publicRange:
            if ip.count == 16 { return ("ipv6", "a global IPv6 address (no NAT on the way)") }
            let natted = peerAddrs.contains { a in a.tcpEndpoint.map { IPScope($0.ip) == .privateRange } ?? false }
            if natted {
                return ("port-mapped", "a public address of a peer that is itself on a private network: its router forwards the port")
            }
            return ("public", "the peer's public address")
        }
    }

    public static func dial(_ o: DialOutcome, target: PeerID, rtts: [Duration], host: CairnHost) -> Object {
        var out: Object = ["peer": target.description, "direct_failures": o.failures.map(\.description),
                           "our_external_addrs": host.nat.externalAddresses.map(\.description)]
        if let r = o.routed {
            out["record_addrs"] = r.addresses.map(\.description)
            out["found_by"] = "\(r.source)"
            if case .presenceRecord(let seq) = r.source { out["record_seq"] = Int(clamping: seq) }
        }
        if let relayed = o.relayedConnection {
            out["relay"] = relayed.relay?.description
            if let l = relayed.limit { out["limit"] = ["duration_s": l.duration.map { Int($0) } as Any, "data_bytes": l.data.map { Int(clamping: $0) } as Any] }
        }
        switch o.path {
        case .existing, .direct: out["how"] = "direct"
        case .relayed:
            out["how"] = "relayed"
            out["why_relayed"] = o.whyRelayed ?? "?"
        case .upgraded(let method):
            out["how"] = "upgraded"
            if let method { out["upgrade"] = method.rawValue }
            out["upgrade_ms"] = o.upgradeElapsed.map(millis) ?? NSNull()
        }
        out["address"] = o.connection.remoteAddress?.description ?? "?"
        let (path, why) = Self.path(o, host: host)
        out["path"] = path
        out["path_why"] = why
        out["rtt_ms"] = millis(rtts[0])
        out["pings"] = rtts.count
        out["still_limited_connections"] = host.node.swarm.connections(to: target).filter(\.isLimited).count
        return out
    }
}
