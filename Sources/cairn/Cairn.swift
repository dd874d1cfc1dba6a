import ArgumentParser
import CairnCore
import CairnNode
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
                      Relays.self, DialCommand.self]
    )
}

struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "Data directory (identity, peer store). Default: ~/.cairn")
    var dataDir: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical")
    var logLevel: String = "info"

    var dataDirectory: URL {
        dataDir.map { URL(fileURLWithPath: ($0 as NSString).expandingTildeInPath) } ?? IdentityStore.defaultDataDirectory
    }

    func bootstrapLogging() -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
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
    @Option(name: .customLong("listen"), help: "Listen multiaddr (repeatable).")
    var listen: [String] = ["/ip4/0.0.0.0/tcp/4001"]
    @Option(name: .customLong("connect"), help: "Peer multiaddr to connect to at start (repeatable).")
    var connect: [String] = []
    @Flag(name: .customLong("autonat-allow-private"), help: "Serve AutoNAT dial-backs to private addresses too (labs, LANs).")
    var autonatAllowPrivate = false
    @Flag(name: .customLong("no-stun"), help: "Do not answer STUN Binding requests on the UDP port beside each TCP listen port.")
    var noSTUN = false
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

    func run() async throws {
        let logger = common.bootstrapLogging()
        let key = try common.loadIdentity(logger)
        let addrs = try listen.map { try Multiaddr($0) }
        let store = try PeerStore(path: common.dataDirectory.appendingPathComponent("peers.sqlite").path)
        var nodeConfig = Node.Configuration()
        if let lie = testingClaimObserved {
            nodeConfig.testingClaimedObservedAddress = try Multiaddr(lie)
            logger.warning("testing mode: claiming every peer was observed at \(lie)")
        }
        let node = Node(identity: key, configuration: nodeConfig, peerStore: store, logger: logger)
        let service = try dht.makeService(node: node, common: common, logger: logger)
        var natConfig = NATService.Configuration()
        natConfig.policy.allowPrivateAddresses = autonatAllowPrivate
        switch testingAutoNATAnswer {
        case nil: break
        case "ok": natConfig.testingAutoNATAnswer = .ok
        case "dial-error": natConfig.testingAutoNATAnswer = .dialError
        case let other?: throw ValidationError("--testing-autonat-answer takes ok or dial-error, not \(other)")
        }
        if let lie = testingAutoNATAnswer { logger.warning("testing mode: answering every AutoNAT request with \(lie)") }
        let nat = NATService(node: node, dht: service, configuration: natConfig, logger: logger)
        let prober = Task {
            // Ask a few peers to dial us back: soon after joining, often at first, then every 15 minutes.
            let schedule: [UInt64] = [5, 30, 60, 60, 60]
            var round = 0
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: (round < schedule.count ? schedule[round] : 900) * 1_000_000_000)
                round += 1
                for c in node.swarm.connections.filter({ !$0.isLimited }).shuffled().prefix(3) { _ = try? await nat.probe(c) }
            }
        }
        // Circuit Relay v2: every node can dial relayed addresses and accept circuits; it
        // volunteers as a relay only with --relay; it reserves slots on relays when private.
        let relayClient = RelayClient(node: node, logger: logger)
        var relayConfig = RelayService.Configuration()
        relayConfig.resources.circuitBytes = relayMaxCircuitBytes
        relayConfig.resources.circuitDuration = relayMaxCircuitSeconds
        let relayService = RelayService(node: node, configuration: relayConfig, logger: logger)
        guard let autoRelayMode = AutoRelay.Mode(rawValue: autoRelay) else { throw ValidationError("--auto-relay takes auto, always or off") }
        guard relayWhen == "public" || relayWhen == "always" else { throw ValidationError("--relay-when takes public or always") }
        let autoRelayer = AutoRelay(node: node, client: relayClient, mode: autoRelayMode, logger: logger)
        // DCUtR: relayed connections are upgraded to direct ones when the NATs allow it.
        let holePunch = HolePunchService(node: node, nat: nat, logger: logger)
        if relay && relayWhen == "public" { relayService.followReachability(of: nat) }
        if relay && relayWhen == "always" { relayService.setServing(true) }
        autoRelayer.followReachability(of: nat)
        if autoRelayMode != .off { autoRelayer.start() }
        let statusWriter = Task {
            let path = common.dataDirectory.appendingPathComponent("relays.json")
            while !Task.isCancelled {
                // Voted external addresses are advertised too (identify, peer record, presence).
                node.setExtraAddresses(nat.externalAddresses.filter { $0.tcpEndpoint != nil }, source: "nat")
                RelayStatus.write(to: path, node: node, client: relayClient, service: relayService, nat: nat, holePunch: holePunch)
                try? await Task.sleep(nanoseconds: 2_000_000_000)
            }
        }
        let bound = try await node.listen(addrs)
        print("peer id: \(node.peerID)")
        for a in bound { print("listening on \(a.appending(.p2p(node.peerID)))") }
        var stunServers: [STUNServer] = []
        if !noSTUN {
            for a in addrs {
                // Beside the port actually bound (a configured port 0 becomes a real one).
                guard let (ip, _) = a.tcpEndpoint,
                      let port = bound.first(where: { $0.tcpEndpoint?.ip.count == ip.count })?.tcpEndpoint?.port else { continue }
                let udpBeside = Multiaddr(components: [ip.count == 4 ? .ip4(ip) : .ip6(ip), .tcp(port)])
                do {
                    let s = try await STUNServer.start(besideTCP: udpBeside, group: node.swarm.group, logger: logger)
                    stunServers.append(s)
                    print("stun on \(s.multiaddr?.description ?? "?")")
                } catch {
                    logger.warning("STUN responder beside \(a) not started: \(error)")
                }
            }
        }
        fflush(nil)
        service.start()
        for c in connect {
            do {
                let conn = try await node.dial(try Multiaddr(c))
                logger.info("connected", metadata: ["peer": "\(conn.remotePeer!)", "addr": "\(c)"])
            } catch {
                logger.error("connect \(c) failed: \(error)")
            }
        }
        var presence: Task<Void, Never>?
        do {
            try await dht.join(service, logger: logger)
            presence = service.keepPresencePublished()
        } catch {
            logger.warning("not joined to the DHT yet: \(error); serving and waiting for peers")
        }
        await waitForTermination()
        logger.notice("shutting down")
        prober.cancel()
        statusWriter.cancel()
        autoRelayer.stop()
        presence?.cancel()
        for s in stunServers { await s.close() }
        service.stop()
        await node.shutdown()
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
    @Option(name: .customLong("dht-protocol"), help: "Kademlia protocol ID.")
    var protocolID: String = "/ipfs/kad/1.0.0"

    func bootstrapPeers() throws -> [Multiaddr] {
        var lines = bootstrap
        if lines.isEmpty, let text = try? String(contentsOfFile: peersFile, encoding: .utf8) {
            lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        return try lines.map { try Multiaddr($0) }
    }

    func makeService(node: Node, common: CommonOptions, logger: Logger, mode override: KademliaConfiguration.Mode? = nil) throws -> DHTService {
        var config = DHTService.Configuration()
        config.kademlia.protocolID = protocolID
        switch override ?? (mode == "client" ? .client : .server) {
        case .client: config.kademlia.mode = .client
        case .server: config.kademlia.mode = .server
        }
        guard mode == "server" || mode == "client" else { throw ValidationError("--dht-mode is server or client") }
        let store = try SQLiteDHTStore(path: common.dataDirectory.appendingPathComponent("dht.sqlite").path, validator: config.kademlia.validator)
        return DHTService(node: node, store: store, configuration: config, logger: logger)
    }

    /// Joins through the bootstrap peers, or through the saved routing table when none are given.
    func join(_ service: DHTService, logger: Logger) async throws {
        let peers = try bootstrapPeers()
        if peers.isEmpty && service.routingTable.count == 0 { throw DHTError.noPeers }
        try await service.bootstrap(peers)
    }
}

/// A one-shot command: start a node (client mode, no listener), join, do the work, exit.
func withJoinedDHT<T>(_ common: CommonOptions, _ dht: DHTOptions, mode: KademliaConfiguration.Mode = .client,
                      _ body: (Node, DHTService) async throws -> T) async throws -> T {
    let logger = common.bootstrapLogging()
    let key = try common.loadIdentity(logger)
    let node = Node(identity: key, logger: logger)
    _ = RelayClient(node: node, logger: logger)  // relayed addresses are dialable too
    let service = try dht.makeService(node: node, common: common, logger: logger, mode: mode)
    service.start()
    do {
        try await dht.join(service, logger: logger)
        let result = try await body(node, service)
        service.stop()
        await node.shutdown()
        return result
    } catch {
        service.stop()
        await node.shutdown()
        throw CLIError("\(error)")
    }
}

struct Resolve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resolve a peer ID to its verified current addresses (its presence record).")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument var peer: String

    func run() async throws {
        let id = try PeerID(string: peer)
        let record = try await withJoinedDHT(common, dht) { _, s in try await s.resolve(id) }
        print("peer \(record.peerID) (seq \(record.seq), verified)")
        for a in record.addresses { print("  \(a)") }
    }
}

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Publish a signed record under /<namespace>/<our peer ID>.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument var namespace: String
    @Argument(help: "File whose bytes are the record's value (max 10 KiB with its envelope).") var file: String
    @Option(help: "Lifetime in seconds.") var ttl: Double = 24 * 3600

    func run() async throws {
        let value = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        let (key, acks, attempted) = try await withJoinedDHT(common, dht) { node, s -> ([UInt8], Int, Int) in
            let seq = UInt64(Date().timeIntervalSince1970 * 1e9)
            let (key, env) = RecordValidator.signApplicationRecord(namespace: namespace, value: value, seq: seq,
                                                                   expires: Date().addingTimeInterval(ttl), key: node.swarm.identity)
            let (a, t) = try await s.putValue(key, env)
            return (key, a, t)
        }
        print("published \(String(decoding: key, as: UTF8.self)) to \(acks) of \(attempted) closest peers")
        if acks == 0 { throw ExitCode.failure }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Get a record; signed records are returned only if they verify.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument var key: String

    func run() async throws {
        let k = Array(key.utf8)
        guard let r = try await withJoinedDHT(common, dht, { _, s in try await s.getValue(k) }) else {
            throw CLIError("no valid record for \(key)")
        }
        switch r.kind {
        case .presence(let rec):
            print("presence record of \(rec.peerID), seq \(rec.seq), verified")
            for a in rec.addresses { print("  \(a)") }
        case .application(_, let signer, let value):
            FileHandle.standardError.write(Data("signed by \(signer), seq \(r.seq), expires \(r.expiresAt), verified\n".utf8))
            FileHandle.standardOutput.write(Data(value))
        case .opaque:
            FileHandle.standardError.write(Data("opaque value (not verifiable), \(r.value.count) bytes\n".utf8))
            FileHandle.standardOutput.write(Data(r.value))
        }
    }
}

struct Provide: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Announce this node as a provider of a key (a CID's text or any string).")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument var cid: String

    func run() async throws {
        let (acks, attempted) = try await withJoinedDHT(common, dht) { _, s in try await s.provide(Array(cid.utf8)) }
        print("provided \(cid) to \(acks) of \(attempted) closest peers")
    }
}

struct Providers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the providers of a key.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions
    @Argument var cid: String

    func run() async throws {
        let ps = try await withJoinedDHT(common, dht) { _, s in try await s.providers(Array(cid.utf8)) }
        print("\(ps.count) provider(s) of \(cid)")
        for p in ps { print("  \(p.provider) \(p.addresses.map(\.description).joined(separator: " "))") }
    }
}

struct Peers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Summarise the routing table (joins first when given --bootstrap).")
    @OptionGroup var common: CommonOptions
    @OptionGroup var dht: DHTOptions

    func run() async throws {
        let table = try await withJoinedDHT(common, dht) { _, s in s.routingTable }
        let entries = table.allEntries
        print("\(entries.count) peer(s) in the routing table")
        var byBucket: [Int: Int] = [:]
        for e in entries { byBucket[table.localKey.commonPrefixLength(with: e.key), default: 0] += 1 }
        for (b, n) in byBucket.sorted(by: { $0.key < $1.key }) { print("  bucket \(b): \(n)") }
        for e in entries { print("  \(e.peer) \(e.addresses.map(\.description).joined(separator: " "))") }
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
        let key = try common.loadIdentity(logger)
        let addr = try Multiaddr(address)
        guard addr.peerID != nil else { throw ValidationError("the address must end in /p2p/<peer-id>") }
        let node = Node(identity: key, logger: logger)
        do {
            let conn = try await node.dial(addr)
            print("connected to \(conn.remotePeer!) at \(conn.remoteAddress?.description ?? address)")
            var rtts: [Duration] = []
            for i in 0..<count {
                if i > 0 { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
                let rtt = try await node.ping(conn, count: 1)[0]
                rtts.append(rtt)
                print("ping \(i + 1): rtt=\(formatMillis(rtt)) ms")
            }
            let ms = rtts.map(millis)
            print(String(format: "%d pings: min %.3f ms, avg %.3f ms, max %.3f ms", ms.count, ms.min()!, ms.reduce(0, +) / Double(ms.count), ms.max()!))
        } catch {
            await node.shutdown()
            throw CLIError("ping failed: \(error)")
        }
        await node.shutdown()
    }
}

struct IdentifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "identify", abstract: "Ask a peer what it says about itself.")
    @OptionGroup var common: CommonOptions
    @Argument(help: "The peer's multiaddr (/p2p/<peer-id> recommended).") var address: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let logger = common.bootstrapLogging()
        let key = try common.loadIdentity(logger)
        let addr = try Multiaddr(address)
        let node = Node(identity: key, logger: logger)
        do {
            let conn = try await node.dial(addr)
            let info = try await node.identify(conn)
            let peer = conn.remotePeer!
            if json {
                var obj: [String: Any] = [
                    "peer_id": peer.base58,
                    "protocol_version": info.protocolVersion ?? NSNull(),
                    "agent_version": info.agentVersion ?? NSNull(),
                    "listen_addrs": info.listenAddrs.map(\.description),
                    "protocols": info.protocols,
                    "observed_addr": info.observedAddr?.description ?? NSNull(),
                    "local_addr": conn.localAddress?.description ?? NSNull(),
                ]
                if let r = info.signedPeerRecord {
                    obj["signed_peer_record"] = ["valid": true, "peer_id": r.peerID.base58, "seq": r.seq,
                                                 "addrs": r.addresses.map(\.description)] as [String: Any]
                } else if let e = info.signedPeerRecordError {
                    obj["signed_peer_record"] = ["valid": false, "error": e] as [String: Any]
                } else {
                    obj["signed_peer_record"] = NSNull()
                }
                print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print("peer id:          \(peer)")
                print("protocol version: \(info.protocolVersion ?? "-")")
                print("agent version:    \(info.agentVersion ?? "-")")
                print("public key:       \(info.publicKey.map { Hex.encode($0.protobufBytes) } ?? "-")")
                print("listen addrs:")
                for a in info.listenAddrs { print("  \(a)") }
                print("protocols:")
                for p in info.protocols { print("  \(p)") }
                print("observed addr (how the peer sees us): \(info.observedAddr?.description ?? "-")")
                print("our local addr:   \(conn.localAddress?.description ?? "-")")
                if let r = info.signedPeerRecord {
                    print("signed peer record: verified, seq \(r.seq)")
                    for a in r.addresses { print("  \(a)") }
                } else if let e = info.signedPeerRecordError {
                    print("signed peer record: REJECTED (\(e))")
                } else {
                    print("signed peer record: none")
                }
            }
        } catch {
            await node.shutdown()
            throw CLIError("identify failed: \(error)")
        }
        await node.shutdown()
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func millis(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

func formatMillis(_ d: Duration) -> String { String(format: "%.3f", millis(d)) }

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

    func run() async throws {
        let logger = common.bootstrapLogging()
        let key = try common.loadIdentity(logger)
        let node = Node(identity: key, logger: logger)
        let nat = NATService(node: node, dht: nil, logger: logger)
        _ = try await node.listen([try Multiaddr(listen)])
        let peers = try bootstrap.map { try Multiaddr($0) }
        guard !peers.isEmpty else { throw ValidationError("give peers to ask with --bootstrap") }
        let deadline = ContinuousClock.now + .milliseconds(Int(duration * 1000))
        var conns: [Connection] = []
        for p in peers {
            do {
                let c = try await node.dial(p)
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
        let r = nat.report()
        await node.shutdown()
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
            if !r.rejectedObservations.isEmpty {
                print("rejected observations: " + r.rejectedObservations.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
            }
        }
    }
}
