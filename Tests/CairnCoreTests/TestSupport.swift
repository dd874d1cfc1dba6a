import Foundation
import NIOCore
import XCTest

@testable import CairnCore
import CairnCrypto

// Helpers shared by the CairnCore tests. They are written independently of the code under test
// (their own hex decoder and protobuf field encoder), so a bug in CairnCore's codecs cannot hide
// itself by also corrupting the expected values.

/// Decodes a hex string (either case). A malformed literal is a bug in the test itself.
func bytes(hex: String, file: StaticString = #filePath, line: UInt = #line) -> [UInt8] {
    let chars = Array(hex.utf8)
    guard chars.count % 2 == 0 else {
        XCTFail("odd-length hex literal", file: file, line: line)
        return []
    }
    func nib(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 65...70: return c - 55
        case 97...102: return c - 87
        default: return nil
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(chars.count / 2)
    var i = 0
    while i < chars.count {
        guard let hi = nib(chars[i]), let lo = nib(chars[i + 1]) else {
            XCTFail("bad hex literal", file: file, line: line)
            return []
        }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}

func bytes(base64: String, file: StaticString = #filePath, line: UInt = #line) -> [UInt8] {
    guard let d = Data(base64Encoded: base64) else {
        XCTFail("bad base64 literal", file: file, line: line)
        return []
    }
    return [UInt8](d)
}

func utf8(_ s: String) -> [UInt8] { Array(s.utf8) }

extension ByteBuffer {
    var bytes: [UInt8] { Array(readableBytesView) }
}

func buffer(_ b: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: b) }
func buffer(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

/// A deterministic identity from a one-byte seed pattern.
func testKey(_ n: UInt8) -> PrivateKey {
    PrivateKey(ed25519: try! Ed25519PrivateKey(seed: [UInt8](repeating: n, count: 32)))
}

/// A tiny protobuf encoder, independent of SwiftProtobuf and of CairnCore.
enum PB {
    static func varint(_ value: UInt64) -> [UInt8] {
        var v = value
        var out: [UInt8] = []
        repeat {
            var b = UInt8(v & 0x7f)
            v >>= 7
            if v != 0 { b |= 0x80 }
            out.append(b)
        } while v != 0
        return out
    }

    /// A length-delimited field (wire type 2).
    static func field(_ number: Int, _ value: [UInt8]) -> [UInt8] {
        varint(UInt64(number << 3 | 2)) + varint(UInt64(value.count)) + value
    }

    static func field(_ number: Int, _ value: String) -> [UInt8] { field(number, utf8(value)) }

    /// A varint field (wire type 0).
    static func varintField(_ number: Int, _ value: UInt64) -> [UInt8] {
        varint(UInt64(number << 3)) + varint(value)
    }

    /// libp2p `PublicKey`/`PrivateKey`: Type = 1 (enum), Data = 2.
    static func key(type: UInt64, data: [UInt8]) -> [UInt8] {
        varintField(1, type) + field(2, data)
    }

    /// `NoiseHandshakePayload`: identity_key = 1, identity_sig = 2.
    static func noisePayload(identityKey: [UInt8]?, identitySig: [UInt8]?) -> [UInt8] {
        var out: [UInt8] = []
        if let k = identityKey { out += field(1, k) }
        if let s = identitySig { out += field(2, s) }
        return out
    }

    /// `Envelope`: public_key = 1 (message), payload_type = 2, payload = 3, signature = 5.
    static func envelope(publicKey: [UInt8], payloadType: [UInt8], payload: [UInt8], signature: [UInt8]) -> [UInt8] {
        field(1, publicKey) + field(2, payloadType) + field(3, payload) + field(5, signature)
    }

    /// `PeerRecord`: peer_id = 1, seq = 2, addresses = 3 (AddressInfo { multiaddr = 1 }).
    static func peerRecord(peerID: [UInt8], seq: UInt64, addresses: [[UInt8]]) -> [UInt8] {
        var out = field(1, peerID) + varintField(2, seq)
        for a in addresses { out += field(3, field(1, a)) }
        return out
    }
}

// MARK: - Error assertions

/// Asserts that `expression` throws exactly `expected`.
func assertThrows<T, E: Error & Equatable>(
    _ expression: @autoclosure () throws -> T, _ expected: E,
    file: StaticString = #filePath, line: UInt = #line
) {
    do {
        let value = try expression()
        XCTFail("expected \(expected), but got a value: \(value)", file: file, line: line)
    } catch let error as E {
        XCTAssertEqual(error, expected, file: file, line: line)
    } catch {
        XCTFail("expected \(expected), got \(type(of: error)): \(error)", file: file, line: line)
    }
}

/// Asserts that `expression` throws an `E` satisfying `matches` (for cases with free-text details).
func assertThrows<T, E: Error>(
    _ expression: @autoclosure () throws -> T, as: E.Type, _ what: String = "",
    file: StaticString = #filePath, line: UInt = #line, _ matches: (E) -> Bool
) {
    do {
        let value = try expression()
        XCTFail("expected a \(E.self) \(what), but got a value: \(value)", file: file, line: line)
    } catch let error as E {
        XCTAssertTrue(matches(error), "unexpected \(E.self) \(what): \(error)", file: file, line: line)
    } catch {
        XCTFail("expected a \(E.self) \(what), got \(type(of: error)): \(error)", file: file, line: line)
    }
}
