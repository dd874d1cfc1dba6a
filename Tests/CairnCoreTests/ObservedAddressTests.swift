@testable import CairnCore
import Foundation
import XCTest

final class ObservedAddressTests: XCTestCase {
    let local = try! Multiaddr("/ip4/10.0.1.2/tcp/4001")
    let truth = try! Multiaddr("/ip4/198.18.0.11/tcp/4001")
    let now = Date()

    func observer(_ n: Int) -> Multiaddr { try! Multiaddr("/ip4/198.18.0.\(100 + n)/tcp/4001") }

    func testAdoptedOnlyWithFourDistinctObservers() {
        var book = ObservedAddressBook()
        for i in 0..<3 { book.record(connection: UInt64(i), local: local, remote: observer(i), observed: truth, outbound: true, now: now) }
        XCTAssertEqual(book.externalAddresses(now: now), [])
        book.record(connection: 3, local: local, remote: observer(3), observed: truth, outbound: true, now: now)
        XCTAssertEqual(book.externalAddresses(now: now), [truth])
        // An observation dies with its connection.
        book.connectionClosed(2)
        XCTAssertEqual(book.externalAddresses(now: now), [])
        // ... and ages out after the window.
        book.record(connection: 2, local: local, remote: observer(2), observed: truth, outbound: true, now: now)
        XCTAssertEqual(book.externalAddresses(now: now.addingTimeInterval(599)), [truth])
        XCTAssertEqual(book.externalAddresses(now: now.addingTimeInterval(601)), [])
    }

    func testTenIdentitiesOnOneHostCannotMakeAFalseAddressWin() {
        var book = ObservedAddressBook()
        let lie = try! Multiaddr("/ip4/203.0.113.66/tcp/6666")
        let sybilHost = try! Multiaddr("/ip4/198.18.0.200/tcp/1")
        for i in 0..<10 {
            let remote = try! Multiaddr("/ip4/198.18.0.200/tcp/\(5000 + i)")
            book.record(connection: 100 + UInt64(i), local: local, remote: remote, observed: lie, outbound: true, now: now)
        }
        _ = sybilHost
        XCTAssertEqual(book.externalAddresses(now: now), [], "ten identities on one IP are one observer")
        for i in 0..<4 { book.record(connection: UInt64(i), local: local, remote: observer(i), observed: truth, outbound: true, now: now) }
        XCTAssertEqual(book.externalAddresses(now: now), [truth])
    }

    func testIPv6ObserversGroupBySlash56() {
        var book = ObservedAddressBook()
        let l6 = try! Multiaddr("/ip6/fd00::2/tcp/4001")
        let t6 = try! Multiaddr("/ip6/2001:db8:1::2/tcp/4001")
        for i in 0..<6 {  // six hosts in one /56
            book.record(connection: UInt64(i), local: l6, remote: try! Multiaddr("/ip6/2001:db8:aa:bb\(i)::\(i + 1)/tcp/1"), observed: t6, outbound: true, now: now)
        }
        XCTAssertEqual(Set(book.votes.values.map(\.observer)).count, 1)
        XCTAssertEqual(book.externalAddresses(now: now), [])
    }

    func testForgedObservationsAreRejectedAndCounted() throws {
        var book = ObservedAddressBook()
        let cases: [(String, ObservedAddressBook.Rejection)] = [
            ("/ip4/0.0.0.0/tcp/4001", .unspecified),
            ("/ip4/127.0.0.1/tcp/4001", .loopback),
            ("/ip4/198.18.0.11/tcp/0", .portZero),
            ("/ip6/2001:db8::1/tcp/4001", .wrongFamily),
            ("/ip4/198.18.0.11/udp/4001", .notTCP),
            ("/dns4/example.com/tcp/4001", .notTCP),
        ]
        for (i, (text, why)) in cases.enumerated() {
            XCTAssertEqual(book.record(connection: UInt64(i), local: local, remote: observer(i), observed: try Multiaddr(text), outbound: true, now: now), why, text)
        }
        // An observer on a private network cannot vote for a public address.
        XCTAssertEqual(book.record(connection: 50, local: local, remote: try Multiaddr("/ip4/10.0.1.7/tcp/1"), observed: truth, outbound: true, now: now),
                       .privateObserverForPublicAddress)
        XCTAssertEqual(book.record(connection: 51, local: local, remote: observer(1), observed: truth.appending(.p2pCircuit), outbound: true, now: now), .relayed)
        XCTAssertEqual(book.votes.count, 0)
        XCTAssertEqual(book.rejected.values.reduce(0, +), 8)
    }

    func testAtMostThreeExternalAddressesPerLocalAddress() {
        var book = ObservedAddressBook()
        var c: UInt64 = 0
        for port in 0..<5 {
            let observed = try! Multiaddr("/ip4/198.18.0.11/tcp/\(40000 + port)")
            for o in 0..<(4 + port) {  // more support for higher ports
                c += 1
                book.record(connection: c, local: local, remote: try! Multiaddr("/ip4/198.19.\(port).\(o + 1)/tcp/1"), observed: observed, outbound: true, now: now)
            }
        }
        let adopted = book.externalAddresses(now: now)
        XCTAssertEqual(adopted.map { $0.tcpEndpoint!.port }, [40004, 40003, 40002])
    }

    func testClassification() {
        func votes(_ ports: [UInt16]) -> [ObservedAddressBook.Vote] {
            ports.enumerated().map { i, p in
                ObservedAddressBook.Vote(connection: UInt64(i), observer: ObserverGroup(ip: [198, 18, 0, UInt8(100 + i)]), observerAddress: observer(i),
                                         local: local, observed: try! Multiaddr("/ip4/198.18.0.11/tcp/\(p)"), at: now.addingTimeInterval(Double(i)), outbound: true)
            }
        }
        let cone = NATClassification.classify(votes: votes([4001, 4001, 4001, 4001, 4001]))
        XCTAssertEqual(cone.mapping, .endpointIndependent)
        XCTAssertEqual(cone.portAllocation, .preserving)
        let symmetric = NATClassification.classify(votes: votes([51234, 3011, 60122, 17000, 44444]))
        XCTAssertEqual(symmetric.mapping, .endpointDependent)
        XCTAssertEqual(symmetric.portAllocation, .random)
        let sequential = NATClassification.classify(votes: votes([30001, 30002, 30004, 30005]))
        XCTAssertEqual(sequential.mapping, .endpointDependent)
        XCTAssertEqual(sequential.portAllocation, .sequential)
        XCTAssertEqual(NATClassification.classify(votes: votes([4001, 4001, 4001])).mapping, .unknown, "three observers are not enough")
        XCTAssertEqual(NATClassification.classify(votes: [], inboundFromUncontacted: true).filtering, .endpointIndependent)
    }

    /// STUN votes (UDP) count like identify's, and classification reads UDP ports too.
    func testSTUNVotesAndUDPClassification() throws {
        var book = ObservedAddressBook()
        let local = try Multiaddr("/ip4/0.0.0.0/udp/4001")
        for i in 0..<4 {
            XCTAssertNil(book.recordSTUN(id: ObservedAddressBook.stunVoteID(UInt64(i)), local: local,
                                        server: try Multiaddr("/ip4/198.18.0.\(101 + i)/udp/4001"),
                                        mapped: try Multiaddr("/ip4/198.18.0.12/udp/4001"), now: now))
        }
        XCTAssertEqual(book.externalAddresses(now: now), [try Multiaddr("/ip4/198.18.0.12/udp/4001")])
        let c = NATClassification.classify(votes: book.liveVotes(now))
        XCTAssertEqual(c.mapping, .endpointIndependent)
        XCTAssertEqual(c.portAllocation, .preserving)
        // A TCP address claimed over STUN, or a loopback mapping, is refused.
        XCTAssertEqual(book.recordSTUN(id: ObservedAddressBook.stunVoteID(9), local: local, server: try Multiaddr("/ip4/198.18.0.101/udp/4001"),
                                       mapped: try Multiaddr("/ip4/198.18.0.12/tcp/4001"), now: now), .notTCP)
        XCTAssertEqual(book.recordSTUN(id: ObservedAddressBook.stunVoteID(10), local: local, server: try Multiaddr("/ip4/198.18.0.101/udp/4001"),
                                       mapped: try Multiaddr("/ip4/127.0.0.1/udp/4001"), now: now), .loopback)
        // Random UDP ports under a symmetric NAT are random, not "sequential".
        var sym = ObservedAddressBook()
        for (i, p) in [42357, 35849, 56015, 16172].enumerated() {
            sym.recordSTUN(id: ObservedAddressBook.stunVoteID(UInt64(i)), local: local, server: try Multiaddr("/ip4/198.18.0.\(101 + i)/udp/4001"),
                           mapped: try Multiaddr("/ip4/198.18.0.13/udp/\(p)"), now: now.addingTimeInterval(Double(i)))
        }
        let s = NATClassification.classify(votes: sym.liveVotes(now))
        XCTAssertEqual(s.mapping, .endpointDependent)
        XCTAssertEqual(s.portAllocation, .random)
    }
}
