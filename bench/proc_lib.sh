# Shared by bench/allocators.sh, bench/one_at_a_time.sh and
# bench/stream_window.sh (sourced, not run; the script sets ROOT first):
# the binaries checked, the work directory, processes started and stopped
# by PID, and what /proc says of them. The sourcing script sets PY and may append to PIDS;
# cleanup (on exit) stops every PID in PIDS and runs CLEANUP_HOOK, if set,
# before the work directory is removed.

# Checks the binaries ($SLUICE_BIN, $UPSTREAM_BIN; defaults under $ROOT's
# bazel-bin) and h2load before anything starts; exits naming what is missing.
SLUICE_BIN="${SLUICE_BIN:-$ROOT/bazel-bin/server/sluice}"
UPSTREAM_BIN="${UPSTREAM_BIN:-$ROOT/bazel-bin/server/demo/demo_upstream}"
for f in "$SLUICE_BIN" "$UPSTREAM_BIN"; do
  [[ -x $f ]] || { echo "${0##*/}: $f missing (bazel build -c opt //server:sluice //server/demo:demo_upstream)" >&2; exit 1; }
done
command -v h2load >/dev/null || { echo "${0##*/}: h2load missing" >&2; exit 1; }

WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PIDS=()
CLEANUP_HOOK=""
stop_pid() {  # stop_pid PID [SECONDS]: TERM, up to SECONDS (15), then KILL
  local i
  kill "$1" 2>/dev/null || return 0
  for ((i = 0; i < ${2:-15} * 10; i++)); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [[ -n $CLEANUP_HOOK ]]; then "$CLEANUP_HOOK"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_file() {  # wait_file PATH PID SECONDS: until PATH is non-empty
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    [[ -s $1 ]] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
json_get() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime

# start_upstream UPSTREAM_BIN: the demo upstream on 127.0.0.1 port 0;
# sets UP (its PID) and writes $WORK/typed.yaml, a Sluice config in front
# of it with the demo's descriptor set (every demo method typed).
start_upstream() {
  "$1" --listen=127.0.0.1:0 --ready_file="$WORK/upstream.json" >"$WORK/upstream.log" 2>&1 &
  UP=$!; PIDS+=("$UP")
  wait_file "$WORK/upstream.json" "$UP" 30 || { echo "the demo upstream did not start" >&2; cat "$WORK/upstream.log" >&2; exit 1; }
  cat >"$WORK/typed.yaml" <<YAML
upstreams: [{name: demo, target: "$(json_get "$WORK/upstream.json" address)"}]
routes: [{name: all, match: {prefix: /}, upstream: demo}]
metrics: {descriptor_sets: [$ROOT/deploy/examples/demo-descriptors.pb]}
YAML
}
