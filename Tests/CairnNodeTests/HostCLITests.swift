import CairnCore
import Foundation
import XCTest

/// The CLI as a client of the library: the data directory (`$HOME`, `$CAIRN_PATH`, its lock)
/// and the embedding example, run as separate processes.
final class HostCLITests: XCTestCase {
    let bin = CLITests.productsDirectory.appendingPathComponent("cairn").path
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hostcli-" + UUID().uuidString)
    var spawned: [NATLab.Spawned] = []

    override func tearDown() {
        for s in spawned { s.stop(grace: 0.5) }
        try? FileManager.default.removeItem(at: dir)
    }

    func idJSON(environment: [String: String]) throws -> [String: String] {
        let out = NATLab.execute(bin, ["id", "--json"], timeout: 20, environment: environment)
        XCTAssertEqual(out.status, 0, out.stderr)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: String], out.stdout)
    }

    func testDefaultDataDirectoryFollowsHOMEAndCAIRNPATH() throws {
        let home = dir.appendingPathComponent("home").path
        XCTAssertEqual(try idJSON(environment: ["HOME": home, "CAIRN_PATH": ""])["data_dir"], home + "/.cairn")
        XCTAssertTrue(FileManager.default.fileExists(atPath: home + "/.cairn/identity.key"))
        let custom = dir.appendingPathComponent("custom").path
        XCTAssertEqual(try idJSON(environment: ["HOME": home, "CAIRN_PATH": custom])["data_dir"], custom)
    }

    /// Starts `cairn node` on `data` (loopback, no peers); returns it once it listens, and its peer ID.
    func startNode(_ data: String, extra: [String] = []) throws -> (NATLab.Spawned, String) {
        let node = try NATLab.Spawned(executable: bin, arguments: ["node", "--data-dir", data, "--listen", "/ip4/127.0.0.1/tcp/0",
                                                                  "--peers-file", "/dev/null", "--no-stun", "--log-level", "warning"] + extra,
                                      label: "cairn node")
        spawned.append(node)
        var id: String?
        while let line = node.nextLine(timeout: 20) {
            if line.hasPrefix("peer id: ") { id = String(line.dropFirst("peer id: ".count)) }
            if line.hasPrefix("listening on "), let id { return (node, id) }
        }
        throw NATLab.LabError.setupFailed("cairn node did not start: \(node.stderr.string)")
    }

    func testASecondNodeOnALockedDataDirectoryRefusesUntilTheFirstIsKilled() throws {
        let data = dir.appendingPathComponent("node").path
        // Without its control API, so that a command beside it cannot ask it (DaemonCLITests covers asking).
        let (first, id) = try startNode(data, extra: ["--no-api"])
        let second = NATLab.execute(bin, ["node", "--data-dir", data, "--listen", "/ip4/127.0.0.1/tcp/0", "--peers-file", "/dev/null",
                                          "--no-stun"], timeout: 20)
        XCTAssertNotEqual(second.status, 0, "a second node on a data directory in use must not start")
        XCTAssertTrue(second.stderr.contains("in use by pid \(first.pid)"), second.stderr)
        XCTAssertFalse(second.stdout.contains("listening on"), second.stdout)
        // A one-shot command beside it (no API to ask) runs with a temporary identity, never the node's.
        let beside = NATLab.execute(bin, ["ping", "--data-dir", data, "/ip4/127.0.0.1/tcp/1/p2p/\(id)", "-c", "1"], timeout: 20)
        XCTAssertTrue(beside.stderr.contains("temporary identity"), beside.stderr)
        // kill -9 leaves no stale lock: the kernel drops it with the process.
        kill(first.pid, SIGKILL)
        first.process.waitUntilExit()
        let (_, again) = try startNode(data)
        XCTAssertEqual(again, id, "the same identity, now in the new process")
    }
}

/// `Examples/Echo` (docs/embedding.md), run as an application would: one copy serves its own
/// protocol, another finds it by peer ID through the DHT and gets an echo.
final class EmbeddingExampleTests: XCTestCase {
    func testTheEmbeddingExampleFindsAPeerByIDAndGetsAnEcho() throws {
        let products = CLITests.productsDirectory
        let example = products.appendingPathComponent("cairn-example-echo").path
        let cairn = products.appendingPathComponent("cairn").path
        guard FileManager.default.isExecutableFile(atPath: example) else { return XCTFail("cairn-example-echo not built at \(example)") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("embed-" + UUID().uuidString)
        defer { try? FileManager.default.removeItem(at: dir) }
        let boot = try NATLab.Spawned(executable: cairn, arguments: ["node", "--data-dir", dir.path, "--listen", "/ip4/127.0.0.1/tcp/0",
                                                                     "--peers-file", "/dev/null", "--no-stun", "--log-level", "warning"], label: "boot")
        defer { boot.stop(grace: 0.5) }
        var bootAddr: String?
        while bootAddr == nil, let line = boot.nextLine(timeout: 20) {
            if line.hasPrefix("listening on ") { bootAddr = String(line.dropFirst("listening on ".count)) }
        }
        let bootstrap = try XCTUnwrap(bootAddr, "bootstrap node did not start: \(boot.stderr.string)")

        let server = try NATLab.Spawned(executable: example, arguments: ["serve", "--bootstrap", bootstrap], label: "serve")
        defer { server.stop(grace: 1) }
        var serverID: String?
        while let line = server.nextLine(timeout: 30) {
            if line.hasPrefix("peer id: ") { serverID = String(line.dropFirst("peer id: ".count)) }
            if line.hasPrefix("serving ") { break }
        }
        let id = try XCTUnwrap(serverID, "the serving example did not start: \(server.stderr.string)")

        let call = NATLab.execute(example, ["call", id, "--bootstrap", bootstrap, "--message", "over a Cairn stream"], timeout: 60)
        XCTAssertEqual(call.status, 0, "stdout: \(call.stdout)\nstderr: \(call.stderr)")
        XCTAssertTrue(call.stdout.contains("echo: over a Cairn stream"), call.stdout)
        XCTAssertTrue(call.stdout.contains("connected: "), call.stdout)
    }
}
