import CairnCore
import Foundation
import XCTest

/// The `cairn` command line against a py-libp2p 0.8.1 node, as a user runs it.
final class CLITests: XCTestCase {
    /// The directory holding the built products (the test bundle sits beside `cairn`).
    static var productsDirectory: URL {
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            return bundle.bundleURL.deletingLastPathComponent()
        }
        return Bundle.main.bundleURL
    }

    func runCairn(_ args: [String], timeout: Double = 40) async throws -> (Int32, String, String) {
        let bin = Self.productsDirectory.appendingPathComponent("cairn")
        guard FileManager.default.isExecutableFile(atPath: bin.path) else {
            XCTFail("cairn binary not built at \(bin.path)")
            return (-1, "", "")
        }
        return try await runProcess(bin.path, args, timeout: timeout)
    }

    func testCairnPingAndIdentifyAgainstPyLibp2p() async throws {
        let py = try PyPeer.Listener()
        defer { py.stop() }
        try await py.start()
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString).path
        defer { try? FileManager.default.removeItem(atPath: dataDir) }

        let (idStatus, idOut, _) = try await runCairn(["id", "--data-dir", dataDir, "--json"])
        XCTAssertEqual(idStatus, 0)
        let me = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(idOut.utf8)) as? [String: String])["peer_id"]
        XCTAssertEqual(me.flatMap { try? PeerID(string: $0) }?.base58, me)

        let (pingStatus, pingOut, pingErr) = try await runCairn(["ping", "--data-dir", dataDir, py.addrs[0], "-c", "3", "--interval", "0.05"])
        XCTAssertEqual(pingStatus, 0, pingOut + pingErr)
        XCTAssertEqual(pingOut.components(separatedBy: "rtt=").count - 1, 3, pingOut)
        XCTAssertTrue(pingOut.contains("connected to \(py.peerID)"), pingOut)

        let (status, out, err) = try await runCairn(["identify", "--data-dir", dataDir, py.addrs[0], "--json"])
        XCTAssertEqual(status, 0, out + err)
        let j = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], out)
        XCTAssertEqual(j["peer_id"] as? String, py.peerID)
        XCTAssertEqual(j["agent_version"] as? String, "py-libp2p/0.8.1")
        XCTAssertEqual(j["observed_addr"] as? String, j["local_addr"] as? String)
        XCTAssertEqual((j["signed_peer_record"] as? [String: Any])?["valid"] as? Bool, true)

        // A wrong peer ID in the address is refused with a clear message and a failing exit code.
        let other = PrivateKey.generate().peerID
        let wrong = try Multiaddr(py.addrs[0]).withoutTrailingPeerID.appending(.p2p(other)).description
        let (badStatus, _, badErr) = try await runCairn(["ping", "--data-dir", dataDir, wrong, "-c", "1"])
        XCTAssertNotEqual(badStatus, 0)
        XCTAssertTrue(badErr.contains("dialed \(other)"), badErr)
    }
}
