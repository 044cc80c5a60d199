#!/usr/bin/env bash
# Runs every test (bazel test //...) and ends with one line
# "N passed, N failed" counting individual test cases from the JUnit XML
# files Bazel writes. Exit status: non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps

BAZEL_ARGS=("$@")
bazel test //... "${BAZEL_ARGS[@]}" 2>&1 | tee /tmp/sluice-test-$$.log
rc=${PIPESTATUS[0]}

/usr/bin/python3 - "$rc" /tmp/sluice-test-$$.log <<'PY'
import glob, os, re, sys
import xml.etree.ElementTree as ET
rc, log = int(sys.argv[1]), sys.argv[2]
testlogs = os.path.realpath("bazel-testlogs")
passed = failed = 0
failed_targets = []
# Targets bazel reported in this run (cached or not).
targets = re.findall(r"^(//\S+)\s+(?:\(cached\)\s+)?(PASSED|FAILED|TIMEOUT|NO STATUS|FLAKY)",
                     open(log).read(), re.M)
for target, result in targets:
    path = os.path.join(testlogs, target[2:].replace(":", "/"), "test.xml")
    cases = fails = 0
    if result == "PASSED" and os.path.exists(path):
        try:
            root = ET.parse(path).getroot()
            for tc in root.iter("testcase"):
                cases += 1
                if tc.find("failure") is not None or tc.find("error") is not None:
                    fails += 1
        except ET.ParseError:
            pass
    if result != "PASSED":
        failed += 1
        failed_targets.append(f"{target} {result}")
        continue
    if cases == 0:
        cases = 1  # a plain sh_test: one case
    passed += cases - fails
    failed += fails
if rc != 0 and failed == 0:
    failed = 1
    failed_targets.append(f"bazel exited {rc} (build error?)")
for t in failed_targets:
    print("FAILED:", t)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
status=$?
rm -f /tmp/sluice-test-$$.log
exit $status
