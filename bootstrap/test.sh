#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: unit tests of the sans-I/O core, node tests over
# loopback, and the interop tests against py-libp2p 0.8.1 (installed into a venv when missing).
# The interop tests are required here: a missing Python peer fails the run instead of skipping.
# Then the fuzz smoke (bootstrap/fuzz.sh: a sanitizer build, a few seconds per target).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
source bootstrap/setup.sh
py="$(bash bootstrap/setup-interop.sh | tail -n 1)"
export CAIRN_PY_VENV="$(dirname "$(dirname "$py")")"
export CAIRN_P2PCLIENT_PY="$(bash bootstrap/setup-p2pclient.sh | tail -n 1)"
export CAIRN_KUBO_PY="$(bash bootstrap/setup-kubo.sh | tail -n 1)"
export CAIRN_REQUIRE_INTEROP=1
# The NAT lab tests need root, ip and nft (installed by setup.sh); CI has them, so there they must run.
if [ "${CI:-}" = "true" ]; then export CAIRN_REQUIRE_LAB=1; fi
swift build --build-tests
swift test --skip-build "$@"
# The fuzz smoke: every libFuzzer target for a few seconds on its committed corpus, after
# replaying every crash found so far (docs/fuzzing.md); a crash fails the run.
if [ "$#" -eq 0 ]; then bash bootstrap/fuzz.sh "${CAIRN_FUZZ_SMOKE_SECONDS:-2}"; fi
