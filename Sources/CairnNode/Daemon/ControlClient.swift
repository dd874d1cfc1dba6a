import CairnCore
import CairnProto
import Foundation
import NIOCore
import NIOPosix
import SwiftProtobuf

/// A client of the control API (what the `cairn` commands use when a node runs on their data
/// directory): one connection per request, as p2pclient does.
public struct ControlClient: Sendable {
    public let address: Multiaddr
    let group: EventLoopGroup
    public let maxMessageSize = 4 << 20

    public init(address: Multiaddr, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.address = address
        self.group = group
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The control socket of a node running on `dataDirectory`, if one is (the directory is
    /// locked and its socket answers).
    public static func runningNode(dataDirectory: URL) async -> ControlClient? {
        let path = dataDirectory.appendingPathComponent("api.sock").path
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        if let lock = try? DataDirectoryLock(directory: dataDirectory, holder: "probe") {
            lock.release()  // nobody holds it: a stale socket
            return nil
        }
        let client = ControlClient(address: Multiaddr(components: [.unix(path)]))
        return await ControlServer.socketAnswers(path, group: client.group) ? client : nil
    }

    /// Sends one request and reads one response.
    public func call(_ request: P2pd_Pb_Request) async throws -> P2pd_Pb_Response {
        let conn = try await connectByteChannel(to: address, group: group, timeout: .seconds(5), halfClosure: false)
        let limit = maxMessageSize
        return try await conn.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(bytes: LengthPrefixedDecoder.frame(try request.serializedBytes(partial: true))))
            var decoder = LengthPrefixedDecoder(maxLength: limit)
            for try await chunk in inbound {
                decoder.append(chunk.readableBytesView)
                if let m = try decoder.next() { return try P2pd_Pb_Response(serializedBytes: m, partial: true) }
            }
            throw Failure(description: "the node closed the control connection without answering")
        }
    }

    /// A Cairn request: the report (JSON object) and any raw value; an ERROR becomes `Failure`.
    public func cairn(_ fill: (inout P2pd_Pb_CairnRequest) -> Void) async throws -> (report: Reports.Object, value: [UInt8]) {
        var request = P2pd_Pb_Request()
        request.type = .cairn
        fill(&request.cairn)
        let response = try await call(request)
        guard response.type == .ok else { throw Failure(description: response.error.msg) }
        return (Reports.parse(response.cairn.json) ?? [:], [UInt8](response.cairn.value))
    }
}
