import CairnProto
import Foundation
import SwiftProtobuf

/// AutoNAT v1 (`/libp2p/autonat/1.0.0`): a peer asks others to dial it back, to learn whether it
/// is reachable. Codec, the server's dial-back policy and the client's reachability tracker, all
/// sans-I/O.
public enum AutoNAT {
    public static let protocolID = "/libp2p/autonat/1.0.0"
    public static let maxMessageSize = 4096
    /// Most addresses a request may list (go-libp2p: 16); more is a bad request.
    public static let maxAddresses = 16

    public enum Status: Int, Sendable, Equatable {
        case ok = 0, dialError = 100, dialRefused = 101, badRequest = 200, internalError = 300
    }

    public enum Message: Sendable, Equatable {
        case dial(peer: PeerID, addresses: [Multiaddr])
        case dialResponse(status: Status, text: String?, address: Multiaddr?)
    }

    public enum CodecError: Error, Equatable, Sendable, CustomStringConvertible {
        case tooLarge(Int)
        case malformed(String)
        case tooManyAddresses(Int)

        public var description: String {
            switch self {
            case .tooLarge(let n): return "autonat message of \(n) bytes exceeds \(AutoNAT.maxMessageSize)"
            case .malformed(let s): return "malformed autonat message: \(s)"
            case .tooManyAddresses(let n): return "autonat request lists \(n) addresses (max \(AutoNAT.maxAddresses))"
            }
        }
    }

    public static func encode(_ m: Message) -> [UInt8] {
        var pb = Autonat_Pb_Message()
        switch m {
        case .dial(let peer, let addrs):
            pb.type = .dial
            var info = Autonat_Pb_Message.PeerInfo()
            info.id = Data(peer.bytes)
            info.addrs = addrs.map { Data($0.bytes) }
            pb.dial.peer = info
        case .dialResponse(let status, let text, let addr):
            pb.type = .dialResponse
            pb.dialResponse.status = Autonat_Pb_Message.ResponseStatus(rawValue: status.rawValue) ?? .eInternalError
            if let text { pb.dialResponse.statusText = text }
            if let addr { pb.dialResponse.addr = Data(addr.bytes) }
        }
        return try! [UInt8](pb.serializedBytes() as [UInt8])
    }

    /// Decodes a message; unparseable addresses in a DIAL are dropped (counted as `skipped`).
    public static func decode(_ bytes: [UInt8]) throws(CodecError) -> (Message, skipped: Int) {
        guard bytes.count <= maxMessageSize else { throw .tooLarge(bytes.count) }
        let pb: Autonat_Pb_Message
        do { pb = try Autonat_Pb_Message(serializedBytes: bytes) } catch { throw .malformed("protobuf") }
        switch pb.type {
        case .dial:
            guard pb.hasDial, pb.dial.hasPeer, pb.dial.peer.hasID else { throw .malformed("DIAL without peer") }
            guard pb.dial.peer.addrs.count <= maxAddresses else { throw .tooManyAddresses(pb.dial.peer.addrs.count) }
            let id: PeerID
            do { id = try PeerID(bytes: [UInt8](pb.dial.peer.id)) } catch { throw .malformed("peer ID") }
            let addrs = pb.dial.peer.addrs.compactMap { try? Multiaddr(bytes: [UInt8]($0)) }
            return (.dial(peer: id, addresses: addrs), pb.dial.peer.addrs.count - addrs.count)
        case .dialResponse:
            guard pb.hasDialResponse, pb.dialResponse.hasStatus else { throw .malformed("DIAL_RESPONSE without status") }
            guard let status = Status(rawValue: pb.dialResponse.status.rawValue) else { throw .malformed("status") }
            let addr = pb.dialResponse.hasAddr ? try? Multiaddr(bytes: [UInt8](pb.dialResponse.addr)) : nil
            return (.dialResponse(status: status, text: pb.dialResponse.hasStatusText ? pb.dialResponse.statusText : nil, address: addr), 0)
        }
    }

    /// The server's decision on a DIAL request. It dials back only the requester's own observed
    /// IP (never a third party), only TCP addresses, and within rate limits (per peer and global).
    public struct ServerPolicy: Sendable {
        public var perPeerPerMinute = 3
        public var globalPerMinute = 30
        /// Allow dialing back private/loopback IPs (labs and tests); public-only by default.
        public var allowPrivateAddresses = false
        var recent: [(peer: PeerID, at: Date)] = []

        public init() {}

        public enum Decision: Sendable, Equatable {
            case dial([Multiaddr])
            case refuse(Status, String)
        }

        /// `requester` is the authenticated peer on the connection, `observedIP` the IP its
        /// connection comes from.
        public mutating func decide(request: Message, requester: PeerID, observedIP: [UInt8], now: Date) -> Decision {
            guard case .dial(let peer, let addrs) = request else { return .refuse(.badRequest, "expected DIAL") }
            guard peer == requester else { return .refuse(.badRequest, "DIAL names another peer") }
            recent.removeAll { now.timeIntervalSince($0.at) >= 60 }
            guard recent.count < globalPerMinute else { return .refuse(.dialRefused, "global rate limit") }
            guard recent.filter({ $0.peer == peer }).count < perPeerPerMinute else { return .refuse(.dialRefused, "per-peer rate limit") }
            let scope = IPScope(observedIP)
            if !allowPrivateAddresses && !scope.isPublic { return .refuse(.dialRefused, "requester is not on a public address") }
            var targets: [Multiaddr] = []
            for a in addrs {
                guard let (ip, port) = a.tcpEndpoint, port != 0, ip == observedIP else { continue }  // only its own IP
                let m = Multiaddr(components: [ip.count == 4 ? .ip4(ip) : .ip6(ip), .tcp(port)])
                if !targets.contains(m) { targets.append(m) }
            }
            guard !targets.isEmpty else { return .refuse(.dialRefused, "no dialable address at the requester's observed IP") }
            recent.append((peer, now))
            return .dial(targets)
        }
    }

    /// The client's view of its reachability, from dial-back answers.
    ///
    /// Leaving `unknown` takes agreement: answers are tallied per server (an `ObserverGroup`, so
    /// one host with many identities is one server, its latest answer counting) and a state is
    /// adopted once one side leads by `minServersToDecide` servers — one server alone, honest or
    /// lying, never decides. After that, confidence climbs to 3 with agreeing answers; a contrary
    /// answer first spends confidence and only flips the state when none is left, so one lying
    /// server cannot make it flap.
    public struct ReachabilityTracker: Sendable, Equatable {
        public enum Reachability: String, Sendable { case unknown, `public`, `private` }

        public static let maxConfidence = 3
        /// How many more servers must agree than disagree before `unknown` is left.
        public var minServersToDecide: Int
        public private(set) var reachability: Reachability = .unknown
        public private(set) var confidence = 0
        /// The address the last successful dial-back reached.
        public private(set) var confirmedAddress: Multiaddr?
        /// While unknown: each server's latest answer (true = it reached us).
        private var tally: [ObserverGroup: Bool] = [:]

        public init(minServersToDecide: Int = 2) { self.minServersToDecide = max(1, minServersToDecide) }

        /// Feeds one answer from `server`; returns true if the reachability changed.
        @discardableResult
        public mutating func record(_ status: Status, address: Multiaddr? = nil, server: ObserverGroup) -> Bool {
            let before = reachability
            if reachability == .unknown {
                switch status {
                case .ok: tally[server] = true; confirmedAddress = address ?? confirmedAddress
                case .dialError: tally[server] = false
                case .dialRefused, .badRequest, .internalError: return false
                }
                let reached = tally.values.filter { $0 }.count
                let lead = reached - (tally.count - reached)
                if lead >= minServersToDecide { reachability = .public } else if -lead >= minServersToDecide { reachability = .private }
                if reachability != .unknown { tally = [:] }
                return before != reachability
            }
            switch status {
            case .ok:
                confirmedAddress = address ?? confirmedAddress
                if reachability == .public {
                    confidence = min(Self.maxConfidence, confidence + 1)
                } else if confidence > 0 {
                    confidence -= 1
                } else {
                    reachability = .public
                }
            case .dialError:
                if reachability == .private {
                    confidence = min(Self.maxConfidence, confidence + 1)
                } else if confidence > 0 {
                    confidence -= 1
                } else {
                    reachability = .private
                }
            case .dialRefused, .badRequest, .internalError:
                break  // says nothing about us
            }
            return before != reachability
        }
    }
}
