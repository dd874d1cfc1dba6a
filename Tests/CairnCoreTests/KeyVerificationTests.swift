import CairnCore
import XCTest

/// Peers' key types verify their signatures (libp2p peer-ids spec). The vectors were made with
/// independent implementations (Python `cryptography` for RSA and P-256, `coincurve` — libsecp256k1 —
/// for secp256k1) over the message "libp2p cairn test vector"; a flipped bit must not verify.
final class KeyVerificationTests: XCTestCase {
    let message = Array("libp2p cairn test vector".utf8)

    struct Vector {
        let name: String
        let publicKey: String  // libp2p protobuf PublicKey, hex
        let signature: String  // hex
    }

    let vectors = [
        Vector(name: "ECDSA P-256",
               publicKey: "0803125b3059301306072a8648ce3d020106082a8648ce3d03010703420004b1b6befe9b93cc2afb116976b1bd30a99c16b38e1c9081a33ce5211fe7f1c87df9d74656f1d5846e1a713354be362875a79e12b70a53a7f3b7f0440b851415b7",
               signature: "304402201eb32535d5f4079800f19aea31573b8461704e13b9809a013187680a3453bbb7022029632f986ec2310edd77635bb96457a94d55685653b2b18ef578706d32796806"),
        Vector(name: "RSA 2048",
               publicKey: "080012a60230820122300d06092a864886f70d01010105000382010f003082010a0282010100a43e5940da6903abc303e7e93173fbd5d107b820beb55f02421389d6d14fa2139d3e36db6ae17df16b299fbea9282c62883573c43cdbeaa70e26fc571cc58178c22ebee1cb834bc280a09fbba306f54555627f6220f5574cca8931997d829bf45ac5d1c6e3a7ee60419f6341482b39e87157c2c6c4669990336fd9cf0daf27c3ed9e425405ef03be529c8dac74c298e8a90dfd812a6a691ab1b38bab4aa080b65776369dc9dfb405fdcbc48662da5658acb24dff99a29335800c4a63eac6598b6384da1e3a91a90a4cb97bc4f89167cdcf05d305ad7cb6eec59264c82d5193fe1c2fbda2f1507de41555cc5f98c79c2282187b416cf3c2d1d1af3587b1d253c50203010001",
               signature: "112946dea86b64744da406e7a00a2784b0202a4903d063a87a215ed4832aa60f3f29f699cfac703eb8908c4129b42b1119c3ba80218eb8dbbde6610c36669cc054642367de58a4f27f88b03b18c36b740ad78f96a4ce8e58e451db5740266396c1ca3ac8e915cfe3110c957df1e11de95307e039652cae72abce9c109725927d414438dfda433e40a0a75915be0335f47a5dd53b405e022316f03673f377c5203fa133761c013afba19937bef893452f2074053d2b6bd2c0f3eb3a0ce43dbbf89c48ca4a51e39a995e616f9c65d66a96487bc93342145f89dae25b5c158a9f1bcb3235b56e590a18431741acdc27e4dcf830e70acbdd7af9ad0344aebbd9443c"),
        Vector(name: "secp256k1",
               publicKey: "0802122103bee8c234f70edf5210477e2383a9932949057f8533195f319a5fca748f4807f0",
               signature: "3044022039ab5ef4a0c62144845f2e281b243ab10560946372a5277f7194ea2c6df58547022025ca2b4ff65c5424203efbc946da17e0c9c99c46ad8da685591025184037b3bb"),
    ]

    func testEachKeyTypeVerifiesAnIndependentSignatureAndRejectsATamperedOne() throws {
        for v in vectors {
            let key = try PublicKey(protobufBytes: try XCTUnwrap(Hex.decode(v.publicKey)))
            let sig = try XCTUnwrap(Hex.decode(v.signature))
            XCTAssertTrue(key.isValidSignature(sig, for: message), "\(v.name) should verify")
            var bad = sig
            bad[bad.count / 2] ^= 0x01
            XCTAssertFalse(key.isValidSignature(bad, for: message), "\(v.name): a tampered signature verified")
            XCTAssertFalse(key.isValidSignature(sig, for: message + [0]), "\(v.name): another message verified")
            XCTAssertFalse(key.isValidSignature([], for: message), "\(v.name): an empty signature verified")
            XCTAssertFalse(key.isValidSignature([UInt8](repeating: 0x30, count: 600), for: message), "\(v.name): garbage verified")
        }
    }

    /// A peer ID names the key (RSA: sha2-256 of the key; secp256k1 and P-256 small enough to be
    /// inlined as identity multihashes), so a verified signature ties to the ID.
    func testPeerIDsOfTheVectorKeys() throws {
        let rsa = try PublicKey(protobufBytes: try XCTUnwrap(Hex.decode(vectors[1].publicKey)))
        XCTAssertTrue(PeerID(publicKey: rsa).base58.hasPrefix("Qm"))
        let secp = try PublicKey(protobufBytes: try XCTUnwrap(Hex.decode(vectors[2].publicKey)))
        XCTAssertTrue(PeerID(publicKey: secp).base58.hasPrefix("16Uiu2"))
        XCTAssertEqual(PeerID(publicKey: secp).inlinedPublicKey, secp)
    }
}
