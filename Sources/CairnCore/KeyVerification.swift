import CSecp256k1
import Crypto
import _CryptoExtras
import Foundation
import SwiftASN1

/// Signature checks for the key types other libp2p peers use (libp2p peer-ids spec), through
/// well-kept libraries: swift-crypto for RSA (PKCS#1 v1.5 with SHA-256) and ECDSA (a DER
/// signature over SHA-256 of the message, on P-256, P-384 or P-521), Debian's libsecp256k1 for
/// secp256k1 (a DER signature over SHA-256 of the message; high-S accepted, as go-libp2p's
/// btcec does). Cairn's own Ed25519 keys stay libsodium's.
enum PeerKeyVerification {
    static func rsa(der: [UInt8], signature: [UInt8], message: [UInt8]) -> Bool {
        // Not `_RSA.Signing.PublicKey(derRepresentation:)`: in swift-crypto 3.12 a DER that BoringSSL
        // refuses (an even exponent, say) frees the EVP_PKEY twice and aborts the process (found by
        // cairn-fuzz, Tests/CairnCoreTests/FuzzRegressionTests.swift). The key is built from its
        // modulus and exponent instead, with the 2048-bit floor that initializer applied.
        guard let (n, e) = rsaModulusAndExponent(der: der), let key = try? _RSA.Signing.PublicKey(n: n, e: e),
              key.keySizeInBits >= 2048 else { return false }
        let sig = _RSA.Signing.RSASignature(rawRepresentation: signature)
        return key.isValidSignature(sig, for: SHA256.hash(data: message), padding: .insecurePKCS1v1_5)
    }

    /// The modulus and public exponent of an RSA SubjectPublicKeyInfo (DER, unsigned big-endian).
    static func rsaModulusAndExponent(der: [UInt8]) -> (n: [UInt8], e: [UInt8])? {
        try? DER.sequence(DER.parse(der), identifier: .sequence) { nodes -> ([UInt8], [UInt8]) in
            guard let _ = nodes.next(), let keyNode = nodes.next() else { throw KeyError.invalidKey("incomplete") }
            let bitString = try ASN1BitString(derEncoded: keyNode)
            return try DER.sequence(DER.parse(Array(bitString.bytes)), identifier: .sequence) { parts -> ([UInt8], [UInt8]) in
                guard let nNode = parts.next(), let eNode = parts.next() else { throw KeyError.invalidKey("incomplete") }
                return (Array(try ArraySlice<UInt8>(derEncoded: nNode)), Array(try ArraySlice<UInt8>(derEncoded: eNode)))
            }
        }
    }

    static func ecdsa(der: [UInt8], signature: [UInt8], message: [UInt8]) -> Bool {
        let digest = SHA256.hash(data: message)
        if let key = try? P256.Signing.PublicKey(derRepresentation: der) {
            guard let sig = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return key.isValidSignature(sig, for: digest)
        }
        if let key = try? P384.Signing.PublicKey(derRepresentation: der) {
            guard let sig = try? P384.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return key.isValidSignature(sig, for: digest)
        }
        if let key = try? P521.Signing.PublicKey(derRepresentation: der) {
            guard let sig = try? P521.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return key.isValidSignature(sig, for: digest)
        }
        return false
    }

    /// One verify-only context for the process (libsecp256k1 contexts are safe to share for
    /// verification).
    nonisolated(unsafe) static let secpContext: OpaquePointer? = secp256k1_context_create(UInt32(SECP256K1_CONTEXT_NONE))

    static func secp256k1(point: [UInt8], signature: [UInt8], message: [UInt8]) -> Bool {
        guard let ctx = secpContext, !point.isEmpty, !signature.isEmpty, signature.count <= 72 else { return false }
        var pubkey = secp256k1_pubkey()
        guard secp256k1_ec_pubkey_parse(ctx, &pubkey, point, point.count) == 1 else { return false }
        var sig = secp256k1_ecdsa_signature()
        guard secp256k1_ecdsa_signature_parse_der(ctx, &sig, signature, signature.count) == 1 else { return false }
        var normalized = secp256k1_ecdsa_signature()
        _ = secp256k1_ecdsa_signature_normalize(ctx, &normalized, &sig)
        let digest = Array(SHA256.hash(data: message))
        return secp256k1_ecdsa_verify(ctx, &normalized, digest, &pubkey) == 1
    }
}
