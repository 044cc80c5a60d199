#!/usr/bin/env bash
# Does a larger proxy.stream_window pay? Server streams of 100 B and 4 KiB
# messages (Ticker/Subscribe, 1000 messages, no interval; h2load -c 8
# -m 16) through Sluice typed (the demo's descriptor set) with each window
# given, side by side, interleaved rounds. Per window and round: messages/s
# (h2load's DATA bytes/s over the bytes of one message, from a curl call)
# and Sluice's CPU per message (utime+stime from /proc); medians at the end.
#
# Usage: bench/stream_window.sh [--rounds=N (3)] [--duration=S (6)] [W...]
#   W  stream_window values (default: 2 8 32)
# Binaries: $SLUICE_BIN and $UPSTREAM_BIN (default bazel-bin/...; build
# with -c opt). Every process is started here, stopped by its PID, and
# listens on 127.0.0.1 port 0. Results: docs/data-plane.md, "Backpressure
# and memory".
set -euo pipefail

ROUNDS=3 DURATION=6 WINDOWS=()
for arg in "$@"; do
  case "$arg" in
    --rounds=*) ROUNDS="${arg#*=}" ;;
    --duration=*) DURATION="${arg#*=}" ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "stream_window.sh: unknown argument $arg" >&2; exit 2 ;;
    *) WINDOWS+=("$arg") ;;
  esac
done
((${#WINDOWS[@]})) || WINDOWS=(2 8 32)

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=/usr/bin/python3
source "$ROOT/bench/proc_lib.sh"  # checks the binaries and h2load
cp "$SLUICE_BIN" "$WORK/sluice"
"$PY" "$ROOT/bench/request_bodies.py" "$WORK"  # stream100.bin, stream4k.bin
URL_PATH=/sluice.demo.v1.Ticker/Subscribe
body() { if (($1 == 100)); then echo stream100.bin; else echo stream4k.bin; fi; }
HDRS=(-H 'content-type: application/grpc' -H 'te: trailers')

start_upstream "$UPSTREAM_BIN"
SPIDS=() ADDRS=()
for w in "${WINDOWS[@]}"; do
  { cat "$WORK/typed.yaml"; echo "proxy: {stream_window: $w}"; } >"$WORK/w$w.yaml"
  "$WORK/sluice" --config="$WORK/w$w.yaml" --listen=127.0.0.1:0 --admin=127.0.0.1:0 \
    --metrics=127.0.0.1:0 --log_level=warn --workers=2 --ready_file="$WORK/w$w.json" \
    >"$WORK/w$w.log" 2>&1 &
  p=$!; PIDS+=("$p")
  wait_file "$WORK/w$w.json" "$p" 30 || { echo "stream_window.sh: window $w did not start" >&2; cat "$WORK/w$w.log" >&2; exit 1; }
  SPIDS+=("$p") ADDRS+=("$(json_get "$WORK/w$w.json" data)")
done
# Bytes of one message on the wire (body of one whole call / 1000).
declare -A MSG_BYTES
for size in 100 4096; do
  curl -sS --max-time 20 --http2-prior-knowledge "${HDRS[@]}" --data-binary @"$WORK/$(body $size)" \
    -o "$WORK/body$size" "http://${ADDRS[0]}$URL_PATH"
  MSG_BYTES[$size]=$(( $(stat -c %s "$WORK/body$size") / 1000 ))
done

echo "== $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg); windows ${WINDOWS[*]}; $DURATION s per run"
RES="$WORK/results"
: >"$RES"
FAILED=0
for ((r = 1; r <= ROUNDS; r++)); do
  for ((k = 0; k < ${#WINDOWS[@]}; k++)); do
    i=$(((k + r - 1) % ${#WINDOWS[@]}))
    w=${WINDOWS[$i]} addr=${ADDRS[$i]} pid=${SPIDS[$i]}
    for size in 100 4096; do
      t0=$(cpu_ticks "$pid")
      out=$(timeout $((DURATION + 60)) h2load -c 8 -m 16 -D "$DURATION" -d "$WORK/$(body $size)" \
        "${HDRS[@]}" "http://$addr$URL_PATH" 2>&1) || true
      t1=$(cpu_ticks "$pid")
      # Streams still open when -D ends are neither failed nor errored.
      data=$(sed -nE 's/^traffic: .*\(([0-9]+)\) data.*/\1/p' <<<"$out")
      if ! grep -qE ' 0 failed, 0 errored' <<<"$out" || ((${data:-0} < 1000000)); then
        echo "stream_window.sh: window $w, $size B: h2load failed" >&2; tail -n 8 <<<"$out" >&2
        FAILED=1; continue
      fi
      secs=$(sed -nE 's/^finished in ([0-9.]+)s,.*/\1/p' <<<"$out")
      msgs=$(awk -v d="$data" -v b="${MSG_BYTES[$size]}" 'BEGIN {print d / b}')
      awk -v r="$r" -v w="$w" -v s="$size" -v m="$msgs" -v t="$secs" -v c="$((t1 - t0))" -v hz="$CLK_TCK" \
        'BEGIN { printf "%d\t%d\t%d\t%.0f\t%.2f\n", r, w, s, m / t, c * 1e6 / hz / m }' | tee -a "$RES" |
        awk -F'\t' '{ printf "round %s  window %-3s %4s B  %8s msg/s  CPU %s us/msg\n", $1, $2, $3, $4, $5 }'
    done
  done
done
echo "== medians over $ROUNDS rounds (range)"
"$PY" - "$RES" <<'PYEOF'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, w, size, rate, cpu = line.split("\t")
    rows[(int(w), int(size))].append((float(rate), float(cpu)))
for (w, size), v in sorted(rows.items()):
    rates, cpus = [x[0] for x in v], [x[1] for x in v]
    print(f"window {w:<3} {size:>4} B  {statistics.median(rates):8.0f} msg/s ({min(rates):.0f}-{max(rates):.0f})"
          f"  CPU {statistics.median(cpus):.2f} us/msg ({min(cpus):.2f}-{max(cpus):.2f})")
PYEOF
exit "$FAILED"
