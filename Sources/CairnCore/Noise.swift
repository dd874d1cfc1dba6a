import CairnCrypto
import NIOCore

public enum NoiseError: Error, Equatable, Sendable, CustomStringConvertible {
    case frameTooLarge(Int)
    case truncatedMessage(String)
    case decryptionFailed
    case weakKey
    case nonceExhausted
    case unexpectedMessage
    case invalidPayload(String)
    case badIdentitySignature
    case wrongRemotePeer(expected: PeerID, got: PeerID)

    public var description: String {
        switch self {
        case .frameTooLarge(let n): return "noise frame of \(n) bytes exceeds the limit"
        case .truncatedMessage(let s): return "truncated noise message: \(s)"
        case .decryptionFailed: return "noise decryption failed"
        case .weakKey: return "noise peer sent a low-order public key"
        case .nonceExhausted: return "noise nonce exhausted"
        case .unexpectedMessage: return "noise message out of order"
        case .invalidPayload(let s): return "invalid noise handshake payload: \(s)"
        case .badIdentitySignature: return "noise identity signature does not verify"
        case .wrongRemotePeer(let e, let g): return "dialed \(e) but the remote is \(g)"
        }
    }
}

/// A Noise CipherState with ChaCha20-Poly1305: 96-bit nonce of 32 zero bits then the 64-bit
/// counter little-endian.
public struct NoiseCipherState: Sendable {
    var key: [UInt8]?
    var nonce: UInt64 = 0

    init(key: [UInt8]? = nil) { self.key = key }

    static func nonceBytes(_ n: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { out[4 + i] = UInt8(truncatingIfNeeded: n >> (8 * UInt64(i))) }
        return out
    }

    mutating func encrypt(ad: [UInt8], plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard let key else { return plaintext }
        guard nonce < UInt64.max else { throw .nonceExhausted }
        defer { nonce += 1 }
        return ChaChaPoly.seal(key: key, nonce: Self.nonceBytes(nonce), plaintext: plaintext, additionalData: ad)
    }

    /// Transport encryption (no additional data) of `plaintext`, appended to `out` as
    /// ciphertext and tag.
    mutating func seal(_ plaintext: ByteBufferView, into out: inout ByteBuffer) throws(NoiseError) {
        guard let key else { out.writeBytes(plaintext); return }
        guard nonce < UInt64.max else { throw .nonceExhausted }
        let nonceBytes = Self.nonceBytes(nonce)
        nonce += 1
        let count = plaintext.count + ChaChaPoly.tagLength
        plaintext.withUnsafeBytes { src in
            _ = out.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { dst in
                ChaChaPoly.seal(key: key, nonce: nonceBytes, plaintext: src, into: dst)
            }
        }
    }

    /// Transport decryption (no additional data) of one frame, appended to `out`.
    mutating func open(_ frame: ByteBuffer, into out: inout ByteBuffer) throws(NoiseError) {
        guard let key else { var f = frame; out.writeBuffer(&f); return }
        guard nonce < UInt64.max else { throw .nonceExhausted }
        let nonceBytes = Self.nonceBytes(nonce)
        let count = frame.readableBytes - ChaChaPoly.tagLength
        var ok = false
        frame.withUnsafeReadableBytes { src in
            _ = out.writeWithUnsafeMutableBytes(minimumWritableBytes: max(count, 1)) { dst in
                guard let n = try? ChaChaPoly.open(key: key, nonce: nonceBytes, ciphertext: src, into: dst) else { return 0 }
                ok = true
                return n
            }
        }
        guard ok else { throw .decryptionFailed }
        nonce += 1
    }

    mutating func decrypt(ad: [UInt8], ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard let key else { return ciphertext }
        guard nonce < UInt64.max else { throw .nonceExhausted }
        do {
            let pt = try ChaChaPoly.open(key: key, nonce: Self.nonceBytes(nonce), ciphertext: ciphertext, additionalData: ad)
            nonce += 1
            return pt
        } catch {
            throw .decryptionFailed
        }
    }
}

/// The Noise SymmetricState for SHA-256.
struct NoiseSymmetricState: Sendable {
    var ck: [UInt8]
    var h: [UInt8]
    var cipher = NoiseCipherState()

    init(protocolName: String) {
        let name = Array(protocolName.utf8)
        h = name.count <= 32 ? name + [UInt8](repeating: 0, count: 32 - name.count) : SHA256.hash(name)
        ck = h
    }

    mutating func mixHash(_ data: [UInt8]) { h = SHA256.hash(h + data) }

    static func hkdf(_ ck: [UInt8], _ ikm: [UInt8]) -> ([UInt8], [UInt8]) {
        let temp = HMACSHA256.authenticate(key: ck, message: ikm)
        let o1 = HMACSHA256.authenticate(key: temp, message: [0x01])
        let o2 = HMACSHA256.authenticate(key: temp, message: o1 + [0x02])
        return (o1, o2)
    }

    mutating func mixKey(_ ikm: [UInt8]) {
        let (newCK, k) = Self.hkdf(ck, ikm)
        ck = newCK
        cipher = NoiseCipherState(key: k)
    }

    mutating func encryptAndHash(_ plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let c = try cipher.encrypt(ad: h, plaintext: plaintext)
        mixHash(c)
        return c
    }

    mutating func decryptAndHash(_ ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let p = try cipher.decrypt(ad: h, ciphertext: ciphertext)
        mixHash(ciphertext)
        return p
    }

    func split() -> (NoiseCipherState, NoiseCipherState) {
        let (k1, k2) = Self.hkdf(ck, [])
        return (NoiseCipherState(key: k1), NoiseCipherState(key: k2))
    }
}

/// The Noise XX handshake (Noise_XX_25519_ChaChaPoly_SHA256), independent of libp2p:
///   -> e
///   <- e, ee, s, es
///   -> s, se
/// Ephemeral keys can be injected so published test vectors can be replayed.
public struct NoiseXXHandshake: Sendable {
    public static let protocolName = "Noise_XX_25519_ChaChaPoly_SHA256"

    public enum Role: Sendable { case initiator, responder }

    public let role: Role
    let s: X25519PrivateKey
    let e: X25519PrivateKey
    var re: [UInt8]?
    public private(set) var remoteStaticKey: [UInt8]?
    var symmetric: NoiseSymmetricState
    private(set) var messageIndex = 0

    public init(role: Role, staticKey: X25519PrivateKey, ephemeralKey: X25519PrivateKey = X25519PrivateKey(), prologue: [UInt8] = []) {
        self.role = role
        self.s = staticKey
        self.e = ephemeralKey
        self.symmetric = NoiseSymmetricState(protocolName: Self.protocolName)
        symmetric.mixHash(prologue)
    }

    public var isComplete: Bool { messageIndex >= 3 }
    public var handshakeHash: [UInt8] { symmetric.h }
    public var staticPublicKey: [UInt8] { s.publicKey }

    /// Whether the next message is ours to write.
    public var isOurTurn: Bool { (messageIndex % 2 == 0) == (role == .initiator) }

    private func dh(_ priv: X25519PrivateKey, _ pub: [UInt8]) throws(NoiseError) -> [UInt8] {
        do { return try priv.sharedSecret(with: pub) } catch { throw .weakKey }
    }

    public mutating func writeMessage(payload: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard isOurTurn, !isComplete else { throw .unexpectedMessage }
        var out: [UInt8] = []
        switch messageIndex {
        case 0:
            out += e.publicKey
            symmetric.mixHash(e.publicKey)
        case 1:
            out += e.publicKey
            symmetric.mixHash(e.publicKey)
            symmetric.mixKey(try dh(e, re!))
            out += try symmetric.encryptAndHash(s.publicKey)
            symmetric.mixKey(try dh(s, re!))
        default:
            out += try symmetric.encryptAndHash(s.publicKey)
            symmetric.mixKey(try dh(s, re!))
        }
        out += try symmetric.encryptAndHash(payload)
        messageIndex += 1
        return out
    }

    public mutating func readMessage(_ message: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard !isOurTurn, !isComplete else { throw .unexpectedMessage }
        var rest = message[...]
        func take(_ n: Int, _ what: String) throws(NoiseError) -> [UInt8] {
            guard rest.count >= n else { throw .truncatedMessage(what) }
            defer { rest = rest.dropFirst(n) }
            return Array(rest.prefix(n))
        }
        switch messageIndex {
        case 0:
            let re = try take(32, "ephemeral key")
            self.re = re
            symmetric.mixHash(re)
        case 1:
            let re = try take(32, "ephemeral key")
            self.re = re
            symmetric.mixHash(re)
            symmetric.mixKey(try dh(e, re))
            let rs = try symmetric.decryptAndHash(try take(48, "static key"))
            remoteStaticKey = rs
            symmetric.mixKey(try dh(e, rs))
        default:
            let rs = try symmetric.decryptAndHash(try take(48, "static key"))
            remoteStaticKey = rs
            symmetric.mixKey(try dh(e, rs))
        }
        if symmetric.cipher.key != nil, rest.count < 16 { throw .truncatedMessage("payload tag") }
        let payload = try symmetric.decryptAndHash(Array(rest))
        messageIndex += 1
        return payload
    }

    /// After the third message: (cipher for initiator→responder, cipher for responder→initiator).
    public func split() -> (initiatorToResponder: NoiseCipherState, responderToInitiator: NoiseCipherState) {
        precondition(isComplete)
        let (c1, c2) = symmetric.split()
        return (c1, c2)
    }
}
