#!/usr/bin/env bash
# Fails unless the two files have the same bytes. Used to keep committed
# generated files (deploy/examples/demo-descriptors.pb) current.
set -euo pipefail
if ! cmp -s "$1" "$2"; then
  echo "$2 differs from $1; regenerate it:" >&2
  echo "  bazel build //proto:demo_descriptors && cp bazel-bin/proto/demo_descriptors.pb deploy/examples/demo-descriptors.pb" >&2
  exit 1
fi
echo "$2 is current"
