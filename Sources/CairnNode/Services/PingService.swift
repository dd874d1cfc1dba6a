import CairnCore
import CairnCrypto
import Foundation
import NIOCore

/// `/ipfs/ping/1.0.0`: echoes 32-byte payloads, and measures round trips.
public final class PingService: Sendable {
    public init(swarm: Swarm) {
        swarm.handle(Ping.protocolID, service: "ping") { stream in try await Self.serve(stream) }
    }

    static func serve(_ stream: MuxedStream) async throws {
        while true {
            let payload: [UInt8]
            do { payload = try await stream.readExactly(Ping.payloadLength) } catch StreamError.unexpectedEOF { break }
            try await stream.write(payload)
        }
        await stream.closeWrite()
    }

    /// Pings the peer on `connection` `count` times; returns each round-trip time.
    public func ping(_ connection: Connection, count: Int = 1, interval: Duration = .zero, timeout: Duration = .seconds(10)) async throws -> [Duration] {
        let stream = try await connection.openStream([Ping.protocolID])
        let rtts = try await stream.resettingOnError { () -> [Duration] in
            var rtts: [Duration] = []
            let clock = ContinuousClock()
            for i in 0..<count {
                if i > 0, interval > .zero { try await Task.sleep(for: interval) }
                let payload = secureRandomBytes(Ping.payloadLength)
                let start = clock.now
                try await stream.write(payload)
                let echo = try await withTimeout(timeout) { try await stream.readExactly(Ping.payloadLength) }
                guard echo == payload else { throw StreamError.protocolViolation("ping reply does not match the payload") }
                rtts.append(clock.now - start)
            }
            return rtts
        }
        await stream.closeWrite()
        return rtts
    }
}
