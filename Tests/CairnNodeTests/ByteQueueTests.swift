@testable import CairnNode
import NIOCore
import XCTest

/// A stream's received chunks are handed out as they arrived (no copy into one buffer): reads
/// of any size get the bytes in order, and put-back bytes come first.
final class ByteQueueTests: XCTestCase {
    func testReadsGiveTheBytesInOrderWhateverTheSizes() {
        var q = ByteQueue()
        var expected: [UInt8] = []
        var next: UInt8 = 0
        for size in [1, 7, 0, 300, 65536, 2] {
            var b = ByteBuffer()
            for _ in 0..<size { b.writeInteger(next); expected.append(next); next &+= 1 }
            q.append(b)
        }
        XCTAssertEqual(q.readableBytes, expected.count)
        q.prepend(ByteBuffer(bytes: [200, 201]))
        expected = [200, 201] + expected
        var got: [UInt8] = []
        var sizes = [1, 5, 1000, 3, 70000, 64].makeIterator()
        while q.readableBytes > 0 {
            let max = sizes.next() ?? 17
            let chunk = q.read(upTo: max)
            XCTAssertGreaterThan(chunk.readableBytes, 0)
            XCTAssertLessThanOrEqual(chunk.readableBytes, max)
            got += chunk.readableBytesView
        }
        XCTAssertEqual(got, expected)
        XCTAssertEqual(q.read(upTo: 10).readableBytes, 0)
    }

    func testTakeAllEmptiesTheQueue() {
        var q = ByteQueue()
        q.append(ByteBuffer(bytes: [1, 2]))
        q.append(ByteBuffer(bytes: [3]))
        XCTAssertEqual(q.takeAll().flatMap { Array($0.readableBytesView) }, [1, 2, 3])
        XCTAssertEqual(q.readableBytes, 0)
    }
}
