import XCTest

@testable import CairnCore

/// Every limit of the resource manager, hit exactly: the last grant under the limit succeeds,
/// the next is refused with the scope and limit named, and releasing makes room again. Closing
/// everything brings every count back to zero.
final class ResourceManagerTests: XCTestCase {
    typealias RM = ResourceManager

    let a = PrivateKey.generate().peerID
    let b = PrivateKey.generate().peerID

    func ip(_ last: UInt8) -> [UInt8] { [10, 0, 0, last] }

    /// A connection from `ip` authenticated as `peer`.
    func connect(_ rm: inout RM, _ peer: PeerID, ip: [UInt8], _ dir: RM.Direction = .inbound) throws -> RM.ConnectionID {
        let id = try rm.openConnection(dir, ip: ip).get()
        try rm.establish(id, peer: peer).get()
        return id
    }

    func assertRefused<T>(_ r: Result<T, RM.Refusal>, _ scope: RM.Scope, _ limit: RM.Limit, name: String? = nil,
                          file: StaticString = #filePath, line: UInt = #line) {
        guard case .failure(let refusal) = r else { return XCTFail("granted, expected a refusal", file: file, line: line) }
        XCTAssertEqual(refusal, RM.Refusal(scope: scope, limit: limit, name: name), file: file, line: line)
    }

    func testInboundAndOutboundConnectionLimits() throws {
        var l = RM.Limits()
        l.inboundConnections = 3
        l.outboundConnections = 2
        var rm = RM(limits: l)
        var ids: [RM.ConnectionID] = []
        for i in 1...3 { ids.append(try rm.openConnection(.inbound, ip: ip(UInt8(i))).get()) }
        assertRefused(rm.openConnection(.inbound, ip: ip(9)), .system, .inboundConnections)
        for i in 1...2 { _ = try rm.openConnection(.outbound, ip: ip(UInt8(20 + i))).get() }
        assertRefused(rm.openConnection(.outbound, ip: ip(29)), .system, .outboundConnections)
        rm.closeConnection(ids[0])
        XCTAssertNoThrow(try rm.openConnection(.inbound, ip: ip(9)).get())
        XCTAssertEqual(rm.refusals[RM.Refusal(scope: .system, limit: .inboundConnections, name: nil)], 1)
    }

    func testHandshakesInFlightAreTheTransientScope() throws {
        var l = RM.Limits()
        l.inboundHandshakes = 2
        var rm = RM(limits: l)
        let first = try rm.openConnection(.inbound, ip: ip(1)).get()
        _ = try rm.openConnection(.inbound, ip: ip(2)).get()
        assertRefused(rm.openConnection(.inbound, ip: ip(3)), .transient, .inboundHandshakes)
        XCTAssertEqual(rm.usage.inboundHandshakes, 2)
        // An established connection leaves the transient scope.
        try rm.establish(first, peer: a).get()
        XCTAssertEqual(rm.usage.inboundHandshakes, 1)
        XCTAssertNoThrow(try rm.openConnection(.inbound, ip: ip(3)).get())
    }

    func testConnectionsPerIPv4AddressAndPerIPv6Slash56() throws {
        var l = RM.Limits()
        l.connectionsPerIP = 2
        var rm = RM(limits: l)
        _ = try rm.openConnection(.inbound, ip: ip(1)).get()
        _ = try rm.openConnection(.outbound, ip: ip(1)).get()
        assertRefused(rm.openConnection(.inbound, ip: ip(1)), .ip, .connections)
        // The IPv4-mapped form of the same address is the same key.
        assertRefused(rm.openConnection(.inbound, ip: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 0, 0, 1]), .ip, .connections)
        XCTAssertNoThrow(try rm.openConnection(.inbound, ip: ip(2)).get())

        let v6a: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 1]
        var v6b = v6a; v6b[7] = 0xFF; v6b[15] = 2  // same /56, another /64
        var v6c = v6a; v6c[6] = 0x02                // another /56
        _ = try rm.openConnection(.inbound, ip: v6a).get()
        _ = try rm.openConnection(.inbound, ip: v6b).get()
        assertRefused(rm.openConnection(.inbound, ip: v6b), .ip, .connections)
        XCTAssertNoThrow(try rm.openConnection(.inbound, ip: v6c).get())
        XCTAssertEqual(rm.connections(fromIP: v6a), 2)
    }

    func testConnectionsPerPeerAreCheckedOnEstablishment() throws {
        var l = RM.Limits()
        l.connectionsPerPeer = 2
        var rm = RM(limits: l)
        _ = try connect(&rm, a, ip: ip(1))
        _ = try connect(&rm, a, ip: ip(2), .outbound)
        let third = try rm.openConnection(.inbound, ip: ip(3)).get()
        assertRefused(rm.establish(third, peer: a), .peer, .connections)
        XCTAssertNoThrow(try rm.establish(third, peer: b).get(), "another peer is not affected")
        XCTAssertEqual(rm.connections(of: a), 2)
    }

    func testStreamLimitsSystemPeerAndNegotiating() throws {
        var l = RM.Limits()
        l.inboundStreams = 6
        l.inboundStreamsPerPeer = 3
        l.negotiatingStreamsPerPeer = 2
        l.negotiatingStreams = 3
        var rm = RM(limits: l)
        let ca = try connect(&rm, a, ip: ip(1))
        let cb = try connect(&rm, b, ip: ip(2))
        // Negotiating per peer: two streams without a protocol yet, the third refused.
        let s1 = try rm.openStream(on: ca, .inbound).get()
        let s2 = try rm.openStream(on: ca, .inbound).get()
        assertRefused(rm.openStream(on: ca, .inbound), .peer, .negotiatingStreams)
        try rm.setProtocol(s1, "/x/1").get()
        try rm.setProtocol(s2, "/x/1").get()
        // Inbound per peer: the third stream is the last.
        let s3 = try rm.openStream(on: ca, .inbound).get()
        assertRefused(rm.openStream(on: ca, .inbound), .peer, .inboundStreams)
        // Negotiating system-wide: s3 (a) + two of b's.
        let b1 = try rm.openStream(on: cb, .inbound).get()
        let b2 = try rm.openStream(on: cb, .inbound).get()
        assertRefused(rm.openStream(on: cb, .inbound), .transient, .negotiatingStreams)
        // Our own outbound streams are not in the transient scope.
        let out = try rm.openStream(on: cb, .outbound).get()
        XCTAssertEqual(rm.usage.negotiatingStreams, 3)
        for s in [s3, b1, b2, out] { try rm.setProtocol(s, "/x/1").get() }
        // System inbound: a has 3, b has 2: the sixth is the last.
        var l2 = rm.limits
        l2.inboundStreamsPerPeer = 100
        l2.negotiatingStreamsPerPeer = 100
        l2.negotiatingStreams = 100
        rm.limits = l2
        _ = try rm.openStream(on: cb, .inbound).get()
        assertRefused(rm.openStream(on: cb, .inbound), .system, .inboundStreams)
        XCTAssertEqual(rm.usage.inboundStreams, 6)
        XCTAssertEqual(rm.usage.outboundStreams, 1)
    }

    func testProtocolAndServiceLimitsTotalAndPerPeer() throws {
        var l = RM.Limits()
        l.protocols["/p/1"] = RM.StreamLimit(total: 3, perPeer: 2)
        l.services["svc"] = RM.StreamLimit(total: 10, perPeer: 3)
        var rm = RM(limits: l)
        let ca = try connect(&rm, a, ip: ip(1))
        let cb = try connect(&rm, b, ip: ip(2))
        func stream(_ c: RM.ConnectionID, _ p: String, service: String? = nil) throws -> Result<Void, RM.Refusal> {
            let s = try rm.openStream(on: c, .inbound).get()
            return rm.setProtocol(s, p, service: service)
        }
        XCTAssertNoThrow(try stream(ca, "/p/1").get())
        XCTAssertNoThrow(try stream(ca, "/p/1").get())
        assertRefused(try stream(ca, "/p/1"), .protocol, .inboundStreams, name: "/p/1")
        XCTAssertNoThrow(try stream(cb, "/p/1").get())
        assertRefused(try stream(cb, "/p/1"), .protocol, .inboundStreams, name: "/p/1")  // total 3
        XCTAssertEqual(rm.inboundStreams(onProtocol: "/p/1"), 3)
        // A service groups protocols: three per peer across /s/a and /s/b.
        XCTAssertNoThrow(try stream(ca, "/s/a", service: "svc").get())
        XCTAssertNoThrow(try stream(ca, "/s/b", service: "svc").get())
        XCTAssertNoThrow(try stream(ca, "/s/a", service: "svc").get())
        assertRefused(try stream(ca, "/s/b", service: "svc"), .service, .inboundStreams, name: "svc")
        XCTAssertEqual(rm.inboundStreams(onService: "svc"), 3)
        // Outbound streams are ours: protocol limits do not apply to them.
        for _ in 0..<5 {
            let s = try rm.openStream(on: ca, .outbound).get()
            XCTAssertNoThrow(try rm.setProtocol(s, "/p/1").get())
        }
    }

    func testMemoryLimitsSystemAndPeer() throws {
        var l = RM.Limits()
        l.connectionMemory = 100
        l.streamMemory = 1000
        l.memoryPerPeer = 100 + 2 * 1000
        l.memory = 2 * 100 + 3 * 1000
        var rm = RM(limits: l)
        let ca = try connect(&rm, a, ip: ip(1))
        _ = try rm.openStream(on: ca, .inbound).get()
        _ = try rm.openStream(on: ca, .outbound).get()
        assertRefused(rm.openStream(on: ca, .inbound), .peer, .memory)
        XCTAssertEqual(rm.memory(of: a), 2100)
        let cb = try connect(&rm, b, ip: ip(2))
        _ = try rm.openStream(on: cb, .inbound).get()
        assertRefused(rm.openStream(on: cb, .inbound), .system, .memory)
        assertRefused(rm.openConnection(.inbound, ip: ip(3)), .system, .memory)
        XCTAssertEqual(rm.usage.memory, 3200)
    }

    func testAllowListedNetworksAndPeersAreNeverRefusedNorCounted() throws {
        var l = RM.Limits()
        l.connectionsPerIP = 1
        l.inboundConnections = 1
        l.connectionsPerPeer = 1
        l.allow = [RM.AllowEntry("192.168.7.0/24")!, .peer(b)]
        var rm = RM(limits: l)
        for _ in 0..<5 { _ = try rm.openConnection(.inbound, ip: [192, 168, 7, 9]).get() }
        XCTAssertEqual(rm.usage.inboundConnections, 0)
        XCTAssertEqual(rm.usage.exemptConnections, 5)
        // An allow-listed peer from an ordinary address: counted while handshaking (its ID is
        // not known yet), exempt once authenticated.
        let c1 = try rm.openConnection(.inbound, ip: ip(1)).get()
        try rm.establish(c1, peer: b).get()
        XCTAssertEqual(rm.usage.inboundConnections, 0)
        let c2 = try rm.openConnection(.inbound, ip: ip(1)).get()
        try rm.establish(c2, peer: b).get()
        let s = try rm.openStream(on: c2, .inbound).get()
        try rm.setProtocol(s, "/p").get()
        XCTAssertEqual(rm.usage.exemptStreams, 1)
        XCTAssertEqual(rm.usage.inboundStreams, 0)
        // Everyone else is still limited.
        _ = try rm.openConnection(.inbound, ip: ip(2)).get()
        assertRefused(rm.openConnection(.inbound, ip: ip(3)), .system, .inboundConnections)
    }

    func testAllowEntryParsing() throws {
        XCTAssertEqual(RM.AllowEntry("127.0.0.0/8"), .network(address: [127, 0, 0, 0], prefixLength: 8))
        XCTAssertEqual(RM.AllowEntry("10.1.2.3"), .network(address: [10, 1, 2, 3], prefixLength: 32))
        XCTAssertTrue(RM.AllowEntry("fd00::/8")!.contains([0xFD] + Array(repeating: 1, count: 15)))
        XCTAssertFalse(RM.AllowEntry("fd00::/8")!.contains([0xFE] + Array(repeating: 1, count: 15)))
        XCTAssertTrue(RM.AllowEntry("10.0.0.0/9")!.contains([10, 127, 0, 1]))
        XCTAssertFalse(RM.AllowEntry("10.0.0.0/9")!.contains([10, 128, 0, 1]))
        XCTAssertEqual(RM.AllowEntry(a.description), .peer(a))
        XCTAssertNil(RM.AllowEntry("10.0.0.0/33"))
        XCTAssertNil(RM.AllowEntry("not an address"))
        XCTAssertNil(RM.AllowEntry("10.0.0.1/8/1"))
    }

    func testClosingEverythingReturnsEveryCountToZero() throws {
        var rm = RM()
        var conns: [RM.ConnectionID] = []
        for i in 0..<20 {
            let peer = i % 2 == 0 ? a : b
            let c = try rm.openConnection(i % 3 == 0 ? .outbound : .inbound, ip: ip(UInt8(i % 4))).get()
            if i % 5 != 0 { try rm.establish(c, peer: peer).get() }
            conns.append(c)
            guard i % 5 != 0 else { continue }
            for j in 0..<4 {
                let s = try rm.openStream(on: c, j % 2 == 0 ? .inbound : .outbound).get()
                if j < 3 { try rm.setProtocol(s, "/p/\(j)", service: j == 0 ? "dht" : nil).get() }
                if j == 1 { rm.closeStream(s) }
            }
        }
        XCTAssertGreaterThan(rm.usage.memory, 0)
        for c in conns.shuffled() { rm.closeConnection(c) }
        XCTAssertEqual(rm.usage, RM.Usage())
        XCTAssertEqual(rm.streamsByProtocol, [:])
        XCTAssertEqual(rm.inboundStreams(onService: "dht"), 0)
        XCTAssertEqual(rm.inboundStreams(onProtocol: "/p/0"), 0)
        XCTAssertEqual(rm.connections(of: a), 0)
        XCTAssertEqual(rm.connections(fromIP: ip(1)), 0)
    }
}
