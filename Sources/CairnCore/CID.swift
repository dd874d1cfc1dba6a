/// Content identifiers as the DHT keys them: kad-dht stores provider records under a CID's
/// multihash, so CIDv0 (`Qm…`, a bare sha2-256 multihash) and CIDv1 (`b…` base32, `z…`
/// base58btc, `f…` base16: version, codec, multihash) of the same content share one key.
public enum CID {
    /// The multihash of a CID in binary form, or nil if the bytes are not one.
    public static func multihash(binary b: [UInt8]) -> [UInt8]? {
        if b.count == 34, b[0] == 0x12, b[1] == 0x20 { return b }  // CIDv0
        guard let (version, n) = try? Varint.decode(b[...]), version == 1,
              let (_, m) = try? Varint.decode(b[n...]) else { return nil }
        let mh = Array(b[(n + m)...])
        return isMultihash(mh) ? mh : nil
    }

    /// The multihash of a CID's text, or nil if the text is not a CID.
    public static func multihash(text: String) -> [UInt8]? {
        if text.hasPrefix("Qm"), text.count == 46, let raw = Base58.decode(text) { return multihash(binary: raw) }
        guard let prefix = text.first else { return nil }
        let body = String(text.dropFirst())
        let raw: [UInt8]?
        switch prefix {
        case "b": raw = Base32.decode(body)
        case "z": raw = Base58.decode(body)
        case "f": raw = Hex.decode(body)
        default: raw = nil
        }
        guard let raw, raw.first == 0x01 else { return nil }
        return multihash(binary: raw)
    }

    /// The provider-record key for a command-line argument: a CID's multihash, else the text's bytes.
    public static func providerKey(_ text: String) -> [UInt8] { multihash(text: text) ?? Array(text.utf8) }

    static func isMultihash(_ mh: [UInt8]) -> Bool {
        guard let (_, n) = try? Varint.decode(mh[...]), let (length, m) = try? Varint.decode(mh[n...]) else { return false }
        return UInt64(mh.count - n - m) == length && length > 0
    }
}
