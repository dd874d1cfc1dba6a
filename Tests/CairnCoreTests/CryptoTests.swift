import XCTest

@testable import CairnCore
import CairnCrypto

final class CryptoTests: XCTestCase {

    // MARK: Ed25519 (RFC 8032 section 7.1)

    func testEd25519PublicKeyFromSeed() throws {
        for c in SpecVectors.RFC8032.cases {
            let key = try Ed25519PrivateKey(seed: bytes(hex: c.secretKeyHex))
            XCTAssertEqual(key.publicKey.rawRepresentation, bytes(hex: c.publicKeyHex), c.name)
            XCTAssertEqual(key.seed, bytes(hex: c.secretKeyHex), c.name)
            // libp2p's 64-byte private key form is seed || public key.
            XCTAssertEqual(key.libp2pBytes, bytes(hex: c.secretKeyHex) + bytes(hex: c.publicKeyHex), c.name)
        }
    }

    func testEd25519SignatureBytes() throws {
        for c in SpecVectors.RFC8032.cases {
            let key = try Ed25519PrivateKey(seed: bytes(hex: c.secretKeyHex))
            XCTAssertEqual(key.signature(for: bytes(hex: c.messageHex)), bytes(hex: c.signatureHex), c.name)
        }
    }

    func testEd25519Verification() throws {
        for c in SpecVectors.RFC8032.cases {
            let pub = try Ed25519PublicKey(rawRepresentation: bytes(hex: c.publicKeyHex))
            let msg = bytes(hex: c.messageHex)
            let sig = bytes(hex: c.signatureHex)
            XCTAssertTrue(pub.isValidSignature(sig, for: msg), c.name)

            // Any single flipped bit in the signature fails (R half, S half, and the top bit).
            for (index, bit) in [(0, 0), (31, 7), (32, 0), (63, 6)] {
                var bad = sig
                bad[index] ^= 1 << bit
                XCTAssertFalse(pub.isValidSignature(bad, for: msg), "\(c.name) sig byte \(index) bit \(bit)")
            }
            // A flipped message bit, or an extra byte, fails.
            if !msg.isEmpty {
                var badMsg = msg
                badMsg[0] ^= 0x01
                XCTAssertFalse(pub.isValidSignature(sig, for: badMsg), c.name)
            }
            XCTAssertFalse(pub.isValidSignature(sig, for: msg + [0]), c.name)
            // Truncated or over-long signatures are rejected, not trapped on.
            XCTAssertFalse(pub.isValidSignature(Array(sig.dropLast()), for: msg), c.name)
            XCTAssertFalse(pub.isValidSignature(sig + [0], for: msg), c.name)
            XCTAssertFalse(pub.isValidSignature([], for: msg), c.name)
        }
        // A signature by one RFC key does not verify under another.
        let c1 = SpecVectors.RFC8032.cases[0], c2 = SpecVectors.RFC8032.cases[1]
        let pub2 = try Ed25519PublicKey(rawRepresentation: bytes(hex: c2.publicKeyHex))
        XCTAssertFalse(pub2.isValidSignature(bytes(hex: c1.signatureHex), for: bytes(hex: c1.messageHex)))
    }

    func testEd25519KeyLengthsAreChecked() {
        assertThrows(try Ed25519PrivateKey(seed: [UInt8](repeating: 1, count: 31)),
                     CryptoError.invalidKeyLength(expected: 32, got: 31))
        assertThrows(try Ed25519PublicKey(rawRepresentation: [UInt8](repeating: 1, count: 33)),
                     CryptoError.invalidKeyLength(expected: 32, got: 33))
        assertThrows(try Ed25519PrivateKey(libp2pBytes: [UInt8](repeating: 1, count: 48)),
                     CryptoError.invalidKeyLength(expected: 64, got: 48))
    }

    func testEd25519Libp2pBytesMustCarryTheMatchingPublicKey() throws {
        let c = SpecVectors.RFC8032.cases[0]
        let good = bytes(hex: c.secretKeyHex) + bytes(hex: c.publicKeyHex)
        XCTAssertEqual(try Ed25519PrivateKey(libp2pBytes: good).publicKey.rawRepresentation, bytes(hex: c.publicKeyHex))
        // 32 bytes is taken as a bare seed.
        XCTAssertEqual(try Ed25519PrivateKey(libp2pBytes: bytes(hex: c.secretKeyHex)).publicKey.rawRepresentation,
                       bytes(hex: c.publicKeyHex))
        // seed || someone else's public key is refused.
        let mismatched = bytes(hex: c.secretKeyHex) + bytes(hex: SpecVectors.RFC8032.cases[1].publicKeyHex)
        XCTAssertThrowsError(try Ed25519PrivateKey(libp2pBytes: mismatched))
    }

    // MARK: Hashes

    func testSHA256KnownDigests() {
        // FIPS 180-2 "abc" and the empty string.
        XCTAssertEqual(SHA256.hash(utf8("abc")),
                       bytes(hex: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
        XCTAssertEqual(SHA256.hash([UInt8]()),
                       bytes(hex: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"))
    }

    func testHMACSHA256RFC4231() {
        for c in SpecVectors.RFC4231.cases {
            XCTAssertEqual(HMACSHA256.authenticate(key: bytes(hex: c.keyHex), message: bytes(hex: c.dataHex)),
                           bytes(hex: c.hmacSHA256Hex), c.name)
        }
        // Changing a key byte changes the MAC. (Appending a zero byte would not: HMAC zero-pads keys.)
        let c = SpecVectors.RFC4231.cases[0]
        var key = bytes(hex: c.keyHex)
        key[0] ^= 1
        XCTAssertNotEqual(HMACSHA256.authenticate(key: key, message: bytes(hex: c.dataHex)), bytes(hex: c.hmacSHA256Hex))
        // Keys longer than the 64-byte block are hashed first (RFC 4231 test case 6).
        XCTAssertEqual(HMACSHA256.authenticate(key: [UInt8](repeating: 0xaa, count: 131),
                                               message: utf8("Test Using Larger Than Block-Size Key - Hash Key First")),
                       bytes(hex: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"))
    }

    func testHKDFRFC5869TestCase1() {
        let v = SpecVectors.RFC5869.self
        let prk = HKDFSHA256.extract(salt: bytes(hex: v.saltHex), inputKeyMaterial: bytes(hex: v.ikmHex))
        XCTAssertEqual(prk, bytes(hex: v.prkHex))
        XCTAssertEqual(HKDFSHA256.expand(pseudoRandomKey: prk, info: bytes(hex: v.infoHex), outputLength: v.length),
                       bytes(hex: v.okmHex))
        XCTAssertEqual(HKDFSHA256.deriveKey(inputKeyMaterial: bytes(hex: v.ikmHex), salt: bytes(hex: v.saltHex),
                                            info: bytes(hex: v.infoHex), outputLength: v.length),
                       bytes(hex: v.okmHex))
        // A shorter output is a prefix of the longer one.
        XCTAssertEqual(HKDFSHA256.expand(pseudoRandomKey: prk, info: bytes(hex: v.infoHex), outputLength: 10),
                       Array(bytes(hex: v.okmHex).prefix(10)))
    }

    func testHKDFRFC5869TestCase3EmptySaltAndInfo() {
        // RFC 5869 Appendix A.3 (zero-length salt and info; the salt defaults to 32 zero bytes).
        let ikm = [UInt8](repeating: 0x0b, count: 22)
        let prk = HKDFSHA256.extract(salt: [], inputKeyMaterial: ikm)
        XCTAssertEqual(prk, bytes(hex: "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"))
        XCTAssertEqual(HKDFSHA256.expand(pseudoRandomKey: prk, info: [], outputLength: 42),
                       bytes(hex: "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"))
    }

    // MARK: ChaCha20-Poly1305

    func testChaChaPolyRFC8439Vector() throws {
        // RFC 8439 section 2.8.2.
        let key = Array(UInt8(0x80)...UInt8(0x9f))
        let nonce = bytes(hex: "070000004041424344454647")
        let aad = bytes(hex: "50515253c0c1c2c3c4c5c6c7")
        let plaintext = utf8("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")
        let expected = bytes(hex: """
            d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b\
            1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc\
            3ff4def08e4b7a9de576d26586cec64b6116\
            1ae10b594f09e26a7e902ecbd0600691
            """)
        let sealed = ChaChaPoly.seal(key: key, nonce: nonce, plaintext: plaintext, additionalData: aad)
        XCTAssertEqual(sealed, expected)
        XCTAssertEqual(try ChaChaPoly.open(key: key, nonce: nonce, ciphertext: expected, additionalData: aad), plaintext)
    }

    func testChaChaPolyRoundTripAndTamperDetection() throws {
        let key = [UInt8](repeating: 7, count: 32)
        let nonce = [UInt8](repeating: 0, count: 12)
        let ad = utf8("header")
        let pt = utf8("attack at dawn")
        let ct = ChaChaPoly.seal(key: key, nonce: nonce, plaintext: pt, additionalData: ad)
        XCTAssertEqual(ct.count, pt.count + ChaChaPoly.tagLength)
        XCTAssertNotEqual(Array(ct.prefix(pt.count)), pt)
        XCTAssertEqual(try ChaChaPoly.open(key: key, nonce: nonce, ciphertext: ct, additionalData: ad), pt)

        for index in [0, pt.count - 1, pt.count, ct.count - 1] {
            var bad = ct
            bad[index] ^= 0x80
            assertThrows(try ChaChaPoly.open(key: key, nonce: nonce, ciphertext: bad, additionalData: ad),
                         CryptoError.decryptionFailed)
        }
        var otherNonce = nonce
        otherNonce[11] = 1
        assertThrows(try ChaChaPoly.open(key: key, nonce: otherNonce, ciphertext: ct, additionalData: ad),
                     CryptoError.decryptionFailed)
        assertThrows(try ChaChaPoly.open(key: key, nonce: nonce, ciphertext: ct, additionalData: utf8("headeR")),
                     CryptoError.decryptionFailed)
        var otherKey = key
        otherKey[0] ^= 1
        assertThrows(try ChaChaPoly.open(key: otherKey, nonce: nonce, ciphertext: ct, additionalData: ad),
                     CryptoError.decryptionFailed)
        // Shorter than a tag, and truncated by one byte.
        assertThrows(try ChaChaPoly.open(key: key, nonce: nonce, ciphertext: Array(ct.prefix(15)), additionalData: ad),
                     CryptoError.decryptionFailed)
        assertThrows(try ChaChaPoly.open(key: key, nonce: nonce, ciphertext: Array(ct.dropLast()), additionalData: ad),
                     CryptoError.decryptionFailed)
    }

    func testChaChaPolyEmptyPlaintextAndAD() throws {
        let key = [UInt8](repeating: 3, count: 32)
        let nonce = [UInt8](repeating: 9, count: 12)
        let ct = ChaChaPoly.seal(key: key, nonce: nonce, plaintext: [], additionalData: [])
        XCTAssertEqual(ct.count, 16)
        XCTAssertEqual(try ChaChaPoly.open(key: key, nonce: nonce, ciphertext: ct, additionalData: []), [])
        assertThrows(try ChaChaPoly.open(key: key, nonce: nonce, ciphertext: ct, additionalData: [0]),
                     CryptoError.decryptionFailed)
    }

    // MARK: X25519

    func testX25519RFC7748() throws {
        // RFC 7748 section 6.1.
        let alice = try X25519PrivateKey(rawRepresentation: bytes(hex: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
        let bob = try X25519PrivateKey(rawRepresentation: bytes(hex: "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
        XCTAssertEqual(alice.publicKey, bytes(hex: "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
        XCTAssertEqual(bob.publicKey, bytes(hex: "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
        let shared = bytes(hex: "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        XCTAssertEqual(try alice.sharedSecret(with: bob.publicKey), shared)
        XCTAssertEqual(try bob.sharedSecret(with: alice.publicKey), shared)
    }

    func testX25519LowOrderPointsRejected() throws {
        let key = try X25519PrivateKey(rawRepresentation: [UInt8](repeating: 0x42, count: 32))
        // u = 0 and u = 1 are small-order points: the shared secret would be all zeros.
        assertThrows(try key.sharedSecret(with: [UInt8](repeating: 0, count: 32)), CryptoError.weakPublicKey)
        assertThrows(try key.sharedSecret(with: [1] + [UInt8](repeating: 0, count: 31)), CryptoError.weakPublicKey)
        assertThrows(try key.sharedSecret(with: [UInt8](repeating: 9, count: 31)),
                     CryptoError.invalidKeyLength(expected: 32, got: 31))
        assertThrows(try X25519PrivateKey(rawRepresentation: [UInt8](repeating: 1, count: 16)),
                     CryptoError.invalidKeyLength(expected: 32, got: 16))
    }

    func testConstantTimeEqualsAndRandom() {
        XCTAssertTrue(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        XCTAssertFalse(constantTimeEquals([1, 2, 3], [1, 2, 4]))
        XCTAssertFalse(constantTimeEquals([1, 2, 3], [1, 2]))
        XCTAssertTrue(constantTimeEquals([], []))
        let a = secureRandomBytes(32), b = secureRandomBytes(32)
        XCTAssertEqual(a.count, 32)
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(secureRandomBytes(0), [])
    }
}
