import Foundation
import XCTest

/// `cairn p2pd` driven by p2pclient 0.3.0, the maintained Python client of the libp2p daemon
/// control protocol, unchanged (Tests/Interop/p2pclient_test.py). Needs Python with p2pclient
/// (bootstrap/setup-p2pclient.sh); skipped with the reason when it is missing, except under
/// CAIRN_REQUIRE_INTEROP=1 (bootstrap/test.sh, hence CI), where it fails.
final class DaemonInteropTests: XCTestCase {
    static let script = PyPeer.repoRoot.appendingPathComponent("Tests/Interop/p2pclient_test.py").path

    func python() throws -> String {
        let env = ProcessInfo.processInfo.environment
        let py = env["CAIRN_P2PCLIENT_PY"] ?? PyPeer.repoRoot.appendingPathComponent(".venv-p2pclient/bin/python").path
        return try PyPeer.interopPython(py, what: "p2pclient venv", setup: "setup-p2pclient.sh")
    }

    func run(_ test: String) throws {
        let bin = CLITests.productsDirectory.appendingPathComponent("cairn").path
        let out = NATLab.execute(try python(), [Self.script, bin, test], timeout: 150)
        let results = out.stdout.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
        let mine = try XCTUnwrap(results.first { $0["test"] as? String == test }, "no result for \(test): \(out.stdout)\n\(out.stderr.suffix(3000))")
        XCTAssertEqual(mine["ok"] as? Bool, true, "\(mine["detail"] ?? "")")
        XCTAssertEqual(out.status, 0, out.stderr.suffix(2000).description)
        print("\(test): \(mine["detail"] ?? "")")
    }

    func testIdentify() throws { try run("test_identify") }
    func testConnectListDisconnect() throws { try run("test_connect_list_disconnect") }
    func testStreamsBothWays() throws { try run("test_streams_both_ways") }
    func testDHT() throws { try run("test_dht") }
    func testConnectionManager() throws { try run("test_connection_manager") }
    func testErrorsAndBadInput() throws { try run("test_errors_and_bad_input") }
    /// p2pclient's own harness (written for go's p2pd) starts `cairn p2pd` in its place.
    func testP2PClientHarnessStartsCairnAsP2PD() throws { try run("test_p2pclient_harness") }
}
