import Foundation
import XCTest

/// Proves that the NAT lab (bootstrap/natlab.sh, TestSupport/NATLab.swift) behaves as each NAT
/// kind should, so that later tests can trust it. Endpoints are python3 (stdlib) inside the
/// namespaces: an echo server on public hosts that answers with the source ip:port it saw, and an
/// "agent" behind the NATs that drives one UDP socket from commands on its stdin.
final class NATLabTests: XCTestCase {
    static let echoPort = 7000
    /// Upper bound for one probe; negative probes are decided by the router's drop counter first.
    static let probeTimeout = 2.0

    // MARK: Mapping

    /// One local socket, two public destinations: the same public ip:port (and the local port
    /// preserved) behind full-cone and home NATs, different ports behind a symmetric NAT; the
    /// public address is always the router's WAN address. The same for TCP from one local port.
    func testMappingBehaviourPerKind() throws {
        let lab = try makeLab(["pub:2", "fullcone:a", "home:b", "symmetric:c"])
        let pub1 = try lab.host("pub1"), pub2 = try lab.host("pub2")
        try startEcho(lab, on: pub1)
        try startEcho(lab, on: pub2)
        for name in ["a", "b", "c"] {
            let host = try lab.host(name), router = try lab.router(name)
            let agent = try Agent(lab, on: host)
            let udp1 = try XCTUnwrap(agent.whoami(pub1), "\(name): no UDP echo from pub1")
            let udp2 = try XCTUnwrap(agent.whoami(pub2), "\(name): no UDP echo from pub2")
            let tcp1 = try XCTUnwrap(agent.tcp(pub1), "\(name): no TCP echo from pub1")
            let tcp2 = try XCTUnwrap(agent.tcp(pub2), "\(name): no TCP echo from pub2")
            for m in [udp1, udp2, tcp1, tcp2] {
                XCTAssertEqual(m.ip, router.ip, "\(name): mapped address is not the router's WAN address")
            }
            if name == "c" {
                XCTAssertNotEqual(udp1.port, udp2.port, "symmetric NAT kept one UDP mapping for two destinations")
                XCTAssertNotEqual(tcp1.port, tcp2.port, "symmetric NAT kept one TCP mapping for two destinations")
            } else {
                XCTAssertEqual(udp1.port, udp2.port, "\(name): UDP mapping depends on the destination")
                XCTAssertEqual(udp1.port, agent.port, "\(name): UDP port not preserved")
                XCTAssertEqual(tcp1.port, tcp2.port, "\(name): TCP mapping depends on the destination")
                XCTAssertEqual(tcp1.port, agent.port, "\(name): TCP port not preserved")
            }
        }
    }

    // MARK: Filtering

    /// After the LAN host sent to pub1 only, unsolicited packets to its mapped address — from pub2
    /// (another address) and from pub1's address but another port — reach it behind the full
    /// cone only. Behind home and symmetric NATs the router's firewall drops them (its counter
    /// proves they arrived). The full cone opens only mapped ports.
    func testFilteringPerKind() throws {
        let lab = try makeLab(["pub:2", "fullcone:a", "home:b", "symmetric:c"])
        let pub1 = try lab.host("pub1"), pub2 = try lab.host("pub2")
        try startEcho(lab, on: pub1)
        let pub2Echo = try startEcho(lab, on: pub2)
        for name in ["a", "b", "c"] {
            let host = try lab.host(name), router = try lab.router(name)
            let agent = try Agent(lab, on: host)
            let mapped = try XCTUnwrap(agent.whoami(pub1), "\(name): no echo from pub1")
            let open = name == "a"

            // From another public address (pub2's echo socket, which the LAN host never contacted).
            try assertInbound(lab, agent, router: router, expectDelivered: open, "\(name), from pub2") { token in
                try self.poke(lab, pub2, server: pub2Echo, to: mapped, token: token)
            }
            if open { XCTAssertEqual(agent.lastFrom, Endpoint(ip: pub2.ip, port: Self.echoPort), "source rewritten") }
            // From pub1's address, another port.
            try assertInbound(lab, agent, router: router, expectDelivered: open, "\(name), from pub1:7101") { token in
                try self.send(lab, from: pub1, srcPort: 7101, to: mapped, token: token)
            }
            if open {
                XCTAssertEqual(agent.lastFrom, Endpoint(ip: pub1.ip, port: 7101), "source rewritten")
                // A public port that was never mapped stays closed.
                let unmapped = Endpoint(ip: mapped.ip, port: mapped.port == 9 ? 10 : 9)
                try assertInbound(lab, agent, router: router, expectDelivered: false, "fullcone, unmapped port") { token in
                    try self.send(lab, from: pub2, srcPort: 7102, to: unmapped, token: token)
                }
            }
        }
    }

    /// The conntrack trap (see natlab.md): a packet from pub2 that reaches the router before the
    /// LAN host has contacted pub2 must not change the mapping the LAN host then gets towards pub2.
    /// Behind the home NAT the firewall drops it before conntrack confirms it; behind the full cone
    /// it is delivered through the mapping. Either way pub2 then sees the same public port as pub1.
    func testEarlyInboundPacketDoesNotChangeTheMapping() throws {
        let lab = try makeLab(["pub:2", "fullcone:a", "home:b"])
        let pub1 = try lab.host("pub1"), pub2 = try lab.host("pub2")
        try startEcho(lab, on: pub1)
        let pub2Echo = try startEcho(lab, on: pub2)
        for name in ["a", "b"] {
            let router = try lab.router(name)
            let agent = try Agent(lab, on: try lab.host(name))
            let m1 = try XCTUnwrap(agent.whoami(pub1))
            try assertInbound(lab, agent, router: router, expectDelivered: name == "a", "\(name), early from pub2") { token in
                try self.poke(lab, pub2, server: pub2Echo, to: m1, token: token)
            }
            let m2 = try XCTUnwrap(agent.whoami(pub2))
            XCTAssertEqual(m2, m1, "\(name): an early inbound packet changed the mapping (conntrack trap)")
        }
    }

    // MARK: Open (no NAT)

    /// A host behind an `open` router is public: its own address is what others see, inbound UDP
    /// and TCP reach it unsolicited, and NATed hosts reach it. The router itself still drops new
    /// inbound connections to its WAN address.
    func testOpenHostIsPublic() throws {
        let lab = try makeLab(["pub:2", "open:d", "home:b"])
        let pub1 = try lab.host("pub1"), pub2 = try lab.host("pub2")
        let d = try lab.host("d"), rd = try lab.router("d"), b = try lab.host("b"), rb = try lab.router("b")
        try startEcho(lab, on: pub1)
        let pub2Echo = try startEcho(lab, on: pub2)
        try startEcho(lab, on: d)

        // Outbound: no translation.
        let agentD = try Agent(lab, on: d)
        XCTAssertEqual(agentD.whoami(pub1), Endpoint(ip: d.ip, port: agentD.port))
        // Unsolicited inbound from another public host.
        try assertInbound(lab, agentD, router: rd, expectDelivered: true, "open, from pub2") { token in
            try self.poke(lab, pub2, server: pub2Echo, to: Endpoint(ip: d.ip, port: agentD.port), token: token)
        }
        // Inbound UDP and TCP to a server on the open host, from a public host and from behind a NAT.
        let agentPub = try Agent(lab, on: pub1)
        XCTAssertEqual(agentPub.whoami(d), Endpoint(ip: pub1.ip, port: agentPub.port))
        XCTAssertEqual(agentPub.tcp(d), Endpoint(ip: pub1.ip, port: agentPub.port))
        let agentB = try Agent(lab, on: b)
        XCTAssertEqual(agentB.whoami(d)?.ip, rb.ip)
        XCTAssertEqual(agentB.tcp(d)?.ip, rb.ip)
        // The router's own WAN address is firewalled.
        try assertInbound(lab, agentD, router: rd, expectDelivered: false, "open router's WAN address") { token in
            try self.send(lab, from: pub2, srcPort: 7103, to: Endpoint(ip: rd.ip, port: Self.echoPort), token: token)
        }
    }

    // MARK: Hygiene

    /// `flush` empties conntrack in the routers; `tearDown` kills spawned processes and leaves no
    /// namespace with the prefix, and is idempotent.
    func testFlushAndTeardown() throws {
        let lab = try makeLab(["pub:1", "fullcone:a", "home:b"])
        XCTAssertEqual(NATLab.namespaces(withPrefix: lab.prefix).count, 6)  // wan, pub1, 2 routers, 2 hosts
        let pub1 = try lab.host("pub1")
        let echo = try startEcho(lab, on: pub1)
        for name in ["a", "b"] { _ = try XCTUnwrap(Agent(lab, on: try lab.host(name)).whoami(pub1)) }
        XCTAssertFalse(conntrackEntries(lab, try lab.router("a")).isEmpty)
        try lab.flush()
        for name in ["a", "b"] {
            XCTAssertEqual(conntrackEntries(lab, try lab.router(name)), [], "\(name): conntrack not empty after flush")
        }
        let fc = lab.run(in: try lab.router("a"), ["nft", "list", "map", "ip", "nat", "fc"])
        XCTAssertFalse(fc.stdout.contains("elements"), "full-cone mappings survive flush: \(fc.stdout)")

        lab.tearDown()
        XCTAssertFalse(echo.isRunning, "tearDown left a spawned process running")
        XCTAssertEqual(NATLab.namespaces(withPrefix: lab.prefix), [], "tearDown left namespaces")
        lab.tearDown()
        print("NATLab timings: up \(fmt(lab.setupSeconds)) s, down \(fmt(lab.teardownSeconds ?? -1)) s")
    }

    // MARK: Helpers

    private func makeLab(_ spec: [String]) throws -> NATLab {
        if !FileManager.default.isExecutableFile(atPath: Self.python) {
            try NATLab.skipOrFail("needs \(Self.python) for the lab's endpoints")
        }
        let lab = try NATLab(spec: spec)
        addTeardownBlock { lab.tearDown() }
        return lab
    }

    private func fmt(_ s: Double) -> String { String(format: "%.3f", s) }

    private func conntrackEntries(_ lab: NATLab, _ router: NATLab.Host) -> [String] {
        let out = lab.run(in: router, ["conntrack", "-L"])
        return out.stdout.split(separator: "\n").map(String.init)
    }

    /// Starts the echo server (UDP and TCP on `echoPort`) on `host` and waits until it is bound.
    @discardableResult
    private func startEcho(_ lab: NATLab, on host: NATLab.Host) throws -> NATLab.Spawned {
        let p = try lab.spawn(in: host, [Self.python, "-u", "-c", Self.tool, "serve", String(Self.echoPort)])
        guard p.nextLine(timeout: 5) == "ready" else {
            throw NATLab.LabError.commandFailed("echo server on \(host) did not start: \(p.stderr.string)")
        }
        return p
    }

    /// Has `server` (an echo server on `host`) send `token` from its own socket to `target`.
    private func poke(_ lab: NATLab, _ host: NATLab.Host, server: NATLab.Spawned, to target: Endpoint, token: String) throws {
        try send(lab, from: host, srcPort: 0, to: Endpoint(ip: "127.0.0.1", port: Self.echoPort), text: "poke \(target) \(token)", count: 1)
        guard let line = server.nextLine(timeout: Self.probeTimeout), line.hasPrefix("poked") else {
            throw NATLab.LabError.commandFailed("echo server on \(host) did not poke \(target)")
        }
    }

    /// Sends `token` (or `text`) `count` times from a fresh UDP socket on `srcPort` of `host`.
    private func send(_ lab: NATLab, from host: NATLab.Host, srcPort: Int, to target: Endpoint,
                      token: String = "", text: String? = nil, count: Int = 3) throws {
        let out = lab.run(in: host, [Self.python, "-c", Self.tool, "send", target.description, text ?? token, String(srcPort), String(count)],
                          timeout: 5)
        if out.status != 0 { throw NATLab.LabError.commandFailed("send on \(host): \(out.stderr)") }
    }

    /// Runs `inject(token)`, which makes something send `token` to the agent's public address,
    /// and checks that it was delivered, or else that it was dropped by `router`'s firewall.
    private func assertInbound(_ lab: NATLab, _ agent: Agent, router: NATLab.Host, expectDelivered: Bool,
                               _ what: String, file: StaticString = #filePath, line: UInt = #line,
                               inject: (String) throws -> Void) throws {
        let token = "t" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let dropsBefore = try lab.nftCounter(in: router, comment: "wan-new-drop")
            + lab.nftCounter(in: router, comment: "fwd-drop")
        try inject(token)
        if expectDelivered {
            XCTAssertTrue(agent.expect(token, timeout: Self.probeTimeout), "\(what): not delivered", file: file, line: line)
            return
        }
        // Dropped: wait for the drop counter to move (proof the packet reached the router), then
        // make sure nothing was delivered.
        let deadline = Date().addingTimeInterval(Self.probeTimeout)
        var dropsAfter = dropsBefore
        while dropsAfter == dropsBefore && Date() < deadline {
            usleep(20_000)
            dropsAfter = try lab.nftCounter(in: router, comment: "wan-new-drop") + lab.nftCounter(in: router, comment: "fwd-drop")
        }
        XCTAssertGreaterThan(dropsAfter, dropsBefore, "\(what): the router's firewall dropped nothing", file: file, line: line)
        XCTAssertFalse(agent.expect(token, timeout: 0.3), "\(what): delivered but should be filtered", file: file, line: line)
    }

    struct Endpoint: Equatable, CustomStringConvertible {
        var ip: String
        var port: Int
        init(ip: String, port: Int) { self.ip = ip; self.port = port }
        init?(_ s: String) {
            guard let i = s.lastIndex(of: ":"), let p = Int(s[s.index(after: i)...]) else { return nil }
            ip = String(s[..<i]); port = p
        }
        var description: String { "\(ip):\(port)" }
    }

    /// One UDP socket (and TCP from the same local port) in a namespace, driven over stdin.
    final class Agent {
        let process: NATLab.Spawned
        let port: Int
        private(set) var lastFrom: Endpoint?

        init(_ lab: NATLab, on host: NATLab.Host) throws {
            process = try lab.spawn(in: host, [NATLabTests.python, "-u", "-c", NATLabTests.tool, "agent", "0"])
            guard let l = process.nextLine(timeout: 5), l.hasPrefix("bound "), let p = Int(l.dropFirst(6)) else {
                throw NATLab.LabError.commandFailed("agent on \(host) did not start: \(process.stderr.string)")
            }
            port = p
        }

        private func ask(_ cmd: String) -> [String] {
            guard process.send(cmd) else { return [] }
            return process.nextLine(timeout: NATLabTests.probeTimeout + 1)?.split(separator: " ").map(String.init) ?? []
        }

        /// The public address `server`'s echo saw for this socket (UDP), or nil after the timeout.
        func whoami(_ server: NATLab.Host) -> Endpoint? {
            let r = ask("whoami \(server.ip):\(NATLabTests.echoPort) \(NATLabTests.probeTimeout)")
            return r.count == 3 && r[0] == "seen" ? Endpoint(r[2]) : nil
        }

        /// The same over TCP, connecting from the socket's port number.
        func tcp(_ server: NATLab.Host) -> Endpoint? {
            let r = ask("tcp \(server.ip):\(NATLabTests.echoPort) \(NATLabTests.probeTimeout)")
            return r.count == 3 && r[0] == "tcpseen" ? Endpoint(r[2]) : nil
        }

        /// Whether a datagram `token` arrived (or arrives within `timeout` s); records its source.
        func expect(_ token: String, timeout: Double) -> Bool {
            let r = ask("expect \(token) \(timeout)")
            if r.count == 3 && r[0] == "got" { lastFrom = Endpoint(r[1]); return true }
            return false
        }
    }

    static let python = "/usr/bin/python3"

    /// The python endpoints. serve PORT | send DEST TEXT SRCPORT | agent PORT.
    static let tool = #"""
import select, socket, sys, time
A, U, T = socket.AF_INET, socket.SOCK_DGRAM, socket.SOCK_STREAM
def parse(s):
    ip, p = s.rsplit(":", 1)
    return (ip, int(p))
def fmt(a):
    return "%s:%d" % (a[0], a[1])
def out(*x):
    print(*x, flush=True)
mode = sys.argv[1]
if mode == "serve":
    # UDP and TCP echo of the source address seen; "poke DEST TOKEN" makes the UDP socket send
    # TOKEN to DEST. Stops when stdin closes.
    port = int(sys.argv[2])
    u = socket.socket(A, U); u.bind(("0.0.0.0", port))
    t = socket.socket(A, T); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("0.0.0.0", port)); t.listen(64)
    out("ready")
    while True:
        r = select.select([u, t, sys.stdin], [], [])[0]
        if sys.stdin in r and not sys.stdin.readline():
            break
        if u in r:
            d, a = u.recvfrom(4096)
            w = d.decode("utf-8", "replace").split()
            if len(w) == 3 and w[0] == "poke":
                u.sendto(w[2].encode(), parse(w[1])); u.sendto(w[2].encode(), parse(w[1]))
                out("poked", w[1])
            else:
                u.sendto(("seen " + fmt(a)).encode(), a)
        if t in r:
            c, a = t.accept()
            try:
                c.sendall(("seen " + fmt(a) + "\n").encode())
            except OSError:
                pass
            c.close()
elif mode == "send":
    s = socket.socket(A, U); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[4])))
    for i in range(int(sys.argv[5])):
        s.sendto(sys.argv[3].encode(), parse(sys.argv[2])); time.sleep(0.02)
elif mode == "agent":
    u = socket.socket(A, U); u.bind(("0.0.0.0", int(sys.argv[2])))
    port = u.getsockname()[1]
    inbox = []
    def pump(timeout):
        # One datagram within timeout, or None. Echo replies ("seen ...") are not kept in inbox.
        if not select.select([u], [], [], max(0.0, timeout))[0]:
            return None
        d, a = u.recvfrom(4096)
        return d.decode("utf-8", "replace"), a
    out("bound", port)
    for line in sys.stdin:
        w = line.split()
        if not w:
            continue
        if w[0] == "whoami":
            dest = parse(w[1]); end = time.monotonic() + float(w[2]); res = None; nxt = 0.0
            while res is None and time.monotonic() < end:
                if time.monotonic() >= nxt:
                    u.sendto(b"whoami", dest); nxt = time.monotonic() + 0.25
                m = pump(min(end, nxt) - time.monotonic())
                if m is None:
                    continue
                if m[0].startswith("seen "):
                    if m[1] == dest:
                        res = m[0].split()[1]
                else:
                    inbox.append(m)
            out("seen", w[1], res) if res else out("timeout", w[1])
        elif w[0] == "tcp":
            c = socket.socket(A, T); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                c.settimeout(float(w[2])); c.bind(("0.0.0.0", port)); c.connect(parse(w[1]))
                buf = b""
                while not buf.endswith(b"\n"):
                    b = c.recv(100)
                    if not b:
                        break
                    buf += b
                out("tcpseen", w[1], buf.decode().split()[1])
            except Exception as e:
                out("tcpfail", w[1], type(e).__name__)
            finally:
                c.close()
        elif w[0] == "expect":
            token = w[1]; end = time.monotonic() + float(w[2]); got = None
            while got is None:
                hit = [m for m in inbox if m[0] == token]
                if hit:
                    got = hit[0]; break
                m = pump(end - time.monotonic())
                if m is None:
                    break
                if not m[0].startswith("seen "):
                    inbox.append(m)
            out("got", fmt(got[1]), token) if got else out("none", token, "-")
        elif w[0] == "quit":
            break
"""#
}
