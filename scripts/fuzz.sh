#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang 14 (ASan + UBSan) in
# their own Bazel output base and runs each for a bounded time, failing on
# any crash, invariant violation, leak, timeout or out-of-memory.
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS (25) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh config_fuzzer   one target, longer
#
# New inputs go to a scratch corpus ($FUZZ_WORK, default a temp dir), never
# into tests/fuzz/corpus (the committed seeds are only read). A failing
# input is saved as $FUZZ_WORK/<target>/crash-* (or timeout-*, oom-*,
# leak-*); replay it with: <binary> <file>. Last line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(config_fuzzer token_bucket_fuzzer keyed_buckets_fuzzer
           concurrency_limiter_fuzzer header_limits_fuzzer)
fi
SECONDS_EACH=${FUZZ_SECONDS:-25}
OUTPUT_BASE=${FUZZ_OUTPUT_BASE:-$HOME/.cache/sluice-fuzz-base}
WORK=${FUZZ_WORK:-$(mktemp -d /tmp/sluice-fuzz.XXXXXX)}
mkdir -p "$WORK"

if ! command -v clang-14 >/dev/null; then
  echo "fuzz: clang-14 is missing (scripts/install-deps installs it)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

# Its own output base: the fuzz config configures the C++ toolchain with
# clang (CC is read when the toolchain is autodetected), which must never
# touch the main output base. --symlink_prefix=/: leave bazel-bin alone.
BAZEL=(bazel --output_base="$OUTPUT_BASE")
labels=()
for t in "${TARGETS[@]}"; do labels+=("//tests/fuzz:$t"); done
if ! "${BAZEL[@]}" build --config=fuzz --symlink_prefix=/ "${labels[@]}" \
    >"$WORK/build.log" 2>&1; then
  grep -v 'Cannot export local symbol' "$WORK/build.log" | tail -40 >&2
  echo "fuzz: build failed (log: $WORK/build.log)" >&2
  echo "0 passed, ${#TARGETS[@]} failed"
  exit 1
fi
BIN=$("${BAZEL[@]}" info --config=fuzz bazel-bin 2>/dev/null)

passed=0
failed=0
for t in "${TARGETS[@]}"; do
  name=${t%_fuzzer}
  corpus_dir=$WORK/$t
  mkdir -p "$corpus_dir"
  seeds=(tests/fuzz/corpus/"$name")
  extra=()
  if [ "$t" = config_fuzzer ]; then
    seeds+=(deploy/examples)
    extra+=(-dict=tests/fuzz/config.dict)
  fi
  log=$WORK/$t.log
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a blow-up.
  # (libFuzzer's OOM report walks the whole ASan heap and can take minutes,
  # so `timeout` bounds each run in any case.)
  timeout -k 10 $((SECONDS_EACH + 120)) "$BIN/tests/fuzz/$t" \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2560 \
      -print_final_stats=1 -artifact_prefix="$corpus_dir/" "${extra[@]}" \
      "$corpus_dir" "${seeds[@]}" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz: $t ok: ${runs:-?} runs in ${SECONDS_EACH}s (${rate:-?}/s), ${cov:-}"
  else
    failed=$((failed + 1))
    echo "fuzz: $t FAILED (exit $rc), log $log:" >&2
    grep -E 'ERROR|invariant failed|runtime error|SUMMARY|Test unit written|ALARM' "$log" | head -20 >&2
  fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
