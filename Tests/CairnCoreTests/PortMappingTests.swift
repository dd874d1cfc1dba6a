import XCTest

@testable import CairnCore

/// NAT-PMP (RFC 6886) and PCP (RFC 6887) messages laid out by hand from the RFCs, and the client
/// over scripted gateways.
final class PortMappingCodecTests: XCTestCase {
    func testNATPMPRequestsAndResponses() throws {
        XCTAssertEqual(NATPMP.externalAddressRequest(), [0, 0])
        // RFC 6886 §3.3: version, opcode 2 (TCP), reserved, internal port, suggested port, lifetime.
        XCTAssertEqual(NATPMP.mapRequest(.tcp, internalPort: 4001, suggestedExternalPort: 4001, lifetime: 7200),
                       [0, 2, 0, 0, 0x0f, 0xa1, 0x0f, 0xa1, 0, 0, 0x1c, 0x20])
        XCTAssertEqual(NATPMP.mapRequest(.udp, internalPort: 1, suggestedExternalPort: 0, lifetime: 0)[1], 1)
        let address = try NATPMP.decodeResponse([0, 128, 0, 0, 0, 0, 0, 9, 198, 18, 0, 11])
        XCTAssertEqual(address, .externalAddress(result: 0, epoch: 9, address: [198, 18, 0, 11]))
        let map = try NATPMP.decodeResponse([0, 130, 0, 0, 0, 0, 1, 0, 0x0f, 0xa1, 0x9c, 0x41, 0, 0, 0x0e, 0x10])
        XCTAssertEqual(map, .mapping(.tcp, result: 0, epoch: 256, internalPort: 4001, externalPort: 40001, lifetime: 3600))
        XCTAssertEqual(try NATPMP.decodeResponse([0, 129, 0, 1, 0, 0, 0, 5]), .error(opcode: 1, result: 1, epoch: 5))
        // Refused: a request, another version, the wrong length for the opcode, oversized input.
        XCTAssertThrowsError(try NATPMP.decodeResponse([0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
        XCTAssertThrowsError(try NATPMP.decodeResponse([1, 128, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]))
        XCTAssertThrowsError(try NATPMP.decodeResponse([0, 128, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]))
        XCTAssertThrowsError(try NATPMP.decodeResponse([UInt8](repeating: 0, count: 17)))
        XCTAssertThrowsError(try NATPMP.decodeResponse([0, 128, 0, 0, 0, 0, 0, 0]), "a success needs its body")
    }

    func testPCPMapRequestAndResponse() throws {
        let nonce = Array(1...12).map(UInt8.init)
        let req = PCP.mapRequest(.tcp, client: [10, 0, 1, 2], nonce: nonce, internalPort: 4001, suggestedExternalPort: 4001, lifetime: 7200)
        XCTAssertEqual(req.count, 60)
        XCTAssertEqual(Array(req[0..<8]), [2, 1, 0, 0, 0, 0, 0x1c, 0x20])
        XCTAssertEqual(Array(req[8..<24]), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 1, 2], "the client address, IPv4-mapped")
        XCTAssertEqual(Array(req[24..<36]), nonce)
        XCTAssertEqual(Array(req[36..<44]), [6, 0, 0, 0, 0x0f, 0xa1, 0x0f, 0xa1])
        XCTAssertEqual(Array(req[44..<60]), PCP.mapped([0, 0, 0, 0]))
        // The gateway's answer: R bit, result 0, lifetime, epoch, then the MAP data.
        var resp: [UInt8] = [2, 0x81, 0, 0, 0, 0, 0x0e, 0x10, 0, 0, 0, 42] + [UInt8](repeating: 0, count: 12)
        resp += nonce + [6, 0, 0, 0, 0x0f, 0xa1, 0x9c, 0x41] + PCP.mapped([198, 18, 0, 11])
        let r = try PCP.decodeMapResponse(resp)
        XCTAssertEqual(r, PCP.MapResponse(result: 0, lifetime: 3600, epoch: 42, nonce: nonce, proto: 6, internalPort: 4001,
                                          externalPort: 40001, externalAddress: [198, 18, 0, 11]))
        // Options after the MAP data are skipped; a header-only error answer is accepted.
        XCTAssertNoThrow(try PCP.decodeMapResponse(resp + [0x80, 0, 0, 0]))
        XCTAssertEqual(try PCP.decodeMapResponse([2, 0x81, 0, 8] + [UInt8](repeating: 0, count: 20)).result, 8)
        // Refused: a request, another opcode, a torn body, oversized input.
        XCTAssertThrowsError(try PCP.decodeMapResponse(req))
        XCTAssertThrowsError(try PCP.decodeMapResponse([2, 0x82] + resp.dropFirst(2)))
        XCTAssertThrowsError(try PCP.decodeMapResponse(Array(resp.prefix(50))))
        XCTAssertThrowsError(try PCP.decodeMapResponse(resp + [UInt8](repeating: 0, count: 1100)))
    }
}

final class PortMappingClientTests: XCTestCase {
    let nonce = [UInt8](repeating: 7, count: 12)
    func client() -> PortMappingClient {
        PortMappingClient(configuration: .init(proto: .tcp, internalPort: 4001, clientAddress: [10, 0, 1, 2]), nonce: nonce)
    }

    func pcpAnswer(result: UInt8 = 0, lifetime: UInt32 = 3600, epoch: UInt32 = 100, port: UInt16 = 40001, nonce: [UInt8]? = nil) -> [UInt8] {
        var b: [UInt8] = [2, 0x81, 0, result]
        b += withUnsafeBytes(of: lifetime.bigEndian, Array.init) + withUnsafeBytes(of: epoch.bigEndian, Array.init) + [UInt8](repeating: 0, count: 12)
        b += (nonce ?? self.nonce) + [6, 0, 0, 0, 0x0f, 0xa1, UInt8(port >> 8), UInt8(port & 0xff)] + PCP.mapped([198, 18, 0, 11])
        return b
    }

    func sent(_ actions: [PortMappingClient.Action]) -> [[UInt8]] { actions.compactMap { if case .send(let b) = $0 { return b }; return nil } }

    func testPCPMapsRenewsAtHalfTheLifetimeAndDeletesOnStop() throws {
        var c = client()
        let first = sent(c.start(now: 0))
        XCTAssertEqual(first.count, 1)
        XCTAssertEqual(first[0][0], 2, "PCP first")
        // An answer for another mapping (wrong nonce) is ignored.
        XCTAssertEqual(try c.received(pcpAnswer(nonce: [UInt8](repeating: 1, count: 12)), now: 0.01), [])
        let done = try c.received(pcpAnswer(), now: 0.02)
        XCTAssertEqual(done, [.mapped(.init(dialect: .pcp, externalPort: 40001, externalAddress: [198, 18, 0, 11], lifetime: 3600))])
        XCTAssertEqual(c.nextDeadline() ?? 0, 1800.02, accuracy: 1e-9)
        XCTAssertEqual(c.tick(now: 1000), [])
        let renewal = sent(c.tick(now: 1800.02))
        XCTAssertEqual(renewal.count, 1)
        XCTAssertEqual(Array(renewal[0][42..<44]), [0x9c, 0x41], "asks for the port it has")
        _ = try c.received(pcpAnswer(epoch: 1900), now: 1800.05)
        XCTAssertTrue(c.isMapped)
        let delete = sent(c.stop())
        XCTAssertEqual(Array(delete[0][4..<8]), [0, 0, 0, 0], "lifetime 0 deletes")
    }

    func testANATPMPGatewayIsAskedInNATPMPAndForItsAddress() throws {
        var c = client()
        _ = c.start(now: 0)
        // A NAT-PMP-only gateway answers the PCP request: unsupported version.
        let retry = sent(try c.received([0, 129, 0, 1, 0, 0, 0, 5], now: 0.01))
        XCTAssertEqual(retry, [NATPMP.mapRequest(.tcp, internalPort: 4001, suggestedExternalPort: 4001, lifetime: 7200)])
        let ask = sent(try c.received([0, 130, 0, 0, 0, 0, 0, 5, 0x0f, 0xa1, 0x0f, 0xa1, 0, 0, 0x1c, 0x20], now: 0.02))
        XCTAssertEqual(ask, [NATPMP.externalAddressRequest()])
        let done = try c.received([0, 128, 0, 0, 0, 0, 0, 5, 198, 18, 0, 12], now: 0.03)
        XCTAssertEqual(done, [.mapped(.init(dialect: .natpmp, externalPort: 4001, externalAddress: [198, 18, 0, 12], lifetime: 7200))])
        XCTAssertEqual(sent(c.stop()), [NATPMP.mapRequest(.tcp, internalPort: 4001, suggestedExternalPort: 0, lifetime: 0)])
    }

    func testRetransmitsThenFallsBackThenGivesUp() throws {
        var c = client()
        _ = c.start(now: 0)
        var now = 0.0
        var pcp = 1, natpmp = 0
        var failed: String?
        while failed == nil, let d = c.nextDeadline(), now < 1000 {
            now = d
            for a in c.tick(now: now) {
                switch a {
                case .send(let b): if b[0] == 2 { pcp += 1 } else { natpmp += 1 }
                case .failed(let why): failed = why
                case .mapped: XCTFail("nobody answered")
                }
            }
        }
        XCTAssertEqual(pcp, 6)
        XCTAssertEqual(natpmp, 6)
        XCTAssertNotNil(failed)
        // 250 ms doubling: 0.25 + 0.5 + 1 + 2 + 4 + 8 for each dialect.
        XCTAssertEqual(now, 2 * 15.75, accuracy: 1e-9)
    }

    func testAClosedPortMovesOnAtOnce() throws {
        var c = client()
        _ = c.start(now: 0)
        let natpmp = sent(c.unreachable(now: 0.01))
        XCTAssertEqual(natpmp, [NATPMP.mapRequest(.tcp, internalPort: 4001, suggestedExternalPort: 4001, lifetime: 7200)],
                       "PCP's port closed: NAT-PMP at once, not after six retransmissions")
        guard case .failed(let why)? = c.unreachable(now: 0.02).first else { return XCTFail("NAT-PMP closed too: failed") }
        XCTAssertTrue(why.contains("unreachable"), why)
        XCTAssertNil(c.nextDeadline(), "nothing left to retransmit")
        XCTAssertEqual(c.unreachable(now: 0.03), [], "a late ICMP error changes nothing")
    }

    func testDialectsCanBeChosen() throws {
        var onlyNATPMP = client()
        var cfg = onlyNATPMP.configuration
        cfg.pcp = false
        onlyNATPMP = PortMappingClient(configuration: cfg, nonce: nonce)
        XCTAssertEqual(sent(onlyNATPMP.start(now: 0)), [NATPMP.mapRequest(.tcp, internalPort: 4001, suggestedExternalPort: 4001, lifetime: 7200)])
        cfg.pcp = true
        cfg.natpmp = false
        var onlyPCP = PortMappingClient(configuration: cfg, nonce: nonce)
        XCTAssertEqual(sent(onlyPCP.start(now: 0)).first?.first, 2)
        // A NAT-PMP-only gateway's "unsupported version" ends it: NAT-PMP is off.
        guard case .failed? = try onlyPCP.received([0, 129, 0, 1, 0, 0, 0, 5], now: 0.01).first else { return XCTFail("PCP only") }
    }

    func testRefusalsAndHostileInput() throws {
        var c = client()
        _ = c.start(now: 0)
        XCTAssertThrowsError(try c.received([], now: 0.01))
        XCTAssertThrowsError(try c.received([UInt8](repeating: 2, count: 2000), now: 0.01))
        XCTAssertThrowsError(try c.received([9, 9, 9], now: 0.01))
        XCTAssertFalse(c.isMapped)
        let refused = try c.received(pcpAnswer(result: PCP.ResultCode.notAuthorized.rawValue), now: 0.02)
        guard case .failed(let why)? = refused.first else { return XCTFail("\(refused)") }
        XCTAssertTrue(why.contains("refused"), why)
        // A gateway that grants a lifetime of 0 made no mapping.
        var d = client()
        _ = d.start(now: 0)
        guard case .failed? = try d.received(pcpAnswer(lifetime: 0), now: 0.01).first else { return XCTFail() }
    }

    func testAGatewayThatRestartedIsAskedAgain() throws {
        var c = client()
        _ = c.start(now: 0)
        _ = try c.received(pcpAnswer(epoch: 1000), now: 0)
        XCTAssertEqual(c.gatewayAnnounced(epoch: 1100, now: 100), [], "its clock ran on: no restart")
        let again = sent(c.gatewayAnnounced(epoch: 3, now: 200))
        XCTAssertEqual(again.count, 1, "epoch went back: map again")
        XCTAssertEqual(again[0][0], 2)
    }
}

final class DefaultGatewayTests: XCTestCase {
    func testDefaultRoutesFromProcNetRoute() {
        let text = """
        Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
        wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
        eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
        tun0\t00000000\t0A0A0A0A\t0001\t0\t0\t0\t00000000\t0\t0\t0
        garbage line
        """
        let gws = PortMapping.defaultGateways(procNetRoute: text)
        XCTAssertEqual(gws.map(\.interface), ["eth0", "wlan0"], "lowest metric first; the route without the gateway flag is not one")
        XCTAssertEqual(gws.map(\.gateway), [[192, 0, 2, 1], [192, 168, 1, 1]])
        XCTAssertTrue(PortMapping.defaultGateways(procNetRoute: "").isEmpty)
    }
}
