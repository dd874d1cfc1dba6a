import CairnCore
import CairnCrypto
import CairnProto
import Foundation
import NIOCore
import SwiftProtobuf

/// The payload an honest libp2p Noise peer with identity B and static key `staticKey` sends.
func validNoisePayload(staticKey: X25519PrivateKey, identity: PrivateKey = Fixed.keyB) -> [UInt8] {
    var pb = Noise_Pb_NoiseHandshakePayload()
    pb.identityKey = Data(identity.publicKey.protobufBytes)
    pb.identitySig = Data(identity.sign(Array("noise-libp2p-static-key:".utf8) + staticKey.publicKey))
    return try! pb.serializedBytes()
}

// MARK: noise-handshake

/// The handshake under test (identity A, fixed keys) against a scripted peer (identity B): either an
/// honest libp2p Noise handshake, or a bare Noise XX machine whose payloads come from the input.
/// The input is a script of operations (see the switch); inputs that only reorder or split the
/// honest peer's bytes must always succeed, and the transports must carry plaintext unchanged.
let noiseHandshakeTarget = FuzzTarget(
    name: "noise-handshake", summary: "libp2p Noise XX handshake as initiator/responder vs a scripted peer, then transport",
    maxLength: Libp2pNoiseHandshake.maxHandshakeFrameLength + 128,
    run: { b in runNoiseHandshake(b) },
    seeds: { _ in noiseHandshakeSeeds() })

enum ScriptedNoisePeer {
    case honest(Libp2pNoiseHandshake)
    case raw(NoiseXXHandshake, NoiseFrameDecoder)
}

func runNoiseHandshake(_ b: [UInt8]) {
    var input = FuzzInput(b)
    let mode = input.byte()
    let subjectInitiator = mode & 1 == 1
    let rawPeer = mode & 2 != 0
    let expectB = mode & 4 != 0
    var subject = Libp2pNoiseHandshake(role: subjectInitiator ? .initiator : .responder, identity: Fixed.keyA,
                                       expectedRemote: expectB ? Fixed.peerB : nil,
                                       staticKey: Fixed.staticA, ephemeralKey: Fixed.ephemeralA)
    var peer: ScriptedNoisePeer = rawPeer
        ? .raw(NoiseXXHandshake(role: subjectInitiator ? .responder : .initiator, staticKey: Fixed.staticB, ephemeralKey: Fixed.ephemeralB),
               NoiseFrameDecoder(maxFrameLength: 65535))
        : .honest(Libp2pNoiseHandshake(role: subjectInitiator ? .responder : .initiator, identity: Fixed.keyB,
                                       staticKey: Fixed.staticB, ephemeralKey: Fixed.ephemeralB))
    var toSubject: [UInt8] = [], toPeer: [UInt8] = []
    var tampered = false, subjectFailed: NoiseError?, peerFailed = false
    var subjectTransport: NoiseTransport?, peerTransport: NoiseTransport?
    var subjectReceived: [UInt8] = [], peerSent: [UInt8] = [], peerReceived: [UInt8] = [], subjectSent: [UInt8] = []

    do { toPeer += try subject.start().bytes } catch { check(false, "start failed: \(error)") }
    if case .honest(var hs) = peer {
        do { toSubject += try hs.start().bytes } catch { check(false, "peer start failed: \(error)") }
        peer = .honest(hs)
    }

    func feedSubject(_ bytes: [UInt8]) {
        guard subjectFailed == nil, !bytes.isEmpty else { return }
        if var t = subjectTransport {
            var out = ByteBuffer()
            do { try t.open(ByteBuffer(bytes: bytes), into: &out) } catch { subjectFailed = error; return }
            subjectTransport = t
            subjectReceived += out.bytes
            return
        }
        do {
            let out = try subject.receive(ByteBuffer(bytes: bytes))
            toPeer += out.send.bytes
            if let est = out.established {
                if expectB { check(est.remote == Fixed.peerB, "established with \(est.remote) though B was expected") }
                check(subject.remotePeer == est.remote, "remotePeer differs from the established remote")
                subjectTransport = est.transport
                subjectReceived += est.plaintext.bytes
            }
        } catch {
            subjectFailed = error
        }
    }

    func feedPeer() {
        guard !peerFailed, !toPeer.isEmpty else { return }
        let bytes = toPeer
        toPeer = []
        switch peer {
        case .honest(var hs):
            if var t = peerTransport {
                var out = ByteBuffer()
                do { try t.open(ByteBuffer(bytes: bytes), into: &out) } catch { peerFailed = true; return }
                peerTransport = t
                peerReceived += out.bytes
                return
            }
            do {
                let out = try hs.receive(ByteBuffer(bytes: bytes))
                toSubject += out.send.bytes
                if let est = out.established {
                    check(est.remote == Fixed.peerA, "the honest peer authenticated \(est.remote), not A")
                    peerTransport = est.transport
                    peerReceived += est.plaintext.bytes
                }
            } catch {
                peerFailed = true
            }
            peer = .honest(hs)
        case .raw(var xx, var dec):
            dec.append(ByteBuffer(bytes: bytes))
            do {
                while let frame = try dec.next() {
                    guard !xx.isComplete, !xx.isOurTurn else { break }
                    _ = try xx.readMessage(frame)
                }
            } catch {
                peerFailed = true
            }
            peer = .raw(xx, dec)
        }
    }

    /// The raw peer writes its next handshake message, if it is its turn.
    func rawPeerWrite(_ payload: [UInt8]) {
        guard case .raw(var xx, let dec) = peer, !peerFailed, xx.isOurTurn, !xx.isComplete else { return }
        do {
            let m = try xx.writeMessage(payload: payload)
            toSubject += [UInt8(truncatingIfNeeded: m.count >> 8), UInt8(truncatingIfNeeded: m.count)] + m
        } catch {
            peerFailed = true
        }
        peer = .raw(xx, dec)
    }

    func pump() {
        for _ in 0..<4 {
            feedSubject(toSubject); toSubject = []
            feedPeer()
        }
    }

    var steps = 0
    while !input.isAtEnd, steps < 256 {
        steps += 1
        let op = input.byte()
        switch op % 8 {
        case 0:
            let n = Int(input.byte())
            let k = n == 0 ? toSubject.count : min(n, toSubject.count)
            let piece = Array(toSubject.prefix(k))
            toSubject.removeFirst(k)
            feedSubject(piece)
        case 1:
            tampered = true
            feedSubject(input.chunk())
        case 2:
            let pos = Int(input.u16()), x = input.byte()
            if !toSubject.isEmpty, x != 0 { toSubject[pos % toSubject.count] ^= x; tampered = true }
        case 3:
            feedPeer()
        case 4:
            let c = input.chunk()
            if rawPeer {
                rawPeerWrite(c)
            } else if var t = peerTransport {
                var out = ByteBuffer()
                do { try t.seal(ByteBuffer(bytes: c), into: &out) } catch { check(false, "seal failed: \(error)") }
                peerTransport = t
                toSubject += out.bytes
                peerSent += c
            }
        case 5:
            let c = input.chunk()
            if rawPeer {
                rawPeerWrite(validNoisePayload(staticKey: Fixed.staticB) + c)
            } else if var t = subjectTransport, subjectFailed == nil {
                var out = ByteBuffer()
                do { try t.seal(ByteBuffer(bytes: c), into: &out) } catch { check(false, "seal failed: \(error)") }
                subjectTransport = t
                toPeer += out.bytes
                subjectSent += c
            }
        case 6:
            let n = min(Int(input.byte()), toSubject.count)
            if n > 0 { toSubject.removeFirst(n); tampered = true }
        default:
            pump()
        }
    }
    if !rawPeer && !tampered {
        pump()
        check(subjectFailed == nil, "untampered honest handshake failed: \(String(describing: subjectFailed))")
        check(!peerFailed, "the honest peer failed on the subject's bytes")
        check(subjectTransport != nil && peerTransport != nil, "untampered honest handshake did not complete")
        check(subjectReceived == peerSent, "plaintext peer -> subject changed in transit")
        check(peerReceived == subjectSent, "plaintext subject -> peer changed in transit")
    }
}

func noiseHandshakeSeeds() -> [[UInt8]] {
    let hello = encodeChunk(Array("hello over noise".utf8))
    let big = encodeChunk([UInt8](repeating: 0x5a, count: 3000))
    var seeds: [[UInt8]] = []
    for role: UInt8 in [0, 1, 4, 5] {
        seeds.append([role, 7])                                    // pump: honest handshake
        seeds.append([role, 7, 4] + hello + [5] + hello + [7])     // and data both ways
        seeds.append([role, 0, 10, 0, 0, 3, 0, 5, 3, 0, 0, 7, 4] + big + [7])  // split deliveries
        seeds.append([role, 7, 2, 0, 3, 0x40, 7])                  // a flipped byte
        seeds.append([role, 1, 4, 0, 0, 0, 0, 7])                  // injected bytes
    }
    for role: UInt8 in [2, 3, 6, 7] {
        // Raw XX peer: valid identity payloads (op 5) or empty/garbage ones (op 4).
        seeds.append([role, 5, 0, 7, 5, 0, 7, 5, 0, 7])
        seeds.append([role, 4, 0, 7, 5, 0, 7, 5, 2, 0x22, 0x00, 7])
        seeds.append([role, 4, 0, 7, 4, 3, 0x0a, 0x01, 0x00, 7, 4, 0, 7])
    }
    return seeds
}

// MARK: noise-transport

/// Transports from one deterministic handshake (A initiator, B responder), copied for each input.
let establishedPair: (a: NoiseTransport, b: NoiseTransport) = {
    var a = Libp2pNoiseHandshake(role: .initiator, identity: Fixed.keyA, staticKey: Fixed.staticA, ephemeralKey: Fixed.ephemeralA)
    var b = Libp2pNoiseHandshake(role: .responder, identity: Fixed.keyB, staticKey: Fixed.staticB, ephemeralKey: Fixed.ephemeralB)
    let m1 = try! a.start()
    let r1 = try! b.receive(m1)
    let r2 = try! a.receive(r1.send)
    let r3 = try! b.receive(r2.send)
    return (r2.established!.transport, r3.established!.transport)
}()

/// The receiving side (B) of an established Noise session fed raw frames, honest frames from A
/// (split, corrupted or not) and replies checked on A. Also the frame decoder alone.
let noiseTransportTarget = FuzzTarget(
    name: "noise-transport", summary: "Noise transport frames: decoder, decryption, seal/open round trip",
    maxLength: 8192,
    run: { b in
        var input = FuzzInput(b)
        // The frame decoder alone, on the whole input: frames re-framed + remainder = input.
        let limits = [0, 16, 1024, 8192, 65535]
        var dec = NoiseFrameDecoder(maxFrameLength: limits[Int(b.first ?? 0) % limits.count])
        dec.append(ByteBuffer(bytes: b))
        var reframed: [UInt8] = []
        var failed = false
        do {
            while let f = try dec.next() { reframed += [UInt8(f.count >> 8), UInt8(f.count & 0xff)] + f }
        } catch { failed = true }
        if !failed { check(reframed + dec.takeRemainder().bytes == b, "noise frames + remainder do not rebuild the input") }

        var (a, bt) = establishedPair
        var pending: [UInt8] = []
        var sent: [UInt8] = [], received: [UInt8] = []
        var tampered = false, bFailed = false
        func feedB(_ bytes: [UInt8]) {
            guard !bFailed, !bytes.isEmpty else { return }
            var out = ByteBuffer()
            do { try bt.open(ByteBuffer(bytes: bytes), into: &out) } catch { bFailed = true; return }
            received += out.bytes
        }
        _ = input.byte()
        var steps = 0
        while !input.isAtEnd, steps < 256 {
            steps += 1
            switch input.byte() % 6 {
            case 0:
                tampered = true
                feedB(input.chunk())
            case 1:
                let c = input.chunk()
                var out = ByteBuffer()
                do { try a.seal(ByteBuffer(bytes: c), into: &out) } catch { check(false, "seal: \(error)") }
                pending += out.bytes
                sent += c
            case 2:
                let n = Int(input.byte())
                let k = n == 0 ? pending.count : min(n, pending.count)
                let piece = Array(pending.prefix(k))
                pending.removeFirst(k)
                feedB(piece)
            case 3:
                let pos = Int(input.u16()), x = input.byte()
                if !pending.isEmpty, x != 0 { pending[pos % pending.count] ^= x; tampered = true }
            case 4:
                // B -> A, never tampered: must arrive unchanged.
                let c = input.chunk()
                var out = ByteBuffer(), back = ByteBuffer()
                do {
                    try bt.seal(ByteBuffer(bytes: c), into: &out)
                    try a.open(out, into: &back)
                } catch { check(false, "untampered B -> A frame failed: \(error)") }
                check(back.bytes == c, "B -> A plaintext changed")
            default:
                let n = min(Int(input.byte()), pending.count)
                if n > 0 { pending.removeFirst(n); tampered = true }
            }
        }
        if !tampered {
            feedB(pending)
            check(!bFailed, "untampered frames failed to open")
            check(received == sent, "A -> B plaintext changed in transit")
        }
    },
    seeds: { _ in
        let hello = encodeChunk(Array("hello".utf8))
        let big = encodeChunk([UInt8](repeating: 0x33, count: 4000))
        return [
            [0, 1] + hello + [2, 0],
            [0, 1] + hello + [1] + big + [2, 5, 2, 0, 4] + hello,
            [0, 1] + big + [2, 100, 2, 0],
            [0, 1] + hello + [3, 0, 4, 1, 2, 0],
            [0, 0, 5, 0x00, 0x03, 1, 2, 3],
            [0, 0, 20, 0x00, 0x12] + [UInt8](repeating: 0, count: 18),
            [1, 0x00, 0x05, 1, 2, 3, 4, 5, 0x00, 0x00],
            [4, 4] + big,
        ]
    })
