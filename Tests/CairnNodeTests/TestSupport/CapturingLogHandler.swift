import Foundation
import Logging

/// Keeps every log record in memory so tests can assert on what a node logged. Build a logger
/// with `capture.logger()`; the global logging system is never bootstrapped.
final class LogCapture: @unchecked Sendable {
    struct Record: Sendable, CustomStringConvertible {
        var level: Logger.Level
        var message: String
        var metadata: Logger.Metadata

        var description: String { "[\(level)] \(message) \(metadata)" }
    }

    private let lock = NSLock()
    private var storage: [Record] = []

    init() {}

    func append(_ r: Record) { lock.withLock { storage.append(r) } }

    var records: [Record] { lock.withLock { storage } }

    /// Records at `level` or above whose message contains every one of `needles` (case-insensitive).
    func records(atLeast level: Logger.Level, containing needles: [String]) -> [Record] {
        records.filter { r in
            r.level >= level && needles.allSatisfy { r.message.range(of: $0, options: .caseInsensitive) != nil }
        }
    }

    /// A logger writing to this capture (at trace level).
    func logger(label: String = "test") -> Logger {
        var l = Logger(label: label, factory: { _ in CapturingLogHandler(capture: self) })
        l.logLevel = .trace
        return l
    }

    /// Every record, one a line (for failure messages).
    var dump: String { records.map(\.description).joined(separator: "\n") }
}

/// A value-type swift-log handler (each logger copy owns its metadata, as swift-log expects)
/// that appends to a shared `LogCapture`.
struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = self.metadata
        if let m = event.metadata { all.merge(m) { _, new in new } }
        capture.append(.init(level: event.level, message: "\(event.message)", metadata: all))
    }
}
