#!/usr/bin/env bash
# bench/run.sh --quick against the binaries Bazel built for this test.
set -euo pipefail
HERE="$TEST_SRCDIR/${TEST_WORKSPACE:-sluice}"
export SLUICE_BIN="$HERE/server/sluice"
export UPSTREAM_BIN="$HERE/server/demo/demo_upstream"
exec bash "$HERE/bench/run.sh" --quick --out="${TEST_UNDECLARED_OUTPUTS_DIR:-$TEST_TMPDIR}/bench"
