import ArgumentParser
import CairnCore
import CairnNode
import CairnProto
import Foundation

/// A node must be running on the data directory (these commands only ask it).
func requireRunningNode(_ common: CommonOptions) async throws -> ControlClient {
    guard let node = await runningNode(common) else {
        throw CLIError("no node running on \(common.dataDirectory.path): start `cairn node --data-dir \(common.dataDirectory.path)` first")
    }
    return node
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the running node: peer ID, addresses, reachability, relays, connections.")
    @OptionGroup var common: CommonOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        guard let st = try await hostStatus(common, printingJSON: json) else { return }
        print("peer id:       \(st.peerId)")
        print("reachability:  \(st.reachability)")
        print("connections:   \(st.connections) (\(st.connectedPeers.count) peers, \(st.relayedConnections.count) relayed)")
        print("listening on:")
        for a in st.listenAddrs { print("  \(a)") }
        print("advertised:")
        for a in st.advertisedAddrs { print("  \(a)") }
        print("external (voted): \(st.externalAddrs.isEmpty ? "none" : st.externalAddrs.joined(separator: " "))")
        print("relays held:   \(st.held.isEmpty ? "none" : st.held.map(\.relay).joined(separator: " "))")
        print("relaying:      \(st.serving.volunteering ? "yes, \(st.serving.reservations.count) reservations, \(st.serving.circuits.count) circuits" : "no")")
        if !st.controlApi.isEmpty { print("control api:   \(st.controlApi.joined(separator: " "))") }
    }
}

struct P2P: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "p2p",
        abstract: "TCP over peer streams, on the running node (as kubo's `ipfs p2p`).",
        subcommands: [Listen.self, Forward.self, Ls.self, Close.self])

    static func printRule(_ r: Reports.Object) {
        let conns = r["connections"] as? Int ?? 0
        switch r["kind"] as? String {
        case "listen": print("listen  \(r["proto"] ?? "?") -> \(r["local"] ?? "?") (\(conns) open)")
        default: print("forward \(r["local"] ?? "?") -> \(r["peer"] ?? "?") \(r["proto"] ?? "?") (\(conns) open)")
        }
    }

    struct Listen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Expose a local TCP service to peers that open PROTOCOL.")
        @OptionGroup var common: CommonOptions
        @Argument(help: "The protocol peers open (e.g. /x/ssh).") var proto: String
        @Argument(help: "The local service, /ip4/127.0.0.1/tcp/22.") var target: String

        func run() async throws {
            let node = try await requireRunningNode(common)
            let r = try await ask(node) { $0.type = .p2PListen; $0.name = proto; $0.target = target }.report
            P2P.printRule(r)
        }
    }

    struct Forward: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Turn each TCP connection to LISTEN_ADDRESS into a stream to the peer on PROTOCOL.")
        @OptionGroup var common: CommonOptions
        @Argument(help: "The protocol to open (the peer listens for it).") var proto: String
        @Argument(help: "Where to listen locally, /ip4/127.0.0.1/tcp/2222 (port 0 picks one).") var listen: String
        @Argument(help: "The peer: /p2p/<peer-id> or <peer-id>.") var peer: String

        func run() async throws {
            let node = try await requireRunningNode(common)
            let id: PeerID
            if peer.hasPrefix("/") {
                guard let p = try Multiaddr(peer).peerID else { throw ValidationError("give /p2p/<peer-id>") }
                id = p
            } else {
                id = try PeerID(string: peer)
            }
            let r = try await ask(node) { $0.type = .p2PForward; $0.name = proto; $0.target = listen; $0.peer = Data(id.bytes) }.report
            P2P.printRule(r)
        }
    }

    struct Ls: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the listen and forward rules.")
        @OptionGroup var common: CommonOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let node = try await requireRunningNode(common)
            let r = try await ask(node) { $0.type = .p2PLs }.report
            if json { print(Reports.json(r)); return }
            for rule in r["rules"] as? [Reports.Object] ?? [] { P2P.printRule(rule) }
        }
    }

    struct Close: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Close rules by protocol and/or local address, or all of them.")
        @OptionGroup var common: CommonOptions
        @Flag(help: "Close every rule.") var all = false
        @Option(name: .customLong("protocol"), help: "Close the rules of this protocol.") var proto: String?
        @Option(help: "Close the rule on this local address.") var local: String?

        func run() async throws {
            guard all || proto != nil || local != nil else { throw ValidationError("give --all, --protocol or --local") }
            let node = try await requireRunningNode(common)
            let r = try await ask(node) { q in
                q.type = .p2PClose
                q.all = all
                if let proto { q.name = proto }
                if let local { q.target = local }
            }.report
            let closed = r["closed"] as? [Reports.Object] ?? []
            print("closed \(closed.count) rule(s)")
            for rule in closed { P2P.printRule(rule) }
        }
    }
}
