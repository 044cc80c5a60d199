#!/usr/bin/env bash
# Flags-only (shapes from the upstream's reflection) against typed (the
# demo's descriptor set) and general (reflection: false), unary c8 m16,
# interleaved rounds, medians. Issue 18's target: flags-only >= 0.9x typed.
#   bench/shapes_ab.sh [ROUNDS] [SECONDS]   (opt binaries in bazel-bin)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-3}; DURATION=${2:-8}
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/shapes_ab.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
cp "$ROOT/bazel-bin/server/sluice" "$ROOT/bazel-bin/server/demo/demo_upstream" "$WORK/"
cp "$ROOT/deploy/examples/demo-descriptors.pb" "$WORK/"
"$PY" - "$WORK" <<'PYEOF'
import struct, sys
payload = b"\x12\x64" + b"\x00" * 100
unary = b"\x10\x64" + b"\x1a" + bytes([len(payload)]) + payload
open(sys.argv[1] + "/unary.bin", "wb").write(b"\x00" + struct.pack(">I", len(unary)) + unary)
PYEOF
json_get() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
wait_file() { for _ in $(seq 300); do [[ -s $1 ]] && return 0; sleep 0.1; done; return 1; }
"$WORK/demo_upstream" --listen=127.0.0.1:0 --ready_file="$WORK/up.json" >"$WORK/up.log" 2>&1 &
PIDS+=($!)
wait_file "$WORK/up.json"; UP=$(json_get "$WORK/up.json" address)
cat >"$WORK/typed.yaml" <<YEOF
upstreams: [{name: demo, target: "$UP", reflection: false}]
routes: [{name: all, match: {prefix: /}, upstream: demo}]
metrics: {descriptor_sets: [$WORK/demo-descriptors.pb]}
YEOF
cat >"$WORK/general.yaml" <<YEOF
upstreams: [{name: demo, target: "$UP", reflection: false}]
routes: [{name: all, match: {prefix: /}, upstream: demo}]
YEOF
declare -A ADDR CPID
start() {  # start NAME ARGS...
  local name=$1; shift
  "$WORK/sluice" "$@" --listen=127.0.0.1:0 --admin=127.0.0.1:0 --metrics=127.0.0.1:0 \
    --workers=2 --log_level=warn --ready_file="$WORK/$name.json" >"$WORK/$name.log" 2>&1 &
  CPID[$name]=$!; PIDS+=($!)
  wait_file "$WORK/$name.json"; ADDR[$name]=$(json_get "$WORK/$name.json" data)
}
start flags --upstream="$UP"
start typed --config="$WORK/typed.yaml"
start general --config="$WORK/general.yaml"
sleep 1  # the flags-only proxy's reflection fetch
ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
CLK=$(getconf CLK_TCK)
printf 'round\tpath\treq_s\tcpu_us_per_call\n' | tee "$WORK/results.tsv"
for r in $(seq "$ROUNDS"); do
  for name in flags typed general; do
    t0=$(ticks "${CPID[$name]}")
    out=$(h2load -c 8 -m 16 -D "$DURATION" --warm-up-time=1 -d "$WORK/unary.bin" \
      -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://${ADDR[$name]}/grpc.testing.TestService/UnaryCall" 2>&1)
    t1=$(ticks "${CPID[$name]}")
    rps=$(grep -oP 'finished in [\d.]+m?s, \K[\d.]+' <<<"$out")
    done_n=$(grep -oP 'requests: \d+ total, \d+ started, \K\d+' <<<"$out")
    cpu=$("$PY" -c "print(round(($t1-$t0)/$CLK*1e6/max(1,$done_n),1))")
    printf '%s\t%s\t%s\t%s\n' "$r" "$name" "$rps" "$cpu" | tee -a "$WORK/results.tsv"
  done
done
"$PY" - "$WORK/results.tsv" <<'PYEOF'
import statistics, sys, collections
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n")[1:] if l]
by = collections.defaultdict(list); cpu = collections.defaultdict(list)
for r, name, rps, c in rows:
    by[name].append(float(rps)); cpu[name].append(float(c))
med = {k: statistics.median(v) for k, v in by.items()}
for k in by:
    print(f"{k}: median {med[k]:.0f} req/s, median CPU {statistics.median(cpu[k]):.1f} us/call (runs {', '.join(f'{x:.0f}' for x in by[k])})")
print(f"flags-only / typed = {med['flags'] / med['typed']:.2f}; general / typed = {med['general'] / med['typed']:.2f}")
PYEOF
grep -h "reflection" "$WORK/flags.log" || true
echo "work dir: $WORK"
