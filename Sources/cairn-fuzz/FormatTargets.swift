import CairnCore
import CairnCrypto
import CairnProto
import Foundation
import SwiftProtobuf

// MARK: multiaddr

/// The same input as binary and as text; binary decode -> encode -> decode and text parse ->
/// print -> parse must give the same address.
let multiaddrTarget = FuzzTarget(
    name: "multiaddr", summary: "multiaddr binary and text codecs, round trips, accessors",
    maxLength: Multiaddr.maxBinaryLength + 1,
    run: { b in
        func exercise(_ m: Multiaddr) {
            _ = m.description; _ = m.peerID; _ = m.tcpEndpoint; _ = m.udpEndpoint; _ = m.isRelayed
            _ = m.withoutTrailingPeerID
            _ = DCUtR.dialable([m], allowPrivate: false)
        }
        if let m = try? Multiaddr(bytes: b) {
            exercise(m)
            check(!m.components.isEmpty, "an empty multiaddr decoded")
            let again = m.bytes
            if again.count <= Multiaddr.maxBinaryLength {
                do { let again_ = try Multiaddr(bytes: again); check(again_ == m, "binary round trip changed \(m)") } catch {
                    check(false, "re-encoded multiaddr \(m) does not decode: \(error)")
                }
            }
        }
        guard let text = String(validating: b, as: UTF8.self), let m = try? Multiaddr(text) else { return }
        exercise(m)
        do { let again_ = try Multiaddr(m.description); check(again_ == m, "text round trip changed '\(text)' -> '\(m)'") } catch {
            check(false, "printed multiaddr '\(m)' (from '\(text)') does not parse: \(error)")
        }
        if m.bytes.count <= Multiaddr.maxBinaryLength {
            do { let again_ = try Multiaddr(bytes: m.bytes); check(again_ == m, "text -> binary -> decode changed '\(text)'") } catch {
                check(false, "binary form of '\(text)' does not decode: \(error)")
            }
        }
    },
    seeds: { ctx in
        var seeds: [[UInt8]] = seedAddrs.flatMap { [$0.bytes, Array($0.description.utf8)] }
        for s in ctx.literals("Multiaddrs") {
            if s.hasPrefix("/") { seeds.append(Array(s.utf8)) } else if s.count % 2 == 0, let h = Hex.decode(s) { seeds.append(h) }
        }
        seeds.append(Array("/ip4/127.0.0.1/tcp/4001/p2p/\(Fixed.peerA.cidString)".utf8))
        seeds.append([0x90, 0x03, 0x03, 0x61, 0x2f, 0x62])  // /unix/a/b without the leading slash (py-multiaddr)
        return seeds
    })

// MARK: peer IDs and keys

/// Input: mode byte. 0: the rest as a peer ID (binary and text), a public key and a private key;
/// 1: a public key (chunk) and a signature (rest) to verify, for every key type.
let peerIDTarget = FuzzTarget(
    name: "peerid", summary: "peer IDs (binary, base58, CIDv1), public/private keys of all types, signatures",
    maxLength: PublicKey.maxEncodedLength + 512,
    run: { b in
        var input = FuzzInput(b)
        let mode = input.byte()
        if mode & 1 == 1 {
            let keyBytes = input.chunk()
            let sig = input.rest()
            guard let key = try? PublicKey(protobufBytes: keyBytes) else { return }
            _ = key.isValidSignature(sig, for: Array("cairn-fuzz".utf8))
            _ = key.isValidSignature(sig, for: [])
            return
        }
        let rest = input.rest()
        if let id = try? PeerID(bytes: rest) {
            check(id.bytes == rest, "peer ID bytes changed")
            do {
                let b58 = try PeerID(string: id.base58), cid = try PeerID(string: id.cidString)
                check(b58 == id, "base58 round trip")
                check(cid == id, "CIDv1 round trip")
            } catch { check(false, "printed peer ID \(id) does not parse: \(error)") }
            if let k = id.inlinedPublicKey { check(id.matches(k) || k.protobufBytes != Array(rest.dropFirst(2)), "inlined key does not match its peer ID") }
        }
        if let key = try? PublicKey(protobufBytes: rest) {
            let canonical = key.protobufBytes
            do { let again_ = try PublicKey(protobufBytes: canonical); check(again_ == key, "public key round trip") } catch {
                check(false, "canonical encoding of a decoded key does not decode: \(error)")
            }
            let id = PeerID(publicKey: key)
            check(id.matches(key), "peer ID of a key does not match it")
            do { let again_ = try PeerID(bytes: id.bytes); check(again_ == id, "derived peer ID round trip") } catch {
                check(false, "peer ID derived from a valid key does not parse: \(error)")
            }
            if case .ed25519 = key { check(id.inlinedPublicKey == key, "Ed25519 peer ID does not inline its key") }
        }
        if let priv = try? PrivateKey(protobufBytes: rest) {
            let msg = Array("cairn-fuzz".utf8)
            check(priv.publicKey.isValidSignature(priv.sign(msg), for: msg), "a decoded private key's signature does not verify")
            check((try? PrivateKey(protobufBytes: priv.protobufBytes))?.peerID == priv.peerID, "private key round trip")
        }
        if let text = String(validating: rest, as: UTF8.self), let id = try? PeerID(string: text) {
            check((try? PeerID(string: id.base58)) == id, "text -> base58 round trip")
        }
    },
    seeds: { ctx in
        var seeds: [[UInt8]] = [
            [0] + Fixed.peerA.bytes, [0] + Array(Fixed.peerA.base58.utf8), [0] + Array(Fixed.peerB.cidString.utf8),
            [0] + Fixed.keyA.publicKey.protobufBytes, [0] + Fixed.keyA.protobufBytes,
            [1] + encodeChunk(Fixed.keyB.publicKey.protobufBytes) + Fixed.keyB.sign(Array("cairn-fuzz".utf8)),
        ]
        let blobs = ctx.hexBlobs("PeerIds") + ctx.base64Blobs("PeerIds")
        for h in blobs {
            seeds.append([0] + h)
            if let k = try? PublicKey(protobufBytes: h) {
                seeds.append([0] + PeerID(publicKey: k).bytes)
                seeds.append([1] + encodeChunk(h) + [0x30, 0x44, 0x02, 0x20] + [UInt8](repeating: 1, count: 32) + [0x02, 0x20] + [UInt8](repeating: 2, count: 32))
            }
        }
        for s in ctx.literals("PeerIds") where s.hasPrefix("Qm") || s.hasPrefix("1") || s.hasPrefix("b") || s.hasPrefix("k") || s.hasPrefix("z") {
            if Hex.decode(s) == nil { seeds.append([0] + Array(s.utf8)) }
        }
        return seeds
    })

// MARK: CID and multibase

let cidTarget = FuzzTarget(
    name: "cid", summary: "CIDs (binary, CIDv0/v1 text) and multibase base58btc/base32/base16",
    maxLength: 512,
    run: { b in
        if let mh = CID.multihash(binary: b) { check(b.count >= mh.count && Array(b.suffix(mh.count)) == mh, "multihash is not the CID's tail") }
        let text = String(decoding: b, as: UTF8.self)
        if let mh = CID.multihash(text: text) { check(!mh.isEmpty, "empty multihash") }
        _ = CID.providerKey(text)
        if let d = Base58.decode(text) {
            check(Base58.encode(d) == text, "base58 decode/encode changed '\(text)'")
        }
        check(Base58.decode(Base58.encode(b)) == b, "base58 encode/decode")
        if let d = Base32.decode(text) {
            check(Base32.encode(d) == text.lowercased(), "base32 decode/encode changed '\(text)'")
        }
        check(Base32.decode(Base32.encode(b)) == b, "base32 encode/decode")
        if let d = Hex.decode(text) { check(Hex.encode(d) == text.lowercased(), "hex decode/encode changed '\(text)'") }
        check(Hex.decode(Hex.encode(b)) == b, "hex encode/decode")
    },
    seeds: { ctx in
        var seeds: [[UInt8]] = []
        for s in ctx.literals("PeerIds") where Hex.decode(s) == nil || s.hasPrefix("b") || s.hasPrefix("f") {
            seeds.append(Array(s.utf8))
        }
        for h in ctx.hexBlobs("PeerIds") where h.count < 100 { seeds.append(h) }
        let mh = [0x12, 0x20] + SHA256.hash(Array("cairn".utf8))
        seeds += [mh, [0x01, 0x55] + mh, Array(("b" + Base32.encode([0x01, 0x55] + mh)).utf8), Array(("z" + Base58.encode([0x01, 0x70] + mh)).utf8),
                  Array(("f" + Hex.encode([0x01, 0x71] + mh)).utf8), Array(Base58.encode(mh).utf8), Array("1112".utf8), Array("K".utf8)]
        return seeds
    })

// MARK: STUN

/// One datagram: decoded (with a round trip and every attribute accessor), answered by the
/// server logic, and parsed as the client's expected response.
let stunTarget = FuzzTarget(
    name: "stun", summary: "STUN messages (RFC 8489): decode, round trip, attributes, server and client logic",
    maxLength: STUN.maxDatagramSize,
    run: { b in
        if let m = try? STUNMessage(decoding: b) {
            _ = try? m.xorMappedAddress(); _ = try? m.mappedAddress(); _ = try? m.software()
            _ = try? m.errorCode(); _ = try? m.unknownAttributesList(); _ = m.unknownComprehensionRequired
            let again = m.encode(fingerprint: m.hadFingerprint)
            do { let again_ = try STUNMessage(decoding: again); check(again_ == m, "STUN round trip changed the message") } catch {
                check(false, "re-encoded STUN message does not decode: \(error)")
            }
        }
        var server = STUNServerLogic()
        for source in [STUNEndpoint(ip: [192, 0, 2, 1], port: 3478), STUNEndpoint(ip: [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [9], port: 1)] {
            let outcome = server.handle(b, from: source)
            if let reply = outcome.reply {
                check(reply.count <= STUN.maxDatagramSize, "STUN reply of \(reply.count) bytes")
                check((try? STUNMessage(decoding: reply)) != nil, "the server's reply does not decode")
            }
        }
        let tid = b.count >= 20 ? Array(b[8..<20]) : [UInt8](repeating: 7, count: 12)
        _ = try? STUNClientLogic(transactionID: tid).parseResponse(b)
    },
    seeds: { _ in
        let tid: [UInt8] = Array(1...12)
        let req = STUNClientLogic(transactionID: tid, software: "cairn").request()
        var ok = STUNMessage(messageClass: .successResponse, transactionID: tid)
        ok.attributes = [.init(type: STUN.AttributeType.xorMappedAddress, value: STUNMessage.encodeAddress(STUNEndpoint(ip: [203, 0, 113, 5], port: 40000), xorWith: tid)),
                         .init(type: STUN.AttributeType.mappedAddress, value: STUNMessage.encodeAddress(STUNEndpoint(ip: [203, 0, 113, 5], port: 40000), xorWith: nil)),
                         .init(type: STUN.AttributeType.software, value: Array("coturn".utf8))]
        var ok6 = STUNMessage(messageClass: .successResponse, transactionID: tid)
        ok6.attributes = [.init(type: STUN.AttributeType.xorMappedAddress,
                                value: STUNMessage.encodeAddress(STUNEndpoint(ip: [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [5], port: 1), xorWith: tid))]
        var err = STUNMessage(messageClass: .errorResponse, transactionID: tid)
        err.attributes = [.init(type: STUN.AttributeType.errorCode, value: [0, 0, 4, 20] + Array("Unknown Attribute".utf8)),
                          .init(type: STUN.AttributeType.unknownAttributes, value: [0x00, 0x2a, 0x00, 0x2b])]
        var mi = STUNMessage(messageClass: .request, transactionID: tid)
        mi.attributes = [.init(type: STUN.AttributeType.username, value: Array("user".utf8)),
                         .init(type: STUN.AttributeType.messageIntegrity, value: [UInt8](repeating: 0xaa, count: 20)),
                         .init(type: 0x002a, value: [1, 2, 3])]
        var unknown = STUNMessage(messageClass: .request, transactionID: tid)
        unknown.attributes = [.init(type: 0x0011, value: [1]), .init(type: 0x8099, value: [])]
        var indication = STUNMessage(messageClass: .indication, transactionID: tid)
        indication.attributes = []
        return [req, ok.encode(), ok.encode(fingerprint: false), ok6.encode(), err.encode(), mi.encode(), unknown.encode(), indication.encode(),
                STUNMessage(messageClass: .request, transactionID: tid).encode(fingerprint: false)]
    })

// MARK: Port mapping

/// One datagram from the gateway: decoded as NAT-PMP and as PCP, and fed to port-mapping clients
/// waiting in each state (PCP request, NAT-PMP request, NAT-PMP address request, mapped).
let portMappingTarget = FuzzTarget(
    name: "port-mapping", summary: "NAT-PMP (RFC 6886), PCP (RFC 6887) and UPnP IGD answers: decode, and the client in each state",
    maxLength: PCP.maxMessageLength,
    run: { b in
        if let r = try? NATPMP.decodeResponse(b) {
            check(b.count <= NATPMP.maxResponseLength, "NAT-PMP answer of \(b.count) bytes decoded")
            if case .externalAddress(_, _, let a) = r { check(a.count == 4, "NAT-PMP address of \(a.count) bytes") }
        }
        if let r = try? PCP.decodeMapResponse(b) {
            check([0, 4, 16].contains(r.externalAddress.count), "PCP address of \(r.externalAddress.count) bytes")
        }
        // The same bytes as UPnP IGD answers: SSDP, a device description, a SOAP answer.
        if let r = try? UPnP.parseSearchResponse(b) { check(r.location.host.count == 4, "an SSDP location host of \(r.location.host.count) bytes") }
        _ = try? UPnP.connectionService(description: b, base: UPnP.URLParts(host: [10, 0, 1, 1], port: 5000, path: "/rootDesc.xml"))
        _ = try? UPnP.parseSOAPResponse(b, action: "GetExternalIPAddress")
        let nonce = [UInt8](repeating: 7, count: 12)
        let config = PortMappingClient.Configuration(proto: .tcp, internalPort: 4001, clientAddress: [10, 0, 1, 2])
        var pcp = PortMappingClient(configuration: config, nonce: nonce)
        _ = pcp.start(now: 0)
        var natpmp = pcp
        _ = try? natpmp.received([0, 129, 0, 1, 0, 0, 0, 5], now: 0.01)  // "unsupported version": NAT-PMP next
        var asking = natpmp
        _ = try? asking.received([0, 130, 0, 0, 0, 0, 0, 5, 0x0f, 0xa1, 0x0f, 0xa1, 0, 0, 0x1c, 0x20], now: 0.02)
        for var c in [pcp, natpmp, asking] {
            for a in (try? c.received(b, now: 1)) ?? [] {
                switch a {
                case .send(let out): check(out.count <= PCP.maxMessageLength, "a request of \(out.count) bytes")
                case .mapped(let m): check(m.lifetime > 0, "a mapping with no lifetime")
                case .failed: break
                }
            }
            if let d = c.nextDeadline() { _ = c.tick(now: d) }
            _ = c.stop()
        }
    },
    seeds: { _ in
        let nonce = [UInt8](repeating: 7, count: 12)
        var pcpOK: [UInt8] = [2, 0x81, 0, 0, 0, 0, 0x0e, 0x10, 0, 0, 0, 42] + [UInt8](repeating: 0, count: 12)
        pcpOK += nonce + [6, 0, 0, 0, 0x0f, 0xa1, 0x9c, 0x41] + PCP.mapped([198, 18, 0, 11])
        return [
            pcpOK, pcpOK + [0x80, 0, 0, 4, 1, 2, 3, 4],
            [2, 0x81, 0, 8] + [UInt8](repeating: 0, count: 20),
            [0, 128, 0, 0, 0, 0, 0, 9, 198, 18, 0, 11],
            [0, 130, 0, 0, 0, 0, 1, 0, 0x0f, 0xa1, 0x9c, 0x41, 0, 0, 0x0e, 0x10],
            [0, 129, 0, 1, 0, 0, 0, 5],
            PCP.mapRequest(.udp, client: [10, 0, 0, 1], nonce: nonce, internalPort: 1, suggestedExternalPort: 2, lifetime: 3),
            Array("HTTP/1.1 200 OK\r\nST: \(UPnP.gatewayType)\r\nLOCATION: http://10.0.1.1:5000/rootDesc.xml\r\n\r\n".utf8),
            Array(("<root><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>"
                   + "<controlURL>/ctl/IPConn</controlURL></service></serviceList></device></root>").utf8),
            Array(("HTTP/1.1 200 OK\r\n\r\n<s:Envelope><s:Body><u:GetExternalIPAddressResponse><NewExternalIPAddress>198.18.0.11"
                   + "</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>").utf8),
            Array("HTTP/1.1 500 x\r\n\r\n<UPnPError><errorCode>718</errorCode><errorDescription>x</errorDescription></UPnPError>".utf8),
        ]
    })

// MARK: mDNS

/// One datagram from 224.0.0.251:5353: decoded as a DNS message, and fed to a discovery that
/// answers queries and reads announcements.
let mdnsTarget = FuzzTarget(
    name: "mdns", summary: "libp2p mDNS: DNS messages (compression, TXT, SRV, A/AAAA) and the discovery logic",
    maxLength: DNSMessage.maxLength,
    run: { b in
        if let m = try? DNSMessage.decode(b) {
            check(m.questions.count + m.records.count <= DNSMessage.maxEntries, "\(m.questions.count + m.records.count) entries decoded")
            for r in m.records {
                if case .a(let ip) = r.data { check(ip.count == 4, "an A record of \(ip.count) bytes") }
                if case .aaaa(let ip) = r.data { check(ip.count == 16, "an AAAA record of \(ip.count) bytes") }
            }
        }
        var d = MDNSDiscovery(localPeer: Fixed.keyA.peerID, peerName: "fuzz0123456789abcdefghijklmnopqrstuv")
        d.setAddresses([Multiaddr(components: [.ip4([10, 0, 1, 2]), .tcp(4001)])])
        for a in (try? d.received(b, now: 0)) ?? [] {
            switch a {
            case .send(let out): check(out.count <= DNSMessage.maxLength, "an answer of \(out.count) bytes")
            case .discovered(let p, let addrs):
                check(p != Fixed.keyA.peerID, "ourselves discovered")
                check(addrs.count <= MDNSDiscovery.maxAddressesPerPeer && !addrs.contains(where: \.isRelayed), "\(addrs.count) addresses, relayed ones kept")
            }
        }
    },
    seeds: { _ in
        var d = MDNSDiscovery(localPeer: Fixed.keyB.peerID, peerName: "seed0123456789abcdefghijklmnopqrstuv")
        d.setAddresses([Multiaddr(components: [.ip4([10, 0, 1, 3]), .tcp(4001)])])
        return [MDNSDiscovery.query(), d.response(), [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 12, 0, 1]]
    })

