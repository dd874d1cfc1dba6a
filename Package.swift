// swift-tools-version:6.0
import Foundation
import PackageDescription

let package = Package(
    name: "Cairn",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "cairn", targets: ["cairn"]),
        .executable(name: "cairn-bench", targets: ["cairn-bench"]),
        .executable(name: "cairn-dht-sim", targets: ["cairn-dht-sim"]),
        .library(name: "CairnCore", targets: ["CairnCore"]),
        .library(name: "CairnNode", targets: ["CairnNode"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        // Peers' RSA and ECDSA keys (Cairn's own keys stay libsodium's Ed25519).
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        // Operators' metrics: swift-metrics' API, exposed in Prometheus' text format.
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // libsodium, found through pkg-config; the only source of cryptography.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]
        ),
        // libsecp256k1 (Debian's), to verify peers' secp256k1 signatures.
        .systemLibrary(
            name: "CSecp256k1",
            pkgConfig: "libsecp256k1",
            providers: [.apt(["libsecp256k1-dev"])]
        ),
        // A small Swift wrapper over the libsodium primitives Cairn uses.
        .target(name: "CairnCrypto", dependencies: ["CSodium"]),
        // Generated swift-protobuf code for the libp2p wire messages (see bootstrap/gen-protos.sh).
        .target(
            name: "CairnProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            exclude: ["proto"]
        ),
        // Sans-I/O core: identities, multiformats, and protocol state machines. No sockets here.
        .target(
            name: "CairnCore",
            dependencies: [
                "CairnCrypto", "CairnProto", "CSecp256k1",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // A discrete-event network that runs the unchanged DHT behaviour for thousands of nodes.
        .target(name: "CairnSim", dependencies: ["CairnCore", "CairnCrypto"]),
        .executableTarget(
            name: "cairn-dht-sim",
            dependencies: ["CairnSim", "CairnCore", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The swarm: owns sockets and connections and carries out the state machines' actions.
        .target(
            name: "CairnNode",
            dependencies: [
                "CairnCore", "CairnCrypto", "CairnProto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .executableTarget(
            name: "cairn",
            dependencies: [
                "CairnNode", "CairnCore", "CairnProto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Loopback benchmark: connection rate and stream throughput vs py-libp2p and raw TCP.
        // The connectivity matrix over the NAT lab (needs root, ip, nft; drives `cairn` processes).
        .executableTarget(
            name: "cairn-natmatrix",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // docs/embedding.md: an application that embeds a CairnHost (built and run by the tests).
        .executableTarget(
            name: "cairn-example-echo",
            dependencies: ["CairnNode", "CairnCore", .product(name: "Logging", package: "swift-log")],
            path: "Examples/Echo"
        ),
        .executableTarget(
            name: "cairn-bench",
            dependencies: [
                "CairnNode", "CairnCore", "CairnProto", "CairnCrypto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "CairnCoreTests",
            dependencies: [
                "CairnCore", "CairnCrypto", "CairnProto", "CairnSim",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "CairnNodeTests",
            dependencies: [
                "CairnNode", "CairnCore", "CairnProto", "CairnCrypto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)

// libFuzzer targets for every wire decoder (docs/fuzzing.md). Only in the package when
// CAIRN_FUZZ=1 (bootstrap/fuzz.sh sets it and builds with -sanitize=fuzzer into .build-fuzz):
// without the sanitizer, LLVMFuzzerRunDriver does not link and `swift build` would fail.
if ProcessInfo.processInfo.environment["CAIRN_FUZZ"] == "1" {
    package.targets.append(
        .executableTarget(
            name: "cairn-fuzz",
            dependencies: [
                "CairnCore", "CairnProto", "CairnCrypto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        )
    )
}
