#!/usr/bin/env bash
# Side-by-side loopback benchmark: h2load against
#   direct      the demo upstream itself
#   sluice-w1   Sluice, --workers=1, in front of it
#   sluice-w2   Sluice, --workers=2, in front of it
#   sluice-w2-typed   Sluice, --workers=2, with the demo's descriptor set
#               (metrics.descriptor_sets): it knows which methods are
#               unary and server-streaming and sends fewer, fuller batches
#   sluice-w2-limits  the same with rate, concurrency and message limits
#               configured on every route but never hit
#   nginx       Debian nginx, grpc_pass, 1 worker, upstream keepalive
# for three scenarios:
#   unary       /grpc.testing.TestService/UnaryCall, 100 B payload,
#               response_size 100, h2load -c 8 -m 16 (saturation)
#   latency     the same call, one at a time (-c 1 -m 1)
#   stream      /sluice.demo.v1.Ticker/Subscribe count=1000
#               payload_bytes=100 interval_ms=0, -c 8 -m 16; messages/s
#               is h2load's DATA bytes/s over the bytes per message (the
#               body of one whole call, from the curl check, / 1000)
#
# Usage: bench/run.sh [--quick] [--duration=SECONDS] [--pin=split|none]
#                     [--out=DIR]
#   --quick      ~2 s per scenario, stream with -c 2 -m 4 (smoke test: it
#                checks every path answers; its numbers are not comparable)
#   --pin=split  (default) servers (upstream + proxy) on CPU 0, h2load on
#                CPU 1; --pin=none leaves placement to the scheduler
#   --out=DIR    keep the raw h2load outputs, logs and results.tsv in DIR
#                (default: a temp dir, removed at exit)
# Binaries: $SLUICE_BIN and $UPSTREAM_BIN, default bazel-bin/server/sluice
# and bazel-bin/server/demo/demo_upstream; they are copied to the work dir
# first, so a concurrent rebuild cannot swap them mid-run.
#
# Every process is started by this script, tracked by PID and stopped by
# PID. All listeners are on 127.0.0.1 with port 0 or a freshly probed free
# port. Exits non-zero if any path failed to answer correctly (a gRPC check
# with curl before and after each path, every h2load request succeeded, and
# at least the expected response bytes per call; for Sluice also its own
# metrics: no non-OK calls).
set -euo pipefail

DURATION=8
WARMUP=1
PIN=split
OUT=""
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1; DURATION=2; WARMUP=0 ;;
    --duration=*) DURATION="${arg#*=}" ;;
    --pin=*) PIN="${arg#*=}" ;;
    --out=*) OUT="${arg#*=}" ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=/usr/bin/python3
SLUICE_BIN="${SLUICE_BIN:-$ROOT/bazel-bin/server/sluice}"
UPSTREAM_BIN="${UPSTREAM_BIN:-$ROOT/bazel-bin/server/demo/demo_upstream}"
for tool in h2load nginx curl taskset "$PY"; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 2; }
done
for bin in "$SLUICE_BIN" "$UPSTREAM_BIN"; do
  [[ -x "$bin" ]] || {
    echo "run.sh: $bin missing; build with:" >&2
    echo "  bazel build -c opt //server:sluice //server/demo:demo_upstream" >&2
    exit 2
  }
done

WORK="$(mktemp -d /tmp/sluice-bench.XXXXXX)"
[[ -n "$OUT" ]] && mkdir -p "$OUT"
PIDS=()

stop_pid() {  # stop_pid PID: TERM, up to 15 s, then KILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "run.sh: pid $pid ignored SIGTERM for 15 s, killing" >&2
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [[ -n "$OUT" ]]; then cp -r "$WORK"/. "$OUT"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NCPU=$(nproc)
if [[ "$PIN" == split && "$NCPU" -ge 2 ]]; then
  SRV=(taskset -c 0); LOAD=(taskset -c 1)
  PIN_DESC="servers (upstream + proxy) on CPU 0, h2load on CPU 1"
else
  SRV=(); LOAD=()
  PIN_DESC="not pinned"
fi

cp "$SLUICE_BIN" "$WORK/sluice"
cp "$UPSTREAM_BIN" "$WORK/demo_upstream"

# --- request bodies (gRPC frame: flag byte, 4-byte big-endian length, message)
"$PY" - "$WORK" <<'EOF'
import struct, sys
work = sys.argv[1]
def frame(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg
# grpc.testing.SimpleRequest{response_size: 100 (field 2),
#   payload: Payload{body: 100 zero bytes (field 2)} (field 3)}
payload = b"\x12\x64" + b"\x00" * 100
unary = b"\x10\x64" + b"\x1a" + bytes([len(payload)]) + payload
# sluice.demo.v1.SubscribeRequest{count: 1000 (1), interval_ms: 0 (2),
#   payload_bytes: 100 (3)}
stream = b"\x08\xe8\x07" + b"\x18\x64"
open(f"{work}/unary.bin", "wb").write(frame(unary))
open(f"{work}/stream.bin", "wb").write(frame(stream))
EOF

UNARY_PATH=/grpc.testing.TestService/UnaryCall
STREAM_PATH=/sluice.demo.v1.Ticker/Subscribe

wait_file() {  # wait_file PATH PID
  local i
  for ((i = 0; i < 300; i++)); do
    [[ -s "$1" ]] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
json_get() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# grpc_check ADDR NAME: one unary and one stream call with curl; grpc-status
# must be 0 and the body at least the expected size.
grpc_check() {
  local addr=$1 name=$2 hdr body size
  hdr="$WORK/check-$name.hdr"; body="$WORK/check-$name.body"
  if ! curl -sS --max-time 10 --http2-prior-knowledge -H 'content-type: application/grpc' \
      -H 'te: trailers' --data-binary @"$WORK/unary.bin" -D "$hdr" -o "$body" \
      "http://$addr$UNARY_PATH" 2>>"$WORK/curl.err"; then
    echo "run.sh: $name: unary check: curl failed" >&2; return 1
  fi
  size=$(stat -c %s "$body")
  if ! grep -qi '^grpc-status: 0' "$hdr" || ((size < 105)); then
    echo "run.sh: $name: unary check failed (body $size B):" >&2; cat "$hdr" >&2; return 1
  fi
  if ! curl -sS --max-time 20 --http2-prior-knowledge -H 'content-type: application/grpc' \
      -H 'te: trailers' --data-binary @"$WORK/stream.bin" -D "$hdr" -o "$body" \
      "http://$addr$STREAM_PATH" 2>>"$WORK/curl.err"; then
    echo "run.sh: $name: stream check: curl failed" >&2; return 1
  fi
  size=$(stat -c %s "$body")
  if ! grep -qi '^grpc-status: 0' "$hdr" || ((size < 100000)); then
    echo "run.sh: $name: stream check failed (body $size B):" >&2; cat "$hdr" >&2; return 1
  fi
}

RESULTS="$WORK/results.tsv"
printf 'path\tscenario\treq_s\tmsg_s\tbytes_s\tmean_us\tp50_us\tp99_us\tok\tcpu_us_per_call\n' >"$RESULTS"

# CPU_PIDS: the server process(es) of the path being measured (a proxy,
# or the upstream for "direct"); their children count too (nginx workers).
CPU_PIDS=()
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {  # utime+stime of CPU_PIDS and their children, in ticks
  local total=0 pid child
  for pid in "${CPU_PIDS[@]}"; do
    for child in "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null); do
      # Fields 14 and 15 of /proc/PID/stat (after the ")" of the name).
      total=$((total + $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$child/stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}
FAILED=0

# run_h2load PATHNAME SCENARIO ADDR: one h2load run, parsed and checked.
run_h2load() {
  local name=$1 scen=$2 addr=$3 c m file url min_bytes
  case "$scen" in
    unary) c=8; m=16; file=unary.bin; url=$UNARY_PATH; min_bytes=105 ;;
    latency) c=1; m=1; file=unary.bin; url=$UNARY_PATH; min_bytes=105 ;;
    stream) c=8; m=16; file=stream.bin; url=$STREAM_PATH; min_bytes=100000 ;;
  esac
  # --quick: 8 streams, so even a slow path completes some in 2 s.
  if ((QUICK)) && [[ $scen == stream ]]; then c=2; m=4; fi
  local warm=()
  ((WARMUP > 0)) && warm=(--warm-up-time="$WARMUP")
  local outf="$WORK/h2load-$name-$scen.txt" logf="$WORK/h2load-$name-$scen.log"
  local cmd=("${LOAD[@]}" h2load -c "$c" -m "$m" -D "$DURATION" "${warm[@]}"
             -d "$WORK/$file" -H 'content-type: application/grpc' -H 'te: trailers'
             --log-file="$logf" "http://$addr$url")
  echo "$ ${cmd[*]}" >"$outf"
  local ticks0 ticks1
  ticks0=$(cpu_ticks)
  timeout $((DURATION + WARMUP + 60)) "${cmd[@]}" >>"$outf" 2>&1 || true
  ticks1=$(cpu_ticks)
  # Bytes of one whole Subscribe response body (from the curl check), to
  # turn data bytes/s into messages/s without the quantization of
  # "completed calls x 1000" (128 streams of ~1000 messages finish in waves).
  local call_bytes
  call_bytes=$(stat -c %s "$WORK/check-$name.body")
  if ! "$PY" - "$outf" "$logf" "$name" "$scen" "$min_bytes" "$call_bytes" \
      "$((ticks1 - ticks0))" "$CLK_TCK" "$((DURATION + WARMUP))" >>"$RESULTS" <<'EOF'
import re, sys
outf, logf, name, scen, min_bytes, call_bytes, ticks, clk_tck, run_s = sys.argv[1:10]
text = open(outf).read()
def grab(pattern):
    m = re.search(pattern, text)
    return m.groups() if m else None
fin = grab(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
req = grab(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout")
traffic = grab(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data")
mean = grab(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b")
ok = True
why = []
if not (fin and req and traffic and mean):
    print(f"{name}\t{scen}\t-\t-\t-\t-\t-\t-\tFAIL(no h2load summary)")
    sys.exit(1)
secs = float(fin[0]) / (1000.0 if fin[1] == "ms" else 1.0)
reqs = float(fin[2])
done, succeeded, failed, errored, tout = (int(x) for x in req[2:7])
if succeeded == 0 or failed or errored or tout:
    ok = False; why.append(f"succeeded={succeeded} failed={failed} errored={errored} timeout={tout}")
data = int(traffic[2])
if succeeded and data / succeeded < int(min_bytes):
    ok = False; why.append(f"only {data / succeeded:.0f} data B per call")
scale = {"us": 1, "ms": 1e3, "s": 1e6}[mean[1]]
mean_us = float(mean[0]) * scale
durs = []
for line in open(logf):
    f = line.split("\t")
    if len(f) >= 3 and f[1] == "200":
        durs.append(int(f[2]))
durs.sort()
def pct(p):
    return durs[min(len(durs) - 1, int(p / 100.0 * len(durs)))] if durs else 0
bytes_s = data / secs if secs else 0
msg_s = bytes_s / (int(call_bytes) / 1000.0) if scen == "stream" else reqs
status = "ok" if ok else "FAIL(" + "; ".join(why) + ")"
# Server CPU per call: CPU over the whole h2load run (warm-up included)
# over the calls of the whole run (the measured rate times its length).
cpu_us = int(ticks) * 1e6 / int(clk_tck) / max(1.0, reqs * float(run_s))
print(f"{name}\t{scen}\t{reqs:.0f}\t{msg_s:.0f}\t{bytes_s:.0f}\t{mean_us:.0f}\t{pct(50)}\t{pct(99)}\t{status}\t{cpu_us:.0f}")
sys.exit(0 if ok else 1)
EOF
  then
    echo "run.sh: $name/$scen failed; see below" >&2
    tail -n 12 "$outf" >&2
    return 1
  fi
  tail -n 1 "$RESULTS" | cut -f1-8,10 | tr '\t' ' ' | sed 's/^/  /'
}

# sluice_counts METRICS_ADDR NAME: "OK CANCELLED OTHER" summed over
# sluice_calls_handled_total; the scrape is kept as NAME.metrics.
sluice_counts() {
  curl -sS --max-time 5 "http://$1/metrics" | tee "$WORK/$2.metrics" | awk '
    /^sluice_calls_handled_total\{/ {
      if ($0 ~ /grpc_code="OK"/) ok += $NF
      else if ($0 ~ /grpc_code="Cancell?ed"/) cancel += $NF
      else other += $NF }
    END { printf "%d %d %d\n", ok, cancel, other }'
}

bench_path() {  # bench_path NAME ADDR
  local name=$1 addr=$2 scen rc=0
  echo "== $name ($addr)"
  grpc_check "$addr" "$name" || return 1
  for scen in unary latency stream; do
    run_h2load "$name" "$scen" "$addr" || rc=1
  done
  grpc_check "$addr" "$name-after" || rc=1
  return $rc
}

# --- the upstream
"${SRV[@]}" "$WORK/demo_upstream" --listen=127.0.0.1:0 \
  --ready_file="$WORK/upstream.json" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!; PIDS+=("$UP_PID")
wait_file "$WORK/upstream.json" "$UP_PID" || { echo "run.sh: upstream did not start" >&2; cat "$WORK/upstream.log" >&2; exit 1; }
UPSTREAM=$(json_get "$WORK/upstream.json" address)

echo "sluice bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), nproc=$NCPU, pinning: $PIN_DESC"
echo "per scenario: ${DURATION}s measured after ${WARMUP}s warm-up; upstream $UPSTREAM"

CPU_PIDS=("$UP_PID")
bench_path direct "$UPSTREAM" || FAILED=1

# Limits configured on every route but never hit (the cost of admission):
# a keyed rate limit and a concurrency limit on the unary route, a rate and
# a pacing message limit on the stream route, all far above the load.
cat >"$WORK/limits.yaml" <<'EOF'
upstreams: [{name: demo, target: "127.0.0.1:1"}]
routes:
  - name: unary
    match: {prefix: /grpc.testing.TestService/}
    upstream: demo
    limits:
      - {name: per-peer, rate: {per_second: 1000000, burst: 100000}, key: [peer]}
      - {name: in-flight, concurrency: {max: 100000}}
  - name: stream
    match: {prefix: /sluice.demo.v1.Ticker/}
    upstream: demo
    limits:
      - {name: calls, rate: {per_second: 1000000, burst: 100000}}
      - {name: pace, messages: {per_second: 100000000, burst: 100000, mode: pace}}
EOF

# The demo's descriptor set: the typed variant knows each method's shape.
cp "$ROOT/deploy/examples/demo-descriptors.pb" "$WORK/"
cat >"$WORK/typed.yaml" <<EOF
upstreams: [{name: demo, target: "127.0.0.1:1"}]
routes: [{name: all, match: {prefix: /}, upstream: demo}]
metrics: {descriptor_sets: [$WORK/demo-descriptors.pb]}
EOF

for variant in 1 2 2-typed 2-limits; do
  workers=${variant%%-*}
  name="sluice-w$variant"
  rf="$WORK/$name.json"
  config=()
  [[ $variant == *limits ]] && config=(--config="$WORK/limits.yaml")
  [[ $variant == *typed ]] && config=(--config="$WORK/typed.yaml")
  "${SRV[@]}" "$WORK/sluice" "${config[@]}" --listen=127.0.0.1:0 --admin=127.0.0.1:0 \
    --metrics=127.0.0.1:0 --upstream="$UPSTREAM" --workers="$workers" \
    --log_level=warn --ready_file="$rf" >"$WORK/$name.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  if ! wait_file "$rf" "$pid"; then
    echo "run.sh: $name did not start" >&2; cat "$WORK/$name.log" >&2; FAILED=1
  else
    data=$(json_get "$rf" data); metrics=$(json_get "$rf" metrics)
    CPU_PIDS=("$pid")
    bench_path "$name" "$data" || FAILED=1
    read -r ok cancelled other < <(sluice_counts "$metrics" "$name")
    # h2load -D ends by closing its connections with calls still in
    # flight: at most c*m per run (128 + 1 + 128), seen as CANCELLED.
    echo "  sluice metrics: $ok calls OK, $cancelled CANCELLED (in flight when h2load stopped), $other other non-OK"
    if ((other > 0 || ok == 0 || cancelled > 257)); then
      echo "run.sh: $name: calls ended non-OK (see $name.metrics)" >&2; FAILED=1
      sed -i "s/^\($name\t.*\)\tok\$/\1\tFAIL(non-OK calls in metrics)/" "$RESULTS"
    fi
  fi
  stop_pid "$pid"; forget_pid "$pid"
done

# --- nginx: config in the work dir, own pid/log/temp paths, foreground
# master (tracked by PID), 1 worker, as the current user.
NGX="$WORK/nginx"; mkdir -p "$NGX/logs" "$NGX/tmp"
nginx_ok=0
for attempt in 1 2 3; do
  port=$(free_port)
  user_line=""
  [[ $(id -u) -eq 0 ]] && user_line="user $(id -un) $(id -gn);"
  cat >"$NGX/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
master_process on;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $NGX/tmp/body;
  proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi;
  scgi_temp_path $NGX/tmp/scgi;
  upstream demo {
    server $UPSTREAM;
    keepalive 32;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$port http2;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 256;
    location / {
      grpc_pass grpc://demo;
    }
  }
}
EOF
  "${SRV[@]}" nginx -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/logs/error.log" \
    >"$NGX/logs/stdout.log" 2>&1 &
  NGX_PID=$!; PIDS+=("$NGX_PID")
  for ((i = 0; i < 50; i++)); do
    kill -0 "$NGX_PID" 2>/dev/null || break
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then nginx_ok=1; break; fi
    sleep 0.1
  done
  ((nginx_ok)) && break
  stop_pid "$NGX_PID"; forget_pid "$NGX_PID"
done
if ((nginx_ok)); then
  CPU_PIDS=("$NGX_PID")
  bench_path nginx "127.0.0.1:$port" || FAILED=1
  stop_pid "$NGX_PID"; forget_pid "$NGX_PID"
else
  echo "run.sh: nginx did not start" >&2; cat "$NGX/logs/error.log" >&2; FAILED=1
fi

# --- summary
"$PY" - "$RESULTS" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
r = {(x[0], x[1]): x for x in rows}
paths = ["direct", "sluice-w1", "sluice-w2", "sluice-w2-typed", "sluice-w2-limits", "nginx"]
def num(p, s, i):
    x = r.get((p, s))
    try:
        return float(x[i]) if x and x[8] == "ok" else None
    except ValueError:
        return None
print()
print("| path | unary req/s (c8 m16) | unary mean / p99 | 1-at-a-time req/s | 1-at-a-time mean / p50 / p99 | stream msg/s | stream MB/s |")
print("|---|---|---|---|---|---|---|")
for p in paths:
    def f(s, i, fmt="{:.0f}"):
        v = num(p, s, i); return fmt.format(v) if v is not None else "FAIL"
    print(f"| {p} | {f('unary',2)} | {f('unary',5)} / {f('unary',7)} µs | {f('latency',2)} | "
          f"{f('latency',5)} / {f('latency',6)} / {f('latency',7)} µs | {f('stream',3)} | "
          f"{f('stream',4,'{:.0f}') if num(p,'stream',4) is None else '%.1f' % (num(p,'stream',4) / 1e6)} |")
print()
def ratio(a, b, s, i):
    x, y = num(a, s, i), num(b, s, i)
    return f"{x / y:.2f}" if x and y else "n/a"
print("| ratio | unary req/s | 1-at-a-time mean latency | stream msg/s |")
print("|---|---|---|---|")
for a in ["sluice-w1", "sluice-w2", "sluice-w2-typed"]:
    for b in ["direct", "nginx"]:
        print(f"| {a} / {b} | {ratio(a,b,'unary',2)} | {ratio(a,b,'latency',5)} | {ratio(a,b,'stream',3)} |")
a, b = "sluice-w2-limits", "sluice-w2"
print(f"| {a} / {b} (cost of limits not hit) | {ratio(a,b,'unary',2)} | {ratio(a,b,'latency',5)} | {ratio(a,b,'stream',3)} |")
print()
print("| path | server CPU µs per unary call (saturation) | per unary call (one at a time) | per stream message |")
print("|---|---|---|---|")
for p in paths:
    u, l, st = num(p, "unary", 9), num(p, "latency", 9), num(p, "stream", 9)
    fmt = lambda v, d=1.0, f="{:.0f}": f.format(v / d) if v is not None else "n/a"
    print(f"| {p} | {fmt(u)} | {fmt(l)} | {fmt(st, 1000.0, '{:.2f}')} |")
# Added latency over direct, Sluice vs nginx (the design's target metric).
print()
d = num("direct", "latency", 5); n = num("nginx", "latency", 5)
for a in ["sluice-w1", "sluice-w2", "sluice-w2-typed"]:
    s = num(a, "latency", 5)
    if d and n and s and n > d:
        print(f"added mean latency over direct: {a} {s - d:.0f} µs, nginx {n - d:.0f} µs, ratio {(s - d) / (n - d):.2f}")
EOF

if ((FAILED)); then
  echo "run.sh: FAILED: at least one path did not answer correctly" >&2
  exit 1
fi
echo "run.sh: all paths answered (grpc-status 0 checks, h2load all succeeded)"
