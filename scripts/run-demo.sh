#!/usr/bin/env bash
# Starts the demo upstream on 127.0.0.1:50051 and Sluice in front of it
# with deploy/examples/demo.yaml (`make run`). Ctrl-C stops both in order:
# Sluice first, which drains (open calls get up to its drain_timeout, 30s;
# a second Ctrl-C ends them at once), then the upstream.
#
# Both run in sessions of their own (setsid), so the terminal's Ctrl-C
# reaches only this script (and make), never them directly. Sluice's access
# log (one JSON line per call on its stdout) goes to $LOGS/access.log and
# the upstream's output to $LOGS/upstream.log; Sluice's own messages
# (serving, reloads, the drain) stay on the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=bazel-bin
LOGS="${TMPDIR:-/tmp}/sluice-demo-$(id -u)"

say() { echo "run-demo: $*" 2>/dev/null || true; }

mkdir -p "$LOGS"
chmod 700 "$LOGS"
# One demo at a time per user: a second one would clobber the logs (and
# find the ports busy). Sluice and the upstream inherit the lock.
exec 9>"$LOGS/lock"
if ! flock -n 9; then
  say "another demo is running (it holds $LOGS/lock)" >&2
  exit 1
fi
rm -f "$LOGS/upstream.json" "$LOGS/sluice.json"
: >"$LOGS/access.log"

SL=""
UP=""
STOPPING=0
# Ctrl-C (SIGINT to the terminal's process group: this script and make),
# SIGTERM or a hang-up: Sluice drains; a second one ends its drain at once
# (Sluice exits on its second SIGTERM). The rest of the stop sequence runs
# below, once Sluice has exited.
on_signal() {
  if [ "$STOPPING" = 0 ]; then
    STOPPING=1
    say "stopping: Sluice drains first (open calls get up to 30s; Ctrl-C again to end them now)"
  else
    say "stopping Sluice now"
  fi
  if [ -n "$SL" ]; then kill -TERM "$SL" 2>/dev/null || true; fi
}
trap on_signal INT TERM HUP

# Waits until process $1 has exited, through the signals that interrupt
# `wait`; its exit status is then in $EXIT. (Not in a $(...) subshell: only
# this shell can wait for its children.)
EXIT=0
wait_exit() {
  while :; do
    EXIT=0
    wait "$1" 2>/dev/null || EXIT=$?
    # > 128: a trapped signal interrupted wait (or the process died of one).
    if [ "$EXIT" -gt 128 ] && kill -0 "$1" 2>/dev/null; then continue; fi
    return 0
  done
}

# Sluice's stdout: access log lines (JSON objects) to access.log, the rest
# to the terminal. Ignores Ctrl-C; ends when Sluice closes its stdout.
# (mawk, Debian's awk, reads a pipe in blocks unless -W interactive.)
split_sluice_output() {
  trap '' INT HUP
  local awk=(awk)
  if awk -W version 2>&1 | grep -q mawk; then awk=(awk -W interactive); fi
  exec "${awk[@]}" -v access="$LOGS/access.log" \
    '/^\{/ { print > access; fflush(access); next } { print; fflush() }'
}

# DEMO_UPSTREAM_FLAGS: more flags for the upstream, e.g. its capacity mode
# (DEMO_UPSTREAM_FLAGS="--capacity=20 --service_time=10ms" make run).
# shellcheck disable=SC2086
setsid "$BIN/server/demo/demo_upstream" --listen=127.0.0.1:50051 \
  --ready_file="$LOGS/upstream.json" ${DEMO_UPSTREAM_FLAGS:-} \
  >"$LOGS/upstream.log" 2>&1 </dev/null &
UP=$!
setsid "$BIN/server/sluice" --config=deploy/examples/demo.yaml \
  --ready_file="$LOGS/sluice.json" > >(split_sluice_output) </dev/null &
SL=$!
# A signal that came before $SL was set: stop the new Sluice too.
if [ "$STOPPING" = 1 ]; then kill -TERM "$SL" 2>/dev/null || true; fi

# The upstream once Sluice is gone.
stop_upstream() {
  kill -TERM "$UP" 2>/dev/null || true
  wait_exit "$UP"
  say "demo upstream exited (status $EXIT); logs in $LOGS"
}

# Wait (bounded) until both are serving.
READY=0
for _ in $(seq 200); do
  [ "$STOPPING" = 1 ] && break
  if [ -f "$LOGS/upstream.json" ] && [ -f "$LOGS/sluice.json" ]; then
    READY=1
    break
  fi
  if ! kill -0 "$UP" 2>/dev/null; then
    say "the demo upstream exited early (port 50051 busy?); its output:" >&2
    tail -n 5 "$LOGS/upstream.log" >&2 || true
    kill -TERM "$SL" 2>/dev/null || true
    wait_exit "$SL"
    exit 1
  fi
  if ! kill -0 "$SL" 2>/dev/null; then
    say "Sluice exited early (port 8080, 9090 or 9901 busy?)" >&2
    stop_upstream
    exit 1
  fi
  sleep 0.1
done
if [ "$READY" = 0 ] && [ "$STOPPING" = 0 ]; then
  say "not serving after 20s; stopping" >&2
  on_signal
fi

if [ "$READY" = 1 ] && [ "$STOPPING" = 0 ]; then
  cat <<TXT

Sluice is proxying 127.0.0.1:8080 -> demo upstream 127.0.0.1:50051
(deploy/examples/demo.yaml: edit it and Sluice reloads it).
Logs: $LOGS/access.log    Sluice's access log, one JSON line per call
      $LOGS/upstream.log  the demo upstream's output
Sluice's own messages (reloads, the drain) show up here.

Try, in another terminal:

  # a unary call through Sluice (Python client, Debian's python3-grpcio)
  /usr/bin/python3 tests/e2e/python/demo_client.py 127.0.0.1:8080
  tail -n 1 $LOGS/access.log

  # grpcurl, if you have it: reflection is proxied to the upstream
  grpcurl -plaintext 127.0.0.1:8080 list
  grpcurl -plaintext -d '{"count":5,"interval_ms":200}' 127.0.0.1:8080 sluice.demo.v1.Ticker/Subscribe

  # the admin CLI (make run built it; so does \`make tools\`)
  bazel-bin/client/sluicectl/sluicectl health    # SERVING: ready (exit 0)
  bazel-bin/client/sluicectl/sluicectl status    # or: limits, config, drain
  curl -s 127.0.0.1:9090/metrics | grep ^sluice_

  # load: route "testing" allows each client 200 calls/s (limit per-client).
  # Set it to 500/s, then send as fast as one connection goes: expect about
  # 500 OK calls/s and most of the rest RESOURCE_EXHAUSTED with sluice-reason
  # rate_limited. That is the limit working, on purpose.
  bazel-bin/client/sluicectl/sluicectl set-limit testing per-client --rate=500
  bazel-bin/client/bench/sluice-bench --target=127.0.0.1:8080 --duration=5s --concurrency=16
  bazel-bin/client/sluicectl/sluicectl limits    # ADMITTED and REJECTED per limit

Ctrl-C stops both: Sluice drains first, then the upstream stops.
TXT
fi

# Until Sluice exits: it drains after Ctrl-C, `sluicectl drain` or SIGTERM.
wait_exit "$SL"
say "Sluice exited (status $EXIT); stopping the demo upstream"
stop_upstream
