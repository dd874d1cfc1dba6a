import CairnCore
import Foundation
import Logging
import NIOConcurrencyHelpers

/// The serving side of the DHT: reads requests (several per stream, as go-libp2p sends them),
/// limits each peer's rate, asks the routing table for its part (a quick call under the
/// behaviour's lock) and completes the answer from the store outside any lock.
final class DHTServer: Sendable {
    /// The routing table's part of an answer; nil when we are not a DHT server.
    typealias TableReply = @Sendable (KadMessage, PeerID) -> KadMessage??

    let storage: KademliaStorage
    let tableReply: TableReply
    let limiter: NIOLockedValueBox<PeerRateLimiter>
    let now: @Sendable () -> Date
    let logger: Logger
    /// Where served requests are reported (the swarm's event bus).
    let events: EventBus?

    init(storage: KademliaStorage, rate: Double, burst: Double, clock: @escaping @Sendable () -> Date, logger: Logger,
         events: EventBus? = nil, tableReply: @escaping TableReply) {
        self.events = events
        self.storage = storage
        self.tableReply = tableReply
        self.limiter = NIOLockedValueBox(PeerRateLimiter(rate: rate, burst: burst))
        self.now = clock
        self.logger = logger
    }

    func serve(_ stream: MuxedStream) async throws {
        guard let peer = stream.connection.remotePeer else { return }
        let addrs = stream.connection.remoteAddress.map { [$0] } ?? []
        while true {
            let bytes: [UInt8]
            do { bytes = try await stream.readLengthPrefixed(maxLength: KadMessage.maxMessageSize) } catch StreamError.unexpectedEOF { break }
            guard limiter.withLockedValue({ $0.allow(peer, now: now()) }) else {
                logger.warning("DHT request rate limit exceeded; resetting the stream", metadata: ["peer": "\(peer)"])
                stream.reset()
                return
            }
            let request: KadMessage
            do { request = try KadMessage.decode(bytes) } catch {
                logger.info("refused a malformed DHT request: \(error)", metadata: ["peer": "\(peer)"])
                stream.reset()
                return
            }
            let response: KadResponse
            if let table = tableReply(request, peer) {
                response = storage.complete(request, tableReply: table, from: peer, addresses: addrs, now: now())
            } else {
                response = .reject("not a DHT server")
            }
            let type = request.kind.metricName
            switch response {
            case .respond(let m):
                events?.emit(.dhtRequestServed(type: type, answered: true))
                try await stream.writeLengthPrefixed(m.encode())
            case .noResponse:
                events?.emit(.dhtRequestServed(type: type, answered: true))
                continue
            case .reject(let why):
                events?.emit(.dhtRequestServed(type: type, answered: false))
                logger.info("refused a DHT request: \(why)", metadata: ["peer": "\(peer)", "type": "\(request.kind)"])
                stream.reset()
                return
            }
        }
        await stream.closeWrite()
    }
}
