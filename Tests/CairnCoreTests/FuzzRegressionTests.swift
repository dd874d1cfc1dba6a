import CairnCore
import XCTest

/// Inputs cairn-fuzz found (docs/fuzzing.md, "Findings"), kept so the bugs stay fixed.
final class FuzzRegressionTests: XCTestCase {
    /// The RSA-2048 key of KeyVerificationTests (libp2p protobuf PublicKey, SPKI DER) and its
    /// signature over "libp2p cairn test vector".
    let rsaKeyHex = "080012a60230820122300d06092a864886f70d01010105000382010f003082010a0282010100a43e5940da6903abc303e7e93173fbd5d107b820beb55f02421389d6d14fa2139d3e36db6ae17df16b299fbea9282c62883573c43cdbeaa70e26fc571cc58178c22ebee1cb834bc280a09fbba306f54555627f6220f5574cca8931997d829bf45ac5d1c6e3a7ee60419f6341482b39e87157c2c6c4669990336fd9cf0daf27c3ed9e425405ef03be529c8dac74c298e8a90dfd812a6a691ab1b38bab4aa080b65776369dc9dfb405fdcbc48662da5658acb24dff99a29335800c4a63eac6598b6384da1e3a91a90a4cb97bc4f89167cdcf05d305ad7cb6eec59264c82d5193fe1c2fbda2f1507de41555cc5f98c79c2282187b416cf3c2d1d1af3587b1d253c50203010001"
    let rsaSignatureHex = "112946dea86b64744da406e7a00a2784b0202a4903d063a87a215ed4832aa60f3f29f699cfac703eb8908c4129b42b1119c3ba80218eb8dbbde6610c36669cc054642367de58a4f27f88b03b18c36b740ad78f96a4ce8e58e451db5740266396c1ca3ac8e915cfe3110c957df1e11de95307e039652cae72abce9c109725927d414438dfda433e40a0a75915be0335f47a5dd53b405e022316f03673f377c5203fa133761c013afba19937bef893452f2074053d2b6bd2c0f3eb3a0ce43dbbf89c48ca4a51e39a995e616f9c65d66a96487bc93342145f89dae25b5c158a9f1bcb3235b56e590a18431741acdc27e4dcf830e70acbdd7af9ad0344aebbd9443c"

    /// peerid target: an RSA key that Cairn's DER checks accept but BoringSSL refuses (here an even
    /// public exponent, 65538) made swift-crypto 3.12's `_RSA.Signing.PublicKey(derRepresentation:)`
    /// free its EVP_PKEY twice: the process aborted while checking any signature with it — a Noise
    /// identity payload, a signed envelope or an IPNS record from any peer could do that.
    func testRSAKeyBoringSSLRefusesDoesNotAbortSignatureCheck() throws {
        let good = try XCTUnwrap(Hex.decode(rsaKeyHex))
        XCTAssertEqual(Array(good.suffix(5)), [0x02, 0x03, 0x01, 0x00, 0x01])  // INTEGER 65537, last in the DER
        let evenExponent = Array(good.dropLast()) + [0x02]
        let key = try PublicKey(protobufBytes: evenExponent)  // well-formed DER: Cairn accepts the key itself
        let sig = try XCTUnwrap(Hex.decode(rsaSignatureHex))
        XCTAssertFalse(key.isValidSignature(sig, for: Array("libp2p cairn test vector".utf8)))
        XCTAssertFalse(key.isValidSignature([], for: []))
        // The same path still verifies a good key's signature, and keeps the 2048-bit floor.
        let goodKey = try PublicKey(protobufBytes: good)
        XCTAssertTrue(goodKey.isValidSignature(sig, for: Array("libp2p cairn test vector".utf8)))
    }

    /// multiaddr target: "/unix/unix//" parsed as the path "/unix/", printed as "/unix/unix/",
    /// which parsed back as the path "/unix"; "/unix///unix/5" parsed as "//unix/5", printed as
    /// "/unix//unix/5", which parsed back as "/unix/5". A Unix path now has exactly one leading
    /// slash and no trailing one, in text and in binary, so every printed multiaddr reads back as itself.
    func testUnixPathWithExtraSlashesRoundTrips() throws {
        let m = try Multiaddr("/unix/unix//")
        XCTAssertEqual(m.components, [.unix("/unix")])
        XCTAssertEqual(try Multiaddr(m.description), m)
        let leading = try Multiaddr("/unix///unix/5")
        XCTAssertEqual(leading.components, [.unix("/unix/5")])
        XCTAssertEqual(try Multiaddr(leading.description), leading)
        XCTAssertEqual(try Multiaddr("/unix/a//b").components, [.unix("/a//b")])  // inner slashes are kept
        let binary = try Multiaddr(bytes: [0x90, 0x03, 0x05] + Array("//a//".utf8))
        XCTAssertEqual(binary.components, [.unix("/a")])
        XCTAssertEqual(try Multiaddr(binary.description), binary)
        XCTAssertEqual(try Multiaddr(bytes: binary.bytes), binary)
        XCTAssertThrowsError(try Multiaddr(bytes: [0x90, 0x03, 0x02] + Array("//".utf8)))
    }

    /// autonat target (round trip of a DIAL's addresses): a Unix path received without its leading
    /// "/" and starting with a combining mark (U+030B) became "/" + mark, one Character, so the
    /// next decoding did not see a leading "/" and added another: the path grew at every round
    /// trip. Paths are now normalised by bytes, and text is split at "/" bytes (as go-multiaddr),
    /// so such addresses print and read back too.
    func testUnixPathStartingWithACombiningMarkRoundTrips() throws {
        let raw = Array("\u{30B}mp/p2pd.sock".utf8)
        let m = try Multiaddr(bytes: [0x90, 0x03, UInt8(raw.count)] + raw)
        XCTAssertEqual(Array(m.bytes.dropFirst(3)), [0x2f] + raw)
        XCTAssertEqual(try Multiaddr(bytes: m.bytes), m)
        XCTAssertEqual(try Multiaddr(m.description), m)
        // A "/" followed by a combining mark separates components in text.
        XCTAssertThrowsError(try Multiaddr("/dns/a/\u{301}b"))
        XCTAssertThrowsError(try Multiaddr(bytes: [0x35, 0x04] + Array("a/\u{301}".utf8)))
    }
}
