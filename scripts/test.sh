#!/usr/bin/env bash
# Runs every test and ends with one line "N passed, N failed, N skipped"
# counting individual test cases (from the JUnit XML files the tests write:
# gtest's, and harness.main()'s for the Python unittest cases; a test that
# writes none counts as one case) and the fuzzers' own summary. A skipped
# case is counted as skipped, never as passed. Every test is executed on
# every run: --nocache_test_results (the disk cache only serves builds).
# Exit status: non-zero on any failure.
#
# Phases, each in its own Bazel output base where the build differs:
#   main   bazel test //...                      (gcc, the normal build)
#   fuzz   scripts/fuzz.sh: each libFuzzer target for FUZZ_SECONDS (20)
#   tsan   --config=tsan on the threaded limiter tests (tests/limits)
#   asan   --config=asan (ASan + UBSan) on the in-process tests (the
#          data plane's included, Typed and Generic);
#          SLUICE_SANITIZERS=full runs the whole suite under ASan instead
# Extra arguments go to the main phase's `bazel test`.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
LOGDIR=$(mktemp -d /tmp/sluice-test.XXXXXX)
PHASES=()  # "label|log|testlogs dir"
rc=0

# bazel_phase LABEL OUTPUT_BASE(or "") FLAGS... -- TARGETS...: one
# `bazel test`, logged.
bazel_phase() {
  local label=$1 base=$2
  shift 2
  local bazel=(bazel) flags=() log="$LOGDIR/$label.log" testlogs
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift  # the --
  if [ -n "$base" ]; then
    bazel+=(--output_base="$base")
    flags+=(--symlink_prefix=/)
  fi
  echo "== test phase: $label" >&2
  "${bazel[@]}" test --nocache_test_results "${flags[@]}" "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  # Where this output base keeps test.xml files (for the same flags).
  testlogs=$("${bazel[@]}" info "${flags[@]}" bazel-testlogs 2>/dev/null)
  PHASES+=("$label|$log|$testlogs|$status")
  [ "$status" -eq 0 ] || rc=1
}

bazel_phase main "" "$@" -- //...

echo "== test phase: fuzz" >&2
FUZZ_SECONDS=${FUZZ_SECONDS:-20} scripts/fuzz.sh 2>&1 | tee "$LOGDIR/fuzz.log"
fuzz_status=${PIPESTATUS[0]}
[ "$fuzz_status" -eq 0 ] || rc=1

bazel_phase tsan "$HOME/.cache/sluice-tsan-base" --config=tsan -- //tests/limits/...

if [ "${SLUICE_SANITIZERS:-}" = full ]; then
  bazel_phase asan "$HOME/.cache/sluice-asan-base" --config=asan --keep_going -- //...
else
  bazel_phase asan "$HOME/.cache/sluice-asan-base" --config=asan --keep_going -- \
    //tests/config/... //tests/limits/... //tests/metrics/... //tests/log/... \
    //tests/fuzz/... //tests/proxy/...
fi

/usr/bin/python3 - "$rc" "$LOGDIR/fuzz.log" "$fuzz_status" "${PHASES[@]}" <<'PY'
import os, re, sys
import xml.etree.ElementTree as ET
rc, fuzz_log, fuzz_status = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
passed = failed = skipped = 0
failures = []


def case_result(tc):
    """'failed', 'skipped' or 'passed' for one JUnit <testcase>."""
    if tc.find("failure") is not None or tc.find("error") is not None:
        return "failed"
    # gtest writes result="skipped" (and a <skipped> child); harness.main()
    # writes the <skipped> child.
    if tc.find("skipped") is not None or tc.get("result") == "skipped":
        return "skipped"
    return "passed"


for phase in sys.argv[4:]:
    label, log, testlogs, status = phase.split("|")
    text = open(log).read()
    # Targets bazel reported in this run.
    targets = re.findall(r"^(//\S+)\s+(?:\(cached\)\s+)?(PASSED|FAILED|TIMEOUT|NO STATUS|FLAKY)",
                         text, re.M)
    before = (passed, failed, skipped)
    for target, result in targets:
        if result != "PASSED":
            failed += 1
            failures.append(f"[{label}] {target} {result}")
            continue
        path = os.path.join(testlogs, target[2:].replace(":", "/"), "test.xml")
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        if os.path.exists(path):
            try:
                for tc in ET.parse(path).getroot().iter("testcase"):
                    counts[case_result(tc)] += 1
            except ET.ParseError:
                counts["failed"] += 1
                failures.append(f"[{label}] {target}: unreadable test.xml")
        if sum(counts.values()) == 0:
            counts["passed"] = 1  # a plain sh_test: one case
        passed += counts["passed"]
        failed += counts["failed"]
        skipped += counts["skipped"]
    if int(status) != 0 and failed == before[1]:
        failed += 1
        failures.append(f"[{label}] bazel exited {status} (build error?)")
    print(f"{label}: {passed - before[0]} passed, {failed - before[1]} failed, "
          f"{skipped - before[2]} skipped")
m = re.findall(r"^(\d+) passed, (\d+) failed$", open(fuzz_log).read(), re.M)
fp, ff = (int(m[-1][0]), int(m[-1][1])) if m else (0, 1)
if fuzz_status != 0 and ff == 0:
    ff = 1
print(f"fuzz: {fp} passed, {ff} failed, 0 skipped")
passed += fp
failed += ff
if ff:
    failures.append("[fuzz] see the fuzz output above")
if rc != 0 and failed == 0:
    failed = 1
    failures.append("a phase exited non-zero")
for f in failures:
    print("FAILED:", f)
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
PY
status=$?
rm -rf "$LOGDIR"
exit $status
