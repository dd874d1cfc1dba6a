import CairnCore
import CairnCrypto
import Foundation
import NIOCore

// MARK: yamux

/// Frames a Yamux session writes, parsed back: every frame must be whole and well-formed.
func checkYamuxOutput(_ out: [UInt8], maxDataFrame: Int) {
    var i = 0
    while i < out.count {
        check(out.count - i >= 12, "yamux output ends inside a frame header")
        check(out[i] == 0 && out[i + 1] <= 3, "yamux output frame with version \(out[i]) type \(out[i + 1])")
        let length = Int(out[i + 8]) << 24 | Int(out[i + 9]) << 16 | Int(out[i + 10]) << 8 | Int(out[i + 11])
        if out[i + 1] == 0 {
            check(length <= maxDataFrame, "yamux data frame of \(length) bytes over maxDataFrame")
            check(out.count - i - 12 >= length, "yamux output ends inside a data frame")
            i += 12 + length
        } else {
            i += 12
        }
    }
}

let yamuxConfigs: [YamuxConfig] = {
    var small = YamuxConfig()
    small.receiveWindow = 64 * 1024
    small.maxInboundStreams = 2
    small.maxDataFrame = 1000
    var large = YamuxConfig()
    large.receiveWindow = 1024 * 1024
    return [YamuxConfig(), small, large]
}()

/// A Yamux session fed arbitrary bytes interleaved with the application's commands (open, write,
/// close, reset, consume only what arrived, ping, go away).
let yamuxTarget = FuzzTarget(
    name: "yamux", summary: "Yamux session (client/server) fed any bytes and commands",
    maxLength: 8192,
    run: { b in
        var input = FuzzInput(b)
        let mode = input.byte()
        let config = yamuxConfigs[Int(mode >> 1) % yamuxConfigs.count]
        var s = YamuxSession(role: mode & 1 == 0 ? .client : .server, config: config)
        var ids: [UInt32] = []
        var unconsumed: [UInt32: Int] = [:]
        func pick() -> UInt32 {
            let k = input.byte()
            if k >= 0xf0 || ids.isEmpty { return k >= 0xf0 ? input.u32() : UInt32(k) }
            return ids[Int(k) % ids.count]
        }
        var steps = 0
        while !input.isAtEnd, steps < 512 {
            steps += 1
            var out = ByteBuffer()
            switch input.byte() % 8 {
            case 0:
                let events: [YamuxSession.Event]
                do { events = try s.receive(ByteBuffer(bytes: input.chunk()), into: &out) } catch {
                    s.goAway(code: 1, into: &out)
                    checkYamuxOutput(out.bytes, maxDataFrame: config.maxDataFrame)
                    return
                }
                for e in events {
                    switch e {
                    case .streamOpened(let id):
                        check(id % 2 == (mode & 1 == 0 ? 0 : 1), "remote opened stream \(id) of our parity")
                        ids.append(id)
                    case .data(let id, let data):
                        check(data.readableBytes > 0, "empty data event")
                        unconsumed[id, default: 0] += data.readableBytes
                    default: break
                    }
                }
            case 1:
                if let id = try? s.openStream(into: &out) {
                    check(id % 2 == (mode & 1 == 0 ? 1 : 0), "opened stream \(id) of the remote's parity")
                    check(!ids.contains(id), "stream ID \(id) handed out twice")
                    ids.append(id)
                }
            case 2:
                let id = pick()
                try? s.write(id, ByteBuffer(bytes: input.chunk()), into: &out)
            case 3:
                s.closeWrite(pick(), into: &out)
            case 4:
                s.reset(pick(), into: &out)
            case 5:
                let id = pick()
                let have = unconsumed[id] ?? 0
                let n = min(have, Int(input.u16()))
                if n > 0 {
                    s.consumed(id, n, into: &out)
                    unconsumed[id] = have - n
                }
            case 6:
                s.ping(input.u32(), into: &out)
            default:
                s.goAway(code: UInt32(input.byte()), into: &out)
            }
            checkYamuxOutput(out.bytes, maxDataFrame: config.maxDataFrame)
            for id in ids {
                if let w = s.receiveWindow(id) {
                    check(w <= max(config.receiveWindow, 256 * 1024), "stream \(id) receive window \(w) above the configured \(config.receiveWindow)")
                }
            }
        }
    },
    seeds: { _ in
        func frame(_ type: UInt8, _ flags: UInt16, _ id: UInt32, _ length: UInt32, _ payload: [UInt8] = []) -> [UInt8] {
            [0, type, UInt8(flags >> 8), UInt8(flags & 0xff),
             UInt8(id >> 24), UInt8((id >> 16) & 0xff), UInt8((id >> 8) & 0xff), UInt8(id & 0xff),
             UInt8(length >> 24), UInt8((length >> 16) & 0xff), UInt8((length >> 8) & 0xff), UInt8(length & 0xff)] + payload
        }
        func recv(_ bytes: [UInt8]) -> [UInt8] { [0] + encodeChunk(bytes) }
        let hello = Array("hello".utf8)
        return [
            // client: the server opens stream 2, sends data, FIN; we consume, reply and close.
            [0] + recv(frame(1, 1, 2, 0) + frame(0, 0, 2, 5, hello)) + [5, 0, 0, 5, 2, 0] + encodeChunk(hello) + [3, 0]
                + recv(frame(0, 4, 2, 0)),
            // server: the client opens 1 with data in the SYN; ping; window update; RST.
            [1] + recv(frame(0, 1, 1, 5, hello)) + recv(frame(2, 1, 0, 7)) + recv(frame(1, 0, 1, 1000)) + recv(frame(1, 8, 1, 0)),
            // we open, write beyond the window in a small config, the remote credits it.
            [2, 1, 2, 0] + encodeChunk([UInt8](repeating: 1, count: 3000)) + recv(frame(1, 2, 1, 0) + frame(1, 0, 1, 100_000)),
            // go away both ways, ping ack.
            [0] + recv(frame(3, 0, 0, 0) + frame(2, 2, 0, 9)) + [7, 2, 6, 0, 0, 0, 1],
            // protocol errors: bad version, bad type, data over the window, stream frame on 0.
            [0] + recv([1] + Array(frame(0, 0, 1, 0).dropFirst())),
            [1] + recv(frame(7, 0, 1, 0)),
            [1] + recv(frame(0, 1, 1, 300_000)),
            [0] + recv(frame(1, 1, 0, 0)),
            // many inbound streams in the small config.
            [3] + recv(frame(1, 1, 1, 0) + frame(1, 1, 3, 0) + frame(1, 1, 5, 0) + frame(0, 1, 7, 2, [1, 2])),
        ]
    })

// MARK: secure-connection

/// The whole connection upgrade (`SecureConnectionMachine`, identity A) against a scripted peer B
/// built from the public pieces: multistream-select for /noise, the libp2p Noise handshake, then
/// whatever plaintext the input has B seal (muxer negotiation, Yamux frames), plus the
/// application's commands on A. Untampered security layers must never fail.
let secureConnectionTarget = FuzzTarget(
    name: "secure-connection", summary: "multistream + Noise + multistream + Yamux upgrade vs a scripted peer",
    maxLength: 8192,
    run: { b in runSecureConnection(b) },
    seeds: { _ in secureConnectionSeeds() })

func runSecureConnection(_ b: [UInt8]) {
    var input = FuzzInput(b)
    let mode = input.byte()
    let subjectInitiator = mode & 1 == 1
    var subject = SecureConnectionMachine(role: subjectInitiator ? .initiator : .responder, identity: Fixed.keyA,
                                          expectedRemote: mode & 2 != 0 ? Fixed.peerB : nil,
                                          yamuxConfig: yamuxConfigs[Int(mode >> 2) % yamuxConfigs.count])
    var peerMS = subjectInitiator ? MultistreamSelect.listener(["/noise"]) : MultistreamSelect.dialer(["/noise"])
    var peerNoise: Libp2pNoiseHandshake?
    var peerTransport: NoiseTransport?
    var peerFailed = false, tampered = false
    var toSubject: [UInt8] = peerMS.start(), toPeer: [UInt8] = []
    var closeError: ConnectionError?
    var ids: [UInt32] = []
    var unconsumed: [UInt32: Int] = [:]

    func apply(_ actions: [SecureConnectionMachine.Action]) {
        for a in actions {
            switch a {
            case .send(let buf): toPeer += buf.bytes
            case .established(let remote): check(remote == Fixed.peerB, "established with \(remote), not B")
            case .stream(let e):
                switch e {
                case .streamOpened(let id): ids.append(id)
                case .data(let id, let d): unconsumed[id, default: 0] += d.readableBytes
                default: break
                }
            case .close(let e): closeError = closeError ?? e
            }
        }
    }
    apply(subject.start())

    func peerReceive(_ bytes: [UInt8]) {
        guard !peerFailed, !bytes.isEmpty else { return }
        if var t = peerTransport {
            var out = ByteBuffer()
            do { try t.open(ByteBuffer(bytes: bytes), into: &out) } catch { peerFailed = true; return }
            peerTransport = t
            return
        }
        if var hs = peerNoise {
            do {
                let out = try hs.receive(ByteBuffer(bytes: bytes))
                toSubject += out.send.bytes
                if let est = out.established {
                    check(est.remote == Fixed.peerA, "peer authenticated \(est.remote), not A")
                    peerTransport = est.transport
                }
            } catch { peerFailed = true }
            peerNoise = hs
            return
        }
        do {
            let out = try peerMS.receive(bytes)
            toSubject += out.send
            if let agreed = out.agreed {
                var hs = Libp2pNoiseHandshake(role: subjectInitiator ? .responder : .initiator, identity: Fixed.keyB,
                                              staticKey: Fixed.staticB, ephemeralKey: Fixed.ephemeralB)
                toSubject += try hs.start().bytes
                peerNoise = hs
                peerReceive(agreed.remainder)
            }
        } catch { peerFailed = true }
    }
    func peerSeal(_ plaintext: [UInt8]) {
        guard var t = peerTransport else { return }
        var out = ByteBuffer()
        do { try t.seal(ByteBuffer(bytes: plaintext), into: &out) } catch { check(false, "seal: \(error)") }
        peerTransport = t
        toSubject += out.bytes
    }
    func feedSubject(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        apply(subject.receive(ByteBuffer(bytes: bytes)))
    }
    func pick() -> UInt32 {
        let k = input.byte()
        return ids.isEmpty ? UInt32(k) : ids[Int(k) % ids.count]
    }
    func pump() {
        for _ in 0..<4 {
            let s = toSubject; toSubject = []
            feedSubject(s)
            let p = toPeer; toPeer = []
            peerReceive(p)
        }
    }

    var steps = 0
    while !input.isAtEnd, steps < 256 {
        steps += 1
        switch input.byte() % 12 {
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
            let p = toPeer; toPeer = []
            peerReceive(p)
        case 4:
            peerSeal(input.chunk())
        case 5:
            peerSeal(MultistreamSelect.encode(MultistreamSelect.protocolID) + MultistreamSelect.encode(YamuxSession.protocolID))
        case 6:
            if let (id, actions) = try? subject.openStream() { ids.append(id); apply(actions) }
        case 7:
            let id = pick()
            if let r = try? subject.write(id, ByteBuffer(bytes: input.chunk())) { apply(r.actions) }
        case 8:
            let id = pick()
            apply(input.byte() & 1 == 0 ? subject.closeWrite(id) : subject.reset(id))
        case 9:
            let id = pick()
            let have = unconsumed[id] ?? 0
            let n = min(have, Int(input.u16()))
            if n > 0 { apply(subject.consumed(id, n)); unconsumed[id] = have - n }
        case 10:
            switch input.byte() % 4 {
            case 0: apply(subject.ping(input.u32()))
            case 1: apply(subject.close())
            case 2: apply(subject.handshakeTimedOut())
            default: _ = subject.pendingBytes(pick())
            }
        default:
            pump()
        }
    }
    if !tampered {
        pump()
        check(!peerFailed, "the honest peer failed on the subject's bytes")
        switch closeError {
        case .noise(let e)?: check(false, "untampered Noise layer failed: \(e)")
        case .securityNegotiation(let e)?: check(false, "untampered security negotiation failed: \(e)")
        default: break
        }
    }
}

func secureConnectionSeeds() -> [[UInt8]] {
    func frame(_ type: UInt8, _ flags: UInt16, _ id: UInt32, _ length: UInt32, _ payload: [UInt8] = []) -> [UInt8] {
        [0, type, UInt8(flags >> 8), UInt8(flags & 0xff),
         UInt8(id >> 24), UInt8((id >> 16) & 0xff), UInt8((id >> 8) & 0xff), UInt8(id & 0xff),
         UInt8(length >> 24), UInt8((length >> 16) & 0xff), UInt8((length >> 8) & 0xff), UInt8(length & 0xff)] + payload
    }
    let hello = Array("hello".utf8)
    var seeds: [[UInt8]] = []
    for mode: UInt8 in [0, 1, 3, 4] {
        let remoteID: UInt32 = mode & 1 == 1 ? 2 : 1  // the peer's parity
        seeds.append([mode, 11])
        seeds.append([mode, 11, 5, 11])
        seeds.append([mode, 11, 5, 11, 4] + encodeChunk(frame(1, 1, remoteID, 0) + frame(0, 0, remoteID, 5, hello)) + [11, 9, 0, 0, 5, 7, 0] + encodeChunk(hello) + [8, 0, 0, 11])
        seeds.append([mode, 11, 5, 11, 6, 7, 0] + encodeChunk(hello) + [10, 0, 0, 0, 0, 1, 11, 10, 1, 11])
        seeds.append([mode, 11, 5, 11, 4] + encodeChunk(frame(2, 1, 0, 42) + frame(3, 0, 0, 0)) + [11])
        seeds.append([mode, 0, 3, 3, 0, 0, 3, 0, 0, 11, 5, 0, 7, 11])
        seeds.append([mode, 11, 2, 0, 40, 1, 11])
        seeds.append([mode, 11, 4] + encodeChunk(MultistreamSelect.encode(MultistreamSelect.protocolID) + MultistreamSelect.encode("/mplex/6.7.0")) + [11])
    }
    return seeds
}
