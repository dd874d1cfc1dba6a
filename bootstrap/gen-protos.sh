#!/usr/bin/env bash
# Regenerates Sources/CairnProto/*.pb.swift from Sources/CairnProto/proto/*.proto.
# Needs protoc (apt: protobuf-compiler) and protoc-gen-swift built from the same swift-protobuf
# version the package resolves (built here once, release mode, ~10 min on 2 cores).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
plugin="${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift || true)}"
if [ -z "$plugin" ]; then
  swift package resolve
  src="$repo/.build/checkouts/swift-protobuf"
  swift build -c release --package-path "$src" --scratch-path "$repo/.build-protoc" --product protoc-gen-swift
  plugin="$repo/.build-protoc/release/protoc-gen-swift"
fi
protoc --plugin=protoc-gen-swift="$plugin" \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores \
  --proto_path=Sources/CairnProto/proto \
  --swift_out=Sources/CairnProto \
  Sources/CairnProto/proto/*.proto
echo "generated: $(ls Sources/CairnProto/*.pb.swift | tr '\n' ' ')"
