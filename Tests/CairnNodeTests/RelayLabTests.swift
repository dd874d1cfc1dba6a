import CairnCore
import Foundation
import XCTest

/// Issue 5 in the NAT lab: volunteer relays on the public segment; nodes behind a home router
/// and a symmetric NAT reserve on them, publish their relayed addresses in their presence
/// records, and reach each other through a relay; when a relay dies, the node moves on.
final class RelayLabTests: XCTestCase {
    func testPrivateNodesTalkThroughAVolunteerRelayAndSurviveItsDeath() throws {
        let lab = try NATLab(spec: ["pub:3", "home:b", "symmetric:c"])
        let n = LabNodes(lab)
        addTeardownBlock { lab.tearDown(); n.cleanUp() }
        // Three public volunteers, also the DHT.
        var relayNames: [String: String] = [:]  // peer ID → name
        var bootstrap: [String] = []
        for i in 1...3 {
            let host = try lab.host("pub\(i)")
            let id = try n.start(host, name: "pub\(i)", listenIP: host.ip, extra: ["--relay", "--relay-when", "always", "--auto-relay", "off"])
            relayNames[id] = "pub\(i)"
            bootstrap.append("/ip4/\(host.ip)/tcp/4001/p2p/\(id)")
        }
        // The private nodes: known to be behind NAT, so they reserve at once (--auto-relay always).
        var ids: [String: String] = [:]
        for name in ["b", "c"] {
            ids[name] = try n.start(try lab.host(name), name: name, listenIP: "0.0.0.0",
                                    extra: ["--dht-mode", "client", "--auto-relay", "always"] + bootstrap.flatMap { ["--bootstrap", $0] })
        }
        for name in ["b", "c"] {
            try n.waitFor("\(name) to hold 2 reservations", timeout: 30) { n.heldRelays(name).count == 2 }
            // Its advertised addresses (and so its presence record) carry the relayed ones.
            let advertised = n.status(name)?["advertised_addrs"] as? [String] ?? []
            XCTAssertEqual(advertised.filter { $0.contains("/p2p-circuit") }.count, 2, "\(name): \(advertised)")
        }

        // Each finds the other's presence record through the DHT and connects through a relay
        // (direct dials to private addresses fail; the relayed one works end to end). Three
        // public observers are too few to adopt an external address, so no hole punch here.
        for (from, to) in [("c", "b"), ("b", "c")] {
            let r = n.dial(from: try lab.host(from), name: "\(from)-dialer", peer: ids[to]!, bootstrap: bootstrap, extra: ["--upgrade-wait", "0"])
            XCTAssertNil(r["error"], "\(from) -> \(to): \(r)")
            XCTAssertEqual(r["how"] as? String, "relayed", "\(from) -> \(to): \(r)")
            let relay = try XCTUnwrap(r["relay"] as? String, "\(r)")
            let held = n.heldRelays(to)
            XCTAssertTrue(held.contains(relay), "\(from) -> \(to) went through \(relay), not one of \(to)'s relays \(held)")
            XCTAssertNotNil(r["rtt_ms"] as? Double)
        }
        // `cairn p2p` through the relay: c's local TCP connection reaches an echo service on b's
        // loopback over a relayed stream (symmetric ↔ home cannot be punched); the forward waits
        // for an upgrade, then uses the relayed connection within the relay's limits.
        let echo = try lab.spawn(in: try lab.host("b"), ["/usr/bin/python3", "-c", Self.echoServer])
        defer { echo.stop(grace: 0) }
        let echoPort = try XCTUnwrap(echo.nextLine(timeout: 10).flatMap { Int($0) }, "echo server: \(echo.stderr.string)")
        let listen = NATLab.execute(n.bin, ["p2p", "listen", "--data-dir", n.dir.appendingPathComponent("b").path,
                                            "/x/echo", "/ip4/127.0.0.1/tcp/\(echoPort)"], timeout: 20)
        XCTAssertEqual(listen.status, 0, listen.stderr)
        let forward = NATLab.execute(n.bin, ["p2p", "forward", "--data-dir", n.dir.appendingPathComponent("c").path,
                                             "/x/echo", "/ip4/127.0.0.1/tcp/0", "/p2p/\(ids["b"]!)"], timeout: 20)
        XCTAssertEqual(forward.status, 0, forward.stderr)
        let fwdPort = try XCTUnwrap(forward.stdout.split(separator: " ").first { $0.hasPrefix("/ip4/") }.flatMap { Int($0.split(separator: "/").last ?? "") },
                                    forward.stdout)
        let client = lab.run(in: try lab.host("c"), ["/usr/bin/python3", "-c", Self.echoClient, "\(fwdPort)", "\(60 * 1024)"], timeout: 60)
        XCTAssertEqual(client.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "ok 61440", "\(client)")

        // The relays counted those circuits (their status files lag by up to 2 s).
        let names = Array(relayNames.values)
        try n.waitFor("the relays to report 2 circuits", timeout: 10) {
            names.compactMap { (n.status($0)?["serving"] as? [String: Any])?["circuits_opened"] as? Int }.reduce(0, +) >= 2
        }

        // Churn: kill one of b's relays. b notices, reserves on the third, republishes; a new
        // dial succeeds through a live relay.
        let victimID = try XCTUnwrap(n.heldRelays("b").first)
        n.stop(relayNames[victimID]!)
        let killed = Date()
        try n.waitFor("b to replace its dead relay", timeout: 30) {
            let now = n.heldRelays("b")
            return now.count == 2 && !now.contains(victimID)
        }
        print("b replaced its dead relay in \(String(format: "%.1f", Date().timeIntervalSince(killed))) s")
        let advertised = n.status("b")?["advertised_addrs"] as? [String] ?? []
        XCTAssertFalse(advertised.contains { $0.contains(victimID) }, "\(advertised)")
        let live = bootstrap.filter { !$0.contains(victimID) }
        let r = n.dial(from: try lab.host("c"), name: "c-dialer2", peer: ids["b"]!, bootstrap: live, extra: ["--upgrade-wait", "0"])
        XCTAssertEqual(r["how"] as? String, "relayed", "\(r)")
        XCTAssertNotEqual(r["relay"] as? String, victimID, "\(r)")
        let used = r["relay"] as? String ?? "", held = n.heldRelays("b")
        XCTAssertTrue(held.contains(used), "\(used) not in \(held): \(r)")
    }

    /// A TCP echo service on 127.0.0.1 (prints its port), for `cairn p2p listen`.
    static let echoServer = """
    import socket, threading
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); print(s.getsockname()[1], flush=True)
    def serve(c):
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
        c.shutdown(socket.SHUT_WR); c.close()
    while True:
        c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
    """

    /// Sends N bytes to 127.0.0.1:PORT, half-closes, reads the echo to EOF; prints "ok N" when intact.
    static let echoClient = """
    import os, socket, sys, threading
    port, n = int(sys.argv[1]), int(sys.argv[2])
    data = os.urandom(n); got = bytearray()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    def read():
        while True:
            d = s.recv(65536)
            if not d: break
            got.extend(d)
    t = threading.Thread(target=read); t.start()
    s.sendall(data); s.shutdown(socket.SHUT_WR); t.join(40)
    print("ok", len(got) if bytes(got) == data else f"differs after {len(got)} bytes")
    """
}
