#!/usr/bin/env bash
# Starts the demo upstream on 127.0.0.1:50051 and Sluice in front of it
# with deploy/examples/demo.yaml; Ctrl-C stops both (Sluice drains first).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=bazel-bin

"$BIN/server/demo/demo_upstream" --listen=127.0.0.1:50051 &
UP=$!
"$BIN/server/sluice" --config=deploy/examples/demo.yaml &
SL=$!

stop() {
  trap - INT TERM
  kill -TERM "$SL" 2>/dev/null || true
  wait "$SL" 2>/dev/null || true
  kill -TERM "$UP" 2>/dev/null || true
  wait "$UP" 2>/dev/null || true
  echo "stopped."
}
trap stop INT TERM

sleep 1
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

  # metrics
  curl -s 127.0.0.1:9090/metrics | grep ^sluice_

Ctrl-C stops both.
TXT
wait "$SL" || true
stop
