import CairnCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public enum IdentityStoreError: Error, CustomStringConvertible {
    case unreadable(String)
    case insecurePermissions(String)

    public var description: String {
        switch self {
        case .unreadable(let s): return "cannot read identity: \(s)"
        case .insecurePermissions(let s): return "identity key file \(s) is readable by others; refusing to use it (chmod 600)"
        }
    }
}

/// Keeps the node's Ed25519 identity in its data directory: `identity.key` holds libp2p's protobuf
/// PrivateKey, created on first start with mode 0600 in a 0700 directory.
public struct IdentityStore {
    public let dataDirectory: URL
    public var keyURL: URL { dataDirectory.appendingPathComponent("identity.key") }

    public init(dataDirectory: URL) { self.dataDirectory = dataDirectory }

    public static var defaultDataDirectory: URL {
        DataDirectory.defaultURL()
    }

    /// Loads the identity, creating it if it does not exist. Returns the key and whether it was new.
    public func loadOrCreate() throws -> (key: PrivateKey, created: Bool) {
        let fm = FileManager.default
        try fm.createDirectory(at: dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        if fm.fileExists(atPath: keyURL.path) {
            let attrs = try fm.attributesOfItem(atPath: keyURL.path)
            if let perms = attrs[.posixPermissions] as? NSNumber, perms.intValue & 0o077 != 0 {
                throw IdentityStoreError.insecurePermissions(keyURL.path)
            }
            let data = try Data(contentsOf: keyURL)
            do { return (try PrivateKey(protobufBytes: [UInt8](data)), false) } catch {
                throw IdentityStoreError.unreadable("\(keyURL.path): \(error)")
            }
        }
        let key = PrivateKey.generate()
        let tmp = dataDirectory.appendingPathComponent("identity.key.tmp")
        guard fm.createFile(atPath: tmp.path, contents: Data(key.protobufBytes), attributes: [.posixPermissions: 0o600]) else {
            throw IdentityStoreError.unreadable("cannot write \(tmp.path)")
        }
        guard rename(tmp.path, keyURL.path) == 0 else {
            throw IdentityStoreError.unreadable("cannot move \(tmp.path) into place: errno \(errno)")
        }
        return (key, true)
    }
}
