import ArgumentParser
import CairnCore
import CairnNode
import Foundation
import Logging

/// `cairn p2pd`: go-libp2p-daemon's command line (`p2pd -listen=… -hostAddrs=… -dhtServer …`) and
/// startup lines, so tools and test harnesses written for `p2pd` run Cairn in its place. The
/// flags are Go's (`-x`, `--x`, `-x=v`, `-x v`); unknown ones are refused, ones without a Cairn
/// counterpart are accepted and logged.
struct P2PD: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "p2pd",
        abstract: "Run as a libp2p daemon with go-libp2p-daemon's flags (-listen, -hostAddrs, -id, -b, -bootstrapPeers, -dht, -dhtClient, -dhtServer, -connManager, -connLo, -connHi, -connGrace, -relayHop, -autoRelay, -autonat, -q).")
    @Argument(parsing: .allUnrecognized, help: "Go-style flags.") var flags: [String] = []

    func run() async throws {
        let f = try GoFlags(flags, known: GoFlags.p2pd)
        let quiet = try f.bool("q")
        var level = Logger.Level.warning
        if let l = f.string("logLevel") { level = Logger.Level(rawValue: l) ?? level }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "cairn-p2pd")
        var c = CairnHost.Configuration()
        c.dataDirectory = nil  // p2pd keeps nothing on disk; -id names the key
        if let path = f.string("id") {
            let bytes = try CLIError.wrap { try Data(contentsOf: URL(fileURLWithPath: path)) }
            c.identity = try CLIError.wrap { try PrivateKey(protobufBytes: [UInt8](bytes)) }
        }
        let hostAddrs = f.list("hostAddrs")
        c.listenAddresses = try (hostAddrs.isEmpty ? ["/ip4/0.0.0.0/tcp/0"] : hostAddrs).map { a in try CLIError.wrap { try Multiaddr(a) } }
        if try f.bool("noListenAddrs") { c.listenAddresses = [] }
        c.bootstrapPeers = try f.list("bootstrapPeers").map { a in try CLIError.wrap { try Multiaddr(a) } }
        let bootstrap = try f.bool("b")
        let (dhtFull, dhtClient, dhtServer) = (try f.bool("dht"), try f.bool("dhtClient"), try f.bool("dhtServer"))
        c.dht.enabled = dhtFull || dhtClient || dhtServer
        c.dht.service.kademlia.mode = dhtClient && !dhtFull && !dhtServer ? .client : .server
        c.dht.followReachability = dhtFull  // go's "auto"-like full mode; -dhtServer/-dhtClient fix the mode
        c.dht.joinAtStart = bootstrap
        c.dht.publishPresence = bootstrap
        c.connectionManager.enabled = try f.bool("connManager")
        if let lo = try f.int("connLo") { c.connectionManager.low = lo }
        if let hi = try f.int("connHi") { c.connectionManager.high = hi }
        if let g = try f.duration("connGrace") { c.connectionManager.grace = g }
        c.relay.serve = try f.bool("relayHop")
        c.relay.when = .always
        c.autoRelay = try f.bool("autoRelay") ? .always : .off
        c.autoNATProbing = try f.bool("autonat")
        c.stun = false
        c.portMapping = try f.bool("natPortMap") ? PortMappingService.Configuration() : nil
        c.mdns = nil
        c.statusInterval = nil
        c.controlAPI.enabled = true
        c.controlAPI.addresses = [try CLIError.wrap { try Multiaddr(f.string("listen") ?? "/unix/tmp/p2pd.sock") }]
        for unsupported in ["pubsub", "announceAddrs", "metricsAddr", "pprof", "forceReachabilityPublic", "forceReachabilityPrivate"] where f.isSet(unsupported) {
            logger.warning("p2pd flag -\(unsupported) has no Cairn counterpart yet; ignored")
        }
        let host = try CLIError.wrap { try CairnHost(configuration: c, logger: logger) }
        if try f.bool("echo", default: true) {
            host.handle(protocol: "/echo/1.0.0") { stream in
                while let chunk = try await stream.read() { try await stream.write(chunk) }
                await stream.closeWrite()
            }
        }
        do {
            try await host.start()
            if bootstrap && !host.isJoined { throw CLIError("bootstrap: no bootstrap peer answered") }
        } catch {
            await host.shutdown()
            throw CLIError("\(error)")
        }
        if !quiet {
            for a in host.controlAddresses { print("Control socket: \(a)") }
            print("Peer ID: \(host.peerID)")
            print("Peer Addrs:")
            for a in host.listenAddresses { print(a) }
            if bootstrap && !c.bootstrapPeers.isEmpty {
                print("Bootstrap peers:")
                for a in c.bootstrapPeers { print(a) }
            }
        }
        fflush(nil)
        await waitForTermination()
        await host.shutdown()
    }
}

/// Go's `flag` package syntax: `-name`, `--name`, `-name=value`, `-name value` (not for booleans).
struct GoFlags {
    enum Kind { case bool, value }
    static let p2pd: [String: Kind] = [
        "listen": .value, "q": .bool, "id": .value, "hostAddrs": .value, "announceAddrs": .value, "noListenAddrs": .bool,
        "b": .bool, "bootstrapPeers": .value, "dht": .bool, "dhtClient": .bool, "dhtServer": .bool,
        "connManager": .bool, "connLo": .value, "connHi": .value, "connGrace": .value,
        "pubsub": .bool, "pubsubRouter": .value, "pubsubSign": .bool, "pubsubSignStrict": .bool,
        "gossipsubHeartbeatInterval": .value, "gossipsubHeartbeatInitialDelay": .value,
        "relay": .bool, "relayActive": .bool, "relayHop": .bool, "relayHopLimit": .value, "relayDiscovery": .bool,
        "autoRelay": .bool, "autonat": .bool, "natPortMap": .bool, "forceReachabilityPublic": .bool, "forceReachabilityPrivate": .bool,
        "noise": .bool, "tls": .bool, "plaintext": .bool, "muxer": .value, "echo": .bool,
        "metricsAddr": .value, "pprof": .bool, "pprofPort": .value, "logLevel": .value,
    ]

    private var values: [String: String] = [:]

    init(_ args: [String], known: [String: Kind]) throws {
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            guard arg.hasPrefix("-"), arg.count > 1 else { throw ValidationError("unexpected argument \(arg)") }
            var body = arg.dropFirst(arg.hasPrefix("--") ? 2 : 1)
            var value: String?
            if let eq = body.firstIndex(of: "=") {
                value = String(body[body.index(after: eq)...])
                body = body[..<eq]
            }
            let name = String(body)
            guard let kind = known[name] else { throw ValidationError("flag provided but not defined: -\(name)") }
            if value == nil {
                if kind == .bool {
                    value = "true"
                } else {
                    guard i < args.count else { throw ValidationError("flag needs an argument: -\(name)") }
                    value = args[i]
                    i += 1
                }
            }
            values[name] = value
        }
    }

    func isSet(_ name: String) -> Bool { values[name] != nil }
    func string(_ name: String) -> String? { values[name] }

    func list(_ name: String) -> [String] {
        (values[name] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func bool(_ name: String, default def: Bool = false) throws -> Bool {
        guard let v = values[name] else { return def }
        switch v.lowercased() {
        case "1", "t", "true": return true
        case "0", "f", "false": return false
        default: throw ValidationError("invalid boolean value \"\(v)\" for -\(name)")
        }
    }

    func int(_ name: String) throws -> Int? {
        guard let v = values[name] else { return nil }
        guard let n = Int(v) else { throw ValidationError("invalid value \"\(v)\" for -\(name)") }
        return n
    }

    /// Go's duration syntax: `0`, `500ms`, `20s`, `2m`, `1h30m`.
    func duration(_ name: String) throws -> Duration? {
        guard let v = values[name] else { return nil }
        if v == "0" { return .zero }
        var total = 0.0
        var number = ""
        var unit = ""
        func flush() throws {
            guard let n = Double(number) else { throw ValidationError("invalid duration \"\(v)\" for -\(name)") }
            let scale: Double
            switch unit {
            case "ns": scale = 1e-9
            case "us", "µs": scale = 1e-6
            case "ms": scale = 1e-3
            case "s": scale = 1
            case "m": scale = 60
            case "h": scale = 3600
            default: throw ValidationError("invalid duration \"\(v)\" for -\(name)")
            }
            total += n * scale
            number = ""
            unit = ""
        }
        for ch in v {
            if ch.isNumber || ch == "." {
                if !unit.isEmpty { try flush() }
                number.append(ch)
            } else {
                unit.append(ch)
            }
        }
        try flush()
        return .milliseconds(Int64(total * 1000))
    }
}
