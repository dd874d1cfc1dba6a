// cairn-fuzz: every libFuzzer target of Cairn's wire decoders in one executable (docs/fuzzing.md).
//
//   CAIRN_FUZZ_TARGET=<name> cairn-fuzz [libFuzzer flags] [corpus dirs]   fuzz one target
//   cairn-fuzz list                                                      the target names
//   CAIRN_FUZZ_TARGET=<name> cairn-fuzz --write-seeds DIR [--spec-vectors FILE]
//                                                                        write seed inputs
//   CAIRN_FUZZ_TARGET=<name> cairn-fuzz --max-len                        the target's -max_len
//   cairn-fuzz --regressions                                             replay fixed findings
//
// Built with `-sanitize=fuzzer,address -parse-as-library` (bootstrap/fuzz.sh): libFuzzer's own
// main is not used, SwiftPM's `main=cairn_fuzz_main` symbol is defined here and hands over to
// `LLVMFuzzerRunDriver`.
import Foundation

struct FuzzTarget: Sendable {
    let name: String
    let summary: String
    /// The decoder's own limit on one input, passed as `-max_len` by bootstrap/fuzz.sh.
    let maxLength: Int
    let run: @Sendable ([UInt8]) -> Void
    let seeds: @Sendable (SeedContext) -> [[UInt8]]
}

let allTargets: [FuzzTarget] = [
    varintTarget, lengthPrefixedTarget, multistreamTarget,
    noiseHandshakeTarget, noiseTransportTarget, secureConnectionTarget, yamuxTarget,
    identifyTarget, kadMessageTarget, kadRecordTarget, ipnsTarget, envelopeTarget,
    multiaddrTarget, peerIDTarget, cidTarget,
    relayTarget, autonatTarget, dcutrTarget, stunTarget, p2pdTarget, portMappingTarget, mdnsTarget,
]

nonisolated(unsafe) var selected: FuzzTarget?

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let target = selected else { return 0 }
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    target.run(bytes)
    return 0
}

func printTargets() {
    for t in allTargets {
        print("\(t.name.padding(toLength: 18, withPad: " ", startingAt: 0)) max_len=\(String(t.maxLength).padding(toLength: 6, withPad: " ", startingAt: 0)) \(t.summary)")
    }
}

@_cdecl("cairn_fuzz_main")
public func cairnFuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    let args = CommandLine.arguments
    let name = ProcessInfo.processInfo.environment["CAIRN_FUZZ_TARGET"] ?? ""
    if args.dropFirst().first == "--regressions" { return runRegressions() }
    if args.dropFirst().first == "list" || args.dropFirst().first == "--list" || name.isEmpty || name == "list" {
        print("targets (choose with CAIRN_FUZZ_TARGET=<name>):")
        printTargets()
        return 0
    }
    guard let target = allTargets.first(where: { $0.name == name }) else {
        FileHandle.standardError.write(Data("cairn-fuzz: unknown target '\(name)'; `cairn-fuzz list` names them\n".utf8))
        return 2
    }
    if args.dropFirst().first == "--max-len" {
        print(target.maxLength)
        return 0
    }
    if let i = args.firstIndex(of: "--write-seeds") {
        guard i + 1 < args.count else {
            FileHandle.standardError.write(Data("cairn-fuzz: --write-seeds DIR\n".utf8))
            return 2
        }
        var spec: String?
        if let j = args.firstIndex(of: "--spec-vectors"), j + 1 < args.count { spec = args[j + 1] }
        return writeSeeds(target, to: args[i + 1], specVectorsPath: spec)
    }
    selected = target
    var c = argc
    var v = argv
    return withUnsafeMutablePointer(to: &v) { LLVMFuzzerRunDriver(&c, $0, fuzzOne) }
}
