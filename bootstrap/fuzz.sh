#!/usr/bin/env bash
# Fuzzes Cairn's wire decoders with libFuzzer (docs/fuzzing.md).
#
#   bash bootstrap/fuzz.sh [SECONDS] [TARGET...]
#
# Builds `cairn-fuzz` with -sanitize=fuzzer,address into .build-fuzz (release), then runs every
# target (or the named ones) for SECONDS each (default 60) on a working copy of its corpus:
# .build-fuzz/corpus/<target>, seeded from the committed Fuzz/corpus/<target> (the committed seeds
# are never written to; what a run discovers stays in the working copy for the next run).
# Findings go to .build-fuzz/artifacts/<target>/ (emptied when the target starts). Prints the
# executions and exec/s of each target, writes .build-fuzz/fuzz-summary.md, and exits non-zero if
# any target crashed, leaked, hung or ran out of memory.
#
# Environment:
#   CAIRN_FUZZ_JOBS=N        build jobs (swift build -j N; default: swift's own)
#   CAIRN_FUZZ_FORK=1        keep going past findings (-fork=1 -ignore_crashes=1 ...): campaigns
#   CAIRN_FUZZ_FRESH=1       start each target from the committed seeds only
#   CAIRN_FUZZ_ARGS="..."    extra libFuzzer flags
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
source bootstrap/setup.sh

seconds="${1:-60}"
shift || true
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a number, got '$seconds'" >&2; exit 2 ;; esac

scratch="$repo/.build-fuzz"
# Package.swift declares the cairn-fuzz target only under CAIRN_FUZZ=1 (it links only with -sanitize=fuzzer).
export CAIRN_FUZZ=1
build_args=(-c release --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library --product cairn-fuzz)
if [ -n "${CAIRN_FUZZ_JOBS:-}" ]; then build_args+=(-j "$CAIRN_FUZZ_JOBS"); fi
echo "fuzz: building cairn-fuzz (release, fuzzer+address sanitizers) in .build-fuzz" >&2
swift build "${build_args[@]}" >&2
bin="$scratch/release/cairn-fuzz"

# Swift's crash backtracer would catch the trap, hang for minutes and confuse ASan.
export SWIFT_BACKTRACE=enable=no

# The findings already fixed (docs/fuzzing.md) must stay fixed in this build too.
"$bin" --regressions >&2

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("$bin" list | tail -n +2 | awk '{print $1}')
fi

summary="$scratch/fuzz-summary.md"
{
    echo "# cairn-fuzz run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Command: \`bash bootstrap/fuzz.sh $seconds${*:+ $*}\`${CAIRN_FUZZ_FORK:+ (CAIRN_FUZZ_FORK=1)}"
    echo
    echo "| target | seconds | max_len | executions | exec/s | corpus | result |"
    echo "|---|---:|---:|---:|---:|---:|---|"
} > "$summary"

failed=()
for t in "${targets[@]}"; do
    max_len="$(CAIRN_FUZZ_TARGET="$t" "$bin" --max-len)" || { echo "fuzz: unknown target $t" >&2; failed+=("$t"); continue; }
    corpus="$scratch/corpus/$t"
    artifacts="$scratch/artifacts/$t"
    log="$scratch/logs/$t.log"
    if [ -n "${CAIRN_FUZZ_FRESH:-}" ]; then rm -rf "$corpus"; fi
    mkdir -p "$corpus" "$scratch/logs"
    rm -rf "$artifacts" && mkdir -p "$artifacts"
    if [ -d "Fuzz/corpus/$t" ]; then cp -n Fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true; fi
    flags=(-max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 -timeout=10
           -rss_limit_mb=2048 -malloc_limit_mb=1024 -artifact_prefix="$artifacts/")
    if [ -n "${CAIRN_FUZZ_FORK:-}" ]; then flags+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1); fi
    # shellcheck disable=SC2206
    extra=(${CAIRN_FUZZ_ARGS:-})
    set +e
    CAIRN_FUZZ_TARGET="$t" "$bin" "${flags[@]}" "${extra[@]}" "$corpus" > "$log" 2>&1
    rc=$?
    set -e
    # Non-fork runs print final stats; fork runs report in their last "#N: cov: ..." status line.
    execs="$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -n 1)"
    rate="$(awk '/stat::average_exec_per_sec/ {print $2}' "$log" | tail -n 1)"
    if [ -z "$execs" ]; then
        execs="$(grep -E '^#[0-9]+:? ' "$log" | tail -n 1 | sed -E 's/^#([0-9]+).*/\1/')"
        rate="$(grep -E '^#[0-9]+:? ' "$log" | tail -n 1 | sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p')"
    fi
    execs="${execs:-0}"; rate="${rate:-0}"
    files="$(find "$corpus" -type f | wc -l)"
    found="$(find "$artifacts" -type f | wc -l)"
    result="ok"
    if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
        result="FAILED (exit $rc, $found artifact(s))"
        failed+=("$t")
    fi
    printf 'fuzz: %-18s %12s execs %8s exec/s  corpus %5s  %s\n' "$t" "$execs" "$rate" "$files" "$result"
    if [ "$result" != "ok" ]; then
        grep -m 3 -E 'invariant violated|ERROR: (libFuzzer|AddressSanitizer)|Fatal error' "$log" | sed 's/^/fuzz:   /' || true
        for a in "$artifacts"/*; do
            [ -e "$a" ] && echo "fuzz:   reproduce: SWIFT_BACKTRACE=enable=no CAIRN_FUZZ_TARGET=$t $bin $a"
        done
        echo "fuzz:   log: $log"
    fi
    echo "| $t | $seconds | $max_len | $execs | $rate | $files | $result |" >> "$summary"
done

echo "fuzz: summary in $summary" >&2
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran without findings" >&2
