// An application that embeds Cairn (see docs/embedding.md): it starts a CairnHost, serves its
// own protocol, finds a peer by ID through the DHT and gets an echo over an encrypted stream.
//
//   cairn-example-echo serve --bootstrap /ip4/…/tcp/…/p2p/<id>
//   cairn-example-echo call <peer-id> --bootstrap /ip4/…/tcp/…/p2p/<id> [--message TEXT]
import CairnCore
import CairnNode
import Foundation
import Logging

let echoProtocol = "/cairn-example/echo/1.0.0"

func usage() -> Never {
    FileHandle.standardError.write(Data("usage: cairn-example-echo serve|call <peer-id> --bootstrap MADDR [--listen MADDR] [--message TEXT]\n".utf8))
    exit(2)
}

var args = Array(CommandLine.arguments.dropFirst())
guard let mode = args.first, mode == "serve" || mode == "call" else { usage() }
args.removeFirst()
var target: PeerID?
if mode == "call" {
    guard let id = args.first, let p = try? PeerID(string: id) else { usage() }
    target = p
    args.removeFirst()
}
var bootstrap: [Multiaddr] = []
var listen = "/ip4/127.0.0.1/tcp/0"
var message = "hello from an embedded Cairn host"
while let flag = args.first {
    args.removeFirst()
    guard let value = args.first else { usage() }
    args.removeFirst()
    switch flag {
    case "--bootstrap": bootstrap.append(try Multiaddr(value))
    case "--listen": listen = value
    case "--message": message = value
    default: usage()
    }
}

LoggingSystem.bootstrap { label in
    var h = StreamLogHandler.standardError(label: label)
    h.logLevel = .warning
    return h
}

// 1. Configure and start a host: no data directory (an in-memory identity), joined to the DHT.
var config = CairnHost.Configuration()
config.dataDirectory = nil
config.listenAddresses = [try Multiaddr(listen)]
config.bootstrapPeers = bootstrap
config.stun = false
config.autoNATProbing = false
config.autoRelay = .off
let host = try CairnHost(configuration: config, logger: Logger(label: "echo"))

// 2. Serve our own protocol: every inbound stream is echoed back.
host.handle(protocol: echoProtocol) { stream in
    while let chunk = try await stream.read() {
        try await stream.write(chunk)
    }
    await stream.closeWrite()
}
try await host.start()
guard host.isJoined else {
    FileHandle.standardError.write(Data("could not join the DHT through \(bootstrap)\n".utf8))
    exit(1)
}
print("peer id: \(host.peerID)")
fflush(nil)

if let target {
    // 3. Find the peer by ID (its signed presence record, or peer routing) and open a stream.
    let outcome = try await host.connect(to: target)
    print("connected: \(outcome.path) to \(outcome.connection.remoteAddress?.description ?? "?")"
          + (outcome.routed.map { " (found by \($0.source))" } ?? ""))
    let stream = try await host.openStream(to: target, protocols: [echoProtocol])
    try await stream.write(Array(message.utf8))
    await stream.closeWrite()
    let reply = try await stream.readToEnd(limit: 64 * 1024)
    print("echo: \(String(decoding: reply, as: UTF8.self))")
    await host.shutdown()
    exit(reply == Array(message.utf8) ? 0 : 1)
} else {
    // Serve until stdin closes (or the process is stopped).
    print("serving \(echoProtocol)")
    fflush(nil)
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        Thread { while readLine() != nil {}; done.resume() }.start()  // off the cooperative pool
    }
    await host.shutdown()
}
