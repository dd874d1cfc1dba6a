import ArgumentParser
import CairnCore
import CairnNode
import CairnProto
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix

@main
struct Cairn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cairn",
        abstract: "A peer-to-peer node that finds and reaches peers without trusted servers (libp2p wire protocols).",
        subcommands: [Id.self, RunNode.self, PingCommand.self, IdentifyCommand.self,
                      Resolve.self, Publish.self, Get.self, Provide.self, Providers.self, Peers.self, Netcheck.self,
                      Relays.self, DialCommand.self, P2PD.self, Status.self, P2P.self]
    )
}

struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "Data directory (identity, peer store). Default: ~/.cairn")
    var dataDir: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical")
    var logLevel: String = "info"

    @Option(name: .customLong("log-format"), help: "text, or json (one object per line: ts, level, label, msg, metadata).")
    var logFormat: String = "text"

    func validate() throws {
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format takes text or json") }
    }

    var dataDirectory: URL {
        dataDir.map { URL(fileURLWithPath: ($0 as NSString).expandingTildeInPath) } ?? IdentityStore.defaultDataDirectory
    }

    func bootstrapLogging() -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json {
                var h = JSONLogHandler.standardError(label: label)
                h.logLevel = level
                return h
            }
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        return Logger(label: "cairn")
    }

    func loadIdentity(_ logger: Logger) throws -> PrivateKey {
        let (key, created) = try IdentityStore(dataDirectory: dataDirectory).loadOrCreate()
        if created { logger.notice("created a new identity", metadata: ["peer": "\(key.peerID)", "dir": "\(dataDirectory.path)"]) }
        return key
    }
}

struct Id: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "id", abstract: "Print this node's identity, creating it if needed.")
    @OptionGroup var common: CommonOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let logger = common.bootstrapLogging()
        let key = try common.loadIdentity(logger)
        let id = key.peerID
        if json {
            let obj: [String: String] = [
                "peer_id": id.base58, "cid": id.cidString,
                "public_key": Hex.encode(key.publicKey.protobufBytes), "data_dir": common.dataDirectory.path,
            ]
            print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("peer id:    \(id.base58)")
            print("cid:        \(id.cidString)")
            print("public key: \(Hex.encode(key.publicKey.protobufBytes)) (ed25519, protobuf)")
            print("data dir:   \(common.dataDirectory.path)")
        }
    }
}

struct RunNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "node", abstract: "Run the node until interrupted.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @OptionGroup(title: "Resource limits") var limits: ResourceOptions
    @Option(name: .customLong("listen"), help: "Listen multiaddr (repeatable). Default: IPv4 and IPv6 (IPv6 skipped where it is off).")
    var listen: [String] = ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]
    @Option(name: .customLong("connect"), help: "Peer multiaddr to connect to at start (repeatable).")
    var connect: [String] = []
    @Flag(name: .customLong("autonat-allow-private"), help: "Serve AutoNAT dial-backs to private addresses too (labs, LANs).")
    var autonatAllowPrivate = false
    @Flag(name: .customLong("no-stun"), help: "Do not answer STUN Binding requests on the UDP port beside each TCP listen port.")
    var noSTUN = false
    @OptionGroup(title: "Port mapping") var portMapping: PortMappingOptions
    @Flag(name: .customLong("no-mdns"), help: "Do not look for peers on the LAN by mDNS (224.0.0.251:5353), nor announce this node there.")
    var noMDNS = false
    @Flag(name: .customLong("mdns-announce-only"), help: "Announce this node by mDNS and answer queries, but do not connect to the peers found.")
    var mdnsAnnounceOnly = false
    @Option(name: .customLong("testing-claim-observed"),
            help: ArgumentHelp("Adversarial testing only: tell every peer it was observed at this address.", visibility: .hidden))
    var testingClaimObserved: String?
    @Flag(name: .customLong("relay"), help: "Volunteer as a circuit relay (Circuit Relay v2) for private peers. Off by default.")
    var relay = false
    @Option(name: .customLong("relay-when"), help: "With --relay: public (serve while AutoNAT finds us publicly reachable) or always.")
    var relayWhen: String = "public"
    @Option(name: .customLong("relay-max-circuit-bytes"), help: "Bytes each way a relayed circuit may carry.")
    var relayMaxCircuitBytes: UInt64 = 128 * 1024
    @Option(name: .customLong("relay-max-circuit-seconds"), help: "Seconds a relayed circuit may last.")
    var relayMaxCircuitSeconds: UInt32 = 120
    @Option(name: .customLong("auto-relay"), help: "auto (reserve relay slots while AutoNAT finds us private), always, or off.")
    var autoRelay: String = "auto"
    @Option(name: .customLong("testing-autonat-answer"),
            help: ArgumentHelp("Adversarial testing only: answer every AutoNAT request with ok or dial-error, dialing nobody.", visibility: .hidden))
    var testingAutoNATAnswer: String?
    @Option(name: .customLong("api"), help: "Serve the libp2p daemon control API here (repeatable; default /unix/<data-dir>/api.sock).")
    var api: [String] = []
    @Flag(name: .customLong("no-api"), help: "Do not serve the control API.")
    var noAPI = false
    @Flag(name: .customLong("api-allow-remote"), help: "Allow --api on a non-loopback TCP address: anyone who reaches it controls the node (see README).")
    var apiAllowRemote = false
    @Option(name: .customLong("metrics"), help: "Serve Prometheus metrics at http://<addr>/metrics, e.g. /ip4/127.0.0.1/tcp/9464 (docs/metrics.md).")
    var metrics: String?
    @Flag(name: .customLong("metrics-allow-remote"), help: "Allow --metrics on a non-loopback address.")
    var metricsAllowRemote = false

    func hostConfiguration() throws -> CairnHost.Configuration {
        var c = CairnHost.Configuration()
        c.dataDirectory = common.dataDirectory
        c.listenAddresses = try listen.map { try Multiaddr($0) }
        c.connectAtStart = try connect.map { try Multiaddr($0) }
        try dht.apply(to: &c, mode: nil)
        c.stun = !noSTUN
        c.portMapping = try portMapping.configuration()
        if noMDNS { c.mdns = nil }
        if mdnsAnnounceOnly { c.mdns?.connect = false }
        if let lie = testingClaimObserved { c.node.testingClaimedObservedAddress = try Multiaddr(lie) }
        c.nat.policy.allowPrivateAddresses = autonatAllowPrivate
        c.nat.advertiseExternalAddresses = true  // voted external addresses go in identify, the peer record, presence
        switch testingAutoNATAnswer {
        case nil: break
        case "ok": c.nat.testingAutoNATAnswer = .ok
        case "dial-error": c.nat.testingAutoNATAnswer = .dialError
        case let other?: throw ValidationError("--testing-autonat-answer takes ok or dial-error, not \(other)")
        }
        guard let when = CairnHost.Configuration.Relay.When(rawValue: relayWhen) else { throw ValidationError("--relay-when takes public or always") }
        c.relay.serve = relay
        c.relay.when = when
        c.relay.service.resources.circuitBytes = relayMaxCircuitBytes
        c.relay.service.resources.circuitDuration = relayMaxCircuitSeconds
        guard let mode = AutoRelay.Mode(rawValue: autoRelay) else { throw ValidationError("--auto-relay takes auto, always or off") }
        c.autoRelay = mode
        c.controlAPI.enabled = !noAPI
        c.controlAPI.addresses = try api.map { try Multiaddr($0) }
        c.controlAPI.server.allowRemote = apiAllowRemote
        try limits.apply(to: &c.node.swarm.resources)
        c.metricsAddress = try metrics.map { try Multiaddr($0) }
        c.metricsAllowRemote = metricsAllowRemote
        return c
    }

    func run() async throws {
        let logger = common.bootstrapLogging()
        let config = try hostConfiguration()
        if let lie = testingClaimObserved { logger.warning("testing mode: claiming every peer was observed at \(lie)") }
        if let lie = testingAutoNATAnswer { logger.warning("testing mode: answering every AutoNAT request with \(lie)") }
        let host = try CLIError.wrap { try CairnHost(configuration: config, logger: logger) }
        if host.createdIdentity { logger.notice("created a new identity", metadata: ["peer": "\(host.peerID)", "dir": "\(common.dataDirectory.path)"]) }
        // Printed as soon as the swarm listens (before the DHT join), for scripts and tests.
        let bound: [Multiaddr]
        do {
            bound = try await host.startListening()
        } catch {
            await host.shutdown()
            throw CLIError("\(error)")
        }
        print("peer id: \(host.peerID)")
        for a in bound { print("listening on \(a.appending(.p2p(host.peerID)))") }
        for s in host.stunServers { print("stun on \(s.multiaddr?.description ?? "?")") }
        fflush(nil)
        do { try await host.startServices() } catch {
            await host.shutdown()
            throw CLIError("\(error)")
        }
        for a in host.controlAddresses { print("control api on \(a)") }
        if let m = host.metricsServerAddress, let (ip, port) = m.tcpEndpoint {
            let h = ip.count == 4 ? IPAddressText.format(ip) : "[\(IPAddressText.format(ip))]"
            print("metrics on http://\(h):\(port)/metrics")
        }
        fflush(nil)
        await waitForTermination()
        logger.notice("shutting down")
        await host.shutdown()
    }
}

/// The node's resource limits (docs/resources.md has every limit and its default).
struct ResourceOptions: ParsableArguments {
    @Option(name: .customLong("allow"), help: "Never refuse this network (CIDR such as 10.0.0.0/8, or an address) or peer ID (repeatable).")
    var allow: [String] = []
    @Option(name: .customLong("max-inbound-connections"), help: "Inbound connections at once (default 256).")
    var inbound: Int?
    @Option(name: .customLong("max-outbound-connections"), help: "Outbound connections at once (default 256).")
    var outbound: Int?
    @Option(name: .customLong("max-handshakes"), help: "Inbound connections in their handshake at once (default 64).")
    var handshakes: Int?
    @Option(name: .customLong("max-connections-per-ip"), help: "Connections from one IPv4 address or IPv6 /56 (default 16).")
    var perIP: Int?
    @Option(name: .customLong("max-connections-per-peer"), help: "Connections to one peer (default 8).")
    var perPeer: Int?
    @Option(name: .customLong("max-streams-per-peer"), help: "Inbound streams from one peer (default 256).")
    var streamsPerPeer: Int?
    @Option(name: .customLong("max-memory-mib"), help: "Buffer memory the node may commit, in MiB (default 512).")
    var memoryMiB: Int?

    func apply(to l: inout ResourceManager.Limits) throws {
        for a in allow {
            guard let e = ResourceManager.AllowEntry(a) else { throw ValidationError("--allow takes a CIDR, an IP address or a peer ID, not \(a)") }
            l.allow.append(e)
        }
        for v in [inbound, outbound, handshakes, perIP, perPeer, streamsPerPeer, memoryMiB] {
            if let v, v < 1 { throw ValidationError("resource limits must be at least 1") }
        }
        if let inbound { l.inboundConnections = inbound }
        if let outbound { l.outboundConnections = outbound }
        if let handshakes { l.inboundHandshakes = handshakes }
        if let perIP { l.connectionsPerIP = perIP }
        if let perPeer { l.connectionsPerPeer = perPeer }
        if let streamsPerPeer { l.inboundStreamsPerPeer = streamsPerPeer }
        if let memoryMiB { l.memory = memoryMiB << 20 }
    }
}

/// DHT options shared by `node` and the one-shot commands.
struct DHTOptions: ParsableArguments {
    @Option(name: .customLong("bootstrap"), help: "Bootstrap peer multiaddr with /p2p/<id> (repeatable).")
    var bootstrap: [String] = []
    @Option(name: .customLong("peers-file"), help: "File of bootstrap multiaddrs, one per line (# comments).")
    var peersFile: String = "bootstrap/peers"
    @Option(name: .customLong("dht-mode"), help: "server (answer DHT requests) or client.")
    var mode: String = "server"
    @Flag(name: .customLong("dual-dht"), help: "kubo's dual DHT: the main protocol's table keeps peers with public addresses, and /ipfs/lan/kad/1.0.0 serves a second table of private and loopback ones.")
    var dual = false
    @Option(name: .customLong("dht-protocol"), help: "Kademlia protocol ID (repeatable: the first is the main one, the others are served on the same table, e.g. kubo's LAN DHT /ipfs/lan/kad/1.0.0).")
    var protocolIDs: [String] = ["/ipfs/kad/1.0.0"]

    func bootstrapPeers() throws -> [Multiaddr] {
        var lines = bootstrap
        if lines.isEmpty, let text = try? String(contentsOfFile: peersFile, encoding: .utf8) {
            lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        return try lines.map { try Multiaddr($0) }
    }

    /// The DHT part of a host's configuration; `mode` overrides `--dht-mode` (one-shot commands are clients).
    func apply(to c: inout CairnHost.Configuration, mode override: KademliaConfiguration.Mode?) throws {
        guard mode == "server" || mode == "client" else { throw ValidationError("--dht-mode is server or client") }
        c.bootstrapPeers = try bootstrapPeers()
        guard let main = protocolIDs.first else { throw ValidationError("--dht-protocol needs a value") }
        c.dht.service.kademlia.protocolID = main
        c.dht.service.additionalProtocols = Array(protocolIDs.dropFirst())
        c.dht.dual = dual
        c.dht.service.kademlia.mode = override ?? (mode == "client" ? .client : .server)
    }
}

struct PortMappingOptions: ParsableArguments {
    @Option(name: .customLong("port-mapping"),
            help: "Ask the default gateway to forward the listen port: auto (PCP, then NAT-PMP, then UPnP IGD), pcp, natpmp, upnp (that one only), or off.")
    var mode: String = "auto"
    @Option(name: .customLong("port-mapping-lifetime"), help: "Seconds each mapping is asked for (renewed at half of what the gateway grants).")
    var lifetime: UInt32 = 7200
    @Option(name: .customLong("port-mapping-retry"), help: "Seconds before asking again after every dialect failed.")
    var retry: Double = 300

    func configuration() throws -> PortMappingService.Configuration? {
        var c = PortMappingService.Configuration()
        switch mode {
        case "auto": break
        case "pcp": c.natpmp = false; c.upnp = false
        case "natpmp": c.pcp = false; c.upnp = false
        case "upnp": c.pcp = false; c.natpmp = false
        case "off": return nil
        default: throw ValidationError("--port-mapping takes auto, pcp, natpmp, upnp or off, not \(mode)")
        }
        guard lifetime >= 2 else { throw ValidationError("--port-mapping-lifetime must be at least 2 seconds") }
        c.lifetime = lifetime
        c.retryInterval = .milliseconds(Int(max(0.1, retry) * 1000))
        return c
    }
}

/// The configuration of a host for a one-shot command: no listener, no STUN, no AutoNAT probing
/// or serving, no relaying, no status file, no peer store; the DHT a client that joins on demand.
/// Beside a running node on the same data directory it runs with a temporary identity, unless
/// `needsOwnIdentity` (publishing, providing): then it refuses.
func oneShotConfiguration(_ common: CommonOptions, dht: DHTOptions?, needsOwnIdentity: Bool = false) throws -> CairnHost.Configuration {
    var c = CairnHost.Configuration()
    c.dataDirectory = common.dataDirectory
    c.whenDataDirectoryLocked = needsOwnIdentity ? .fail : .ephemeral
    c.listenAddresses = []
    c.stun = false
    c.portMapping = nil
    c.mdns = nil
    c.autoNATProbing = false
    c.nat.serveAutoNAT = false
    c.autoRelay = .off
    c.holePunching = nil
    c.statusInterval = nil
    c.persistPeers = false
    c.dht.enabled = dht != nil
    c.dht.joinAtStart = false
    c.dht.publishPresence = false
    c.dht.followReachability = false
    if let dht { try dht.apply(to: &c, mode: .client) }
    return c
}

/// A one-shot command: start a host, join the DHT, do the work, shut down.
func withJoinedDHT<T>(_ common: CommonOptions, _ dht: DHTOptions, needsOwnIdentity: Bool = false,
                      _ body: (CairnHost, DHTService) async throws -> T) async throws -> T {
    let logger = common.bootstrapLogging()
    let host = try CLIError.wrap { try CairnHost(configuration: try oneShotConfiguration(common, dht: dht, needsOwnIdentity: needsOwnIdentity), logger: logger) }
    do {
        try await host.start()
        try await host.joinDHT()
        let result = try await body(host, host.dht!)
        await host.shutdown()
        return result
    } catch {
        await host.shutdown()
        throw CLIError("\(error)")
    }
}

/// The node running on the data directory, if one is: a command asks it (through the control
/// API) instead of starting a second node with the same identity.
func runningNode(_ common: CommonOptions) async -> ControlClient? {
    await ControlClient.runningNode(dataDirectory: common.dataDirectory)
}

/// Runs a Cairn request on the running node, turning its refusal into the command's error.
func ask(_ node: ControlClient, _ fill: (inout P2pd_Pb_CairnRequest) -> Void) async throws -> (report: Reports.Object, value: [UInt8]) {
    do { return try await node.cairn(fill) } catch { throw CLIError("\(error)") }
}

struct Resolve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resolve a peer ID to its addresses: its verified presence record, else libp2p peer routing (any libp2p peer).")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument var peer: String

    func run() async throws {
        let id = try PeerID(string: peer)
        let report: Reports.Object
        if let node = await runningNode(common) {
            report = try await ask(node) { $0.type = .resolve; $0.peer = Data(id.bytes) }.report
        } else {
            report = Reports.found(id, try await withJoinedDHT(common, dht) { _, s in try await s.findPeer(id) })
        }
        if let seq = report["seq"] {
            print("peer \(report["peer"] ?? "?") (seq \(seq), verified)")
        } else {
            print("peer \(report["peer"] ?? "?") (found by peer routing: addresses the closest peers know, unsigned)")
        }
        for a in report["addrs"] as? [String] ?? [] { print("  \(a)") }
    }
}

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Publish a signed record under /<namespace>/<our peer ID>; the namespace ipns publishes an IPNS record of our name (value e.g. /ipfs/<cid>), which kubo and any IPFS node accept.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument var namespace: String
    @Argument(help: "File whose bytes are the record's value (max 10 KiB with its envelope).") var file: String
    @Option(help: "Lifetime in seconds.") var ttl: Double = 24 * 3600

    func run() async throws {
        let value = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        let report: Reports.Object
        if let node = await runningNode(common) {
            report = try await ask(node) { $0.type = .publish; $0.name = namespace; $0.value = Data(value); $0.seconds = ttl }.report
        } else {
            report = try await withJoinedDHT(common, dht, needsOwnIdentity: true) { host, s -> Reports.Object in
                let seq = UInt64(Date().timeIntervalSince1970 * 1e9)
                let (key, env) = namespace == "ipns"
                    ? Reports.ipnsRecord(value: value, lifetime: ttl, key: host.node.swarm.identity)
                    : RecordValidator.signApplicationRecord(namespace: namespace, value: value, seq: seq,
                                                            expires: Date().addingTimeInterval(ttl), key: host.node.swarm.identity)
                let (a, t) = try await s.putValue(key, env)
                return Reports.stored(key: key, acks: a, attempted: t)
            }
        }
        let acks = report["acks"] as? Int ?? 0
        print("published \(report["key"] ?? "?") to \(acks) of \(report["attempted"] ?? 0) closest peers")
        if acks == 0 { throw ExitCode.failure }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Get a record; signed records are returned only if they verify.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument var key: String

    func run() async throws {
        let k = Reports.dhtKey(key)
        let report: Reports.Object, value: [UInt8]
        if let node = await runningNode(common) {
            (report, value) = try await ask(node) { $0.type = .get; $0.key = Data(k) }
        } else {
            guard let r = try await withJoinedDHT(common, dht, { _, s in try await s.getValue(k) }) else {
                throw CLIError("no valid record for \(key)")
            }
            (report, value) = (Reports.get(r), Reports.getValue(r))
        }
        switch report["kind"] as? String {
        case "presence":
            let p = report["presence"] as? Reports.Object ?? [:]
            print("presence record of \(p["peer"] ?? "?"), seq \(p["seq"] ?? "?"), verified")
            for a in p["addrs"] as? [String] ?? [] { print("  \(a)") }
        case "ipns":
            let expires = Date(timeIntervalSince1970: report["expires"] as? Double ?? 0)
            FileHandle.standardError.write(Data("IPNS record of \(report["name"] ?? "?"), sequence \(report["seq"] ?? "?"), valid until \(expires), verified\n".utf8))
            FileHandle.standardOutput.write(Data(value))
        case "application":
            let expires = Date(timeIntervalSince1970: report["expires"] as? Double ?? 0)
            FileHandle.standardError.write(Data("signed by \(report["signer"] ?? "?"), seq \(report["seq"] ?? "?"), expires \(expires), verified\n".utf8))
            FileHandle.standardOutput.write(Data(value))
        default:
            FileHandle.standardError.write(Data("opaque value (not verifiable), \(value.count) bytes\n".utf8))
            FileHandle.standardOutput.write(Data(value))
        }
    }
}

struct Provide: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Announce this node as a provider of a CID (CIDv0 or CIDv1 text; keyed by its multihash, as kad-dht does) or of any string.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument var cid: String

    func run() async throws {
        let report: Reports.Object
        if let node = await runningNode(common) {
            report = try await ask(node) { $0.type = .provide; $0.key = Data(CID.providerKey(cid)) }.report
        } else {
            // A one-shot node has no address to announce (go-libp2p discards such provider
            // records), and it is gone when the command ends: say so.
            FileHandle.standardError.write(Data("warning: no node is running on \(common.dataDirectory.path); this one-shot provider record carries no address and go-libp2p peers discard it. Run `cairn node` to provide for real.\n".utf8))
            report = try await withJoinedDHT(common, dht, needsOwnIdentity: true) { _, s in
                let (a, t) = try await s.provide(CID.providerKey(cid))
                return Reports.stored(key: CID.providerKey(cid), acks: a, attempted: t)
            }
        }
        print("provided \(cid) to \(report["acks"] ?? 0) of \(report["attempted"] ?? 0) closest peers")
    }
}

struct Providers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the providers of a key.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument var cid: String

    func run() async throws {
        let report: Reports.Object
        if let node = await runningNode(common) {
            report = try await ask(node) { $0.type = .providers; $0.key = Data(CID.providerKey(cid)) }.report
        } else {
            report = Reports.providers(try await withJoinedDHT(common, dht) { _, s in try await s.providers(CID.providerKey(cid)) })
        }
        let ps = report["providers"] as? [Reports.Object] ?? []
        print("\(ps.count) provider(s) of \(cid)")
        for p in ps { print("  \(p["peer"] ?? "?") \((p["addrs"] as? [String] ?? []).joined(separator: " "))") }
    }
}

struct Peers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Summarise the routing table (joins first when given --bootstrap).")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions

    func run() async throws {
        let report: Reports.Object
        if let node = await runningNode(common) {
            report = try await ask(node) { $0.type = .routingTable }.report
        } else {
            report = Reports.routingTable(try await withJoinedDHT(common, dht) { _, s in s.routingTable })
        }
        let entries = report["entries"] as? [Reports.Object] ?? []
        print("\(entries.count) peer(s) in the routing table")
        var byBucket: [Int: Int] = [:]
        for e in entries { byBucket[e["bucket"] as? Int ?? -1, default: 0] += 1 }
        for (b, n) in byBucket.sorted(by: { $0.key < $1.key }) { print("  bucket \(b): \(n)") }
        for e in entries { print("  \(e["peer"] ?? "?") \((e["addrs"] as? [String] ?? []).joined(separator: " "))") }
    }
}

struct PingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ping", abstract: "Ping a peer: /ip4/…/tcp/…/p2p/<id>.")
    @OptionGroup var common: CommonOptions
    @Argument(help: "The peer's multiaddr, ending in /p2p/<peer-id>.") var address: String
    @Option(name: .shortAndLong, help: "Number of pings.") var count = 3
    @Option(help: "Seconds between pings.") var interval = 1.0

    func run() async throws {
        let logger = common.bootstrapLogging()
        let addr = try Multiaddr(address)
        guard addr.peerID != nil else { throw ValidationError("the address must end in /p2p/<peer-id>") }
        let report: Reports.Object
        if let node = await runningNode(common) {
            do {
                report = try await node.cairn { $0.type = .ping; $0.addrs = [Data(addr.bytes)]; $0.count = Int64(count); $0.interval = interval }.report
            } catch {
                throw CLIError("ping failed: \(error)")
            }
        } else {
            let host = try CLIError.wrap { try CairnHost(configuration: try oneShotConfiguration(common, dht: nil), logger: logger) }
            do {
                try await host.start()
                let conn = try await host.connect(addr)
                let rtts = try await host.node.ping(conn, count: count, interval: .milliseconds(Int(interval * 1000)))
                report = Reports.ping(peer: conn.remotePeer!, address: conn.remoteAddress, rtts: rtts)
            } catch {
                await host.shutdown()
                throw CLIError("ping failed: \(error)")
            }
            await host.shutdown()
        }
        print("connected to \(report["peer"] ?? "?") at \(report["address"] as? String ?? address)")
        let ms = report["rtts_ms"] as? [Double] ?? []
        for (i, rtt) in ms.enumerated() { print(String(format: "ping %d: rtt=%.3f ms", i + 1, rtt)) }
        guard let lo = ms.min(), let hi = ms.max() else { throw CLIError("ping failed: no answer") }
        print(String(format: "%d pings: min %.3f ms, avg %.3f ms, max %.3f ms", ms.count, lo, ms.reduce(0, +) / Double(ms.count), hi))
    }
}

struct IdentifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "identify", abstract: "Ask a peer what it says about itself.")
    @OptionGroup var common: CommonOptions
    @Argument(help: "The peer's multiaddr (/p2p/<peer-id> recommended).") var address: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let logger = common.bootstrapLogging()
        let addr = try Multiaddr(address)
        let j: Reports.Object
        if let node = await runningNode(common) {
            do { j = try await node.cairn { $0.type = .identifyPeer; $0.addrs = [Data(addr.bytes)] }.report } catch {
                throw CLIError("identify failed: \(error)")
            }
        } else {
            let host = try CLIError.wrap { try CairnHost(configuration: try oneShotConfiguration(common, dht: nil), logger: logger) }
            do {
                try await host.start()
                let conn = try await host.connect(addr)
                let info = try await host.node.identify(conn)
                j = Reports.identify(info, peer: conn.remotePeer!, localAddress: conn.localAddress)
            } catch {
                await host.shutdown()
                throw CLIError("identify failed: \(error)")
            }
            await host.shutdown()
        }
        if json {
            var out = j
            out["public_key"] = nil  // the JSON form has always left the key out
            print(Reports.json(out))
            return
        }
        print("peer id:          \(j["peer_id"] ?? "?")")
        print("protocol version: \(j["protocol_version"] as? String ?? "-")")
        print("agent version:    \(j["agent_version"] as? String ?? "-")")
        print("public key:       \(j["public_key"] as? String ?? "-")")
        print("listen addrs:")
        for a in j["listen_addrs"] as? [String] ?? [] { print("  \(a)") }
        print("protocols:")
        for p in j["protocols"] as? [String] ?? [] { print("  \(p)") }
        print("observed addr (how the peer sees us): \(j["observed_addr"] as? String ?? "-")")
        print("our local addr:   \(j["local_addr"] as? String ?? "-")")
        if let r = j["signed_peer_record"] as? Reports.Object {
            if r["valid"] as? Bool == true {
                print("signed peer record: verified, seq \(r["seq"] ?? "?")")
                for a in r["addrs"] as? [String] ?? [] { print("  \(a)") }
            } else {
                print("signed peer record: REJECTED (\(r["error"] ?? "?"))")
            }
        } else {
            print("signed peer record: none")
        }
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }

    /// Runs `body`, turning its error into a message (no Swift error dump for the user).
    static func wrap<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as ValidationError { throw e } catch { throw CLIError("\(error)") }
    }
}


/// Suspends until SIGINT or SIGTERM.
func waitForTermination() async {
    await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
        let once = OnceFlag()
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            src.setEventHandler { if once.set() { cont.resume() } }
            src.resume()
            sources.append(src)
        }
        SignalSources.keep(sources)
    }
}

final class OnceFlag: @unchecked Sendable {
    private var done = false
    private let lock = NSLock()
    func set() -> Bool { lock.lock(); defer { lock.unlock() }; if done { return false }; done = true; return true }
}

enum SignalSources {
    nonisolated(unsafe) static var retained: [DispatchSourceSignal] = []
    static func keep(_ s: [DispatchSourceSignal]) { retained += s }
}

struct Netcheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report the address votes, adopted external addresses, NAT kind and reachability.")
    @OptionGroup var common: CommonOptions
    @Option(name: .customLong("bootstrap"), help: "Peer multiaddr with /p2p/<id> to ask (repeatable).")
    var bootstrap: [String] = []
    @Option(name: .customLong("listen"), help: "Listen (and dial from) this address.")
    var listen: String = "/ip4/0.0.0.0/tcp/0"
    @Option(help: "Seconds to gather votes and dial-backs.") var duration: Double = 10
    @Flag(help: "Also ask each peer's STUN responder (UDP, beside its TCP port) for our UDP mapping.") var stun = false
    @Flag(help: "Stay the whole --duration even when every probe has answered, so unsolicited inbound connections can reveal the NAT's filtering.")
    var linger = false
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup(title: "Port mapping") var portMapping: PortMappingOptions

    func run() async throws {
        let logger = common.bootstrapLogging()
        let peers = try bootstrap.map { try Multiaddr($0) }
        guard !peers.isEmpty else { throw ValidationError("give peers to ask with --bootstrap") }
        var config = try oneShotConfiguration(common, dht: nil)
        config.listenAddresses = [try Multiaddr(listen)]
        config.nat.serveAutoNAT = true
        config.portMapping = try portMapping.configuration().map { c in
            var c = c
            c.confirmInterval = .milliseconds(500)  // peers connect after the mapping starts
            c.mapUDP = false  // netcheck runs no STUN responder
            return c
        }
        let host = try CLIError.wrap { try CairnHost(configuration: config, logger: logger) }
        let node = host.node
        let nat = host.nat
        do { try await host.start() } catch {
            await host.shutdown()
            throw CLIError("\(error)")
        }
        let deadline = ContinuousClock.now + .milliseconds(Int(duration * 1000))
        var conns: [Connection] = []
        for p in peers {
            do {
                let c = try await host.connect(p)
                _ = try await node.identify(c)
                conns.append(c)
            } catch {
                logger.warning("\(p): \(error)")
            }
        }
        if stun, let port = node.listenAddresses.first?.tcpEndpoint?.port {
            await nat.querySTUN(peers: conns.compactMap(\.remoteAddress), localPort: Int(port))
        }
        await withTaskGroup(of: Void.self) { g in
            for c in conns { g.addTask { _ = try? await nat.probe(c) } }
            g.addTask { try? await Task.sleep(until: deadline) }
            var done = 0
            for await _ in g {
                done += 1
                if ContinuousClock.now >= deadline { g.cancelAll(); break }
                if done == conns.count && !linger { g.cancelAll(); break }
            }
        }
        // The port mapping's outcome: confirmed or failed (or --duration is over).
        while let pm = host.portMapping, !pm.isSettled, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(100))
        }
        let mappings = host.portMapping?.mappings ?? []
        let paths = conns.map { c -> (String, String, String) in
            let (p, why) = Reports.path(of: c, host: host)
            return (c.remotePeer?.description ?? "?", p, why)
        }
        let mappingNote = host.portMapping == nil ? "off" : host.portMapping?.note
        let r = nat.report()
        await host.shutdown()
        if json {
            let obj: [String: Any] = [
                "votes": r.votes.map { ["observer": $0.observer.description, "observer_addr": $0.observerAddress.description,
                                        "claimed": $0.observed.description, "local": $0.local.description,
                                        "age_s": r.generatedAt.timeIntervalSince($0.at), "outbound": $0.outbound] as [String: Any] },
                "external_addrs": r.external.map(\.description),
                "nat": ["mapping": r.classification.mapping.rawValue, "port_allocation": r.classification.portAllocation.rawValue,
                        "filtering": r.classification.filtering.rawValue, "observers": r.classification.observers] as [String: Any],
                "reachability": r.reachability.reachability.rawValue,
                "confidence": r.reachability.confidence,
                "autonat_answers": r.autonatAnswers.map { ["server": $0.server.description, "server_group": $0.serverGroup.description,
                                                           "status": "\($0.status)", "reachability": $0.reachability.rawValue,
                                                           "confidence": $0.confidence, "age_s": r.generatedAt.timeIntervalSince($0.at)] as [String: Any] },
                "rejected_observations": Dictionary(uniqueKeysWithValues: r.rejectedObservations.map { ("\($0.key)", $0.value) }),
                "port_mapping": mappings.map { m -> [String: Any] in
                    var o: [String: Any] = ["proto": m.proto == .tcp ? "tcp" : "udp", "internal_port": Int(m.internalPort),
                                            "gateway": IPAddressText.format(m.gateway), "state": m.state.rawValue, "summary": m.summary]
                    if let d = m.dialect { o["dialect"] = d.rawValue }
                    if let p = m.externalPort { o["external_port"] = Int(p) }
                    if let a = m.claimedAddress { o["claimed_address"] = IPAddressText.format(a) }
                    if let c = m.confirmed { o["confirmed"] = c.description }
                    if let d = m.detail { o["detail"] = d }
                    return o
                },
                "port_mapping_note": mappingNote ?? NSNull(),
                "connections": paths.map { ["peer": $0.0, "path": $0.1, "path_why": $0.2] },
            ]
            print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("votes (\(r.votes.count)):")
            for v in r.votes {
                let age = String(format: "%.1f", r.generatedAt.timeIntervalSince(v.at))
                print("  observer \(v.observer.description.padding(toLength: 18, withPad: " ", startingAt: 0)) claims \(v.observed)  (local \(v.local), \(age)s ago)")
            }
            print("external addresses: \(r.external.isEmpty ? "none adopted (need 4 distinct observers)" : r.external.map(\.description).joined(separator: " "))")
            let c = r.classification
            print("NAT: mapping \(c.mapping.rawValue), port allocation \(c.portAllocation.rawValue), filtering \(c.filtering.rawValue) (\(c.observers) observers)")
            print("autonat answers (\(r.autonatAnswers.count)):")
            for a in r.autonatAnswers {
                print("  \(a.serverGroup.description.padding(toLength: 18, withPad: " ", startingAt: 0)) \(a.status) -> \(a.reachability.rawValue) (confidence \(a.confidence))  \(a.server)")
            }
            print("reachability: \(r.reachability.reachability.rawValue) (confidence \(r.reachability.confidence))")
            for (peer, p, why) in paths { print("connection to \(peer): \(p) (\(why))") }
            if mappings.isEmpty {
                print("port mapping: none (\(mappingNote ?? "no outcome within --duration"))")
            }
            for m in mappings { print("port mapping: \(m.summary)") }
            if !r.rejectedObservations.isEmpty {
                print("rejected observations: " + r.rejectedObservations.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
            }
        }
    }
}
