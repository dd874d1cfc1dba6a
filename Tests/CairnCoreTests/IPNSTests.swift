import CairnCore
import CairnProto
import Foundation
import XCTest

/// IPNS records as kubo 0.22 (boxo) builds and checks them; `KuboInteropTests` has kubo store one.
final class IPNSTests: XCTestCase {
    let key = PrivateKey.generate()
    let value = Array("/ipfs/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku".utf8)

    func testCreateThenVerify() throws {
        let until = Date().addingTimeInterval(3600)
        let bytes = IPNS.create(value: value, sequence: 7, validUntil: until, ttl: .seconds(300), key: key)
        let r = try IPNS.verify(bytes, name: key.peerID, now: Date())
        XCTAssertEqual(r.value, value)
        XCTAssertEqual(r.sequence, 7)
        XCTAssertEqual(r.ttl, 300_000_000_000)
        XCTAssertEqual(r.validUntil.timeIntervalSince1970, until.timeIntervalSince1970, accuracy: 1e-6)
        XCTAssertEqual(IPNS.key(key.peerID), Array("/ipns/".utf8) + key.peerID.bytes)
        XCTAssertEqual(IPNS.name(ofKey: IPNS.key(key.peerID)), key.peerID)
    }

    /// The signed data is DAG-CBOR with its keys in canonical order (length, then bytes).
    func testDataIsCanonicalCBOR() throws {
        let bytes = IPNS.create(value: [1, 2], sequence: 1, validUntil: Date(timeIntervalSince1970: 2_000_000_000), ttl: .seconds(1), key: key)
        let e = try Ipns_Pb_IpnsEntry(serializedBytes: bytes)
        let data = [UInt8](e.data)
        // {"TTL": 1e9, "Value": h'0102', "Sequence": 1, "Validity": ..., "ValidityType": 0}
        XCTAssertEqual(Array(data.prefix(10)), [0xa5, 0x63, 0x54, 0x54, 0x4c, 0x1a, 0x3b, 0x9a, 0xca, 0x00])
        XCTAssertEqual(Array(data[10..<18]), [0x65] + Array("Value".utf8) + [0x42, 0x01])
        XCTAssertEqual(String(decoding: e.validity, as: UTF8.self), "2033-05-18T03:33:20Z")
        XCTAssertEqual(e.validityType, .eol)
    }

    func testForgedStaleAndMismatchedRecordsAreRefused() throws {
        let until = Date().addingTimeInterval(3600)
        let good = IPNS.create(value: value, sequence: 1, validUntil: until, ttl: .seconds(60), key: key)
        var e = try Ipns_Pb_IpnsEntry(serializedBytes: good)
        var sig = [UInt8](e.signatureV2)
        sig[0] ^= 1
        e.signatureV2 = Data(sig)
        XCTAssertThrowsError(try IPNS.verify(try e.serializedBytes() as [UInt8], name: key.peerID, now: Date())) { XCTAssertEqual($0 as? IPNS.Failure, .badSignature) }
        var other = try Ipns_Pb_IpnsEntry(serializedBytes: good)
        other.value = Data(Array("/ipfs/other".utf8))  // the protobuf says one thing, the signed CBOR another
        XCTAssertThrowsError(try IPNS.verify(try other.serializedBytes() as [UInt8], name: key.peerID, now: Date())) {
            XCTAssertEqual($0 as? IPNS.Failure, .fieldsDiffer("Value"))
        }
        // Under another name (whose key is inlined in its ID) the signature does not verify.
        XCTAssertThrowsError(try IPNS.verify(good, name: PrivateKey.generate().peerID, now: Date())) { XCTAssertEqual($0 as? IPNS.Failure, .badSignature) }
        XCTAssertThrowsError(try IPNS.verify(good, name: key.peerID, now: until.addingTimeInterval(1))) { XCTAssertEqual($0 as? IPNS.Failure, .expired) }
        XCTAssertThrowsError(try IPNS.verify([0xff, 0x01], name: key.peerID, now: Date()))
    }

    func testTheDHTValidatorKeepsTheHigherSequence() throws {
        let v = RecordValidator()
        let k = IPNS.key(key.peerID)
        let until = Date().addingTimeInterval(3600)
        let r1 = try v.validate(key: k, value: IPNS.create(value: value, sequence: 1, validUntil: until, ttl: .seconds(60), key: key), now: Date())
        let r2 = try v.validate(key: k, value: IPNS.create(value: value, sequence: 2, validUntil: until, ttl: .seconds(60), key: key), now: Date())
        guard case .ipns(let rec) = r2.kind else { return XCTFail("\(r2.kind)") }
        XCTAssertEqual(rec.sequence, 2)
        XCTAssertTrue(v.shouldReplace(existing: r1, with: r2))
        XCTAssertFalse(v.shouldReplace(existing: r2, with: r1), "no rollback")
        // Someone else's record under our name does not validate.
        let forged = IPNS.create(value: value, sequence: 9, validUntil: until, ttl: .seconds(60), key: PrivateKey.generate())
        XCTAssertThrowsError(try v.validate(key: k, value: forged, now: Date()))
    }
}
