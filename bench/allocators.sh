#!/usr/bin/env bash
# Sluice's speed under three allocators, side by side (issue 18: "re-measure
# the allocator chosen for memory for speed, keep only what measures
# better"): glibc malloc (what Sluice links), jemalloc 5.3 and tcmalloc
# minimal 2.10 (Debian's libjemalloc2 and libtcmalloc-minimal4, loaded
# with LD_PRELOAD). One demo upstream; three Sluice processes (typed: the
# demo's descriptor set; --workers=2), one per allocator, all running at
# once. Rounds are interleaved, each starting one allocator later:
#   unary      h2load -c 8 -m 16 -D SECONDS, 100 B UnaryCall: req/s and
#              Sluice's CPU (utime+stime from /proc) per call
#   stream100  the same with Ticker/Subscribe count=1000 payload_bytes=100:
#              msg/s and CPU per message
#   latency    3,000 UnaryCalls one at a time: mean and CPU per call
# then the medians over the rounds, and each process's RSS at the end.
# With --callgrind, also the noise-free figure: Sluice under valgrind
# --tool=callgrind per allocator, instructions per unary call (2,000 calls
# one at a time) and per 100 B stream message (10 streams of 1000), each
# minus a run that only starts, warms up (100 calls) and stops.
#
# Usage: bench/allocators.sh [--rounds=N (7)] [--duration=SECONDS (3)]
#                            [--callgrind] [--out=DIR]
# Binaries: $SLUICE_BIN and $UPSTREAM_BIN (default bazel-bin/...; build
# with -c opt). Every process is started here, stopped by its PID, and
# listens on 127.0.0.1 port 0.
set -euo pipefail

ROUNDS=7 DURATION=3 CALLGRIND=0 OUT=""
for arg in "$@"; do
  case "$arg" in
    --rounds=*) ROUNDS="${arg#*=}" ;;
    --duration=*) DURATION="${arg#*=}" ;;
    --callgrind) CALLGRIND=1 ;;
    --out=*) OUT="${arg#*=}" ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "allocators.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=/usr/bin/python3
LIB=/usr/lib/x86_64-linux-gnu
declare -A PRELOAD=([glibc]="" [jemalloc]=$LIB/libjemalloc.so.2
                    [tcmalloc]=$LIB/libtcmalloc_minimal.so.4)
NAMES=(glibc jemalloc tcmalloc)
for f in "${PRELOAD[jemalloc]}" "${PRELOAD[tcmalloc]}"; do
  [[ -e $f ]] || { echo "allocators.sh: $f missing (apt-get install libjemalloc2 libtcmalloc-minimal4)" >&2; exit 1; }
done
command -v "$PY" >/dev/null || { echo "allocators.sh: $PY missing" >&2; exit 1; }
((CALLGRIND)) && { command -v valgrind >/dev/null || { echo "allocators.sh: valgrind missing" >&2; exit 1; }; }

source "$ROOT/bench/proc_lib.sh"  # checks the binaries and h2load
keep_out() { if [[ -n $OUT ]]; then mkdir -p "$OUT" && cp -r "$WORK"/. "$OUT"/; fi; }
CLEANUP_HOOK=keep_out
cp "$SLUICE_BIN" "$WORK/sluice"

"$PY" - "$WORK" <<'EOF'
import sys
work = sys.argv[1]
def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([b])
        out += bytes([b | 0x80])
frame = lambda m: b"\0" + len(m).to_bytes(4, "big") + m
payload = b"x" * 100
# grpc.testing.SimpleRequest{response_size: 100, payload{body: 100 B}}
open(f"{work}/unary.bin", "wb").write(frame(b"\x10\x64\x1a" + bytes([len(payload)]) + payload))
# sluice.demo.v1.SubscribeRequest{count: 1000, payload_bytes: 100}
open(f"{work}/stream100.bin", "wb").write(frame(b"\x08" + varint(1000) + b"\x18" + varint(100)))
EOF
UNARY=/grpc.testing.TestService/UnaryCall STREAM=/sluice.demo.v1.Ticker/Subscribe
HDRS=(-H 'content-type: application/grpc' -H 'te: trailers')

start_upstream "$UPSTREAM_BIN"
SLUICE_ARGS=(--config="$WORK/typed.yaml" --listen=127.0.0.1:0 --admin=127.0.0.1:0
             --metrics=127.0.0.1:0 --workers=2 --log_level=warn)

# One h2load run; prints "SUCCEEDED DATA_BYTES MEAN_US".
h2() {
  local out
  out=$(timeout 120 h2load "$@" 2>&1) || true
  "$PY" - "$out" <<'EOF'
import re, sys
t = sys.argv[1]
ok = re.search(r"(\d+) succeeded", t)
data = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) data", t)
mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", t)
def us(s):
    return float(s[:-2]) * 1000 if s.endswith("ms") else float(s[:-2]) if s.endswith("us") else float(s[:-1]) * 1e6
print(ok.group(1) if ok else 0, data.group(2) if data else 0, us(mean.group(1)) if mean else 0)
EOF
}

declare -A ADDR PID
for n in "${NAMES[@]}"; do
  env ${PRELOAD[$n]:+LD_PRELOAD=${PRELOAD[$n]}} "$WORK/sluice" "${SLUICE_ARGS[@]}" \
    --ready_file="$WORK/$n.json" >"$WORK/$n.log" 2>&1 &
  PID[$n]=$!; PIDS+=("${PID[$n]}")
  wait_file "$WORK/$n.json" "${PID[$n]}" 30 || { echo "allocators.sh: sluice ($n) did not start" >&2; cat "$WORK/$n.log" >&2; exit 1; }
  ADDR[$n]=$(json_get "$WORK/$n.json" data)
  if [[ -n ${PRELOAD[$n]} ]] && ! grep -q "${PRELOAD[$n]##*/}" "/proc/${PID[$n]}/maps"; then
    echo "allocators.sh: $n not loaded into Sluice" >&2; exit 1
  fi
done

# Bytes of one whole Subscribe body, to turn DATA bytes into messages.
read -r _ STREAM_BYTES _ < <(h2 -n 1 -c 1 "${HDRS[@]}" -d "$WORK/stream100.bin" "http://${ADDR[glibc]}$STREAM")
((STREAM_BYTES > 100000)) || { echo "allocators.sh: the stream check failed" >&2; exit 1; }

RESULTS="$WORK/results.tsv"
printf 'round\tallocator\tscenario\tvalue\tcpu_us\n' >"$RESULTS"
FAILED=0
echo "== $(date -u +%FT%TZ) $ROUNDS rounds x ${DURATION}s, load $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= ROUNDS; r++)); do
  for ((k = 0; k < 3; k++)); do
    n=${NAMES[$(((k + r) % 3))]} a=${ADDR[${NAMES[$(((k + r) % 3))]}]} p=${PID[${NAMES[$(((k + r) % 3))]}]}
    t0=$(cpu_ticks "$p"); read -r ok _ _ < <(h2 -c 8 -m 16 -D "$DURATION" "${HDRS[@]}" -d "$WORK/unary.bin" "http://$a$UNARY"); t1=$(cpu_ticks "$p")
    ((ok > 0)) || FAILED=1
    "$PY" -c 'import sys; r,n,ok,t,hz,d=sys.argv[1:]; ok=max(int(ok),1); print(f"{r}\t{n}\tunary_req_s\t{int(ok)/float(d):.0f}\t{int(t)*1e6/int(hz)/ok:.1f}")' \
      "$r" "$n" "$ok" "$((t1 - t0))" "$CLK_TCK" "$DURATION" >>"$RESULTS"
    t0=$(cpu_ticks "$p"); read -r ok bytes _ < <(h2 -c 8 -m 16 -D "$DURATION" "${HDRS[@]}" -d "$WORK/stream100.bin" "http://$a$STREAM"); t1=$(cpu_ticks "$p")
    ((bytes > 0)) || FAILED=1
    "$PY" -c 'import sys; r,n,b,per,t,hz,d=sys.argv[1:]; m=max(int(b)*1000/int(per),1); print(f"{r}\t{n}\tstream100_msg_s\t{m/float(d):.0f}\t{int(t)*1e6/int(hz)/m:.2f}")' \
      "$r" "$n" "$bytes" "$STREAM_BYTES" "$((t1 - t0))" "$CLK_TCK" "$DURATION" >>"$RESULTS"
    h2 -c 1 -m 1 -n 200 "${HDRS[@]}" -d "$WORK/unary.bin" "http://$a$UNARY" >/dev/null
    t0=$(cpu_ticks "$p"); read -r ok _ mean < <(h2 -c 1 -m 1 -n 3000 "${HDRS[@]}" -d "$WORK/unary.bin" "http://$a$UNARY"); t1=$(cpu_ticks "$p")
    ((ok == 3000)) || FAILED=1
    "$PY" -c 'import sys; r,n,mean,t,hz=sys.argv[1:]; print(f"{r}\t{n}\tlatency_mean_us\t{float(mean):.0f}\t{int(t)*1e6/int(hz)/3000:.1f}")' \
      "$r" "$n" "$mean" "$((t1 - t0))" "$CLK_TCK" >>"$RESULTS"
  done
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$RESULTS" <<'EOF'
import collections, csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = collections.defaultdict(list)
for r in rows:
    by[(r["scenario"], r["allocator"])].append((float(r["value"]), float(r["cpu_us"])))
print(f"{'scenario':18} {'allocator':9} {'median (range)':>26} {'CPU us, median (range)':>26}")
for (scen, alloc), v in sorted(by.items()):
    vals, cpus = [x for x, _ in v], [c for _, c in v]
    print(f"{scen:18} {alloc:9} {statistics.median(vals):>10.0f} ({min(vals):.0f}-{max(vals):.0f})"
          f" {statistics.median(cpus):>12.2f} ({min(cpus):.2f}-{max(cpus):.2f})")
EOF
for n in "${NAMES[@]}"; do echo "RSS at the end, $n: $(awk '/VmRSS/{print $2}' "/proc/${PID[$n]}/status") KiB"; done
for n in "${NAMES[@]}"; do stop_pid "${PID[$n]}"; done

if ((CALLGRIND)); then
  echo "== callgrind: instructions per unary call and per 100 B stream message"
  for n in "${NAMES[@]}"; do
    declare -A IR=()
    for kind in base unary stream100; do
      rf="$WORK/cg-$n-$kind.json" out="$WORK/cg-$n-$kind.callgrind"
      env ${PRELOAD[$n]:+LD_PRELOAD=${PRELOAD[$n]}} valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$WORK/sluice" "${SLUICE_ARGS[@]}" --ready_file="$rf" >"$WORK/cg-$n-$kind.log" 2>&1 &
      p=$!; PIDS+=("$p")
      wait_file "$rf" "$p" 300 || { echo "allocators.sh: $n did not start under callgrind" >&2; exit 1; }
      a=$(json_get "$rf" data)
      h2 -c 1 -m 1 -n 100 "${HDRS[@]}" -d "$WORK/unary.bin" "http://$a$UNARY" >/dev/null
      case $kind in
        unary) read -r ok _ _ < <(h2 -c 1 -m 1 -n 2000 "${HDRS[@]}" -d "$WORK/unary.bin" "http://$a$UNARY"); ((ok == 2000)) || FAILED=1 ;;
        stream100) read -r ok _ _ < <(h2 -c 1 -m 1 -n 10 "${HDRS[@]}" -d "$WORK/stream100.bin" "http://$a$STREAM"); ((ok == 10)) || FAILED=1 ;;
      esac
      stop_pid "$p" 300
      IR[$kind]=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
    done
    echo "$n: $(( (IR[unary] - IR[base]) / 2000 )) Ir per unary call, $(( (IR[stream100] - IR[base]) / 10000 )) Ir per 100 B message"
  done
fi
exit "$FAILED"
