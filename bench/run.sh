#!/usr/bin/env bash
# Side-by-side loopback benchmark: h2load against
#   direct            the demo upstream itself
#   nginx             Debian nginx 1.22, grpc_pass, 1 worker, upstream
#                     keepalive (bench/nginx.conf)
#   haproxy           Debian HAProxy 2.6, h2 on both sides, 1 thread
#                     (bench/haproxy.cfg)
#   caddy             Debian Caddy 2.6, reverse_proxy h2c (bench/Caddyfile)
#   sluice-w2         Sluice, --workers=2, no config: every method on the
#                     general path ("flags only")
#   sluice-w2-typed   the same with the demo's descriptor set
#                     (metrics.descriptor_sets): it knows which methods are
#                     unary and server-streaming
#   sluice-w2-limits  flags only, with rate, concurrency and message limits
#                     configured on every route but never hit
#   sluice-w1         (only with --paths) Sluice, --workers=1
#   sluice-w2-typed-relay  (only with --paths) sluice-w2-typed behind a
#                     HAProxy TCP relay (bench/haproxy-tcp.cfg): the cost of
#                     one more user-space copy of every byte, the floor of
#                     an HTTP/2 frame guard in front of gRPC (security.md);
#                     CPU is Sluice's plus the relay's
# for four scenarios:
#   unary       /grpc.testing.TestService/UnaryCall, 100 B payload,
#               response_size 100, h2load -c 8 -m 16 (saturation)
#   latency     the same call one at a time: -c 1 -m 1 -n N (N=5000) after
#               200 warm-up calls; mean, p50, p99; "added latency" is a
#               path's mean minus direct's mean in the same round
#   stream100   /sluice.demo.v1.Ticker/Subscribe count=1000
#               payload_bytes=100 interval_ms=0, -c 8 -m 16; messages/s is
#               h2load's DATA bytes/s over the bytes per message (the body
#               of one whole call, from the curl check, / 1000)
#   stream4k    the same with payload_bytes=4096
# and for each, the CPU of the path's server process and its children (the
# proxy; for direct, the upstream) from /proc/PID/stat utime+stime over the
# h2load run: µs per call (unary, latency) or per message (streams).
#
# Rounds are interleaved: round 1 runs every path once (all four
# scenarios), then round 2, ...; each round starts one path later in the
# list, so no path is always first. The summary gives per path and
# scenario the median over the rounds and the range (min-max).
#
# Usage: bench/run.sh [--quick] [--rounds=N] [--duration=SECONDS]
#                     [--latency-calls=N] [--pin=none|split] [--callgrind]
#                     [--paths=a,b,...] [--out=DIR]
#   --quick      1 round, ~2 s per scenario, 300 latency calls, streams with
#                -c 2 -m 4 (smoke test: it checks that every path answers;
#                its numbers are not comparable). HAProxy or Caddy not
#                installed: reported as SKIPPED (not as passed). A full run
#                needs both.
#   --rounds=N   (default 3)
#   --pin=none   (default) every process free on both cores; the issue-18
#                targets refer to this mode
#   --pin=split  servers (upstream + proxy) on CPU 0, h2load on CPU 1
#   --callgrind  also count Sluice's instructions per unary call and per
#                stream message under valgrind --tool=callgrind (flags only,
#                typed, limits not hit; see "Instruction counts" below);
#                with --rounds=0, only that
#   --paths=...  run only these paths (direct is always run)
#   --out=DIR    keep results.tsv, summary.md, raw h2load outputs, logs and
#                configs in DIR (default: a temp dir, removed at exit)
# Binaries: $SLUICE_BIN and $UPSTREAM_BIN, default bazel-bin/server/sluice
# and bazel-bin/server/demo/demo_upstream; they are copied to the work dir
# first, so a concurrent rebuild cannot swap them mid-run.
#
# Instruction counts (--callgrind): Sluice (--workers=2; flags only, typed,
# limits not hit) runs under callgrind four times per variant, the demo
# upstream natively. Every run
# starts, takes the same warm-up (100 unary calls, one 1000-message
# stream) and is stopped with SIGTERM; the "base" run does nothing else,
# the others add 2,000 unary calls (one at a time), 10 streams of 1000
# 100 B messages or 5 streams of 1000 4 KiB messages (one stream at a
# time). Per call (per message) = (Ir of the run - Ir of the base run) /
# calls (messages): start-up, warm-up and shutdown cancel out; the per-stream
# set-up is spread over its 1000 messages. The same difference is taken of
# the calls to grpc_call_start_batch (gRPC batches) and to sendmsg and
# recvmsg (bench/callgrind_calls.py).
#
# Every process is started by this script, tracked by PID and stopped by
# PID. All listeners are on 127.0.0.1 with port 0 or a freshly probed free
# port. Exits non-zero if any path failed to answer correctly (a gRPC check
# with curl before and after each path's runs, every h2load request
# succeeded with at least the expected response bytes per call; for Sluice
# also its own metrics: no non-OK calls).
set -euo pipefail

DURATION="" WARMUP="" PIN=none OUT="" QUICK=0 ROUNDS="" LAT_N="" CALLGRIND=0 ONLY=""
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --duration=*) DURATION="${arg#*=}" ;;
    --rounds=*) ROUNDS="${arg#*=}" ;;
    --latency-calls=*) LAT_N="${arg#*=}" ;;
    --pin=*) PIN="${arg#*=}" ;;
    --callgrind) CALLGRIND=1 ;;
    --paths=*) ONLY="${arg#*=}" ;;
    --out=*) OUT="${arg#*=}" ;;
    -h|--help) sed -n '2,75p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if ((QUICK)); then
  : "${DURATION:=2}" "${WARMUP:=0}" "${ROUNDS:=1}" "${LAT_N:=300}"
else
  : "${DURATION:=8}" "${WARMUP:=1}" "${ROUNDS:=3}" "${LAT_N:=5000}"
fi
case "$PIN" in none|split) ;; *) echo "run.sh: --pin=none|split" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
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

ALL_PATHS=(direct nginx haproxy caddy sluice-w2 sluice-w2-typed sluice-w2-limits)
if [[ -n "$ONLY" ]]; then
  IFS=, read -r -a ALL_PATHS <<<"direct,${ONLY//direct,/}"
fi
PATHS=() SKIPPED=()
for p in "${ALL_PATHS[@]}"; do
  case "$p" in
    direct|nginx|sluice-w1|sluice-w2|sluice-w2-typed|sluice-w2-limits) PATHS+=("$p") ;;
    haproxy|caddy|sluice-w2-typed-relay)
      if command -v "${p/sluice-w2-typed-relay/haproxy}" >/dev/null; then
        PATHS+=("$p")
      elif ((QUICK)); then
        SKIPPED+=("$p")
      else
        echo "run.sh: $p not found (scripts/install-deps installs it)" >&2; exit 2
      fi ;;
    *) echo "run.sh: unknown path $p" >&2; exit 2 ;;
  esac
done
if ((CALLGRIND)); then
  for tool in valgrind h2load; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 2; }
  done
fi

WORK="$(mktemp -d /tmp/sluice-bench.XXXXXX)"
[[ -n "$OUT" ]] && mkdir -p "$OUT"
PIDS=()

stop_pid() {  # stop_pid PID [SECONDS]: TERM, up to SECONDS (15), then KILL
  local pid=$1 limit=$((${2:-15} * 10)) i
  kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  for ((i = 0; i < limit; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "run.sh: pid $pid ignored SIGTERM for $((limit / 10)) s, killing" >&2
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
  PIN_DESC="split: servers (upstream + proxy) on CPU 0, h2load on CPU 1"
else
  SRV=(); LOAD=()
  PIN_DESC="none: every process free on all $NCPU cores"
fi

cp "$SLUICE_BIN" "$WORK/sluice"
cp "$UPSTREAM_BIN" "$WORK/demo_upstream"

# --- request bodies (bench/request_bodies.py)
"$PY" "$BENCH_DIR/request_bodies.py" "$WORK"

UNARY_PATH=/grpc.testing.TestService/UnaryCall
STREAM_PATH=/sluice.demo.v1.Ticker/Subscribe
SCENARIOS=(unary latency stream100 stream4k)

wait_file() {  # wait_file PATH PID [SECONDS]
  local i limit=$((${3:-30} * 10))
  for ((i = 0; i < limit; i++)); do
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
wait_port() {  # wait_port PORT PID: up to 5 s for a TCP listener
  local i
  for ((i = 0; i < 50; i++)); do
    kill -0 "$2" 2>/dev/null || return 1
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# fill TEMPLATE OUT KEY=VALUE...: a config from bench/ with @KEY@ replaced.
fill() {
  local tmpl=$1 out=$2 kv text
  text=$(<"$tmpl")
  shift 2
  for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
  printf '%s\n' "$text" >"$out"
}

# grpc_check ADDR NAME: one unary call and one call of each stream size
# with curl; grpc-status must be 0 and the body at least the expected size.
# The bodies are kept as check-NAME-SCENARIO.body (bytes per message).
grpc_check() {
  local addr=$1 name=$2 scen file url min hdr body size
  for scen in unary stream100 stream4k; do
    case $scen in
      unary) file=unary.bin; url=$UNARY_PATH; min=105 ;;
      stream100) file=stream100.bin; url=$STREAM_PATH; min=100000 ;;
      stream4k) file=stream4k.bin; url=$STREAM_PATH; min=4096000 ;;
    esac
    hdr="$WORK/check-$name-$scen.hdr"; body="$WORK/check-$name-$scen.body"
    if ! curl -sS --max-time 20 --http2-prior-knowledge -H 'content-type: application/grpc' \
        -H 'te: trailers' --data-binary @"$WORK/$file" -D "$hdr" -o "$body" \
        "http://$addr$url" 2>>"$WORK/curl.err"; then
      echo "run.sh: $name: $scen check: curl failed" >&2; return 1
    fi
    size=$(stat -c %s "$body")
    if ! grep -qi '^grpc-status: 0' "$hdr" || ((size < min)); then
      echo "run.sh: $name: $scen check failed (body $size B):" >&2; cat "$hdr" >&2; return 1
    fi
  done
}

RESULTS="$WORK/results.tsv"
printf 'pin\tround\tpath\tscenario\treq_s\tmsg_s\tbytes_s\tmean_us\tp50_us\tp99_us\tcpu_us\tok\tinstr\n' >"$RESULTS"

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
ROUND=0

# run_h2load PATHNAME SCENARIO ADDR: one h2load run, parsed and checked.
run_h2load() {
  local name=$1 scen=$2 addr=$3 c=8 m=16 file url min_bytes mode=timed
  case "$scen" in
    unary) file=unary.bin; url=$UNARY_PATH; min_bytes=105 ;;
    latency) c=1; m=1; mode=count; file=unary.bin; url=$UNARY_PATH; min_bytes=105 ;;
    stream100) file=stream100.bin; url=$STREAM_PATH; min_bytes=100000 ;;
    stream4k) file=stream4k.bin; url=$STREAM_PATH; min_bytes=4096000 ;;
  esac
  # --quick: 8 streams, so even a slow path completes some in 2 s.
  if ((QUICK)) && [[ $scen == stream* ]]; then c=2; m=4; fi
  local hdrs=(-H 'content-type: application/grpc' -H 'te: trailers')
  local run=()
  if [[ $mode == timed ]]; then
    run=(-D "$DURATION")
    ((WARMUP > 0)) && run+=(--warm-up-time="$WARMUP")
  else
    run=(-n "$LAT_N")
    # Warm-up for the one-at-a-time run (connections, threads, caches).
    "${LOAD[@]}" h2load -c 1 -m 1 -n 200 -d "$WORK/$file" "${hdrs[@]}" \
      "http://$addr$url" >"$WORK/h2load-$name-$scen-r$ROUND-warmup.txt" 2>&1 || true
  fi
  local outf="$WORK/h2load-$name-$scen-r$ROUND.txt" logf="$WORK/h2load-$name-$scen-r$ROUND.log"
  local cmd=("${LOAD[@]}" h2load -c "$c" -m "$m" "${run[@]}" -d "$WORK/$file" "${hdrs[@]}"
             --log-file="$logf" "http://$addr$url")
  echo "$ ${cmd[*]}" >"$outf"
  local ticks0 ticks1
  ticks0=$(cpu_ticks)
  timeout $((DURATION + WARMUP + 120)) "${cmd[@]}" >>"$outf" 2>&1 || true
  ticks1=$(cpu_ticks)
  # Bytes of one whole Subscribe response body (from the curl check), to
  # turn data bytes/s into messages/s without the quantization of
  # "completed calls x 1000" (128 streams of ~1000 messages finish in waves).
  local call_bytes=0
  [[ $scen == stream* ]] && call_bytes=$(stat -c %s "$WORK/check-$name-$scen.body")
  if ! "$PY" - "$outf" "$logf" "$name" "$scen" "$min_bytes" "$call_bytes" \
      "$((ticks1 - ticks0))" "$CLK_TCK" "$((DURATION + WARMUP))" "$mode" "$PIN" "$ROUND" \
      >>"$RESULTS" <<'EOF'
import re, sys
(outf, logf, name, scen, min_bytes, call_bytes, ticks, clk_tck, run_s, mode, pin,
 rnd) = sys.argv[1:13]
text = open(outf).read()
def grab(pattern):
    m = re.search(pattern, text)
    return m.groups() if m else None
fin = grab(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
req = grab(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout")
traffic = grab(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data")
mean = grab(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b")
pre = f"{pin}\t{rnd}\t{name}\t{scen}"
ok = True
why = []
if not (fin and req and traffic and mean):
    print(f"{pre}\t-\t-\t-\t-\t-\t-\t-\tFAIL(no h2load summary)\t")
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
stream = scen.startswith("stream")
msg_s = bytes_s / (int(call_bytes) / 1000.0) if stream else reqs
status = "ok" if ok else "FAIL(" + "; ".join(why) + ")"
# CPU of the path's server over the h2load run (for a timed run the
# warm-up is included: divided by the rate times the whole run's length),
# per call, or per message for the streams.
if mode == "count":
    units = succeeded
else:
    units = (msg_s if stream else reqs) * float(run_s)
cpu_us = int(ticks) * 1e6 / int(clk_tck) / max(1.0, units)
print(f"{pre}\t{reqs:.0f}\t{msg_s:.0f}\t{bytes_s:.0f}\t{mean_us:.0f}\t{pct(50)}\t{pct(99)}"
      f"\t{cpu_us:.3f}\t{status}\t")
sys.exit(0 if ok else 1)
EOF
  then
    echo "run.sh: $name/$scen (round $ROUND) failed; see below" >&2
    tail -n 12 "$outf" >&2
    return 1
  fi
  tail -n 1 "$RESULTS" | awk -F'\t' '{printf "  %-10s req/s %s msg/s %s mean/p50/p99 %s/%s/%s us, CPU %s us per %s\n",
    $4, $5, $6, $8, $9, $10, $11, ($4 ~ /^stream/ ? "msg" : "call")}'
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

bench_scenarios() {  # bench_scenarios NAME ADDR
  local name=$1 addr=$2 scen rc=0
  echo "== round $ROUND: $name ($addr)"
  grpc_check "$addr" "$name" || return 1
  for scen in "${SCENARIOS[@]}"; do
    run_h2load "$name" "$scen" "$addr" || rc=1
  done
  grpc_check "$addr" "$name-after" || rc=1
  return $rc
}

# --- configs for the Sluice variants
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

sluice_args() {  # sluice_args VARIANT: the command-line options of a variant
  local variant=$1
  SLUICE_ARGS=()
  [[ $variant == *limits ]] && SLUICE_ARGS+=(--config="$WORK/limits.yaml")
  [[ $variant == *typed ]] && SLUICE_ARGS+=(--config="$WORK/typed.yaml")
  SLUICE_ARGS+=(--listen=127.0.0.1:0 --admin=127.0.0.1:0 --metrics=127.0.0.1:0
                --upstream="$UPSTREAM" --workers="${variant%%-*}" --log_level=warn)
}

# start_path NAME: starts the path's server (not for direct); sets
# PATH_PID, PATH_ADDR and (Sluice) PATH_METRICS. Returns 1 if it did not start.
start_path() {
  local name=$1 attempt port pid rf upstream=$UPSTREAM
  PATH_PID="" PATH_ADDR="" PATH_METRICS="" RELAY_PID=""
  if [[ $name == *-relay ]]; then
    # Sluice first (its files named for this path), then the relay.
    FILE_NAME=$name start_path "${name%-relay}" || return 1
    local sluice_pid=$PATH_PID sluice_metrics=$PATH_METRICS
    upstream=$PATH_ADDR
    name=haproxy-tcp
  fi
  case "$name" in
    sluice-*)
      sluice_args "${name#sluice-w}"
      local file_name=${FILE_NAME:-$name}
      rf="$WORK/$file_name-r$ROUND.json"
      "${SRV[@]}" "$WORK/sluice" "${SLUICE_ARGS[@]}" --ready_file="$rf" \
        >"$WORK/$file_name-r$ROUND.log" 2>&1 &
      pid=$!; PIDS+=("$pid")
      if ! wait_file "$rf" "$pid"; then
        echo "run.sh: $name did not start" >&2; cat "$WORK/$file_name-r$ROUND.log" >&2
        stop_pid "$pid"; forget_pid "$pid"; return 1
      fi
      PATH_PID=$pid; PATH_ADDR=$(json_get "$rf" data); PATH_METRICS=$(json_get "$rf" metrics)
      return 0 ;;
  esac
  # nginx, haproxy, caddy: a probed free port, three attempts.
  local dir="$WORK/$name"; mkdir -p "$dir/logs" "$dir/tmp"
  for attempt in 1 2 3; do
    port=$(free_port)
    case "$name" in
      nginx)
        local user_line=""
        [[ $(id -u) -eq 0 ]] && user_line="user $(id -un) $(id -gn);"
        fill "$BENCH_DIR/nginx.conf" "$dir/nginx.conf" "USER=$user_line" "DIR=$dir" \
          "PORT=$port" "UPSTREAM=$UPSTREAM"
        "${SRV[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
          >"$dir/logs/stdout.log" 2>&1 &
        ;;
      haproxy|haproxy-tcp)
        fill "$BENCH_DIR/$name.cfg" "$dir/haproxy.cfg" "PORT=$port" "UPSTREAM=$upstream"
        "${SRV[@]}" haproxy -f "$dir/haproxy.cfg" -db >"$dir/logs/stdout.log" 2>&1 &
        ;;
      caddy)
        fill "$BENCH_DIR/Caddyfile" "$dir/Caddyfile" "PORT=$port" "UPSTREAM=$UPSTREAM"
        HOME="$dir" XDG_CONFIG_HOME="$dir/tmp" XDG_DATA_HOME="$dir/tmp" \
          "${SRV[@]}" caddy run --config "$dir/Caddyfile" --adapter caddyfile \
          >"$dir/logs/stdout.log" 2>&1 &
        ;;
    esac
    pid=$!; PIDS+=("$pid")
    if wait_port "$port" "$pid"; then
      PATH_PID=$pid; PATH_ADDR="127.0.0.1:$port"
      if [[ $name == haproxy-tcp ]]; then
        RELAY_PID=$pid; PATH_PID=$sluice_pid; PATH_METRICS=$sluice_metrics
      fi
      return 0
    fi
    stop_pid "$pid"; forget_pid "$pid"
  done
  echo "run.sh: $name did not start" >&2; tail -n 20 "$dir"/logs/*.log >&2
  if [[ $name == haproxy-tcp ]]; then stop_pid "$sluice_pid"; forget_pid "$sluice_pid"; fi
  return 1
}

bench_path() {  # bench_path NAME: one round of one path
  local name=$1 ok cancelled other
  if [[ $name == direct ]]; then
    CPU_PIDS=("$UP_PID")
    bench_scenarios direct "$UPSTREAM" || FAILED=1
    return 0
  fi
  start_path "$name" || { FAILED=1; return 0; }
  CPU_PIDS=("$PATH_PID" $RELAY_PID)
  bench_scenarios "$name" "$PATH_ADDR" || FAILED=1
  if [[ $name == sluice-* ]]; then
    read -r ok cancelled other < <(sluice_counts "$PATH_METRICS" "$name-r$ROUND")
    # h2load -D ends by closing its connections with calls still in
    # flight: at most c*m per timed run (3 x 128), seen as CANCELLED.
    echo "  sluice metrics: $ok calls OK, $cancelled CANCELLED (in flight when h2load stopped), $other other non-OK"
    if ((other > 0 || ok == 0 || cancelled > 384)); then
      echo "run.sh: $name: calls ended non-OK (see $name-r$ROUND.metrics)" >&2; FAILED=1
      sed -i "s/^\([^\t]*\t$ROUND\t$name\t.*\)\tok\t/\1\tFAIL(non-OK calls in metrics)\t/" "$RESULTS"
    fi
  fi
  stop_pid "$PATH_PID"; forget_pid "$PATH_PID"
  if [[ -n $RELAY_PID ]]; then stop_pid "$RELAY_PID"; forget_pid "$RELAY_PID"; fi
}

# --- callgrind: instructions per call and per message (see the header)
callgrind_run() {  # callgrind_run VARIANT KIND: sets CG_IR to the run's total Ir
  local variant=$1 kind=$2 name="cg-sluice-w$1-$2" rf pid out
  rf="$WORK/$name.json"; out="$WORK/$name.callgrind"; CG_IR=""
  sluice_args "$variant"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$WORK/sluice" "${SLUICE_ARGS[@]}" --ready_file="$rf" >"$WORK/$name.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  if ! wait_file "$rf" "$pid" 300; then
    echo "run.sh: $name did not start under callgrind" >&2; tail "$WORK/$name.log" >&2
    stop_pid "$pid" 120; forget_pid "$pid"; return 1
  fi
  local addr hdrs=(-H 'content-type: application/grpc' -H 'te: trailers') rc=0
  addr=$(json_get "$rf" data)
  h2load -c 1 -m 1 -n 100 -d "$WORK/unary.bin" "${hdrs[@]}" "http://$addr$UNARY_PATH" \
    >"$WORK/$name-warmup1.txt" 2>&1 || rc=1
  h2load -c 1 -m 1 -n 1 -d "$WORK/stream100.bin" "${hdrs[@]}" "http://$addr$STREAM_PATH" \
    >"$WORK/$name-warmup2.txt" 2>&1 || rc=1
  grep -q "100 succeeded, 0 failed, 0 errored" "$WORK/$name-warmup1.txt" || rc=1
  grep -q "1 succeeded, 0 failed, 0 errored" "$WORK/$name-warmup2.txt" || rc=1
  local n=0 file="" url=""
  case $kind in
    unary) n=$CG_CALLS; file=unary.bin; url=$UNARY_PATH ;;
    stream100) n=$CG_STREAMS100; file=stream100.bin; url=$STREAM_PATH ;;
    stream4k) n=$CG_STREAMS4K; file=stream4k.bin; url=$STREAM_PATH ;;
  esac
  if ((n > 0)); then
    h2load -c 1 -m 1 -n "$n" -d "$WORK/$file" "${hdrs[@]}" "http://$addr$url" \
      >"$WORK/$name-run.txt" 2>&1 || rc=1
    grep -q " $n succeeded, 0 failed, 0 errored" "$WORK/$name-run.txt" || rc=1
  fi
  stop_pid "$pid" 300; forget_pid "$pid"
  ((rc == 0)) || { echo "run.sh: $name: calls failed under callgrind" >&2; return 1; }
  # "summary: IR" (or "totals:") in the profile: all threads, whole run.
  CG_IR=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
  [[ -n "$CG_IR" ]] || { echo "run.sh: $name: no total in $out" >&2; return 1; }
  # Calls of gRPC batches and of the socket system calls, same run.
  read -r CG_BATCHES CG_SENDMSG CG_RECVMSG < <("$PY" "$BENCH_DIR/callgrind_calls.py" "$out" \
    grpc_call_start_batch sendmsg recvmsg)
}

run_callgrind() {
  local variant kind base per units base_batches base_sendmsg base_recvmsg
  for variant in 2 2-typed 2-limits; do
    callgrind_run "$variant" base || { FAILED=1; continue; }
    base=$CG_IR base_batches=$CG_BATCHES base_sendmsg=$CG_SENDMSG base_recvmsg=$CG_RECVMSG
    echo "  callgrind sluice-w$variant base (start-up, warm-up, shutdown): $base Ir," \
      "$base_batches batches, $base_sendmsg sendmsg, $base_recvmsg recvmsg"
    for kind in unary stream100 stream4k; do
      callgrind_run "$variant" "$kind" || { FAILED=1; continue; }
      case $kind in
        unary) units=$CG_CALLS ;;
        stream100) units=$((CG_STREAMS100 * 1000)) ;;
        stream4k) units=$((CG_STREAMS4K * 1000)) ;;
      esac
      per=$(( (CG_IR - base) / units ))
      echo "  callgrind sluice-w$variant $kind: $CG_IR Ir, $per Ir per $( [[ $kind == unary ]] && echo call || echo message)," \
        "$CG_BATCHES batches, $CG_SENDMSG sendmsg, $CG_RECVMSG recvmsg"
      # Rows: Ir, gRPC batches, sendmsg and recvmsg per call (message),
      # each the run's count minus the base run's over the calls (messages).
      local what count base_count
      for what in ir batches sendmsg recvmsg; do
        case $what in
          ir) count=$CG_IR base_count=$base ;;
          batches) count=$CG_BATCHES base_count=$base_batches ;;
          sendmsg) count=$CG_SENDMSG base_count=$base_sendmsg ;;
          recvmsg) count=$CG_RECVMSG base_count=$base_recvmsg ;;
        esac
        printf '%s\t-\tsluice-w%s\tcallgrind-%s-%s\t-\t-\t-\t-\t-\t-\t-\tok\t%s\n' \
          "$PIN" "$variant" "$kind" "$what" \
          "$("$PY" -c 'import sys; a, b, n = map(float, sys.argv[1:]); print(f"{(a - b) / n:.3f}")' \
             "$count" "$base_count" "$units")" >>"$RESULTS"
      done
    done
  done
}
CG_CALLS=2000 CG_STREAMS100=10 CG_STREAMS4K=5
((QUICK)) && CG_CALLS=200 CG_STREAMS100=1 CG_STREAMS4K=1

# --- the upstream
"${SRV[@]}" "$WORK/demo_upstream" --listen=127.0.0.1:0 \
  --ready_file="$WORK/upstream.json" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!; PIDS+=("$UP_PID")
wait_file "$WORK/upstream.json" "$UP_PID" || { echo "run.sh: upstream did not start" >&2; cat "$WORK/upstream.log" >&2; exit 1; }
UPSTREAM=$(json_get "$WORK/upstream.json" address)

START_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOADS=("start $(cut -d' ' -f1-3 /proc/loadavg)")
{
  echo "date	$START_DATE"
  echo "command	bench/run.sh $*"
  echo "pin	$PIN_DESC"
  echo "rounds	$ROUNDS"
  echo "duration	${DURATION}s measured after ${WARMUP}s warm-up; latency $LAT_N calls"
  echo "nproc	$NCPU"
  echo "cpu	$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "versions	$(nginx -v 2>&1 | sed 's/.*version: //'); $(command -v haproxy >/dev/null && haproxy -v | head -1 | cut -d' ' -f1-3); $(command -v caddy >/dev/null && echo "Caddy $(caddy version | cut -d' ' -f1)"); $(h2load --version | head -1)"
  echo "binaries	sluice $(sha256sum "$WORK/sluice" | cut -c1-12), demo_upstream $(sha256sum "$WORK/demo_upstream" | cut -c1-12)"
  echo "commit	$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "skipped	${SKIPPED[*]:-}"
} >"$WORK/run-info.tsv"
echo "sluice bench: $START_DATE, nproc=$NCPU, pinning: $PIN_DESC, $ROUNDS round(s)"
echo "per scenario: ${DURATION}s measured after ${WARMUP}s warm-up, latency $LAT_N calls one at a time; upstream $UPSTREAM"
echo "paths: ${PATHS[*]}${SKIPPED[*]:+; SKIPPED (not installed): ${SKIPPED[*]}}"
echo "load average at ${LOADS[0]}"

n=${#PATHS[@]}
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  for ((i = 0; i < n; i++)); do
    bench_path "${PATHS[$(((i + ROUND - 1) % n))]}"
  done
  LOADS+=("after round $ROUND $(cut -d' ' -f1-3 /proc/loadavg)")
  echo "load average after round $ROUND: $(cut -d' ' -f1-3 /proc/loadavg)"
done
ROUND=0
if ((CALLGRIND)); then
  echo "== callgrind (Sluice under valgrind --tool=callgrind; upstream native)"
  run_callgrind
  LOADS+=("after callgrind $(cut -d' ' -f1-3 /proc/loadavg)")
fi
printf 'load\t%s\n' "$(IFS=';'; echo "${LOADS[*]}")" >>"$WORK/run-info.tsv"
printf 'callgrind\t%s\n' "$( ((CALLGRIND)) && echo "calls=$CG_CALLS streams100=$CG_STREAMS100 streams4k=$CG_STREAMS4K" || echo off)" >>"$WORK/run-info.tsv"

# --- summary: medians and ranges, ratios, targets (Markdown)
"$PY" "$BENCH_DIR/summarize.py" "$WORK/run-info.tsv" "$RESULTS" | tee "$WORK/summary.md"

if ((FAILED)); then
  echo "run.sh: FAILED: at least one path did not answer correctly" >&2
  exit 1
fi
if ((${#SKIPPED[@]})); then
  echo "run.sh: SKIPPED (not installed): ${SKIPPED[*]}; every other path answered (grpc-status 0 checks, h2load all succeeded)"
else
  echo "run.sh: all paths answered (grpc-status 0 checks, h2load all succeeded)"
fi
