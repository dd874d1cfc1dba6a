import CairnCrypto

public enum PeerIDError: Error, Equatable, Sendable {
    case invalidEncoding(String)
    case invalidMultihash(String)
    case notALibp2pKeyCID
}

/// A libp2p peer ID (peer-ids spec): a multihash of the protobuf-encoded public key — the identity
/// multihash when that encoding is at most 42 bytes (Ed25519, secp256k1), else SHA-256.
public struct PeerID: Hashable, Sendable, CustomStringConvertible, Comparable {
    public static let identityHashMaxLength = 42
    static let identityCode: UInt64 = 0x00
    static let sha256Code: UInt64 = 0x12
    static let libp2pKeyCodec: UInt64 = 0x72

    /// The multihash bytes: the binary form of the peer ID.
    public let bytes: [UInt8]

    public init(publicKey: PublicKey) {
        let encoded = publicKey.protobufBytes
        if encoded.count <= Self.identityHashMaxLength {
            bytes = Varint.encode(Self.identityCode) + Varint.encode(encoded.count) + encoded
        } else {
            bytes = Varint.encode(Self.sha256Code) + Varint.encode(32) + SHA256.hash(encoded)
        }
    }

    /// Parses the binary form (a multihash), checking its structure.
    public init(bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        let code: UInt64, length: UInt64
        do {
            code = try r.readVarint()
            length = try r.readVarint()
        } catch {
            throw PeerIDError.invalidMultihash("bad varint: \(error)")
        }
        guard UInt64(r.remaining) == length else { throw PeerIDError.invalidMultihash("length mismatch") }
        switch code {
        case Self.identityCode:
            guard length <= Self.identityHashMaxLength else { throw PeerIDError.invalidMultihash("identity hash too long") }
            // An inlined key must be a real public key (an empty or garbage digest names no one).
            guard (try? PublicKey(protobufBytes: Array(bytes[r.offset...]))) != nil else {
                throw PeerIDError.invalidMultihash("identity hash does not hold a public key")
            }
        case Self.sha256Code:
            guard length == 32 else { throw PeerIDError.invalidMultihash("sha2-256 digest must be 32 bytes") }
        default:
            throw PeerIDError.invalidMultihash("unsupported multihash code \(code)")
        }
        self.bytes = bytes
    }

    /// Parses either text form: legacy base58btc (`12D3KooW…`, `Qm…`, `16Uiu2…`) or a CIDv1 with
    /// the libp2p-key codec in any supported multibase (`b…` base32, `z…` base58btc, `f…` base16).
    public init(string: String) throws {
        if string.hasPrefix("Qm") || string.hasPrefix("1") {
            guard let raw = Base58.decode(string) else { throw PeerIDError.invalidEncoding("not base58btc") }
            try self.init(bytes: raw)
            return
        }
        guard let prefix = string.first else { throw PeerIDError.invalidEncoding("empty") }
        let body = String(string.dropFirst())
        let decoded: [UInt8]?
        switch prefix {
        case "b", "B": decoded = Base32.decode(body)
        case "z": decoded = Base58.decode(body)
        case "f", "F": decoded = Hex.decode(body)
        default: throw PeerIDError.invalidEncoding("unsupported multibase prefix '\(prefix)'")
        }
        guard let cid = decoded else { throw PeerIDError.invalidEncoding("bad multibase payload") }
        var r = ByteReader(cid)
        do {
            guard try r.readVarint() == 1 else { throw PeerIDError.notALibp2pKeyCID }
            guard try r.readVarint() == Self.libp2pKeyCodec else { throw PeerIDError.notALibp2pKeyCID }
        } catch let e as PeerIDError {
            throw e
        } catch {
            throw PeerIDError.invalidEncoding("bad CID varint")
        }
        try self.init(bytes: Array(cid[r.offset...]))
    }

    /// The legacy base58btc text form (`12D3KooW…` for Ed25519).
    public var base58: String { Base58.encode(bytes) }
    /// The CIDv1 text form (base32, libp2p-key codec).
    public var cidString: String {
        "b" + Base32.encode(Varint.encode(1) + Varint.encode(Self.libp2pKeyCodec) + bytes)
    }
    public var description: String { base58 }

    /// The public key, when it is inlined (identity multihash).
    public var inlinedPublicKey: PublicKey? {
        guard bytes.first == 0x00, bytes.count >= 2 else { return nil }
        return try? PublicKey(protobufBytes: Array(bytes[2...]))
    }

    /// Whether this peer ID names `key`.
    public func matches(_ key: PublicKey) -> Bool { PeerID(publicKey: key) == self }

    public static func < (a: PeerID, b: PeerID) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}
