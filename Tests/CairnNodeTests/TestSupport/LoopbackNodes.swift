import CairnCore
@testable import CairnNode
import Foundation
import Logging
import NIOPosix
import XCTest

/// A test case with Swift nodes on loopback TCP: one event loop group, every node shut down at
/// the end, logs captured (`logs`) for assertions on reasons.
class LoopbackNodesTestCase: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var nodes: [Node] = []
    var logs: LogCapture!

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        logs = LogCapture()
    }

    override func tearDown() async throws {
        for n in nodes { await n.shutdown() }
        nodes = []
        try await group.shutdownGracefully()
    }

    /// A node listening on `ip` (distinct loopback addresses are distinct hosts) and its `/p2p` address.
    func makeNode(_ name: String, ip: String = "127.0.0.1") async throws -> (Node, Multiaddr) {
        let n = Node(identity: .generate(), group: group, logger: logs.logger(label: name))
        nodes.append(n)
        let addr = try await n.listen([Multiaddr("/ip4/\(ip)/tcp/0")])[0]
        return (n, addr.appending(.p2p(n.peerID)))
    }

    /// A host's configuration for loopback tests: listening on `ip`, nothing on disk, no STUN,
    /// no AutoNAT probing, no auto-relay.
    func loopbackHostConfiguration(ip: String = "127.0.0.1") throws -> CairnHost.Configuration {
        var c = CairnHost.Configuration()
        c.dataDirectory = nil
        c.listenAddresses = [try Multiaddr("/ip4/\(ip)/tcp/0")]
        c.stun = false
        c.autoNATProbing = false
        c.autoRelay = .off
        return c
    }

    struct ConditionNotMet: Error, CustomStringConvertible {
        let timeout: Double
        var description: String { "condition not met within \(timeout) s" }
    }

    /// Waits until `condition` holds; throws (failing the test) after `timeout` seconds.
    func eventually(timeout: Double = 5, _ condition: @escaping () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            if Date() > deadline { throw ConditionNotMet(timeout: timeout) }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
    }
}
