#!/usr/bin/env bash
# Starts the demo upstream on 127.0.0.1:50051 and Sluice in front of it
# with deploy/examples/demo.yaml; Ctrl-C stops both (Sluice drains first).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=bazel-bin

READY=$(mktemp -d)
"$BIN/server/demo/demo_upstream" --listen=127.0.0.1:50051 --ready_file="$READY/upstream.json" &
UP=$!
"$BIN/server/sluice" --config=deploy/examples/demo.yaml --ready_file="$READY/sluice.json" &
SL=$!

STOPPED=0
stop() {
  trap - INT TERM
  [ "$STOPPED" = 1 ] && return
  STOPPED=1
  kill -TERM "$SL" 2>/dev/null || true
  wait "$SL" 2>/dev/null || true
  kill -TERM "$UP" 2>/dev/null || true
  wait "$UP" 2>/dev/null || true
  rm -rf "$READY"
  echo "stopped."
}
trap stop INT TERM

# Wait (bounded) until both are serving.
for _ in $(seq 100); do
  [ -f "$READY/upstream.json" ] && [ -f "$READY/sluice.json" ] && break
  if ! kill -0 "$SL" 2>/dev/null || ! kill -0 "$UP" 2>/dev/null; then
    echo "run-demo: a process exited early (port 8080, 9090, 9901 or 50051 busy?)" >&2
    stop
    exit 1
  fi
  sleep 0.1
done
cat <<'TXT'

Sluice is proxying 127.0.0.1:8080 -> demo upstream 127.0.0.1:50051.
Try, in another terminal:

  # a unary call through Sluice (Python client, Debian's python3-grpcio)
  /usr/bin/python3 tests/e2e/python/demo_client.py 127.0.0.1:8080

  # grpcurl, if you have it: reflection is proxied to the upstream
  grpcurl -plaintext 127.0.0.1:8080 list
  grpcurl -plaintext -d '{"count":5,"interval_ms":200}' 127.0.0.1:8080 sluice.demo.v1.Ticker/Subscribe
  grpcurl -plaintext 127.0.0.1:9901 grpc.health.v1.Health/Check     # Sluice's own health
  grpcurl -plaintext 127.0.0.1:9901 sluice.admin.v1.Admin/GetStatus

  # metrics, and the admin CLI
  curl -s 127.0.0.1:9090/metrics | grep ^sluice_
  bazel build //client/sluicectl:sluicectl && bazel-bin/client/sluicectl/sluicectl limits

Ctrl-C stops both.
TXT
wait "$SL" || true
stop
