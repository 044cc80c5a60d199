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
#   fuzz   scripts/fuzz.sh: each libFuzzer target for FUZZ_SECONDS (20);
#          it and the sanitizer builds run at nice 19 beside the main phase
#   tsan   --config=tsan on the threaded limiter tests (tests/limits) and
#          the in-process data-plane tests (admission, behaviour, drain,
#          queue waits)
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
  local started=$SECONDS
  "${bazel[@]}" test --nocache_test_results "${flags[@]}" "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  # Where this output base keeps test.xml files (for the same flags).
  testlogs=$("${bazel[@]}" info "${flags[@]}" bazel-testlogs 2>/dev/null)
  PHASES+=("$label|$log|$testlogs|$status")
  echo "== test phase: $label took $((SECONDS - started)) s" >&2
  [ "$status" -eq 0 ] || rc=1
}

TSAN=("$HOME/.cache/sluice-tsan-base" --config=tsan -- //tests/limits/... \
  //tests/proxy:admission_test //tests/proxy:proxy_behaviour_test \
  //tests/proxy:drain_redis_test //tests/proxy:queue_wait_test)
if [ "${SLUICE_SANITIZERS:-}" = full ]; then
  ASAN=("$HOME/.cache/sluice-asan-base" --config=asan --keep_going -- //...)
else
  ASAN=("$HOME/.cache/sluice-asan-base" --config=asan --keep_going -- \
    //tests/config/... //tests/limits/... //tests/metrics/... //tests/log/... \
    //tests/fuzz/... //tests/proxy/...)
fi

# Where the kernel groups processes by session (sched_autogroup), nice
# counts only against processes of the same group, and every Bazel server
# starts a session of its own: lower_autogroup PID puts PID's whole group at
# nice 19; lower_server OUTPUT_BASE starts that base's server and lowers it.
lower_autogroup() { echo 19 >"/proc/$1/autogroup" 2>/dev/null || true; }
lower_server() {
  lower_autogroup "$(bazel --output_base="$1" info server_pid 2>/dev/null)"
}

# prebuild OUTPUT_BASE FLAGS... -- TARGETS...: builds a sanitizer phase's
# targets on a lowered server, then stops it, so that the phase's `bazel
# test` later starts one at normal priority.
prebuild() {
  local base=$1
  shift
  local flags=()
  while [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift
  lower_server "$base"
  bazel --output_base="$base" build --symlink_prefix=/ "${flags[@]}" "$@" \
    >"$LOGDIR/prebuild-$(basename "$base").log" 2>&1
  bazel --output_base="$base" shutdown >/dev/null 2>&1
}

# Overlapped with the main phase, at the lowest CPU priority (nice 19, and
# their autogroups lowered): the fuzz phase and the sanitizer builds use
# only the CPU that the main phase's tests leave idle (its end-to-end tests
# mostly wait on real time). The e2e tests' bounds hold on a busy machine by
# design; this keeps a core busy for part of the main phase, the condition
# they are built for.
fuzz_started=$SECONDS
(
  renice -n 19 -p "$BASHPID" >/dev/null  # inherited by all it starts
  fuzz_base=${FUZZ_OUTPUT_BASE:-$HOME/.cache/sluice-fuzz-base}
  lower_server "$fuzz_base"
  # Its own session, so that lowering its autogroup lowers nothing else.
  FUZZ_SECONDS=${FUZZ_SECONDS:-20} FUZZ_OUTPUT_BASE=$fuzz_base \
    setsid scripts/fuzz.sh >"$LOGDIR/fuzz.log" 2>&1 &
  fuzz=$!
  lower_autogroup "$fuzz"
  wait "$fuzz"
  echo $? >"$LOGDIR/fuzz.status"
  echo "$((SECONDS - fuzz_started))" >"$LOGDIR/fuzz.seconds"
  bazel --output_base="$fuzz_base" shutdown >/dev/null 2>&1
  prebuild "${TSAN[@]}"
  prebuild "${ASAN[@]}"
) &
BACKGROUND=$!

bazel_phase main "" "$@" -- //...

wait "$BACKGROUND"
echo "== test phase: fuzz (overlapped with main, nice 19)" >&2
cat "$LOGDIR/fuzz.log"
fuzz_status=$(cat "$LOGDIR/fuzz.status" 2>/dev/null || echo 1)
[ "$fuzz_status" -eq 0 ] || rc=1
echo "== test phase: fuzz took $(cat "$LOGDIR/fuzz.seconds" 2>/dev/null) s" >&2

bazel_phase tsan "${TSAN[@]}"
bazel_phase asan "${ASAN[@]}"

echo "== all phases took $SECONDS s" >&2
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
