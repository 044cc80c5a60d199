#!/usr/bin/env bash
# Runs "$@" through tests/deploy/npm_env.sh (the npm packages of
# tests/deploy/package-lock.json on NODE_PATH), from its own folder in the
# runfiles so that it finds its package.json.
set -euo pipefail
exec "$TEST_SRCDIR/${TEST_WORKSPACE:-sluice}/tests/deploy/npm_env.sh" "$@"
