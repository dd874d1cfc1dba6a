import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum DataDirectoryError: Error, CustomStringConvertible {
    /// Another process holds the directory: two processes must never run as one identity.
    case inUse(path: String, holder: String)
    case cannotLock(path: String, errno: Int32)

    public var description: String {
        switch self {
        case .inUse(let path, let holder):
            return "data directory \(path) is in use by \(holder); stop that node or give another --data-dir (two processes must not run as one identity)"
        case .cannotLock(let path, let e):
            return "cannot lock data directory \(path): \(String(cString: strerror(e)))"
        }
    }
}

/// Where a node keeps its identity and stores: `$CAIRN_PATH` when set (as `IPFS_PATH` for kubo),
/// else `$HOME/.cairn`.
public enum DataDirectory {
    public static func defaultURL(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let p = environment["CAIRN_PATH"], !p.isEmpty {
            return URL(fileURLWithPath: (p as NSString).expandingTildeInPath)
        }
        // `NSHomeDirectory()` reads the password database and ignores $HOME; a user who sets
        // HOME means it.
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return URL(fileURLWithPath: home).appendingPathComponent(".cairn")
    }
}

/// An exclusive lock on a data directory (`<dir>/lock`, `flock`), held for the life of the
/// process that runs a node on it. The kernel releases it when the process dies, even by
/// `kill -9`, so a crashed node never leaves it stuck. The file says who holds it.
public final class DataDirectoryLock: @unchecked Sendable {
    public let path: String
    private var fd: Int32

    /// Takes the lock or throws `DataDirectoryError.inUse` naming the holder.
    public init(directory: URL, holder: String = "\(ProcessInfo.processInfo.processName)") throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        path = directory.appendingPathComponent("lock").path
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DataDirectoryError.cannotLock(path: directory.path, errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            let who = Self.readHolder(fd)
            close(fd)
            fd = -1
            if e == EWOULDBLOCK { throw DataDirectoryError.inUse(path: directory.path, holder: who.isEmpty ? "another process" : who) }
            throw DataDirectoryError.cannotLock(path: directory.path, errno: e)
        }
        let text = "pid \(getpid()) (\(holder)), since \(ISO8601DateFormatter().string(from: Date()))\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    private static func readHolder(_ fd: Int32) -> String {
        var buf = [UInt8](repeating: 0, count: 256)
        let n = pread(fd, &buf, buf.count, 0)
        guard n > 0 else { return "" }
        return String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Releases the lock (also done when the process exits).
    public func release() {
        guard fd >= 0 else { return }
        _ = ftruncate(fd, 0)
        flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }

    deinit { release() }
}
