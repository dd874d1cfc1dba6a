import CSodium

/// Errors from the cryptographic wrapper. Every failure of a primitive surfaces as one of these;
/// nothing here traps on bad input.
public enum CryptoError: Error, Equatable, Sendable {
    case invalidKeyLength(expected: Int, got: Int)
    case invalidSignatureLength
    case decryptionFailed
    case weakPublicKey
    case libsodiumUnavailable
}

/// libsodium must be initialised once before use; `sodium_init` is idempotent and thread-safe.
enum Sodium {
    static let ready: Bool = sodium_init() >= 0

    @inline(__always)
    static func ensure() {
        precondition(ready, "libsodium failed to initialise")
    }
}

/// Calls `body` with a non-null pointer to `bytes` (libsodium's pointers are non-null even for
/// zero-length input, and an empty Swift array has no base address).
@inline(__always)
func withNonNullBytes<R>(_ bytes: [UInt8], _ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
    if bytes.isEmpty {
        var zero: UInt8 = 0
        return withUnsafePointer(to: &zero) { body($0, 0) }
    }
    return bytes.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
}

/// Cryptographically secure random bytes.
public func secureRandomBytes(_ count: Int) -> [UInt8] {
    Sodium.ensure()
    var out = [UInt8](repeating: 0, count: count)
    if count > 0 { out.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) } }
    return out
}

/// Compares two byte strings in constant time (for equal lengths).
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    if a.isEmpty { return true }
    return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in sodium_memcmp(pa.baseAddress, pb.baseAddress, a.count) == 0 } }
}

// MARK: - Hashes

public enum SHA256 {
    public static let digestLength = 32

    public static func hash<Bytes: Collection>(_ data: Bytes) -> [UInt8] where Bytes.Element == UInt8 {
        Sodium.ensure()
        var out = [UInt8](repeating: 0, count: digestLength)
        let input = Array(data)
        withNonNullBytes(input) { ptr, count in
            _ = crypto_hash_sha256(&out, ptr, UInt64(count))
        }
        return out
    }
}

public enum HMACSHA256 {
    public static func authenticate(key: [UInt8], message: [UInt8]) -> [UInt8] {
        Sodium.ensure()
        var state = crypto_auth_hmacsha256_state()
        var out = [UInt8](repeating: 0, count: 32)
        withNonNullBytes(key) { ptr, count in
            _ = crypto_auth_hmacsha256_init(&state, ptr, count)
        }
        withNonNullBytes(message) { ptr, count in
            _ = crypto_auth_hmacsha256_update(&state, ptr, UInt64(count))
        }
        _ = crypto_auth_hmacsha256_final(&state, &out)
        return out
    }
}

/// HKDF with HMAC-SHA-256 (RFC 5869). libsodium 1.0.18 has no HKDF, so it is built from its HMAC.
public enum HKDFSHA256 {
    public static func extract(salt: [UInt8], inputKeyMaterial: [UInt8]) -> [UInt8] {
        HMACSHA256.authenticate(key: salt.isEmpty ? [UInt8](repeating: 0, count: 32) : salt, message: inputKeyMaterial)
    }

    public static func expand(pseudoRandomKey: [UInt8], info: [UInt8], outputLength: Int) -> [UInt8] {
        precondition(outputLength <= 255 * 32, "HKDF output too long")
        var output: [UInt8] = []
        var previous: [UInt8] = []
        var counter: UInt8 = 1
        while output.count < outputLength {
            previous = HMACSHA256.authenticate(key: pseudoRandomKey, message: previous + info + [counter])
            output += previous
            counter &+= 1
        }
        return Array(output.prefix(outputLength))
    }

    public static func deriveKey(inputKeyMaterial: [UInt8], salt: [UInt8], info: [UInt8], outputLength: Int) -> [UInt8] {
        expand(pseudoRandomKey: extract(salt: salt, inputKeyMaterial: inputKeyMaterial), info: info, outputLength: outputLength)
    }
}

// MARK: - Ed25519

public struct Ed25519PrivateKey: Sendable {
    /// The 32-byte seed.
    public let seed: [UInt8]
    public let publicKey: Ed25519PublicKey
    /// libsodium's 64-byte secret key form (seed || public key), which is also libp2p's wire form.
    let secretKey: [UInt8]

    public init() {
        try! self.init(seed: secureRandomBytes(32))
    }

    public init(seed: [UInt8]) throws {
        guard seed.count == 32 else { throw CryptoError.invalidKeyLength(expected: 32, got: seed.count) }
        Sodium.ensure()
        var pk = [UInt8](repeating: 0, count: 32)
        var sk = [UInt8](repeating: 0, count: 64)
        _ = crypto_sign_ed25519_seed_keypair(&pk, &sk, seed)
        self.seed = seed
        self.secretKey = sk
        self.publicKey = try Ed25519PublicKey(rawRepresentation: pk)
    }

    /// libp2p's protobuf private-key data: 64 bytes (seed then public key). A 32-byte seed is accepted too.
    public init(libp2pBytes bytes: [UInt8]) throws {
        switch bytes.count {
        case 32:
            try self.init(seed: bytes)
        case 64:
            try self.init(seed: Array(bytes[0..<32]))
            guard self.publicKey.rawRepresentation == Array(bytes[32..<64]) else {
                throw CryptoError.invalidKeyLength(expected: 64, got: bytes.count)
            }
        default:
            throw CryptoError.invalidKeyLength(expected: 64, got: bytes.count)
        }
    }

    public var libp2pBytes: [UInt8] { secretKey }

    public func signature<Bytes: Collection>(for message: Bytes) -> [UInt8] where Bytes.Element == UInt8 {
        var sig = [UInt8](repeating: 0, count: 64)
        let m = Array(message)
        m.withUnsafeBufferPointer { mp in
            _ = crypto_sign_ed25519_detached(&sig, nil, mp.baseAddress, UInt64(mp.count), secretKey)
        }
        return sig
    }
}

public struct Ed25519PublicKey: Sendable, Hashable {
    public let rawRepresentation: [UInt8]

    public init(rawRepresentation: [UInt8]) throws {
        guard rawRepresentation.count == 32 else {
            throw CryptoError.invalidKeyLength(expected: 32, got: rawRepresentation.count)
        }
        self.rawRepresentation = rawRepresentation
    }

    public func isValidSignature<Bytes: Collection>(_ signature: [UInt8], for message: Bytes) -> Bool where Bytes.Element == UInt8 {
        guard signature.count == 64 else { return false }
        Sodium.ensure()
        let m = Array(message)
        return withNonNullBytes(m) { ptr, count in
            crypto_sign_ed25519_verify_detached(signature, ptr, UInt64(count), rawRepresentation) == 0
        }
    }
}

// MARK: - X25519

public struct X25519PrivateKey: Sendable {
    public let rawRepresentation: [UInt8]
    public let publicKey: [UInt8]

    public init() {
        try! self.init(rawRepresentation: secureRandomBytes(32))
    }

    public init(rawRepresentation: [UInt8]) throws {
        guard rawRepresentation.count == 32 else {
            throw CryptoError.invalidKeyLength(expected: 32, got: rawRepresentation.count)
        }
        Sodium.ensure()
        var pub = [UInt8](repeating: 0, count: 32)
        _ = crypto_scalarmult_curve25519_base(&pub, rawRepresentation)
        self.rawRepresentation = rawRepresentation
        self.publicKey = pub
    }

    /// Diffie-Hellman with a peer's public key. Fails for low-order points (an all-zero shared secret).
    public func sharedSecret(with peerPublicKey: [UInt8]) throws -> [UInt8] {
        guard peerPublicKey.count == 32 else {
            throw CryptoError.invalidKeyLength(expected: 32, got: peerPublicKey.count)
        }
        var out = [UInt8](repeating: 0, count: 32)
        guard crypto_scalarmult_curve25519(&out, rawRepresentation, peerPublicKey) == 0 else {
            throw CryptoError.weakPublicKey
        }
        return out
    }
}

// MARK: - ChaCha20-Poly1305 (IETF)

public enum ChaChaPoly {
    public static let keyLength = 32
    public static let nonceLength = 12
    public static let tagLength = 16

    public static func seal(key: [UInt8], nonce: [UInt8], plaintext: [UInt8], additionalData: [UInt8]) -> [UInt8] {
        precondition(key.count == keyLength && nonce.count == nonceLength)
        Sodium.ensure()
        var out = [UInt8](repeating: 0, count: plaintext.count + tagLength)
        var outLen: UInt64 = 0
        plaintext.withUnsafeBufferPointer { p in
            additionalData.withUnsafeBufferPointer { ad in
                _ = crypto_aead_chacha20poly1305_ietf_encrypt(
                    &out, &outLen, p.baseAddress, UInt64(p.count), ad.baseAddress, UInt64(ad.count), nil, nonce, key)
            }
        }
        return out
    }

    /// Encrypts `plaintext` into `out` (at least `plaintext.count + tagLength` bytes) with no
    /// additional data: the bulk path, with no intermediate arrays. Returns the bytes written.
    public static func seal(key: [UInt8], nonce: [UInt8], plaintext: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int {
        precondition(key.count == keyLength && nonce.count == nonceLength && out.count >= plaintext.count + tagLength)
        Sodium.ensure()
        var outLen: UInt64 = 0
        _ = crypto_aead_chacha20poly1305_ietf_encrypt(
            out.baseAddress!.assumingMemoryBound(to: UInt8.self), &outLen,
            plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(plaintext.count), nil, 0, nil, nonce, key)
        return Int(outLen)
    }

    /// Decrypts and authenticates `ciphertext` into `out` (at least `ciphertext.count - tagLength`
    /// bytes) with no additional data. Returns the bytes written.
    public static func open(key: [UInt8], nonce: [UInt8], ciphertext: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws -> Int {
        precondition(key.count == keyLength && nonce.count == nonceLength)
        guard ciphertext.count >= tagLength, out.count >= ciphertext.count - tagLength else { throw CryptoError.decryptionFailed }
        Sodium.ensure()
        var outLen: UInt64 = 0
        let rc = crypto_aead_chacha20poly1305_ietf_decrypt(
            out.baseAddress?.assumingMemoryBound(to: UInt8.self), &outLen, nil,
            ciphertext.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(ciphertext.count), nil, 0, nonce, key)
        guard rc == 0 else { throw CryptoError.decryptionFailed }
        return Int(outLen)
    }

    public static func open(key: [UInt8], nonce: [UInt8], ciphertext: [UInt8], additionalData: [UInt8]) throws -> [UInt8] {
        precondition(key.count == keyLength && nonce.count == nonceLength)
        guard ciphertext.count >= tagLength else { throw CryptoError.decryptionFailed }
        Sodium.ensure()
        var out = [UInt8](repeating: 0, count: ciphertext.count - tagLength)
        var outLen: UInt64 = 0
        let rc = withNonNullBytes(ciphertext) { c, cLen in
            additionalData.withUnsafeBufferPointer { ad in
                crypto_aead_chacha20poly1305_ietf_decrypt(
                    &out, &outLen, nil, c, UInt64(cLen), ad.baseAddress, UInt64(ad.count), nonce, key)
            }
        }
        guard rc == 0 else { throw CryptoError.decryptionFailed }
        return out
    }
}
