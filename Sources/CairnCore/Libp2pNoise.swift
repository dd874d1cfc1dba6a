import CairnCrypto
import CairnProto
import Foundation
import NIOCore
import SwiftProtobuf

/// Reads frames with a 2-byte big-endian length prefix (libp2p Noise framing), refusing any frame
/// longer than `maxFrameLength` as soon as its length is read.
public struct NoiseFrameDecoder: Sendable {
    public let maxFrameLength: Int
    var buffer: ByteBuffer

    public init(maxFrameLength: Int) {
        self.maxFrameLength = maxFrameLength
        self.buffer = ByteBuffer()
    }

    public mutating func append(_ bytes: ByteBuffer) {
        // Nothing pending (the usual case): keep the received buffer itself, no copy.
        if buffer.readableBytes == 0 { buffer = bytes; return }
        if buffer.readerIndex > 65536 { buffer.discardReadBytes() }
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next complete frame as a slice of the received bytes (no copy), or nil when more
    /// bytes are needed.
    public mutating func nextSlice() throws(NoiseError) -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return nil }
        guard Int(length) <= maxFrameLength else { throw .frameTooLarge(Int(length)) }
        guard buffer.readableBytes >= 2 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 2)
        return buffer.readSlice(length: Int(length))!
    }

    /// The next complete frame, or nil when more bytes are needed.
    public mutating func next() throws(NoiseError) -> [UInt8]? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return nil }
        guard Int(length) <= maxFrameLength else { throw .frameTooLarge(Int(length)) }
        guard buffer.readableBytes >= 2 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 2)
        let frame = buffer.readBytes(length: Int(length))!
        if buffer.readableBytes == 0 { buffer.clear() } else if buffer.readerIndex > 65536 { buffer.discardReadBytes() }
        return frame
    }

    /// Whatever has been received past the last complete frame.
    public mutating func takeRemainder() -> ByteBuffer {
        defer { buffer = ByteBuffer() }
        return buffer
    }

    static func frame(_ payload: [UInt8], into out: inout ByteBuffer) {
        out.writeInteger(UInt16(payload.count))
        out.writeBytes(payload)
    }
}

/// The established Noise session: encrypts outbound bytes into frames and decrypts inbound frames.
public struct NoiseTransport: Sendable {
    /// Largest plaintext in one frame: 65535 less the 16-byte tag.
    public static let maxPlaintextPerFrame = 65535 - 16

    var sender: NoiseCipherState
    var receiver: NoiseCipherState
    var decoder = NoiseFrameDecoder(maxFrameLength: 65535)

    init(sender: NoiseCipherState, receiver: NoiseCipherState) {
        self.sender = sender
        self.receiver = receiver
    }

    /// Encrypts `plaintext` into one or more frames appended to `out`: straight from the
    /// plaintext's storage into `out`'s (no intermediate copies).
    public mutating func seal(_ plaintext: ByteBuffer, into out: inout ByteBuffer) throws(NoiseError) {
        var pt = plaintext
        let frames = (pt.readableBytes + Self.maxPlaintextPerFrame - 1) / Self.maxPlaintextPerFrame
        out.reserveCapacity(minimumWritableBytes: pt.readableBytes + frames * (2 + ChaChaPoly.tagLength))
        while pt.readableBytes > 0 {
            let n = min(pt.readableBytes, Self.maxPlaintextPerFrame)
            out.writeInteger(UInt16(n + ChaChaPoly.tagLength))
            try sender.seal(pt.readableBytesView.prefix(n), into: &out)
            pt.moveReaderIndex(forwardBy: n)
        }
    }

    /// Decrypts every complete frame in the received bytes; the plaintext is appended to `out`.
    public mutating func open(_ bytes: ByteBuffer, into out: inout ByteBuffer) throws(NoiseError) {
        decoder.append(bytes)
        out.reserveCapacity(minimumWritableBytes: decoder.buffer.readableBytes)  // plaintext is never longer
        while let frame = try decoder.nextSlice() {
            guard frame.readableBytes >= ChaChaPoly.tagLength else { throw .truncatedMessage("transport frame shorter than its tag") }
            try receiver.open(frame, into: &out)
        }
    }
}

/// libp2p's Noise handshake (`/noise`, libp2p/specs noise/README.md): Noise XX whose payloads carry
/// the libp2p identity key and its signature over "noise-libp2p-static-key:" + the static key.
/// When the dialer knows whom it dials, any other identity is refused.
public struct Libp2pNoiseHandshake: Sendable {
    public static let protocolID = "/noise"
    static let signaturePrefix = Array("noise-libp2p-static-key:".utf8)
    /// Hard limit on a handshake frame: an identity payload needs far less than this.
    public static let maxHandshakeFrameLength = 8 * 1024

    public struct Output: Sendable {
        public var send = ByteBuffer()
        /// Set when the handshake is complete: the authenticated remote, the transport, and
        /// any plaintext that arrived after the handshake.
        public var established: (remote: PeerID, transport: NoiseTransport, plaintext: ByteBuffer)?
    }

    let identity: PrivateKey
    let expectedRemote: PeerID?
    var xx: NoiseXXHandshake
    var decoder = NoiseFrameDecoder(maxFrameLength: Libp2pNoiseHandshake.maxHandshakeFrameLength)
    public private(set) var remotePeer: PeerID?

    public init(role: NoiseXXHandshake.Role, identity: PrivateKey, expectedRemote: PeerID? = nil,
                staticKey: X25519PrivateKey = X25519PrivateKey(), ephemeralKey: X25519PrivateKey = X25519PrivateKey()) {
        self.identity = identity
        self.expectedRemote = expectedRemote
        self.xx = NoiseXXHandshake(role: role, staticKey: staticKey, ephemeralKey: ephemeralKey)
    }

    /// The first bytes to send: the initiator's `-> e`; nothing for a responder.
    public mutating func start() throws(NoiseError) -> ByteBuffer {
        var out = ByteBuffer()
        if xx.role == .initiator {
            NoiseFrameDecoder.frame(try xx.writeMessage(payload: []), into: &out)
        }
        return out
    }

    var ourPayload: [UInt8] {
        var pb = Noise_Pb_NoiseHandshakePayload()
        pb.identityKey = Data(identity.publicKey.protobufBytes)
        pb.identitySig = Data(identity.sign(Self.signaturePrefix + xx.staticPublicKey))
        return try! [UInt8](pb.serializedBytes() as [UInt8])
    }

    func verifyPayload(_ payload: [UInt8]) throws(NoiseError) -> PeerID {
        let pb: Noise_Pb_NoiseHandshakePayload
        do { pb = try Noise_Pb_NoiseHandshakePayload(serializedBytes: payload) } catch { throw .invalidPayload("protobuf") }
        guard pb.hasIdentityKey, pb.hasIdentitySig else { throw .invalidPayload("missing identity key or signature") }
        let key: PublicKey
        do { key = try PublicKey(protobufBytes: [UInt8](pb.identityKey)) } catch { throw .invalidPayload("identity key: \(error)") }
        guard let rs = xx.remoteStaticKey else { throw .unexpectedMessage }
        guard key.isValidSignature([UInt8](pb.identitySig), for: Self.signaturePrefix + rs) else { throw .badIdentitySignature }
        let peer = PeerID(publicKey: key)
        if let expected = expectedRemote, expected != peer { throw .wrongRemotePeer(expected: expected, got: peer) }
        return peer
    }

    public mutating func receive(_ bytes: ByteBuffer) throws(NoiseError) -> Output {
        var out = Output()
        decoder.append(bytes)
        while out.established == nil, let frame = try decoder.next() {
            switch (xx.role, xx.messageIndex) {
            case (.responder, 0):
                let payload = try xx.readMessage(frame)
                guard payload.isEmpty else { throw .invalidPayload("first message carries a payload") }
                NoiseFrameDecoder.frame(try xx.writeMessage(payload: ourPayload), into: &out.send)
            case (.initiator, 1):
                let payload = try xx.readMessage(frame)
                remotePeer = try verifyPayload(payload)
                NoiseFrameDecoder.frame(try xx.writeMessage(payload: ourPayload), into: &out.send)
                out.established = try finish()
            case (.responder, 2):
                let payload = try xx.readMessage(frame)
                remotePeer = try verifyPayload(payload)
                out.established = try finish()
            default:
                throw .unexpectedMessage
            }
        }
        return out
    }

    private mutating func finish() throws(NoiseError) -> (remote: PeerID, transport: NoiseTransport, plaintext: ByteBuffer) {
        let (c1, c2) = xx.split()
        var transport = xx.role == .initiator
            ? NoiseTransport(sender: c1, receiver: c2)
            : NoiseTransport(sender: c2, receiver: c1)
        var plaintext = ByteBuffer()
        let leftover = decoder.takeRemainder()
        if leftover.readableBytes > 0 { try transport.open(leftover, into: &plaintext) }
        return (remotePeer!, transport, plaintext)
    }
}
