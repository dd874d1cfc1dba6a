import CairnCore
import Foundation

/// `cairn-fuzz --regressions`: the findings of docs/fuzzing.md replayed in the sanitizer build
/// (Tests/CairnCoreTests/FuzzRegressionTests.swift holds the same cases for `swift test`).
func runRegressions() -> Int32 {
    let rsaKey = Hex.decode("080012a60230820122300d06092a864886f70d01010105000382010f003082010a0282010100a43e5940da6903abc303e7e93173fbd5d107b820beb55f02421389d6d14fa2139d3e36db6ae17df16b299fbea9282c62883573c43cdbeaa70e26fc571cc58178c22ebee1cb834bc280a09fbba306f54555627f6220f5574cca8931997d829bf45ac5d1c6e3a7ee60419f6341482b39e87157c2c6c4669990336fd9cf0daf27c3ed9e425405ef03be529c8dac74c298e8a90dfd812a6a691ab1b38bab4aa080b65776369dc9dfb405fdcbc48662da5658acb24dff99a29335800c4a63eac6598b6384da1e3a91a90a4cb97bc4f89167cdcf05d305ad7cb6eec59264c82d5193fe1c2fbda2f1507de41555cc5f98c79c2282187b416cf3c2d1d1af3587b1d253c50203010001")!
    let rsaSig = Hex.decode("112946dea86b64744da406e7a00a2784b0202a4903d063a87a215ed4832aa60f3f29f699cfac703eb8908c4129b42b1119c3ba80218eb8dbbde6610c36669cc054642367de58a4f27f88b03b18c36b740ad78f96a4ce8e58e451db5740266396c1ca3ac8e915cfe3110c957df1e11de95307e039652cae72abce9c109725927d414438dfda433e40a0a75915be0335f47a5dd53b405e022316f03673f377c5203fa133761c013afba19937bef893452f2074053d2b6bd2c0f3eb3a0ce43dbbf89c48ca4a51e39a995e616f9c65d66a96487bc93342145f89dae25b5c158a9f1bcb3235b56e590a18431741acdc27e4dcf830e70acbdd7af9ad0344aebbd9443c")!
    let msg = Array("libp2p cairn test vector".utf8)
    let good = try! PublicKey(protobufBytes: rsaKey)
    check(good.isValidSignature(rsaSig, for: msg), "the RSA-2048 vector no longer verifies")
    check(!good.isValidSignature(rsaSig, for: msg + [0]), "the RSA-2048 vector verifies another message")
    let even = try! PublicKey(protobufBytes: Array(rsaKey.dropLast()) + [0x02])
    check(!even.isValidSignature(rsaSig, for: msg), "an even-exponent RSA key verified")
    let m = try! Multiaddr("/unix/unix//")
    check(m.components == [.unix("/unix")] && (try? Multiaddr(m.description)) == m, "unix trailing slash")
    let leading = try! Multiaddr("/unix///unix/5")
    check(leading.components == [.unix("/unix/5")] && (try? Multiaddr(leading.description)) == leading, "unix leading slashes")
    let bin = try! Multiaddr(bytes: [0x90, 0x03, 0x05] + Array("//a//".utf8))
    check(bin.components == [.unix("/a")] && (try? Multiaddr(bin.description)) == bin, "binary unix trailing slash")
    check((try? Multiaddr(bytes: [0x90, 0x03, 0x02] + Array("//".utf8))) == nil, "unix path of slashes only")
    let raw = Array("\u{30B}mp/p2pd.sock".utf8)
    let mark = try! Multiaddr(bytes: [0x90, 0x03, UInt8(raw.count)] + raw)
    check((try? Multiaddr(bytes: mark.bytes)) == mark && (try? Multiaddr(mark.description)) == mark, "unix path with a combining mark")
    check((try? Multiaddr("/dns/a/\u{301}b")) == nil, "a combining mark after / hid a separator")
    print("regressions: ok")
    return 0
}
