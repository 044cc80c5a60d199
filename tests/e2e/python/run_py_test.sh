#!/usr/bin/env bash
# Bazel sh_test wrapper: runs a Python e2e test under Debian's python3,
# which has python3-grpcio (the python3 first on PATH may not).
set -euo pipefail
exec /usr/bin/python3 "$@"
