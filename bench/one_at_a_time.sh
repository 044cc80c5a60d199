#!/usr/bin/env bash
# Where one call at a time waits: the demo upstream directly and through
# one or more Sluice processes (typed: the demo's descriptor set), 100 B
# UnaryCalls one at a time (h2load -c 1 -m 1), interleaved rounds. Per
# path and round: h2load's mean and the server process's CPU per call
# (utime+stime from /proc). With --threads, also per thread of each
# process (last round): CPU per call and context switches per call
# (voluntary + involuntary, /proc/PID/task/TID/status), which shows the
# hand-offs between gRPC's pollers (docs/BENCHMARKS.md, "Where one call at
# a time waits").
#
# Usage: bench/one_at_a_time.sh [--rounds=N (3)] [--calls=N (3000)]
#                               [--threads] [VARIANT...]
#   VARIANT  NAME or NAME:ENV=V[,ENV=V...][:SLUICE_ARG...] (default
#            "w2::--workers=2"), e.g. w1::--workers=1 or
#            nohealth:EXP_NOHEALTH=1:--workers=2 for a binary built with
#            docs/bench-results/2026-12-02-pollers/prototype.diff
# Binaries: $SLUICE_BIN and $UPSTREAM_BIN (default bazel-bin/...; build
# with -c opt). Every process is started here, stopped by its PID, and
# listens on 127.0.0.1 port 0.
set -euo pipefail

ROUNDS=3 CALLS=3000 THREADS=0 VARIANTS=()
for arg in "$@"; do
  case "$arg" in
    --rounds=*) ROUNDS="${arg#*=}" ;;
    --calls=*) CALLS="${arg#*=}" ;;
    --threads) THREADS=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "one_at_a_time.sh: unknown argument $arg" >&2; exit 2 ;;
    *) VARIANTS+=("$arg") ;;
  esac
done
((${#VARIANTS[@]})) || VARIANTS=("w2::--workers=2")

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=/usr/bin/python3
source "$ROOT/bench/proc_lib.sh"  # checks the binaries and h2load
cp "$SLUICE_BIN" "$WORK/sluice"
# grpc.testing.SimpleRequest{response_size: 100, payload{body: 100 B}}
"$PY" -c 'import sys; m = b"\x10\x64\x1a\x64" + b"x" * 100; open(sys.argv[1], "wb").write(b"\0" + len(m).to_bytes(4, "big") + m)' "$WORK/unary.bin"
URL_PATH=/grpc.testing.TestService/UnaryCall
HDRS=(-H 'content-type: application/grpc' -H 'te: trailers' -d "$WORK/unary.bin")

# One line per thread: TID NAME TICKS CONTEXT_SWITCHES
thread_snapshot() {
  local t
  for t in /proc/"$1"/task/*; do
    echo "${t##*/} $(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat") $(awk '/^(non)?voluntary_ctxt_switches/ {n += $2} END {print n}' "$t/status")"
  done 2>/dev/null | sort
}

start_upstream "$UPSTREAM_BIN"

NAMES=(direct) ADDRS=("$(json_get "$WORK/upstream.json" address)") SPIDS=("$UP")
for v in "${VARIANTS[@]}"; do
  IFS=: read -r name envs args <<<"$v"
  env_list=()
  [[ -n ${envs:-} ]] && IFS=, read -ra env_list <<<"$envs"
  read -ra arg_list <<<"${args:-}"
  env "${env_list[@]}" "$WORK/sluice" --config="$WORK/typed.yaml" --listen=127.0.0.1:0 \
    --admin=127.0.0.1:0 --metrics=127.0.0.1:0 --log_level=warn \
    --ready_file="$WORK/$name.json" "${arg_list[@]}" >"$WORK/$name.log" 2>&1 &
  p=$!; PIDS+=("$p")
  wait_file "$WORK/$name.json" "$p" 30 || { echo "one_at_a_time.sh: $name did not start" >&2; cat "$WORK/$name.log" >&2; exit 1; }
  NAMES+=("$name") ADDRS+=("$(json_get "$WORK/$name.json" data)") SPIDS+=("$p")
done

echo "== $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg); $CALLS calls one at a time after 200 warm-up calls"
FAILED=0
for ((r = 1; r <= ROUNDS; r++)); do
  for ((k = 0; k < ${#NAMES[@]}; k++)); do
    i=$(((k + r - 1) % ${#NAMES[@]}))
    name=${NAMES[$i]} addr=${ADDRS[$i]} pid=${SPIDS[$i]}
    timeout 120 h2load -c 1 -m 1 -n 200 "${HDRS[@]}" "http://$addr$URL_PATH" >/dev/null 2>&1 || true
    ((THREADS && r == ROUNDS)) && thread_snapshot "$pid" >"$WORK/t0"
    t0=$(cpu_ticks "$pid")
    out=$(timeout 300 h2load -c 1 -m 1 -n "$CALLS" "${HDRS[@]}" "http://$addr$URL_PATH" 2>&1) || true
    t1=$(cpu_ticks "$pid")
    ((THREADS && r == ROUNDS)) && thread_snapshot "$pid" >"$WORK/t1-$name"
    grep -q " $CALLS succeeded" <<<"$out" || { echo "one_at_a_time.sh: $name: calls failed" >&2; FAILED=1; }
    mean=$(awk '/time for request:/ {print $6}' <<<"$out")
    echo "round $r  $name  mean $mean  CPU $(( (t1 - t0) * 1000000 / CLK_TCK / CALLS )) us/call"
    if ((THREADS && r == ROUNDS)); then
      join "$WORK/t0" "$WORK/t1-$name" | awk -v n="$CALLS" -v hz="$CLK_TCK" \
        '{ cpu = ($6 - $3) * 1e6 / hz / n; cs = ($7 - $4) / n;
           if (cpu > 0 || cs >= 0.05) printf "    thread %-8s %-16s CPU %6.1f us/call  %5.2f context switches/call\n", $1, $2, cpu, cs }'
    fi
  done
done
exit "$FAILED"
