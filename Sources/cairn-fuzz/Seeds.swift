import CairnCore
import CairnCrypto
import Foundation

/// What seed writers may draw on besides the project's encoders: the published vectors of
/// Tests/CairnCoreTests/SpecVectors.swift, read as text (string literals by section).
struct SeedContext {
    /// Section (`enum Name` in SpecVectors) -> its string literals, in order.
    var sections: [String: [String]] = [:]

    func literals(_ section: String) -> [String] { sections[section] ?? [] }

    /// The literals of a section that are hex (even length, at least two bytes).
    func hexBlobs(_ section: String) -> [[UInt8]] {
        literals(section).compactMap { s in
            guard s.count >= 4, s.count % 2 == 0 else { return nil }
            return Hex.decode(s)
        }
    }

    /// The literals of a section that are base64 of at least 16 bytes.
    func base64Blobs(_ section: String) -> [[UInt8]] {
        literals(section).compactMap { s in
            guard s.count >= 24, s.count % 4 == 0, Hex.decode(s) == nil, let d = Data(base64Encoded: s) else { return nil }
            return [UInt8](d)
        }
    }

    static func load(_ path: String?) -> SeedContext {
        var ctx = SeedContext()
        guard let path, let text = try? String(contentsOfFile: path, encoding: .utf8) else { return ctx }
        // `[ "ab", "cd", ].joined()` -> "abcd"
        var joinedText = text
        let arrayRE = try! NSRegularExpression(pattern: #"\[((?:\s*"[^"\n]*",?)+)\s*\]\.joined\(\)"#)
        let litRE = try! NSRegularExpression(pattern: #""([^"\n]*)""#)
        while let m = arrayRE.firstMatch(in: joinedText, range: NSRange(joinedText.startIndex..., in: joinedText)) {
            let body = String(joinedText[Range(m.range(at: 1), in: joinedText)!])
            let parts = litRE.matches(in: body, range: NSRange(body.startIndex..., in: body)).map {
                String(body[Range($0.range(at: 1), in: body)!])
            }
            joinedText.replaceSubrange(Range(m.range, in: joinedText)!, with: "\"\(parts.joined())\"")
        }
        var section = ""
        let enumRE = try! NSRegularExpression(pattern: #"^    enum (\w+)"#)
        for line in joinedText.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if let m = enumRE.firstMatch(in: line, range: NSRange(line.startIndex..., in: line)) {
                section = String(line[Range(m.range(at: 1), in: line)!])
                continue
            }
            if line.trimmingCharacters(in: .whitespaces).hasPrefix("//") { continue }
            for m in litRE.matches(in: line, range: NSRange(line.startIndex..., in: line)) {
                ctx.sections[section, default: []].append(String(line[Range(m.range(at: 1), in: line)!]))
            }
        }
        return ctx
    }
}

/// Writes the target's seeds into `dir`, one file per distinct input (named by its SHA-256, as
/// libFuzzer names corpus entries), skipping inputs above the target's `-max_len`.
let maxSeeds = 48

func writeSeeds(_ target: FuzzTarget, to dir: String, specVectorsPath: String?) -> Int32 {
    let ctx = SeedContext.load(specVectorsPath)
    let fm = FileManager.default
    do { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
        FileHandle.standardError.write(Data("cairn-fuzz: cannot create \(dir): \(error)\n".utf8))
        return 1
    }
    var written = 0
    var seen = Set<[UInt8]>()
    var seeds = target.seeds(ctx).filter { $0.count <= target.maxLength && seen.insert($0).inserted }
    // A few dozen seeds at most (evenly sampled): the fuzzer finds the rest.
    if seeds.count > maxSeeds { seeds = stride(from: 0, to: seeds.count, by: 1).filter { $0 * maxSeeds / seeds.count != ($0 + 1) * maxSeeds / seeds.count }.map { seeds[$0] } }
    for seed in seeds {
        let name = Hex.encode(SHA256.hash(seed).prefix(20))
        _ = fm.createFile(atPath: dir + "/" + name, contents: Data(seed))
        written += 1
    }
    print("\(target.name): \(written) seeds in \(dir)")
    return 0
}
