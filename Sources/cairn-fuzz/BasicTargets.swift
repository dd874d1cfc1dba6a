import CairnCore
import Foundation

// MARK: varint

let varintTarget = FuzzTarget(
    name: "varint", summary: "unsigned varint decode (minimal, <= 9 bytes) and encode round trip",
    maxLength: 16,
    run: { b in
        do throws(Varint.DecodeError) {
            let (v, n) = try Varint.decode(b)
            check(n >= 1 && n <= Varint.maxBytes && n <= b.count, "varint length \(n) for \(b.count) bytes")
            check(Varint.encode(v) == Array(b[0..<n]), "varint \(v) does not re-encode to its \(n) input bytes")
        } catch .truncated {
            check(b.count < Varint.maxBytes + 1 && b.allSatisfy { $0 & 0x80 != 0 }, "truncated reported for a terminated varint")
        } catch {}
        // The slice path (decoders read varints from the middle of buffers).
        if b.count > 1 { _ = try? Varint.decode(b[1...]) }
        // encode -> decode for the value the first 8 bytes spell.
        var v: UInt64 = 0
        for x in b.prefix(8) { v = v << 8 | UInt64(x) }
        let e = Varint.encode(v)
        if v < 1 << 63 {
            let d = try? Varint.decode(e)
            check(d?.value == v && d?.length == e.count, "encode/decode of \(v)")
        } else {
            check((try? Varint.decode(e)) == nil, "a 64-bit value decoded")
        }
    },
    seeds: { _ in
        [[0x00], [0x01], [0x7f], [0x80, 0x01], [0xff, 0x01], [0xac, 0x02], [0x80, 0x80, 0x01],
         [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], [0x80, 0x00], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]]
            + [UInt64(300), 16384, 1 << 32, 1 << 56].map { Varint.encode($0) }
    })

// MARK: length-prefixed framing

/// Input: limit selector, chunk-size bytes (chunk), then the stream.
let lengthPrefixedTarget = FuzzTarget(
    name: "length-prefixed", summary: "uvarint-length-prefixed framing: limits, any split, exact re-framing",
    maxLength: 16 * 1024,
    run: { b in
        var input = FuzzInput(b)
        let limits = [0, 1, 127, 128, 4096, 65536]
        let limit = limits[Int(input.byte()) % limits.count]
        let sizes = input.chunk()
        let stream = input.rest()

        func decode(_ pieces: [[UInt8]]) -> (messages: [[UInt8]], error: LengthPrefixedDecoder.Failure?, remainder: [UInt8]) {
            var d = LengthPrefixedDecoder(maxLength: limit)
            var messages: [[UInt8]] = []
            for p in pieces {
                d.append(p)
                do {
                    while let m = try d.next() {
                        check(m.count <= limit, "message of \(m.count) bytes over the limit \(limit)")
                        messages.append(m)
                    }
                } catch {
                    return (messages, error, [])
                }
            }
            let buffered = d.bufferedBytes
            let rest = d.takeRemainder()
            check(rest.count == buffered, "bufferedBytes \(buffered) but remainder \(rest.count)")
            return (messages, nil, rest)
        }
        let whole = decode([stream])
        let pieces = decode(split(stream, sizes: sizes))
        check(whole.messages == pieces.messages, "messages depend on how the input was split")
        check(whole.error == pieces.error, "error depends on how the input was split: \(String(describing: whole.error)) vs \(String(describing: pieces.error))")
        check(whole.remainder == pieces.remainder, "remainder depends on how the input was split")
        if whole.error == nil {
            let reframed = whole.messages.flatMap { LengthPrefixedDecoder.frame($0) }
            check(reframed + whole.remainder == stream, "frames + remainder do not rebuild the stream")
        }
    },
    seeds: { _ in
        let m1 = LengthPrefixedDecoder.frame(Array("hello".utf8))
        let m2 = LengthPrefixedDecoder.frame([UInt8](repeating: 0x61, count: 200))
        let big = LengthPrefixedDecoder.frame([UInt8](repeating: 0x62, count: 5000))
        return [
            [4, 0] + m1, [4, 1, 1] + m1 + m2, [4, 2, 3, 7] + m1 + m2 + [0x05, 0x61], [0, 0] + LengthPrefixedDecoder.frame([]),
            [1, 0, 0x80, 0x00], [5, 1, 13] + big + m1, [2, 0] + m2, [3, 0] + m2, [4, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ]
    })

// MARK: multistream-select

/// Input: role byte, chunk-size bytes (chunk), then what the remote sends.
let multistreamTarget = FuzzTarget(
    name: "multistream", summary: "multistream-select 1.0 dialer and listener fed any bytes, any split",
    maxLength: 4096,
    run: { b in
        var input = FuzzInput(b)
        let role = input.byte()
        let sizes = input.chunk()
        let stream = input.rest()
        let dialerProtocols = ["/noise", "/yamux/1.0.0", "/ipfs/id/1.0.0"]
        let listenerProtocols = ["/noise", "/yamux/1.0.0", "/ipfs/kad/1.0.0", "/ipfs/ping/1.0.0"]
        func fresh() -> MultistreamSelect {
            var m = role & 1 == 0 ? MultistreamSelect.dialer(dialerProtocols) : MultistreamSelect.listener(listenerProtocols)
            _ = m.start()
            return m
        }
        struct Result { var send: [UInt8] = []; var agreed: String?; var remainder: [UInt8] = []; var failed = false }
        func run(_ pieces: [[UInt8]]) -> Result {
            var m = fresh()
            var r = Result()
            for (i, p) in pieces.enumerated() {
                do {
                    let out = try m.receive(p)
                    r.send += out.send
                    if let a = out.agreed {
                        check(m.isDone, "agreed but not done")
                        r.agreed = a.protocolID
                        r.remainder = a.remainder + pieces[(i + 1)...].flatMap { $0 }
                        return r
                    }
                } catch {
                    r.failed = true
                    return r
                }
            }
            return r
        }
        let whole = run([stream])
        let pieces = run(split(stream, sizes: sizes))
        check(whole.failed == pieces.failed, "failure depends on how the input was split")
        if !whole.failed {
            check(whole.agreed == pieces.agreed, "agreement depends on the split: \(String(describing: whole.agreed)) vs \(String(describing: pieces.agreed))")
            check(whole.send == pieces.send, "replies depend on the split")
            check(whole.remainder == pieces.remainder, "remainder depends on the split")
        }
        if let a = whole.agreed {
            check((role & 1 == 0 ? dialerProtocols : listenerProtocols).contains(a), "agreed on '\(a)', which was never offered")
        }
    },
    seeds: { _ in
        let h = MultistreamSelect.encode(MultistreamSelect.protocolID)
        let enc = MultistreamSelect.encode
        return [
            [0, 0] + h + enc("/noise"),
            [0, 1, 1] + h + enc("na") + enc("/yamux/1.0.0") + [1, 2, 3],
            [0, 2, 2, 5] + h + enc("na") + enc("na") + enc("/ipfs/id/1.0.0"),
            [1, 0] + h + enc("/noise") + Array("rest".utf8),
            [1, 0] + h + enc("ls") + enc("/foo") + enc("/yamux/1.0.0"),
            [1, 1, 3] + h + enc("/a") + enc("/b") + enc("/ipfs/ping/1.0.0"),
            [0, 0] + h + [0x80, 0x80, 0x01],
            [1, 0] + h + [0x03, 0x61, 0x0a, 0x0a],
        ]
    })
