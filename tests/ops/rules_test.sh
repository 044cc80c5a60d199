#!/usr/bin/env bash
# promtool check rules on the shipped rules, then promtool test rules on
# their unit tests (sluice-rules.test.yaml: every alert). promtool is in
# Debian's prometheus package (scripts/install-deps).
set -euo pipefail
here="$(dirname "$0")"
root="${TEST_SRCDIR:+$TEST_SRCDIR/${TEST_WORKSPACE:-sluice}}"
root="${root:-$here/../..}"
promtool check rules "$root/deploy/prometheus/sluice-rules.yaml"
# rule_files in the test file are relative to its folder.
cd "$root/tests/ops"
promtool test rules sluice-rules.test.yaml
