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
        subcommands: [Id.self, RunNode.self, PingCommand.self, IdentifyCommand.self]
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
    @Option(name: .customLong("listen"), help: "Listen multiaddr (repeatable).")
    var listen: [String] = ["/ip4/0.0.0.0/tcp/4001"]
    @Option(name: .customLong("connect"), help: "Peer multiaddr to connect to at start (repeatable).")
    var connect: [String] = []

    func run() async throws {
        let logger = common.bootstrapLogging()
        let key = try common.loadIdentity(logger)
        let addrs = try listen.map { try Multiaddr($0) }
        let store = try PeerStore(path: common.dataDirectory.appendingPathComponent("peers.sqlite").path)
        let node = Node(identity: key, peerStore: store, logger: logger)
        let bound = try await node.listen(addrs)
        print("peer id: \(node.peerID)")
        for a in bound { print("listening on \(a.appending(.p2p(node.peerID)))") }
        fflush(nil)
        for c in connect {
            do {
                let conn = try await node.dial(try Multiaddr(c))
                logger.info("connected", metadata: ["peer": "\(conn.remotePeer!)", "addr": "\(c)"])
            } catch {
                logger.error("connect \(c) failed: \(error)")
            }
        }
        await waitForTermination()
        logger.notice("shutting down")
        await node.shutdown()
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
