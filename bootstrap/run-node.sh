#!/usr/bin/env bash
# Sets up a fresh machine, builds Cairn (release) and runs the node until interrupted.
#   bash bootstrap/run-node.sh [cairn node options]
# Default: listen on /ip4/0.0.0.0/tcp/4001 with the data directory ~/.cairn.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
source bootstrap/setup.sh
swift build -c release --product cairn >&2
args=("$@")
if ! printf '%s\n' "${args[@]}" | grep -q -- '--listen'; then args+=(--listen /ip4/0.0.0.0/tcp/4001); fi
exec .build/release/cairn node "${args[@]}"
