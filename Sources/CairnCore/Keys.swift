import CairnCrypto
import Foundation
import CairnProto
import SwiftASN1
import SwiftProtobuf

public enum KeyError: Error, Equatable, Sendable {
    case malformedProtobuf
    case unsupportedKeyType(Int)
    case invalidKey(String)
    case keyTooLarge(Int)
}

/// A public key in any of the libp2p key types, each able to verify the signatures its peers make
/// (Noise identity proofs, signed envelopes).
public enum PublicKey: Hashable, Sendable {
    case ed25519(Ed25519PublicKey)
    /// A SEC1-encoded secp256k1 point (33 bytes compressed, or 65 bytes uncompressed).
    case secp256k1([UInt8])
    /// A DER SubjectPublicKeyInfo RSA key, with its modulus size.
    case rsa(der: [UInt8], modulusBits: Int)
    /// A DER SubjectPublicKeyInfo ECDSA key.
    case ecdsa(der: [UInt8])

    /// Hard limit on the encoded key, as in go-libp2p (RSA keys above 8192 bits are refused).
    public static let maxEncodedLength = 2048
    public static let maxRSABits = 8192

    /// Decodes libp2p's protobuf `PublicKey` (peer-ids spec).
    public init(protobufBytes bytes: [UInt8]) throws {
        guard bytes.count <= Self.maxEncodedLength else { throw KeyError.keyTooLarge(bytes.count) }
        let pb: Crypto_Pb_PublicKey
        do { pb = try Crypto_Pb_PublicKey(serializedBytes: bytes, partial: true) } catch { throw KeyError.malformedProtobuf }
        guard pb.hasType, pb.hasData else { throw KeyError.malformedProtobuf }
        let data = [UInt8](pb.data)
        switch pb.type {
        case .ed25519:
            do { self = .ed25519(try Ed25519PublicKey(rawRepresentation: data)) } catch {
                throw KeyError.invalidKey("Ed25519 key must be 32 bytes, got \(data.count)")
            }
        case .secp256K1:
            switch (data.count, data.first) {
            case (33, 0x02?), (33, 0x03?), (65, 0x04?): self = .secp256k1(data)
            default: throw KeyError.invalidKey("secp256k1 key is not a SEC1 point")
            }
        case .rsa:
            let bits = try Self.rsaModulusBits(der: data)
            guard bits <= Self.maxRSABits else { throw KeyError.keyTooLarge(bits) }
            self = .rsa(der: data, modulusBits: bits)
        case .ecdsa:
            try Self.checkSubjectPublicKeyInfo(der: data)
            self = .ecdsa(der: data)
        }
    }

    var keyType: Crypto_Pb_KeyType {
        switch self {
        case .ed25519: return .ed25519
        case .secp256k1: return .secp256K1
        case .rsa: return .rsa
        case .ecdsa: return .ecdsa
        }
    }

    public var rawData: [UInt8] {
        switch self {
        case .ed25519(let k): return k.rawRepresentation
        case .secp256k1(let b): return b
        case .rsa(let der, _): return der
        case .ecdsa(let der): return der
        }
    }

    /// The deterministic protobuf encoding, as hashed into peer IDs.
    public var protobufBytes: [UInt8] {
        var pb = Crypto_Pb_PublicKey()
        pb.type = keyType
        pb.data = Data(rawData)
        return try! [UInt8](pb.serializedBytes() as [UInt8])
    }

    /// Verifies a signature as libp2p defines it for the key's type: Ed25519 (libsodium), RSA
    /// PKCS#1 v1.5 with SHA-256, ECDSA and secp256k1 DER signatures over SHA-256 of the message.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        switch self {
        case .ed25519(let k): return k.isValidSignature(signature, for: message)
        case .rsa(let der, _): return PeerKeyVerification.rsa(der: der, signature: signature, message: message)
        case .ecdsa(let der): return PeerKeyVerification.ecdsa(der: der, signature: signature, message: message)
        case .secp256k1(let point): return PeerKeyVerification.secp256k1(point: point, signature: signature, message: message)
        }
    }

    static func rsaModulusBits(der: [UInt8]) throws -> Int {
        do {
            let spki = try DER.parse(der)
            return try DER.sequence(spki, identifier: .sequence) { nodes -> Int in
                guard let algNode = nodes.next(), let keyNode = nodes.next() else {
                    throw KeyError.invalidKey("RSA SubjectPublicKeyInfo is incomplete")
                }
                let oid = try DER.sequence(algNode, identifier: .sequence) { alg -> ASN1ObjectIdentifier in
                    guard let oidNode = alg.next() else { throw KeyError.invalidKey("missing algorithm") }
                    _ = alg.next()  // parameters (NULL)
                    return try ASN1ObjectIdentifier(derEncoded: oidNode)
                }
                guard oid == [1, 2, 840, 113549, 1, 1, 1] else { throw KeyError.invalidKey("not an rsaEncryption key") }
                let bitString = try ASN1BitString(derEncoded: keyNode)
                let rsaKey = try DER.parse(Array(bitString.bytes))
                return try DER.sequence(rsaKey, identifier: .sequence) { parts -> Int in
                    guard let nNode = parts.next(), let eNode = parts.next() else {
                        throw KeyError.invalidKey("RSA key lacks modulus or exponent")
                    }
                    let n = try ArraySlice<UInt8>(derEncoded: nNode)
                    _ = try ArraySlice<UInt8>(derEncoded: eNode)
                    let trimmed = n.drop(while: { $0 == 0 })
                    guard let first = trimmed.first else { throw KeyError.invalidKey("RSA modulus is zero") }
                    return (trimmed.count - 1) * 8 + (8 - first.leadingZeroBitCount)
                }
            }
        } catch let e as KeyError {
            throw e
        } catch {
            throw KeyError.invalidKey("RSA key is not valid DER: \(error)")
        }
    }

    static func checkSubjectPublicKeyInfo(der: [UInt8]) throws {
        do {
            let spki = try DER.parse(der)
            try DER.sequence(spki, identifier: .sequence) { nodes in
                guard let algNode = nodes.next(), let keyNode = nodes.next() else {
                    throw KeyError.invalidKey("SubjectPublicKeyInfo is incomplete")
                }
                _ = try DER.sequence(algNode, identifier: .sequence) { alg in
                    guard let oidNode = alg.next() else { throw KeyError.invalidKey("missing algorithm") }
                    _ = try ASN1ObjectIdentifier(derEncoded: oidNode)
                    _ = alg.next()
                }
                _ = try ASN1BitString(derEncoded: keyNode)
            }
        } catch let e as KeyError {
            throw e
        } catch {
            throw KeyError.invalidKey("key is not valid DER: \(error)")
        }
    }
}

/// A node's own identity key. Cairn makes Ed25519 identities.
public struct PrivateKey: Sendable {
    public let ed25519: Ed25519PrivateKey

    public init(ed25519: Ed25519PrivateKey) { self.ed25519 = ed25519 }

    public static func generate() -> PrivateKey { PrivateKey(ed25519: Ed25519PrivateKey()) }

    public var publicKey: PublicKey { .ed25519(ed25519.publicKey) }
    public var peerID: PeerID { PeerID(publicKey: publicKey) }

    public func sign(_ message: [UInt8]) -> [UInt8] { ed25519.signature(for: message) }

    /// libp2p's protobuf `PrivateKey` encoding (Ed25519: 64 bytes of seed || public key).
    public var protobufBytes: [UInt8] {
        var pb = Crypto_Pb_PrivateKey()
        pb.type = .ed25519
        pb.data = Data(ed25519.libp2pBytes)
        return try! [UInt8](pb.serializedBytes() as [UInt8])
    }

    public init(protobufBytes bytes: [UInt8]) throws {
        let pb: Crypto_Pb_PrivateKey
        do { pb = try Crypto_Pb_PrivateKey(serializedBytes: bytes) } catch { throw KeyError.malformedProtobuf }
        guard pb.hasType, pb.hasData else { throw KeyError.malformedProtobuf }
        guard pb.type == .ed25519 else { throw KeyError.unsupportedKeyType(pb.type.rawValue) }
        do { self.ed25519 = try Ed25519PrivateKey(libp2pBytes: [UInt8](pb.data)) } catch {
            throw KeyError.invalidKey("Ed25519 private key: \(error)")
        }
    }
}
