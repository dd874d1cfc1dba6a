@testable import CairnCore
import CairnCrypto
import CairnSim
import Foundation
import XCTest

final class DHTKeyspaceTests: XCTestCase {
    func testDistanceAndPrefix() {
        let a = DHTKey(hashing: [1]), b = DHTKey(hashing: [2])
        XCTAssertEqual(a.distance(to: b), b.distance(to: a))
        XCTAssertEqual(a.distance(to: a), DHTKey(0, 0, 0, 0))
        XCTAssertEqual(a.commonPrefixLength(with: a), 256)
        XCTAssertEqual(DHTKey(raw: a.bytes), a)
        XCTAssertEqual(a.bytes, SHA256.hash([1]))
        // Prefix length from the bytes, bit by bit.
        let x = a.bytes, y = b.bytes
        var expected = 0
        for i in 0..<256 {
            if (x[i / 8] >> (7 - UInt8(i % 8))) & 1 != (y[i / 8] >> (7 - UInt8(i % 8))) & 1 { break }
            expected += 1
        }
        XCTAssertEqual(a.commonPrefixLength(with: b), expected)
        XCTAssertEqual(DHTKey(0, 1, 0, 0).commonPrefixLength(with: DHTKey(0, 0, 0, 0)), 127)
        XCTAssertTrue(DHTKey(0, 1, 0, 0) < DHTKey(1, 0, 0, 0))
    }
}

final class RoutingTableTests: XCTestCase {
    let local = PrivateKey.generate().peerID

    func peers(_ n: Int) -> [PeerID] { (0..<n).map { _ in PrivateKey.generate().peerID } }
    func addr(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> [Multiaddr] { [Multiaddr(components: [.ip4([a, b, c, 1]), .tcp(4001)])] }

    /// Peers that all land in one bucket (the one for common prefix 0).
    func peersInBucket0(_ n: Int) -> [PeerID] {
        let lk = DHTKey(peer: local)
        var out: [PeerID] = []
        while out.count < n {
            let p = PrivateKey.generate().peerID
            if lk.commonPrefixLength(with: DHTKey(peer: p)) == 0 { out.append(p) }
        }
        return out
    }

    func testBucketFillsThenAsksForLivenessCheckAndReplaces() {
        var config = RoutingTable.Configuration()
        config.maxPerGroupPerBucket = nil
        config.maxPerGroupPerTable = nil
        var t = RoutingTable(local: local, configuration: config)
        let ps = peersInBucket0(22)
        for (i, p) in ps.prefix(20).enumerated() { XCTAssertEqual(t.update(p, addresses: addr(1, 1, UInt8(i))), .added) }
        XCTAssertEqual(t.update(ps[20], addresses: addr(2, 2, 2)), .pendingLivenessCheck(leastRecentlySeen: ps[0]))
        // The oldest is alive: it stays (now most recent) and the candidate waits.
        t.livenessChecked(ps[0], alive: true)
        XCTAssertTrue(t.contains(ps[0]))
        XCTAssertFalse(t.contains(ps[20]))
        XCTAssertEqual(t.update(ps[21], addresses: addr(3, 3, 3)), .pendingLivenessCheck(leastRecentlySeen: ps[1]))
        // The next oldest is dead: it is evicted and the most recent replacement takes its place.
        XCTAssertEqual(t.livenessChecked(ps[1], alive: false), ps[21])
        XCTAssertFalse(t.contains(ps[1]))
        XCTAssertTrue(t.contains(ps[21]))
        XCTAssertEqual(t.count, 20)
        XCTAssertEqual(t.update(local, addresses: []), .rejectedSelf)
    }

    func testDiversityLimits() {
        var t = RoutingTable(local: local)
        let ps = peersInBucket0(3)
        XCTAssertEqual(t.update(ps[0], addresses: addr(9, 9, 9)), .added)
        XCTAssertEqual(t.update(ps[1], addresses: addr(9, 9, 9)), .added)
        XCTAssertEqual(t.update(ps[2], addresses: addr(9, 9, 9)), .rejectedDiversity, "3rd peer of one /24 in a bucket")
        // Table-wide: at most 10 of one /24.
        var added = 2
        for p in peers(400) where added < 12 {
            if t.update(p, addresses: addr(9, 9, 9)) == .added { added += 1 }
        }
        XCTAssertEqual(added, 10)
        XCTAssertEqual(t.allEntries.filter { $0.addresses == self.addr(9, 9, 9) }.count, 10)
    }

    /// The table-wide count per /24 is kept as entries come and go: a removal or a change of
    /// address makes room for another peer of that /24, and a peer moving into a full /24 is
    /// counted there.
    func testTableWideDiversityCountFollowsRemovalsAndAddressChanges() {
        var t = RoutingTable(local: local)
        var inGroup: [PeerID] = []
        var rest = peers(600)[...]
        while inGroup.count < 10, let p = rest.popFirst() {
            if t.update(p, addresses: addr(9, 9, 9)) == .added { inGroup.append(p) }
        }
        XCTAssertEqual(inGroup.count, 10)
        // An 11th, in a bucket holding none of the ten (so the per-bucket limit is not what
        // refuses it), is refused by the table-wide limit.
        func bucket(_ p: PeerID) -> Int { DHTKey(peer: local).commonPrefixLength(with: DHTKey(peer: p)) }
        let used = Set(inGroup.map(bucket))
        let refused = rest.first { !used.contains(bucket($0)) }
        let candidate = try! XCTUnwrap(refused)
        XCTAssertEqual(t.update(candidate, addresses: addr(9, 9, 9)), .rejectedDiversity)
        // One of the ten leaves: the candidate gets in.
        t.remove(inGroup[0])
        XCTAssertEqual(t.update(candidate, addresses: addr(9, 9, 9)), .added)
        XCTAssertEqual(t.update(inGroup[0], addresses: addr(9, 9, 9)), .rejectedDiversity)
        // One moves to another /24: room again.
        XCTAssertEqual(t.update(inGroup[1], addresses: addr(8, 8, 8)), .updated)
        XCTAssertEqual(t.entry(inGroup[1])?.addresses, addr(8, 8, 8))
        XCTAssertEqual(t.update(inGroup[0], addresses: addr(9, 9, 9)), .added)
        XCTAssertEqual(t.allEntries.filter { $0.addresses == self.addr(9, 9, 9) }.count, 10)
        XCTAssertEqual(t.count, t.allEntries.count)
    }

    /// A demoted peer (a lookup gave up on it) comes after every responsive peer, is the next
    /// one checked when its bucket is full, and is responsive again once heard from.
    func testDemotedPeersComeLastAndAreCheckedFirst() {
        var config = RoutingTable.Configuration()
        config.maxPerGroupPerBucket = nil
        config.maxPerGroupPerTable = nil
        var t = RoutingTable(local: local, configuration: config)
        let ps = peersInBucket0(21)
        for p in ps.prefix(20) { XCTAssertEqual(t.update(p, addresses: []), .added) }
        let target = DHTKey(peer: ps[7])
        XCTAssertEqual(t.closest(to: target, count: 1).map(\.peer), [ps[7]])
        t.demote(ps[7])
        XCTAssertEqual(t.entry(ps[7])?.unresponsive, true)
        XCTAssertEqual(t.closest(to: target, count: 20).last?.peer, ps[7], "last however close")
        XCTAssertFalse(t.closest(to: target, count: 19).contains { $0.peer == ps[7] })
        // The bucket is full: the demoted peer is the one whose liveness is checked.
        XCTAssertEqual(t.update(ps[20], addresses: []), .pendingLivenessCheck(leastRecentlySeen: ps[7]))
        // Heard from again: responsive, and closest again.
        XCTAssertEqual(t.update(ps[7], addresses: []), .updated)
        XCTAssertEqual(t.entry(ps[7])?.unresponsive, false)
        XCTAssertEqual(t.closest(to: target, count: 1).map(\.peer), [ps[7]])
    }

    func testClosestMatchesBruteForce() {
        var config = RoutingTable.Configuration()
        config.maxPerGroupPerTable = nil
        config.maxPerGroupPerBucket = nil
        var t = RoutingTable(local: local, configuration: config)
        for p in peers(300) { _ = t.update(p, addresses: []) }
        let target = DHTKey(hashing: [42])
        let expected = t.allEntries.map(\.peer).sorted { DHTKey(peer: $0).distance(to: target) < DHTKey(peer: $1).distance(to: target) }
        XCTAssertEqual(t.closest(to: target, count: 20).map(\.peer), Array(expected.prefix(20)))
    }
}

final class LookupTests: XCTestCase {
    /// A static network where each peer knows the 8 peers closest to itself; lookups must
    /// converge on the target through it.
    func testConvergesWithAlphaRequestsInFlight() {
        let all = (0..<300).map { _ in PrivateKey.generate().peerID }
        func neighbours(of p: PeerID, toward t: DHTKey) -> [(PeerID, [Multiaddr])] {
            all.filter { $0 != p }.sorted { DHTKey(peer: $0).distance(to: t) < DHTKey(peer: $1).distance(to: t) }
                .prefix(20).map { ($0, []) }
        }
        let target = all[123]
        let t = DHTKey(peer: target)
        var lookup = Lookup(target: t, seeds: all.prefix(3).map { ($0, []) })
        var pending = lookup.start(now: Date())
        var maxInFlight = 0
        var rounds = 0
        while !lookup.isFinished, rounds < 1000 {
            rounds += 1
            maxInFlight = max(maxInFlight, lookup.inFlightCount)
            guard let a = pending.first else { break }
            pending.removeFirst()
            if case .query(let p, _) = a { pending += lookup.received(from: p, closer: neighbours(of: p, toward: t)) }
        }
        XCTAssertTrue(lookup.isFinished)
        XCTAssertLessThanOrEqual(maxInFlight, 3)
        XCTAssertEqual(lookup.closestResponded.first?.peer, target)
        XCTAssertEqual(lookup.closestResponded.count, 20)
        let expected = all.sorted { DHTKey(peer: $0).distance(to: t) < DHTKey(peer: $1).distance(to: t) }.prefix(20)
        XCTAssertEqual(lookup.closestResponded.map(\.peer), Array(expected))
    }

    /// Disjoint paths: a path whose peers only lead to each other (Sybils hiding the target)
    /// does not stop the other path from finding it, and no peer is asked by two paths. The same
    /// network with one path is led away from the target.
    func testDisjointPathsFindTheTargetPastPeersThatHideIt() {
        let honest = (0..<40).map { _ in PrivateKey.generate().peerID }
        let target = honest[17]
        let t = DHTKey(peer: target)
        // Sybils: closer to the target than every honest peer but the target itself.
        let targetDistance = DHTKey(peer: target).distance(to: t)
        var sybils: [PeerID] = []
        while sybils.count < 25 {
            let p = PrivateKey.generate().peerID
            let d = DHTKey(peer: p).distance(to: t)
            if honest.allSatisfy({ $0 == target || d < DHTKey(peer: $0).distance(to: t) }), targetDistance < d { sybils.append(p) }
        }
        let sybilSet = Set(sybils)
        func nearest(_ set: [PeerID], _ n: Int) -> [(PeerID, [Multiaddr])] {
            set.sorted { DHTKey(peer: $0).distance(to: t) < DHTKey(peer: $1).distance(to: t) }.prefix(n).map { ($0, []) }
        }
        func answer(_ p: PeerID) -> [(PeerID, [Multiaddr])] {
            // A Sybil names only Sybils; an honest peer names the honest peers nearest the target.
            sybilSet.contains(p) ? nearest(sybils, 20) : nearest(honest.filter { $0 != p }, 8)
        }
        func run(paths: Int) -> (found: Bool, askedTwice: Bool) {
            var config = Lookup.Configuration()
            config.disjointPaths = paths
            config.alpha = 1
            // The nearest seed is a Sybil, the next one honest and far from the target.
            let farHonest = honest.filter { $0 != target }.max { DHTKey(peer: $0).distance(to: t) < DHTKey(peer: $1).distance(to: t) }!
            var lookup = Lookup(target: t, seeds: [(sybils[0], []), (farHonest, [])], configuration: config, answersNeeded: 3)
            var pending = lookup.start(now: Date())
            var asked: [PeerID] = []
            while let a = pending.first, !lookup.isFinished {
                pending.removeFirst()
                guard case .query(let p, _) = a else { continue }
                asked.append(p)
                pending += lookup.received(from: p, closer: answer(p))
            }
            XCTAssertTrue(lookup.isFinished)
            let paths = Dictionary(lookup.candidates.map { ($0.peer, $0.path) }, uniquingKeysWith: { a, _ in a })
            if paths.count > 1 { XCTAssertEqual(Set(sybils.compactMap { paths[$0] }), [0], "every Sybil stays on the path that met them") }
            return (lookup.closestResponded.contains { $0.peer == target }, Set(asked).count != asked.count)
        }
        let one = run(paths: 1), two = run(paths: 2)
        XCTAssertFalse(one.found, "one path: the three closest answers are Sybils and the lookup ends there")
        XCTAssertTrue(two.found, "two disjoint paths: the honest path reaches the target")
        XCTAssertFalse(two.askedTwice)
    }

    func testSoftTimeoutFreesASlotAndALateAnswerStillCounts() {
        let seeds = (0..<6).map { _ in (PrivateKey.generate().peerID, [Multiaddr]()) }
        var lookup = Lookup(target: DHTKey(hashing: [9]), seeds: seeds)
        lookup.timeouts = Lookup.Timeouts(soft: 0.3, hard: 1)
        let t0 = Date()
        let first = lookup.start(now: t0)
        XCTAssertEqual(first.count, 3)
        XCTAssertEqual(lookup.nextDeadline(after: t0)?.timeIntervalSince(t0) ?? 0, 0.3, accuracy: 1e-6)
        // Nothing before the soft timeout.
        XCTAssertEqual(lookup.tick(now: t0.addingTimeInterval(0.2)).count, 0)
        // Past it, the three slow requests no longer take slots: three more go out.
        let second = lookup.tick(now: t0.addingTimeInterval(0.31))
        XCTAssertEqual(second.count, 3)
        XCTAssertEqual(lookup.inFlightCount, 6)
        let next = lookup.nextDeadline(after: t0.addingTimeInterval(0.31))
        XCTAssertEqual(next?.timeIntervalSince(t0) ?? 0, 0.61, accuracy: 1e-6, "the second three's soft timeout")
        // A late answer from a slow peer is still taken.
        guard case .query(let slow, _) = first[0] else { return XCTFail() }
        _ = lookup.received(from: slow, closer: [], now: t0.addingTimeInterval(0.5))
        XCTAssertEqual(lookup.candidates.first { $0.peer == slow }?.state, .responded)
        // The hard timeout fails the other two slow ones.
        _ = lookup.tick(now: t0.addingTimeInterval(1.01))
        XCTAssertEqual(lookup.candidates.filter { $0.state == .failed }.count, 2)
    }

    func testAFindNodeLookupEndsOnTheBetaClosestAnswers() {
        let all = (0..<40).map { _ in PrivateKey.generate().peerID }
        let t = DHTKey(hashing: [1, 2, 3])
        let sorted = all.sorted { DHTKey(peer: $0).distance(to: t) < DHTKey(peer: $1).distance(to: t) }
        var lookup = Lookup(target: t, seeds: all.map { ($0, []) }, answersNeeded: 3)
        let now = Date()
        var actions = lookup.start(now: now)
        XCTAssertEqual(actions.count, 3, "α requests to the three closest")
        for p in sorted.prefix(3) {
            actions = lookup.received(from: p, closer: [], now: now)
        }
        XCTAssertTrue(lookup.isFinished)
        XCTAssertTrue(actions.contains(.finished))
        XCTAssertEqual(lookup.closestResponded.map(\.peer), Array(sorted.prefix(3)))
        XCTAssertEqual(lookup.queriesSent, 5, "α kept in flight until the three closest answered, nothing after")
    }

    func testRoundTripEstimatorSetsBoundedTimeouts() {
        var c = Lookup.Configuration()
        c.requestTimeout = 10
        var e = RTTEstimator()
        XCTAssertEqual(e.timeouts(c), Lookup.Timeouts(soft: c.maxSoftTimeout, hard: 10), "no sample yet: patient")
        for _ in 0..<20 { e.sample(0.1) }
        let fast = e.timeouts(c)
        XCTAssertEqual(fast.soft, c.minSoftTimeout, accuracy: 1e-9, "floors")
        XCTAssertEqual(fast.hard, c.minHardTimeout, accuracy: 1e-9)
        for _ in 0..<50 { e.sample(3) }
        let slow = e.timeouts(c)
        XCTAssertEqual(slow.soft, c.maxSoftTimeout, accuracy: 1e-9, "caps")
        XCTAssertGreaterThan(slow.hard, 3)
        XCTAssertLessThanOrEqual(slow.hard, 10)
        c.adaptiveTimeouts = false
        XCTAssertEqual(e.timeouts(c), Lookup.Timeouts(soft: 10, hard: 10))
    }

    func testTimeoutsFailPeersAndFloodsAreBounded() {
        let seeds = (0..<5).map { _ in (PrivateKey.generate().peerID, [Multiaddr]()) }
        var config = Lookup.Configuration()
        config.requestTimeout = 5
        config.maxCandidates = 50
        var lookup = Lookup(target: DHTKey(hashing: [7]), seeds: seeds, configuration: config)
        let t0 = Date()
        let first = lookup.start(now: t0)
        XCTAssertEqual(first.count, 3)
        // One answers with a flood of 1000 peers: the candidate list stays bounded.
        guard case .query(let p, _) = first[0] else { return XCTFail() }
        _ = lookup.received(from: p, closer: (0..<1000).map { _ in (PrivateKey.generate().peerID, []) }, now: t0)
        XCTAssertLessThanOrEqual(lookup.candidates.count, 50)
        // Everyone else stays silent: after the timeout they are failed, and the lookup ends.
        var now = t0
        var guardCount = 0
        while !lookup.isFinished && guardCount < 100 {
            now = now.addingTimeInterval(6)
            _ = lookup.tick(now: now)
            guardCount += 1
        }
        XCTAssertTrue(lookup.isFinished)
        // Only p answered (it may itself have been pushed out of the 50 nearest by its flood).
        XCTAssertTrue(lookup.closestResponded.allSatisfy { $0.peer == p })
        XCTAssertEqual(lookup.candidates.filter { $0.state == .responded }.map(\.peer).filter { $0 != p }, [])
    }
}

final class RecordTests: XCTestCase {
    let key = PrivateKey.generate()
    let other = PrivateKey.generate()
    let now = Date()
    let v = RecordValidator()

    func presence(_ k: PrivateKey, at date: Date) -> [UInt8] {
        PeerRecord(peerID: k.peerID, seq: UInt64(date.timeIntervalSince1970 * 1e9),
                   addresses: [try! Multiaddr("/ip4/1.2.3.4/tcp/4001")]).sign(with: k).bytes
    }

    func testPresenceRecords() throws {
        let pk = RecordValidator.presenceKey(key.peerID)
        let r = try v.validate(key: pk, value: presence(key, at: now), now: now)
        guard case .presence(let rec) = r.kind else { return XCTFail() }
        XCTAssertEqual(rec.peerID, key.peerID)
        XCTAssertEqual(r.expiresAt.timeIntervalSince(now), 3600, accuracy: 1)
        XCTAssertThrowsError(try v.validate(key: pk, value: presence(other, at: now), now: now)) {
            XCTAssertEqual($0 as? RecordError, .signerMismatch)
        }
        XCTAssertThrowsError(try v.validate(key: pk, value: presence(key, at: now.addingTimeInterval(-3700)), now: now)) {
            XCTAssertEqual($0 as? RecordError, .expired)
        }
        XCTAssertThrowsError(try v.validate(key: pk, value: presence(key, at: now.addingTimeInterval(3600)), now: now)) {
            XCTAssertEqual($0 as? RecordError, .fromTheFuture)
        }
        var forged = presence(key, at: now)
        forged[forged.count - 3] ^= 1
        XCTAssertThrowsError(try v.validate(key: pk, value: forged, now: now))
    }

    func testApplicationRecords() throws {
        let (k, env) = RecordValidator.signApplicationRecord(namespace: "notes", value: Array("hello".utf8), seq: 5,
                                                             expires: now.addingTimeInterval(3600), key: key)
        XCTAssertEqual(String(decoding: k, as: UTF8.self), "/notes/\(key.peerID)")
        let r = try v.validate(key: k, value: env, now: now)
        XCTAssertEqual(r.kind, .application(namespace: "notes", signer: key.peerID, value: Array("hello".utf8)))
        XCTAssertEqual(r.seq, 5)
        // Moved to another namespace, or to another peer's key: refused.
        XCTAssertThrowsError(try v.validate(key: RecordValidator.appKey(namespace: "other", peer: key.peerID), value: env, now: now)) {
            XCTAssertEqual($0 as? RecordError, .keyMismatch)
        }
        XCTAssertThrowsError(try v.validate(key: RecordValidator.appKey(namespace: "notes", peer: other.peerID), value: env, now: now)) {
            XCTAssertEqual($0 as? RecordError, .signerMismatch)
        }
        let (_, expired) = RecordValidator.signApplicationRecord(namespace: "notes", value: [1], seq: 6, expires: now.addingTimeInterval(-1), key: key)
        XCTAssertThrowsError(try v.validate(key: k, value: expired, now: now)) { XCTAssertEqual($0 as? RecordError, .expired) }
        let (_, tooLong) = RecordValidator.signApplicationRecord(namespace: "notes", value: [1], seq: 6, expires: now.addingTimeInterval(30 * 86400), key: key)
        XCTAssertThrowsError(try v.validate(key: k, value: tooLong, now: now)) { XCTAssertEqual($0 as? RecordError, .lifetimeTooLong) }
        // Opaque bytes under a Cairn-signed key are refused.
        XCTAssertThrowsError(try v.validate(key: k, value: Array("not an envelope".utf8), now: now))
        // Higher seq wins, equal or lower never replaces.
        let (_, newer) = RecordValidator.signApplicationRecord(namespace: "notes", value: [2], seq: 6, expires: now.addingTimeInterval(3600), key: key)
        let r6 = try v.validate(key: k, value: newer, now: now)
        XCTAssertTrue(v.shouldReplace(existing: r, with: r6))
        XCTAssertFalse(v.shouldReplace(existing: r6, with: r))
        XCTAssertFalse(v.shouldReplace(existing: r6, with: r6))
    }

    func testLimitsAndOpaquePolicy() throws {
        XCTAssertThrowsError(try v.validate(key: [UInt8](repeating: 0x61, count: 257), value: [1], now: now)) {
            XCTAssertEqual($0 as? RecordError, .keyTooLong(257))
        }
        XCTAssertThrowsError(try v.validate(key: Array("/x/y".utf8), value: [UInt8](repeating: 0, count: 10 * 1024 + 1), now: now)) {
            XCTAssertEqual($0 as? RecordError, .valueTooLarge(10 * 1024 + 1))
        }
        let opaque = try v.validate(key: Array("/test/key1".utf8), value: [1, 2, 3], now: now)
        XCTAssertEqual(opaque.kind, .opaque)
        var strict = RecordValidator()
        strict.opaquePolicy = .reject
        XCTAssertThrowsError(try strict.validate(key: Array("/test/key1".utf8), value: [1], now: now)) {
            XCTAssertEqual($0 as? RecordError, .namespaceRejected("test"))
        }
        // /ipns/<peer> is another system's namespace: opaque, not a Cairn signed record.
        XCTAssertEqual(try v.validate(key: Array("/ipns/\(key.peerID)".utf8), value: [9], now: now).kind, .opaque)
        XCTAssertThrowsError(try v.validate(key: Array("/cairn/whatever".utf8), value: [1], now: now))
    }
}

final class KadMessageTests: XCTestCase {
    func testRoundTripAndLimits() throws {
        let peers = (0..<3).map { _ in KadPeer(id: PrivateKey.generate().peerID, addresses: [try! Multiaddr("/ip4/1.2.3.4/tcp/1")]) }
        let m = KadMessage(kind: .getValue, key: Array("/a/b".utf8), recordValue: [1, 2], closerPeers: peers)
        XCTAssertEqual(try KadMessage.decode(m.encode()), m)
        let many = (0..<21).map { _ in KadPeer(id: PrivateKey.generate().peerID, addresses: []) }
        XCTAssertThrowsError(try KadMessage.decode(KadMessage(kind: .findNode, closerPeers: many).encode())) {
            XCTAssertEqual($0 as? KadMessageError, .tooManyPeers("closer peers", 21))
        }
        XCTAssertThrowsError(try KadMessage.decode(KadMessage(kind: .putValue, key: [1], recordValue: [UInt8](repeating: 0, count: 10241)).encode())) {
            XCTAssertEqual($0 as? KadMessageError, .recordTooLarge(10241))
        }
        XCTAssertThrowsError(try KadMessage.decode(KadMessage(kind: .getValue, key: [UInt8](repeating: 1, count: 300)).encode())) {
            XCTAssertEqual($0 as? KadMessageError, .keyTooLong(300))
        }
        XCTAssertThrowsError(try KadMessage.decode([0xff, 0xff, 0xff]))
        XCTAssertThrowsError(try KadMessage.decode([UInt8](repeating: 0, count: 65 * 1024))) {
            XCTAssertEqual($0 as? KadMessageError, .tooLarge(65 * 1024))
        }
    }
}

final class KademliaBehaviourTests: XCTestCase {
    /// FIND_NODE as go-libp2p-kad-dht answers it: our own ID gives us (a lone server is not
    /// "a peer that returns no closest peers"); a connected peer outside the table is added.
    func testFindNodeAnswersWithItselfAndWithAConnectedTarget() throws {
        let me = PrivateKey.generate(), asker = PrivateKey.generate(), client = PrivateKey.generate()
        var b = KademliaBehaviour(local: me.peerID, store: InMemoryDHTStore())
        b.localAddresses = [try Multiaddr("/ip4/198.51.100.1/tcp/4001")]
        let own = try XCTUnwrap(b.tableReply(to: KadMessage(kind: .findNode, key: me.peerID.bytes), from: asker.peerID))
        XCTAssertEqual(own.closerPeers.map(\.id), [me.peerID])
        XCTAssertEqual(own.closerPeers.first?.addresses, b.localAddresses)
        let addr = try Multiaddr("/ip4/198.51.100.2/tcp/4001")
        let other = try XCTUnwrap(b.tableReply(to: KadMessage(kind: .findNode, key: client.peerID.bytes), from: asker.peerID) { id in
            id == client.peerID ? [addr] : nil
        })
        XCTAssertEqual(other.closerPeers.map(\.id), [client.peerID])
        XCTAssertEqual(other.closerPeers.first?.addresses, [addr])
        // Never the requester to itself.
        let selfAsk = try XCTUnwrap(b.tableReply(to: KadMessage(kind: .findNode, key: asker.peerID.bytes), from: asker.peerID) { _ in [addr] })
        XCTAssertTrue(selfAsk.closerPeers.isEmpty)
    }

    /// A request a lookup gives up on (hard timeout) demotes its peer in the routing table; the
    /// peers that answered stay responsive; the demoted one is first again once it answers.
    func testALookupDemotesThePeersItGaveUpOn() throws {
        let t0 = Date()
        var b = KademliaBehaviour(local: PrivateKey.generate().peerID, store: InMemoryDHTStore(), now: t0)
        let peers = (0..<3).map { _ in PrivateKey.generate().peerID }
        for (i, p) in peers.enumerated() { _ = b.peerSeen(p, addresses: [Multiaddr(components: [.ip4([198, 51, UInt8(i), 1]), .tcp(4001)])], now: t0) }
        let target = PrivateKey.generate().peerID
        let (q, actions) = b.findNode(target, now: t0)
        let asked = actions.compactMap { a -> PeerID? in if case .request(_, let p, _, _) = a { return p }; return nil }
        XCTAssertEqual(Set(asked), Set(peers))
        // Two answer (with nobody closer); the third never does.
        for p in asked.prefix(2) { _ = b.responseReceived(q, from: p, response: KadMessage(kind: .findNode, key: target.bytes), now: t0.addingTimeInterval(0.05)) }
        XCTAssertNotNil(b.nextDeadline(after: t0))
        _ = b.tick(now: t0.addingTimeInterval(0.5))
        XCTAssertEqual(b.routingTable.entry(asked[2])?.unresponsive, false, "not yet past the hard timeout")
        _ = b.tick(now: t0.addingTimeInterval(11))
        XCTAssertEqual(b.routingTable.entry(asked[2])?.unresponsive, true)
        XCTAssertEqual(b.routingTable.entry(asked[0])?.unresponsive, false)
        XCTAssertEqual(b.routingTable.closest(to: DHTKey(peer: asked[2]), count: 3).last?.peer, asked[2])
        _ = b.peerSeen(asked[2], addresses: [], now: t0.addingTimeInterval(12))
        XCTAssertEqual(b.routingTable.closest(to: DHTKey(peer: asked[2]), count: 1).first?.peer, asked[2])
    }

    /// Joining: the bucket refreshes wait for the self-lookup, so they start from the table it
    /// filled instead of all at once at the one peer known.
    func testBootstrapRefreshesBucketsOnlyAfterItsSelfLookup() throws {
        let t0 = Date()
        let me = PrivateKey.generate().peerID
        var b = KademliaBehaviour(local: me, store: InMemoryDHTStore(), now: t0)
        let bootstrapPeer = PrivateKey.generate().peerID
        let others = (0..<12).map { _ in PrivateKey.generate().peerID }
        func addr(_ i: Int) -> [Multiaddr] { [Multiaddr(components: [.ip4([198, 51, 100, UInt8(i)]), .tcp(4001)])] }
        _ = b.peerSeen(bootstrapPeer, addresses: addr(200), now: t0)
        var pending = b.bootstrap(now: t0).compactMap { a -> (QueryID, PeerID)? in
            if case .request(let q, let p, _, _) = a { return (q, p) }; return nil
        }
        XCTAssertEqual(pending.map(\.1), [bootstrapPeer], "only the self-lookup, to the one peer known")
        let selfLookup = pending[0].0
        var refreshRequests: [PeerID] = []
        var now = t0
        while !pending.isEmpty {
            let (q, p) = pending.removeFirst()
            now = now.addingTimeInterval(0.01)
            // The bootstrap peer knows the others; they know nobody new.
            let closer = p == bootstrapPeer ? others.enumerated().map { KadPeer(id: $1, addresses: addr($0)) } : []
            for a in b.responseReceived(q, from: p, response: KadMessage(kind: .findNode, key: me.bytes, closerPeers: closer), now: now) {
                guard case .request(let q2, let p2, _, _) = a else { continue }
                if q2 != selfLookup {
                    XCTAssertNil(b.queries[selfLookup], "a refresh started while the self-lookup ran")
                    refreshRequests.append(p2)
                } else {
                    pending.append((q2, p2))
                }
            }
        }
        XCTAssertNil(b.queries[selfLookup])
        XCTAssertGreaterThan(refreshRequests.count, 0, "the refreshes start once the self-lookup is done")
        XCTAssertGreaterThan(Set(refreshRequests).count, 1, "spread over the table, not all to the bootstrap peer")
    }

    func testServerRefusesRollbackAndForeignProviders() throws {
        let me = PrivateKey.generate(), writer = PrivateKey.generate(), stranger = PrivateKey.generate()
        var b = KademliaBehaviour(local: me.peerID, store: InMemoryDHTStore())
        let now = Date()
        let (k, v6) = RecordValidator.signApplicationRecord(namespace: "n", value: [6], seq: 6, expires: now.addingTimeInterval(600), key: writer)
        let (_, v5) = RecordValidator.signApplicationRecord(namespace: "n", value: [5], seq: 5, expires: now.addingTimeInterval(600), key: writer)
        XCTAssertEqual(b.handleRequest(KadMessage(kind: .putValue, key: k, recordValue: v6), from: writer.peerID, addresses: [], now: now),
                       .respond(KadMessage(kind: .putValue, key: k, recordValue: v6)))
        guard case .reject(let why) = b.handleRequest(KadMessage(kind: .putValue, key: k, recordValue: v5), from: stranger.peerID, addresses: [], now: now) else {
            return XCTFail("a lower seq must be refused")
        }
        XCTAssertTrue(why.contains("seq"), why)
        guard case .respond(let got) = b.handleRequest(KadMessage(kind: .getValue, key: k), from: stranger.peerID, addresses: [], now: now) else { return XCTFail() }
        XCTAssertEqual(got.recordValue, v6)
        // ADD_PROVIDER naming someone other than the sender is refused.
        let msg = KadMessage(kind: .addProvider, key: [1, 2, 3], providerPeers: [KadPeer(id: writer.peerID, addresses: [])])
        guard case .reject = b.handleRequest(msg, from: stranger.peerID, addresses: [], now: now) else { return XCTFail() }
        XCTAssertEqual(b.handleRequest(msg, from: writer.peerID, addresses: [], now: now), .noResponse)
        // A client does not serve.
        b.configuration.mode = .client
        guard case .reject = b.handleRequest(KadMessage(kind: .ping), from: writer.peerID, addresses: [], now: now) else { return XCTFail() }
    }
}

/// The unchanged behaviour over the simulated network.
final class DHTSimulationTests: XCTestCase {
    func testLookupsPutGetAndProvidersAcrossASimulatedNetwork() throws {
        var config = SimNetwork.Configuration()
        config.seed = 7
        let net = SimNetwork(configuration: config)
        net.build(count: 120)
        for _ in 0..<20 {
            let from = net.randomIndex(), to = net.randomIndex()
            let target = net.peerID(to)
            let (result, stats) = try XCTUnwrap(net.runQuery(on: from) { b, now in b.findNode(target, now: now) })
            guard case .closestPeers(let peers) = result else { return XCTFail() }
            if from != to { XCTAssertEqual(peers.first?.id, target) }
            XCTAssertLessThanOrEqual(stats.hops, 6)
        }
        // A record put from one node is read from another, and a newer one replaces it.
        let writer = PrivateKey.generate()
        let (key, v1) = RecordValidator.signApplicationRecord(namespace: "sim", value: [1], seq: 1, expires: net.now.addingTimeInterval(3600), key: writer)
        let (put, _) = try XCTUnwrap(try net.runQuery(on: 3) { b, now in try b.putValue(key: key, value: v1, now: now) })
        guard case .stored(let acks, let attempted) = put else { return XCTFail() }
        XCTAssertEqual(attempted, 20)
        XCTAssertGreaterThanOrEqual(acks, 18)
        let (got, _) = try XCTUnwrap(net.runQuery(on: 77) { b, now in b.getValue(key, now: now) })
        guard case .value(let rec) = got else { return XCTFail() }
        XCTAssertEqual(rec?.value, v1)
        // Providers.
        let cid = Array("some-content".utf8)
        _ = try XCTUnwrap(try net.runQuery(on: 5) { b, now in try b.addProvider(key: cid, now: now) })
        let (prov, _) = try XCTUnwrap(net.runQuery(on: 99) { b, now in b.getProviders(cid, now: now) })
        guard case .providers(let ps) = prov else { return XCTFail() }
        XCTAssertEqual(ps.map(\.provider), [net.peerID(5)])
    }

    func testLookupsSurviveChurn() throws {
        var config = SimNetwork.Configuration()
        config.seed = 11
        config.kademlia.lookup.requestTimeout = 2
        let net = SimNetwork(configuration: config)
        net.build(count: 120)
        _ = net.churn(fraction: 0.3)
        var ok = 0
        for _ in 0..<30 {
            let from = net.randomIndex()
            var to = net.randomIndex()
            while to == from { to = net.randomIndex() }
            let target = net.peerID(to)
            let (result, _) = try XCTUnwrap(net.runQuery(on: from) { b, now in b.findNode(target, now: now) })
            if case .closestPeers(let peers) = result, peers.first?.id == target { ok += 1 }
        }
        XCTAssertGreaterThanOrEqual(ok, 27, "at least 90% of lookups find an online target with 30% of nodes gone")
    }
}

extension DHTSimulationTests {
    /// With 30% of the nodes silently gone, lookups that stop waiting on slow requests (soft
    /// timeouts from measured round trips) and end on the β closest answers finish in a fraction
    /// of the time the fixed 10 s timeouts took, with fewer messages and the same success.
    func testAdaptiveTimeoutsAndBetaTerminationMakeLookupsUnderChurnFast() throws {
        func run(adaptive: Bool, beta: Int) throws -> (ok: Int, medianSeconds: Double, messages: Double) {
            var config = SimNetwork.Configuration()
            config.seed = 5
            config.kademlia.lookup.adaptiveTimeouts = adaptive
            config.kademlia.lookup.beta = beta
            let net = SimNetwork(configuration: config)
            net.build(count: 150)
            _ = net.churn(fraction: 0.3)
            var ok = 0
            var times: [Double] = []
            var messages = 0
            for _ in 0..<40 {
                let from = net.randomIndex()
                var to = net.randomIndex()
                while to == from { to = net.randomIndex() }
                let target = net.peerID(to)
                let (result, stats) = try XCTUnwrap(net.runQuery(on: from) { b, now in b.findNode(target, now: now) })
                if case .closestPeers(let peers) = result, peers.first?.id == target { ok += 1 }
                times.append(stats.finished!.timeIntervalSince(stats.started))
                messages += stats.requests
            }
            return (ok, times.sorted()[times.count / 2], Double(messages) / 40)
        }
        let before = try run(adaptive: false, beta: 20)
        let after = try run(adaptive: true, beta: 3)
        XCTAssertGreaterThanOrEqual(after.ok, 39, "\(after)")
        XCTAssertGreaterThanOrEqual(before.ok, 39, "\(before)")
        XCTAssertGreaterThan(before.medianSeconds, 5, "fixed timeouts wait out dead peers: \(before)")
        XCTAssertLessThan(after.medianSeconds, 1, "\(after)")
        XCTAssertLessThan(after.messages, before.messages)
    }

    /// Same seed, same run: identities, latencies, churn and bucket-refresh keys all come from it.
    func testASimulationRepeatsExactlyForOneSeed() throws {
        func run(seed: UInt64) throws -> [String] {
            var config = SimNetwork.Configuration()
            config.seed = seed
            config.kademlia.lookup.requestTimeout = 2
            let net = SimNetwork(configuration: config)
            net.build(count: 60)
            let gone = net.churn(fraction: 0.2)
            var trace = ["gone \(gone)"]
            for _ in 0..<10 {
                let from = net.randomIndex(), to = net.randomIndex()
                let target = net.peerID(to)
                let (result, stats) = try XCTUnwrap(net.runQuery(on: from) { b, now in b.findNode(target, now: now) })
                guard case .closestPeers(let peers) = result else { return ["not closest peers"] }
                trace.append("\(from)->\(target): \(peers.map(\.id.description)) \(stats.requests) \(stats.hops) \(net.now.timeIntervalSince1970)")
            }
            return trace
        }
        let first = try run(seed: 42)
        XCTAssertEqual(first, try run(seed: 42))
        XCTAssertNotEqual(first, try run(seed: 43))
    }
}

final class PeerIDStrictnessTests: XCTestCase {
    func testIdentityMultihashMustHoldAPublicKey() {
        // base58 "11" is [0x00, 0x00]: an empty identity multihash. It names no key.
        XCTAssertThrowsError(try PeerID(string: "11"))
        XCTAssertThrowsError(try PeerID(bytes: [0x00, 0x03, 0x01, 0x02, 0x03]))
        // A text key ending in such a string is therefore an opaque key, not a signed-record key.
        XCTAssertEqual(try RecordValidator().validate(key: Array("/durable/11".utf8), value: [1], now: Date()).kind, .opaque)
        XCTAssertNoThrow(try PeerID(bytes: PrivateKey.generate().peerID.bytes))
    }
}

final class EvictionPolicyTests: XCTestCase {
    func testOnlyUnreachablePeersAreEvicted() {
        let me = PrivateKey.generate().peerID
        var b = KademliaBehaviour(local: me, store: InMemoryDHTStore())
        let a = PrivateKey.generate().peerID, c = PrivateKey.generate().peerID
        let now = Date()
        _ = b.peerSeen(a, addresses: [], now: now)
        _ = b.peerSeen(c, addresses: [], now: now)
        let (q, actions) = b.findNode(PrivateKey.generate().peerID, now: now)
        XCTAssertEqual(actions.count, 2)
        _ = b.requestFailed(q, peer: a, unreachable: false, now: now)
        XCTAssertTrue(b.routingTable.contains(a), "a refused request keeps the peer")
        _ = b.requestFailed(q, peer: c, unreachable: true, now: now)
        XCTAssertFalse(b.routingTable.contains(c), "an unreachable peer is dropped")
    }
}
