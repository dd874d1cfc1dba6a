import CairnCore
import XCTest

final class AddressRankingTests: XCTestCase {
    func m(_ s: String) -> Multiaddr { try! Multiaddr(s) }

    func testBehindTheSameNATThePrivateAddressComesFirst() {
        // Both hosts behind 198.18.0.11 (a home router that does not hairpin).
        let peer = [m("/ip4/198.18.0.11/tcp/4002"), m("/ip4/127.0.0.1/tcp/4001"), m("/ip4/10.0.1.3/tcp/4001")]
        let us = AddressRanking.Context(localIPs: [[10, 0, 1, 2]], externalIPs: [[198, 18, 0, 11]])
        XCTAssertTrue(AddressRanking.sameNAT(peer, us))
        XCTAssertEqual(AddressRanking.rank(peer, us), [peer[2], peer[0], peer[1]])
        XCTAssertEqual(AddressRanking.tier(peer[2], peerAddresses: peer, us), .lan)
    }

    func testBehindAnotherNATThePublicAddressComesFirst() {
        // The peer's private address is in another LAN that happens to use another /24.
        let peer = [m("/ip4/10.0.2.2/tcp/4001"), m("/ip4/198.18.0.12/tcp/4001")]
        let us = AddressRanking.Context(localIPs: [[10, 0, 1, 2]], externalIPs: [[198, 18, 0, 11]])
        XCTAssertFalse(AddressRanking.sameNAT(peer, us))
        XCTAssertEqual(AddressRanking.rank(peer, us), [peer[1], peer[0]])
        XCTAssertEqual(AddressRanking.tier(peer[0], peerAddresses: peer, us), .otherPrivate)
        // On our own /24 it is the LAN, whatever the NAT says.
        let neighbour = [m("/ip4/198.18.0.12/tcp/4001"), m("/ip4/10.0.1.9/tcp/4001")]
        XCTAssertEqual(AddressRanking.rank(neighbour, us), [neighbour[1], neighbour[0]])
    }

    func testIPv6BeforeIPv4AndLoopbackLast() {
        let peer = [m("/ip4/127.0.0.1/tcp/1"), m("/ip4/203.0.113.7/tcp/1"), m("/ip6/2001:db8::7/tcp/1"), m("/ip6/::1/tcp/1")]
        let us = AddressRanking.Context(localIPs: [], externalIPs: [])
        XCTAssertEqual(AddressRanking.rank(peer, us), [peer[2], peer[1], peer[0], peer[3]])
        XCTAssertEqual(AddressRanking.tier(peer[2], peerAddresses: peer, us), .ipv6)
    }

    func testTheOrderIsStableWithinATierAndAClaimOfOurIPAloneChangesLittle() {
        let peer = [m("/ip4/198.18.0.20/tcp/1"), m("/ip4/198.18.0.21/tcp/1")]
        let us = AddressRanking.Context(localIPs: [[10, 0, 1, 2]], externalIPs: [[198, 18, 0, 21]])
        // Same NAT only moves private addresses up; the public ones keep their order.
        XCTAssertEqual(AddressRanking.rank(peer, us), peer)
    }
}
