import CairnCore
import CairnCrypto
import CairnProto
import Foundation
import SwiftProtobuf

/// Some addresses for seeds.
let seedAddrs: [Multiaddr] = [
    try! Multiaddr("/ip4/1.2.3.4/tcp/4001"), try! Multiaddr("/ip6/2001:db8::1/udp/4001/quic-v1"),
    try! Multiaddr("/dns4/example.com/tcp/443/wss/p2p/\(Fixed.peerB)"), try! Multiaddr("/ip4/10.0.0.1/tcp/1/p2p/\(Fixed.peerA)/p2p-circuit"),
    try! Multiaddr("/unix/tmp/p2pd.sock"), try! Multiaddr("/ip6zone/eth0/ip6/fe80::1/tcp/80/ws"), try! Multiaddr("/dnsaddr/bootstrap.libp2p.io"),
]

// MARK: identify

let identifyTarget = FuzzTarget(
    name: "identify", summary: "identify messages and streams (keys, addresses, signed peer records), round trip",
    maxLength: IdentifyInfo.maxMessageSize + 16,
    run: { b in
        if let info = try? IdentifyInfo.decode(b, from: Fixed.peerB) {
            check(info.listenAddrs.count <= IdentifyInfo.maxListenAddrs, "too many listen addresses kept")
            check(info.protocols.count <= IdentifyInfo.maxProtocols, "too many protocols kept")
            if let r = info.signedPeerRecord { check(r.peerID == Fixed.peerB, "kept a record for another peer") }
            let again = info.encode(signedRecord: info.signedPeerRecordEnvelope)
            if again.count <= IdentifyInfo.maxMessageSize, reencodable(info.listenAddrs + (info.observedAddr.map { [$0] } ?? [])) {
                do {
                    let info2 = try IdentifyInfo.decode(again, from: Fixed.peerB)
                    check(info2 == info, "identify round trip changed the message")
                } catch { check(false, "re-encoded identify does not decode: \(error)") }
            }
        }
        _ = try? IdentifyInfo.decodeStream(b, from: Fixed.peerB)
    },
    seeds: { _ in
        let record = PeerRecord(peerID: Fixed.peerB, seq: 7, addresses: Array(seedAddrs.prefix(3))).sign(with: Fixed.keyB)
        let full = IdentifyInfo(protocolVersion: IdentifyInfo.defaultProtocolVersion, agentVersion: "cairn/0.1", publicKey: Fixed.keyB.publicKey,
                                listenAddrs: seedAddrs, observedAddr: seedAddrs[0],
                                protocols: ["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/ipfs/kad/1.0.0", "/libp2p/circuit/relay/0.2.0/hop"])
        let other = PeerRecord(peerID: Fixed.peerA, seq: 1, addresses: []).sign(with: Fixed.keyA)
        let m1 = full.encode(signedRecord: record)
        let m2 = IdentifyInfo(agentVersion: "x", protocols: ["/a"]).encode(signedRecord: nil)
        return [
            m1, m2, full.encode(signedRecord: nil), full.encode(signedRecord: other),
            IdentifyInfo(publicKey: Fixed.keyA.publicKey).encode(signedRecord: nil),
            LengthPrefixedDecoder.frame(m1) + LengthPrefixedDecoder.frame(m2),
            LengthPrefixedDecoder.frame(m2),
        ]
    })

// MARK: kad messages

let kadMessageTarget = FuzzTarget(
    name: "kad-message", summary: "kad-dht RPC messages (limits, peers, records), round trip",
    maxLength: KadMessage.maxMessageSize,
    run: { b in
        guard let m = try? KadMessage.decode(b) else { return }
        check(m.key.count <= KadMessage.maxKeyLength && (m.recordValue?.count ?? 0) <= KadMessage.maxRecordSize, "limits not applied")
        check(m.closerPeers.count <= KadMessage.maxPeers && m.providerPeers.count <= KadMessage.maxPeers, "too many peers kept")
        let peers = m.closerPeers + m.providerPeers
        check(peers.allSatisfy { $0.addresses.count <= KadMessage.maxAddressesPerPeer }, "too many addresses kept")
        let again = m.encode()
        if again.count <= KadMessage.maxMessageSize, reencodable(peers.flatMap { $0.addresses }) {
            do { let again_ = try KadMessage.decode(again); check(again_ == m, "kad round trip changed the message") } catch {
                check(false, "re-encoded kad message does not decode: \(error)")
            }
        }
    },
    seeds: { _ in
        let peers = [KadPeer(id: Fixed.peerA, addresses: Array(seedAddrs.prefix(2)), connected: true), KadPeer(id: Fixed.peerB, addresses: seedAddrs)]
        let (appKey, appEnv) = RecordValidator.signApplicationRecord(namespace: "chat", value: Array("hi".utf8), seq: 1,
                                                                     expires: Fixed.now.addingTimeInterval(3600), key: Fixed.keyB)
        return [
            KadMessage(kind: .findNode, key: Fixed.peerA.bytes).encode(),
            KadMessage(kind: .findNode, key: Fixed.peerA.bytes, closerPeers: peers).encode(),
            KadMessage(kind: .getValue, key: appKey, recordValue: appEnv, closerPeers: peers).encode(),
            KadMessage(kind: .putValue, key: Array("/v/x".utf8), recordValue: Array("value".utf8)).encode(),
            KadMessage(kind: .getProviders, key: Array(SHA256.hash([1, 2, 3])), providerPeers: peers).encode(),
            KadMessage(kind: .addProvider, key: [0x12, 0x20] + SHA256.hash([4]), providerPeers: [peers[0]]).encode(),
            KadMessage(kind: .ping).encode(),
        ]
    })

// MARK: kad records (RecordValidator)

/// Input: mode byte, then per mode: 0 key chunk + raw value; 1 a peer-record payload sealed by B
/// under its presence key; 2 an app-record payload sealed by B (namespace chunk); 3 an IPNS value
/// under B's /ipns key.
let kadRecordTarget = FuzzTarget(
    name: "kad-record", summary: "DHT record validation: presence, application and IPNS records, opaque keys",
    maxLength: KadMessage.maxRecordSize + KadMessage.maxKeyLength + 8,
    run: { b in
        var input = FuzzInput(b)
        let mode = input.byte()
        let key: [UInt8], value: [UInt8]
        switch mode % 4 {
        case 0:
            key = input.chunk(); value = input.rest()
        case 1:
            key = RecordValidator.presenceKey(Fixed.peerB)
            value = VerifiedEnvelope(sealing: input.rest(), payloadType: PeerRecord.payloadType, domain: PeerRecord.domain, key: Fixed.keyB).bytes
        case 2:
            let ns = String(decoding: input.chunk(), as: UTF8.self)
            key = RecordValidator.appKey(namespace: ns, peer: Fixed.peerB)
            value = VerifiedEnvelope(sealing: input.rest(), payloadType: RecordValidator.appRecordPayloadType,
                                     domain: RecordValidator.appRecordDomain, key: Fixed.keyB).bytes
        default:
            key = IPNS.key(Fixed.peerB); value = input.rest()
        }
        var validator = RecordValidator()
        let r = try? validator.validate(key: key, value: value, now: Fixed.now)
        if let r {
            check(r.key == key && r.value == value, "validated record changed its key or value")
            check(r.expiresAt > Fixed.now, "a validated record is already expired")
            check(!validator.shouldReplace(existing: r, with: r), "a record replaces itself")
            // Stored and restored later: still valid then, or expired.
            _ = try? DHTRecord.restore(key: key, value: value, receivedAt: Fixed.now, validator: validator, now: Fixed.now.addingTimeInterval(1800))
        }
        validator.opaquePolicy = .reject
        _ = try? validator.validate(key: key, value: value, now: Fixed.now)
    },
    seeds: { _ in
        let presence = PeerRecord(peerID: Fixed.peerB, seq: UInt64(Fixed.now.timeIntervalSince1970 * 1e9) - 1_000_000_000,
                                  addresses: Array(seedAddrs.prefix(2)))
        var app = Cairn_Pb_AppRecord()
        app.key = Data(RecordValidator.appKey(namespace: "chat", peer: Fixed.peerB))
        app.value = Data("hello".utf8)
        app.seq = 3
        app.expires = UInt64(Fixed.now.timeIntervalSince1970) + 3600
        let appBytes: [UInt8] = try! app.serializedBytes()
        let ipns = IPNS.create(value: Array("/ipfs/bafy".utf8), sequence: 1, validUntil: Fixed.now.addingTimeInterval(86400),
                               ttl: .seconds(3600), key: Fixed.keyB)
        let (ak, av) = RecordValidator.signApplicationRecord(namespace: "chat", value: [1], seq: 1, expires: Fixed.now.addingTimeInterval(60), key: Fixed.keyB)
        return [
            [1] + presence.encode(),
            [2] + encodeChunk(Array("chat".utf8)) + appBytes,
            [3] + ipns,
            [0] + encodeChunk(ak) + av,
            [0] + encodeChunk(Array("/v/something".utf8)) + Array("opaque".utf8),
            [0] + encodeChunk(RecordValidator.presenceKey(Fixed.peerA)) + presence.sign(with: Fixed.keyB).bytes,
            [0] + encodeChunk(Array("/cairn/x".utf8)) + [1],
            [0] + encodeChunk(IPNS.key(Fixed.peerB)) + ipns,
        ]
    })

// MARK: IPNS

/// Input: mode byte; 0 the record as received for B's name; 1 the record with its signature
/// replaced by B's valid V2 signature over its data (to reach the CBOR and validity checks).
let ipnsTarget = FuzzTarget(
    name: "ipns", summary: "IPNS records: protobuf, signature V2, DAG-CBOR fields, RFC 3339 validity",
    maxLength: IPNS.maxRecordSize + 1,
    run: { b in
        guard let mode = b.first else { return }
        var bytes = Array(b.dropFirst())
        if mode & 1 == 1 {
            guard var e = try? Ipns_Pb_IpnsEntry(serializedBytes: bytes, partial: true) else { return }
            e.signatureV2 = Data(Fixed.keyB.sign(Array("ipns-signature:".utf8) + [UInt8](e.data)))
            guard let re: [UInt8] = try? e.serializedBytes(partial: true) else { return }
            bytes = re
        }
        let name = mode & 2 == 0 ? Fixed.peerB : Fixed.peerA
        if let r = try? IPNS.verify(bytes, name: name, now: Fixed.now) {
            check(r.name == name && r.validUntil > Fixed.now, "verified record for another name or expired")
        }
    },
    seeds: { _ in
        let r1 = IPNS.create(value: Array("/ipfs/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi".utf8), sequence: 0,
                             validUntil: Fixed.now.addingTimeInterval(86400), ttl: .seconds(300), key: Fixed.keyB)
        let r2 = IPNS.create(value: [], sequence: UInt64.max, validUntil: Fixed.now.addingTimeInterval(1.5), ttl: .zero, key: Fixed.keyB)
        let r3 = IPNS.create(value: [1, 2, 3], sequence: 1 << 40, validUntil: Fixed.now.addingTimeInterval(-10), ttl: .seconds(1), key: Fixed.keyB)
        let other = IPNS.create(value: [1], sequence: 1, validUntil: Fixed.now.addingTimeInterval(100), ttl: .seconds(1), key: Fixed.keyA)
        return [[0] + r1, [1] + r1, [0] + r2, [1] + r3, [0] + other, [2] + other, [3] + r2]
    })

// MARK: signed envelopes and peer records

/// Input: mode byte; 0 an envelope as received (verified for each domain libp2p and Cairn use);
/// 1 a peer-record payload sealed by B (to reach the record decoder), with a round trip.
let envelopeTarget = FuzzTarget(
    name: "envelope", summary: "signed envelopes (any key type) and peer records, round trip",
    maxLength: UnverifiedEnvelope.maxSize + 1,
    run: { b in
        guard let mode = b.first else { return }
        let rest = Array(b.dropFirst())
        if mode & 1 == 0 {
            guard let env = try? UnverifiedEnvelope(bytes: rest) else { return }
            for (domain, type) in [(PeerRecord.domain, PeerRecord.payloadType), (ReservationVoucher.domain, ReservationVoucher.payloadType),
                                   (RecordValidator.appRecordDomain, RecordValidator.appRecordPayloadType)] {
                if let v = try? env.verify(domain: domain, expectedPayloadType: type) {
                    check(v.bytes == rest && v.payloadType == type, "verified envelope differs from its input")
                }
            }
            if let (record, v) = try? PeerRecord.open(envelopeBytes: rest) {
                check(record.peerID == v.signer, "peer record opened for another signer")
            }
        } else {
            let sealed = VerifiedEnvelope(sealing: rest, payloadType: PeerRecord.payloadType, domain: PeerRecord.domain, key: Fixed.keyB)
            guard let (record, _) = try? PeerRecord.open(envelopeBytes: sealed.bytes) else { return }
            check(record.peerID == Fixed.peerB && record.addresses.count <= PeerRecord.maxAddresses, "peer record checks")
            if reencodable(record.addresses) {
                let again = record.sign(with: Fixed.keyB)
                do { let again_ = try PeerRecord.open(envelopeBytes: again.bytes).0; check(again_ == record, "peer record round trip changed it") } catch {
                    check(false, "re-signed peer record does not open: \(error)")
                }
            }
        }
    },
    seeds: { ctx in
        let rec = PeerRecord(peerID: Fixed.peerB, seq: 42, addresses: seedAddrs)
        let voucher = ReservationVoucher.seal(peer: Fixed.peerA, expiration: 1_800_000_000, relayKey: Fixed.keyB)
        let (_, app) = RecordValidator.signApplicationRecord(namespace: "n", value: [9], seq: 1, expires: Fixed.now, key: Fixed.keyA)
        var seeds: [[UInt8]] = [
            [0] + rec.sign(with: Fixed.keyB).bytes, [0] + voucher.bytes, [0] + app,
            [0] + PeerRecord(peerID: Fixed.peerA, seq: 0, addresses: []).sign(with: Fixed.keyA).bytes,
            [1] + rec.encode(), [1] + PeerRecord(peerID: Fixed.peerB, seq: 1, addresses: []).encode(),
            [1] + PeerRecord(peerID: Fixed.peerA, seq: 1, addresses: []).encode(),
        ]
        seeds += ctx.hexBlobs("PeerRecordEnvelope").map { [0] + $0 }
        return seeds
    })

// MARK: circuit relay v2

/// Input: mode byte; 0 HopMessage, 1 StopMessage (each with a round trip), 2 a reservation voucher
/// envelope, 3 a voucher payload sealed by B.
let relayTarget = FuzzTarget(
    name: "relay", summary: "circuit relay v2 hop/stop messages (round trip) and reservation vouchers",
    maxLength: CircuitRelay.maxMessageSize + 1,
    run: { b in
        guard let mode = b.first else { return }
        let rest = Array(b.dropFirst())
        switch mode % 4 {
        case 0:
            guard let m = try? CircuitRelay.decodeHop(rest) else { return }
            var addrs: [Multiaddr] = []
            switch m {
            case .connect(let p): addrs = p.addresses
            case .status(_, let r, _): addrs = r?.addresses ?? []
            case .reserve: break
            }
            check(addrs.count <= CircuitRelay.maxAddresses, "too many relay addresses kept")
            let again = CircuitRelay.encode(m)
            if again.count <= CircuitRelay.maxMessageSize, reencodable(addrs) {
                do { let again_ = try CircuitRelay.decodeHop(again); check(again_ == m, "hop round trip changed the message") } catch {
                    check(false, "re-encoded hop message does not decode: \(error)")
                }
            }
        case 1:
            guard let m = try? CircuitRelay.decodeStop(rest) else { return }
            var addrs: [Multiaddr] = []
            if case .connect(let p, _) = m { addrs = p.addresses }
            let again = CircuitRelay.encode(m)
            if again.count <= CircuitRelay.maxMessageSize, reencodable(addrs) {
                do { let again_ = try CircuitRelay.decodeStop(again); check(again_ == m, "stop round trip changed the message") } catch {
                    check(false, "re-encoded stop message does not decode: \(error)")
                }
            }
        case 2:
            _ = try? ReservationVoucher.open(rest)
        default:
            let sealed = VerifiedEnvelope(sealing: rest, payloadType: ReservationVoucher.payloadType, domain: ReservationVoucher.domain, key: Fixed.keyB)
            if let v = try? ReservationVoucher.open(sealed.bytes) { check(v.relay == Fixed.peerB, "voucher opened for another relay") }
        }
    },
    seeds: { _ in
        let peer = CircuitRelay.Peer(id: Fixed.peerA, addresses: Array(seedAddrs.prefix(3)))
        let voucher = ReservationVoucher.seal(peer: Fixed.peerA, expiration: 1_800_000_000, relayKey: Fixed.keyB)
        var vpb = Circuit_Pb_ReservationVoucher()
        vpb.relay = Data(Fixed.peerB.bytes); vpb.peer = Data(Fixed.peerA.bytes); vpb.expiration = 1_800_000_000
        let vbytes: [UInt8] = try! vpb.serializedBytes()
        return [
            [0] + CircuitRelay.encode(CircuitRelay.HopMessage.reserve),
            [0] + CircuitRelay.encode(CircuitRelay.HopMessage.connect(peer)),
            [0] + CircuitRelay.encode(CircuitRelay.HopMessage.status(.ok, reservation: .init(expire: 1_800_000_000, addresses: seedAddrs, voucher: voucher.bytes),
                                                                     limit: .init(duration: 120, data: 1 << 17))),
            [0] + CircuitRelay.encode(CircuitRelay.HopMessage.status(.reservationRefused, reservation: nil, limit: nil)),
            [1] + CircuitRelay.encode(CircuitRelay.StopMessage.connect(peer, limit: .init(duration: 60))),
            [1] + CircuitRelay.encode(CircuitRelay.StopMessage.status(.ok)),
            [2] + voucher.bytes,
            [3] + vbytes,
        ]
    })

// MARK: AutoNAT

let autonatTarget = FuzzTarget(
    name: "autonat", summary: "AutoNAT v1 messages (round trip) and the server's dial-back decision",
    maxLength: AutoNAT.maxMessageSize,
    run: { b in
        guard let (m, skipped) = try? AutoNAT.decode(b) else { return }
        check(skipped >= 0, "negative skipped count")
        var addrs: [Multiaddr] = []
        switch m {
        case .dial(_, let a): addrs = a; check(a.count <= AutoNAT.maxAddresses, "too many addresses kept")
        case .dialResponse(_, _, let a): addrs = a.map { [$0] } ?? []
        }
        let again = AutoNAT.encode(m)
        if again.count <= AutoNAT.maxMessageSize, reencodable(addrs) {
            do { let again_ = try AutoNAT.decode(again).0; check(again_ == m, "autonat round trip changed the message") } catch {
                check(false, "re-encoded autonat message does not decode: \(error)")
            }
        }
        if case .dial(let peer, _) = m {
            for ip: [UInt8] in [[8, 8, 8, 8], [1, 2, 3, 4], [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]] {
                var policy = AutoNAT.ServerPolicy()
                policy.allowPrivateAddresses = ip == [1, 2, 3, 4]
                if case .dial(let targets) = policy.decide(request: m, requester: peer, observedIP: ip, now: Fixed.now) {
                    check(!targets.isEmpty && targets.allSatisfy { $0.tcpEndpoint?.ip == ip }, "dial-back to a third party: \(targets)")
                }
            }
        }
    },
    seeds: { _ in
        [
            AutoNAT.encode(.dial(peer: Fixed.peerA, addresses: [try! Multiaddr("/ip4/8.8.8.8/tcp/4001"), try! Multiaddr("/ip4/1.2.3.4/tcp/1")] + seedAddrs)),
            AutoNAT.encode(.dial(peer: Fixed.peerB, addresses: [])),
            AutoNAT.encode(.dialResponse(status: .ok, text: "ok", address: seedAddrs[0])),
            AutoNAT.encode(.dialResponse(status: .dialError, text: nil, address: nil)),
            AutoNAT.encode(.dialResponse(status: .badRequest, text: "bad", address: nil)),
        ]
    })

// MARK: DCUtR

let dcutrTarget = FuzzTarget(
    name: "dcutr", summary: "DCUtR hole-punch messages (round trip), address filter, both state machines",
    maxLength: DCUtR.maxMessageSize,
    run: { b in
        guard let (m, _) = try? DCUtR.decode(b) else { return }
        if case .connect(let addrs) = m {
            check(addrs.count <= DCUtR.maxAddresses, "too many addresses kept")
            for allow in [false, true] {
                let (kept, refused) = DCUtR.dialable(addrs, allowPrivate: allow)
                check(kept.count <= DCUtR.maxDialsPerAttempt && refused >= 0, "dialable limits")
            }
            let again = DCUtR.encode(m)
            if again.count <= DCUtR.maxMessageSize, reencodable(addrs) {
                do { let again_ = try DCUtR.decode(again).0; check(again_ == m, "DCUtR round trip changed the message") } catch {
                    check(false, "re-encoded DCUtR message does not decode: \(error)")
                }
            }
        } else {
            check((try? DCUtR.decode(DCUtR.encode(m)))?.0 == m, "SYNC round trip")
        }
        let t0 = ContinuousClock.now
        var initiator = DCUtR.Initiator(ourAddresses: Array(seedAddrs.prefix(2)))
        _ = initiator.start(now: t0)
        _ = initiator.received(m, now: t0.advanced(by: .milliseconds(30)))
        _ = initiator.received(m, now: t0.advanced(by: .milliseconds(40)))
        var responder = DCUtR.Responder(ourAddresses: Array(seedAddrs.prefix(2)), allowPrivate: true)
        _ = responder.received(m)
        _ = responder.received(.sync)
        _ = responder.received(m)
    },
    seeds: { _ in
        [
            DCUtR.encode(.connect(seedAddrs + [try! Multiaddr("/ip4/8.8.8.8/tcp/4001"), try! Multiaddr("/ip4/192.168.1.1/tcp/4001/p2p/\(Fixed.peerA)")])),
            DCUtR.encode(.connect([])), DCUtR.encode(.sync),
        ]
    })


// MARK: p2pd control protocol

/// The daemon's control connection: length-prefixed `Request`s (and, on the client side,
/// `Response`s), each decoded as the control server does, round-tripped, and its peer IDs,
/// multiaddrs and CIDs parsed as the daemon parses them.
let p2pdTarget = FuzzTarget(
    name: "p2pd", summary: "p2pd control protocol: framed Request/Response protobufs, round trip, embedded IDs/addrs",
    maxLength: 16 * 1024,
    run: { b in
        var dec = LengthPrefixedDecoder(maxLength: 4 << 20)
        dec.append(b)
        var messages = 0
        while messages < 64, let m = try? dec.next() {
            messages += 1
            if let req = try? P2pd_Pb_Request(serializedBytes: m, partial: true) {
                if let again: [UInt8] = try? req.serializedBytes(partial: true) {
                    check((try? P2pd_Pb_Request(serializedBytes: again, partial: true)) == req, "p2pd Request round trip changed it")
                } else { check(false, "a decoded Request does not serialize") }
                for id in [req.connect.peer, req.streamOpen.peer, req.dht.peer, req.connManager.peer, req.disconnect.peer, req.peerStore.id] where !id.isEmpty {
                    if let p = try? PeerID(bytes: [UInt8](id)) { check(p.bytes == [UInt8](id), "peer ID bytes changed") }
                }
                for a in req.connect.addrs + [req.streamHandler.addr] where !a.isEmpty {
                    if let ma = try? Multiaddr(bytes: [UInt8](a)), reencodable([ma]) {
                        check((try? Multiaddr(bytes: ma.bytes)) == ma, "multiaddr round trip")
                    }
                }
                if req.dht.hasCid { _ = CID.multihash(binary: [UInt8](req.dht.cid)) }
                if req.dht.hasKey, req.dht.hasValue {
                    _ = try? RecordValidator().validate(key: [UInt8](req.dht.key), value: [UInt8](req.dht.value), now: Fixed.now)
                }
            }
            if let resp = try? P2pd_Pb_Response(serializedBytes: m, partial: true) {
                if let again: [UInt8] = try? resp.serializedBytes(partial: true) {
                    check((try? P2pd_Pb_Response(serializedBytes: again, partial: true)) == resp, "p2pd Response round trip changed it")
                } else { check(false, "a decoded Response does not serialize") }
                for p in resp.peers + [resp.dht.peer, resp.peerStore.peer] {
                    _ = try? PeerID(bytes: [UInt8](p.id))
                    for a in p.addrs { _ = try? Multiaddr(bytes: [UInt8](a)) }
                }
            }
        }
    },
    seeds: { _ in
        func framed<M: SwiftProtobuf.Message>(_ m: M) -> [UInt8] { LengthPrefixedDecoder.frame(try! m.serializedBytes(partial: true)) }
        var identify = P2pd_Pb_Request(); identify.type = .identify
        var connect = P2pd_Pb_Request(); connect.type = .connect
        connect.connect.peer = Data(Fixed.peerB.bytes); connect.connect.addrs = seedAddrs.map { Data($0.bytes) }; connect.connect.timeout = 10
        var open = P2pd_Pb_Request(); open.type = .streamOpen
        open.streamOpen.peer = Data(Fixed.peerB.bytes); open.streamOpen.proto = ["/echo/1.0.0"]
        var handler = P2pd_Pb_Request(); handler.type = .streamHandler
        handler.streamHandler.addr = Data(seedAddrs[4].bytes); handler.streamHandler.proto = ["/echo/1.0.0"]
        var dht = P2pd_Pb_Request(); dht.type = .dht
        dht.dht.type = .putValue; dht.dht.key = Data("/v/k".utf8); dht.dht.value = Data([1, 2]); dht.dht.timeout = 5
        var dht2 = P2pd_Pb_Request(); dht2.type = .dht
        dht2.dht.type = .findProviders; dht2.dht.cid = Data([0x01, 0x55, 0x12, 0x20] + SHA256.hash([1])); dht2.dht.count = 3
        var list = P2pd_Pb_Request(); list.type = .listPeers
        var disc = P2pd_Pb_Request(); disc.type = .disconnect; disc.disconnect.peer = Data(Fixed.peerA.bytes)
        var ok = P2pd_Pb_Response(); ok.type = .ok
        ok.identify.id = Data(Fixed.peerA.bytes); ok.identify.addrs = seedAddrs.map { Data($0.bytes) }
        var err = P2pd_Pb_Response(); err.type = .error; err.error.msg = "no such peer"
        var peers = P2pd_Pb_Response(); peers.type = .ok
        var pi = P2pd_Pb_PeerInfo(); pi.id = Data(Fixed.peerB.bytes); pi.addrs = [Data(seedAddrs[0].bytes)]
        peers.peers = [pi, pi]
        return [
            framed(identify), framed(connect), framed(open), framed(handler), framed(dht), framed(dht2),
            framed(list) + framed(disc), framed(ok), framed(err), framed(peers),
        ]
    })
