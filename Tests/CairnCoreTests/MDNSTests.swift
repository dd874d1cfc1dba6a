@testable import CairnCore
import XCTest

final class MDNSTests: XCTestCase {
    let a = PrivateKey.generate().peerID
    let b = PrivateKey.generate().peerID

    func discovery(_ peer: PeerID, name: String, addrs: [String]) throws -> MDNSDiscovery {
        var d = MDNSDiscovery(localPeer: peer, peerName: name)
        d.setAddresses(try addrs.map { try Multiaddr($0) })
        return d
    }

    func testTheQueryIsTheStandardPTRQuestion() {
        // RFC 1035 layout: 12-byte header with QDCOUNT 1, the name, type PTR (12), class IN.
        let expected: [UInt8] = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                                 4, 0x5f, 0x70, 0x32, 0x70, 4, 0x5f, 0x75, 0x64, 0x70, 5, 0x6c, 0x6f, 0x63, 0x61, 0x6c, 0,
                                 0, 12, 0, 1]
        XCTAssertEqual(MDNSDiscovery.query(), expected)
    }

    func testAQueryIsAnsweredAndTheAnswerNamesThePeer() throws {
        var da = try discovery(a, name: "peera0123456789abcdefghijklmnopqrstu", addrs: ["/ip4/10.0.1.2/tcp/4001", "/ip4/0.0.0.0/tcp/1"])
        var db = try discovery(b, name: "peerb0123456789abcdefghijklmnopqrstu", addrs: ["/ip4/10.0.1.3/tcp/4001"])
        guard case .send(let query)? = db.start(now: 0).first else { return XCTFail("a query first") }
        let answer = try da.received(query, now: 0.1)
        guard case .send(let response)? = answer.first else { return XCTFail("A answers: \(answer)") }
        // The answer carries PTR, TXT, SRV and A (go's resolver needs the A record).
        let m = try DNSMessage.decode(response)
        XCTAssertTrue(m.isResponse)
        XCTAssertEqual(m.records.map { r -> String in
            switch r.data { case .ptr: return "PTR"; case .txt: return "TXT"; case .srv: return "SRV"; case .a: return "A"; default: return "?" }
        }, ["PTR", "TXT", "SRV", "A"])
        XCTAssertEqual(m.records[0].data, .ptr("peera0123456789abcdefghijklmnopqrstu._p2p._udp.local"))
        XCTAssertEqual(m.records[1].data, .txt([Array("dnsaddr=/ip4/10.0.1.2/tcp/4001/p2p/\(a)".utf8)]), "the unspecified address is not announced")
        XCTAssertEqual(m.records[3].data, .a([10, 0, 1, 2]))
        // B learns A's address; A ignores its own answer (multicast loops back).
        XCTAssertEqual(try db.received(response, now: 0.2), [.discovered(a, [try Multiaddr("/ip4/10.0.1.2/tcp/4001")])])
        XCTAssertEqual(try da.received(response, now: 0.2), [])
        // A second query within a second is not answered again (RFC 6762 §6).
        XCTAssertEqual(try da.received(query, now: 0.5), [])
        XCTAssertEqual(try da.received(query, now: 1.2).count, 1)
    }

    func testQueriesRepeatOnTheSchedule() throws {
        var d = try discovery(a, name: "x", addrs: ["/ip4/10.0.1.2/tcp/4001"])
        XCTAssertEqual(d.start(now: 0).count, 1)
        var times: [Double] = []
        var now = 0.0
        while times.count < 5, let t = d.nextDeadline() {
            now = t
            if !d.tick(now: now).isEmpty { times.append(now) }
        }
        XCTAssertEqual(times, [1, 4, 14, 74, 134])
    }

    func testCompressedNamesAreRead() throws {
        // A response as zeroconf writes one: the instance name points back into the PTR's data.
        var b: [UInt8] = [0, 0, 0x84, 0, 0, 0, 0, 2, 0, 0, 0, 0]
        let service = DNSMessage.name("_p2p._udp.local")
        let ptrAt = b.count
        b += service + [0, 12, 0, 1, 0, 0, 0, 120]
        let instanceAt = b.count + 2
        let rdata = [UInt8(4)] + Array("peer".utf8) + [0xc0, UInt8(ptrAt)]
        b += [0, UInt8(rdata.count)] + rdata
        let txt = Array("dnsaddr=/ip4/10.0.1.9/tcp/4001/p2p/\(self.b)".utf8)
        b += [0xc0, UInt8(instanceAt), 0, 16, 0, 1, 0, 0, 0, 120, 0, UInt8(txt.count + 1), UInt8(txt.count)] + txt
        let m = try DNSMessage.decode(b)
        XCTAssertEqual(m.records[0].data, .ptr("peer._p2p._udp.local"))
        XCTAssertEqual(m.records[1].name, "peer._p2p._udp.local")
        var d = try discovery(a, name: "me", addrs: ["/ip4/10.0.1.2/tcp/4001"])
        XCTAssertEqual(try d.received(b, now: 0), [.discovered(self.b, [try Multiaddr("/ip4/10.0.1.9/tcp/4001")])])
    }

    func testHostileInputIsRefused() throws {
        var d = try discovery(a, name: "me", addrs: ["/ip4/10.0.1.2/tcp/4001"])
        // A compression loop.
        let loop: [UInt8] = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 12, 0, 1]
        XCTAssertThrowsError(try d.received(loop, now: 0)) { XCTAssertEqual($0 as? DNSMessage.DecodeError, .badName("more than 32 compression jumps")) }
        XCTAssertThrowsError(try d.received([UInt8](repeating: 0, count: 9001), now: 0))
        XCTAssertThrowsError(try d.received([0, 0, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0], now: 0)) {
            XCTAssertEqual($0 as? DNSMessage.DecodeError, .tooManyEntries(200))
        }
        XCTAssertThrowsError(try d.received([0, 0, 0x84, 0], now: 0))
        // A TXT string longer than its record.
        let overrun: [UInt8] = [0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0] + DNSMessage.name("x.local") + [0, 16, 0, 1, 0, 0, 0, 1, 0, 3, 9, 1, 2]
        XCTAssertThrowsError(try d.received(overrun, now: 0))
        // TXT strings that are not dnsaddrs, a relayed address, our own ID: nothing discovered.
        let junk = DNSMessage.encode(.init(isResponse: true, records: [
            .init(name: MDNSDiscovery.serviceName, ttl: 120, data: .ptr("j." + MDNSDiscovery.serviceName)),
            .init(name: "j." + MDNSDiscovery.serviceName, ttl: 120, data: .txt([Array("hello".utf8), Array("dnsaddr=garbage".utf8),
                                                                               Array("dnsaddr=/ip4/10.0.1.5/tcp/1/p2p/\(a)/p2p-circuit/p2p/\(b)".utf8),
                                                                               Array("dnsaddr=/ip4/10.0.1.5/tcp/1/p2p/\(a)".utf8)])),
        ]))
        XCTAssertEqual(try d.received(junk, now: 0), [])
        // A TXT record of an instance no PTR in the message names is not taken.
        let stray = DNSMessage.encode(.init(isResponse: true, records: [
            .init(name: "k." + MDNSDiscovery.serviceName, ttl: 120, data: .txt([Array("dnsaddr=/ip4/10.0.1.5/tcp/1/p2p/\(b)".utf8)])),
        ]))
        XCTAssertEqual(try d.received(stray, now: 0), [])
    }
}
