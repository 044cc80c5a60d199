#!/usr/bin/env python3
"""Benchmark scenarios beyond bench/run.sh's throughput and latency runs:

  rate      a 5,000/s rate limit offered 10,000/s (sluice-bench, open loop):
            the admitted rate and the p99 of admitted calls
  slow      resident memory of Sluice with 100 streams read slowly
  idle      resident memory of Sluice with 10,000 open idle streams (h2load)

Usage: bench/scenarios.py [--quick] [rate|slow|idle ...]
Binaries: bazel build -c opt //server:sluice //server/demo:demo_upstream
//client/bench:sluice-bench (found in bazel-bin/, or $SLUICE_BIN,
$UPSTREAM_BIN, $BENCH_BIN). Every process is started here on 127.0.0.1,
port 0, and stopped by its PID. Prints a Markdown table per scenario.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e", "python"))
import harness  # noqa: E402

harness.SLUICE = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "bazel-bin/server/sluice"))
harness.DEMO_UPSTREAM = os.environ.get(
    "UPSTREAM_BIN", os.path.join(ROOT, "bazel-bin/server/demo/demo_upstream"))
BENCH = os.environ.get("BENCH_BIN", os.path.join(ROOT, "bazel-bin/client/bench/sluice-bench"))
QUICK = "--quick" in sys.argv


rss_kib = harness.rss_kib


def scenario_rate():
    limit, offered, seconds = 5000, 10000, (3 if QUICK else 10)
    upstream = harness.start_upstream()
    config = harness.write_config(f"""
upstreams: [{{name: demo, target: "{upstream.address}"}}]
routes:
  - name: rated
    match: {{prefix: /}}
    upstream: demo
    limits:
      - {{name: five-thousand, rate: {{per_second: {limit}, burst: 100}}}}
""")
    sluice = harness.start_sluice(config, extra=["--log_level=warn"])
    try:
        out = subprocess.run(
            [BENCH, f"--target={sluice.data}", f"--rate={offered}", f"--duration={seconds}s",
             "--connections=4", "--threads=2", "--max_inflight=2000", "--json"],
            check=True, capture_output=True, text=True, timeout=seconds + 60).stdout
        r = json.loads(out)
        ok = r["status"].get("OK", 0)
        rejected = r["status"].get("RESOURCE_EXHAUSTED", 0)
        admitted = ok / r["elapsed_s"]
        print("\n### rate: a 5,000/s limit offered 10,000/s\n")
        print("| offered/s | admitted/s | admitted / limit | rejected | p50 / p99 of admitted calls | late sends |")
        print("|---|---|---|---|---|---|")
        print(f"| {r['calls_per_s']:.0f} | {admitted:.0f} | {admitted / limit:.3f} | {rejected} | "
              f"{r['latency_ok_us']['p50']:.0f} / {r['latency_ok_us']['p99']:.0f} µs | {r['late']} |")
    finally:
        sluice.stop()
        upstream.stop()


def scenario_slow():
    streams, seconds = 100, (3 if QUICK else 10)
    upstream = harness.start_upstream()
    sluice = harness.start_sluice(upstream=upstream.address, extra=["--log_level=warn"])
    try:
        before, peak, reads, _ = harness.slow_streams_rss(sluice, streams, seconds)
        print(f"\n### slow: {streams} streams offered 100 MB each, read at 1 KiB per 5 ms\n")
        print("| RSS before | RSS with the slow streams | per stream | messages read per stream |")
        print("|---|---|---|---|")
        print(f"| {before} KiB | {peak} KiB | {(peak - before) / streams:.0f} KiB | "
              f"{sum(reads) / streams:.0f} |")
    finally:
        sluice.stop()
        upstream.stop()


def scenario_idle():
    conns, per_conn = (10, 100) if QUICK else (10, 1000)
    total = conns * per_conn
    upstream = harness.start_upstream()
    sluice = harness.start_sluice(upstream=upstream.address, extra=["--log_level=warn"])
    work = tempfile.mkdtemp(prefix="sluice-idle-")
    # SubscribeRequest{count: 1, interval_ms: 60000}: one tick after 60 s.
    body = b"\x08\x01\x10\xe0\xd4\x03"
    with open(os.path.join(work, "idle.bin"), "wb") as f:
        f.write(b"\x00" + struct.pack(">I", len(body)) + body)
    load = None
    try:
        # Warm up (connections, threads, arenas) with the same kind of call.
        # h2load gives up after 1 s (-T 1): the streams are cancelled.
        subprocess.run(["h2load", "-n", "100", "-c", "1", "-m", "100", "-T", "1",
                        "-d", os.path.join(work, "idle.bin"),
                        "-H", "content-type: application/grpc", "-H", "te: trailers",
                        f"http://{sluice.data}/sluice.demo.v1.Ticker/Subscribe"],
                       capture_output=True, timeout=60)
        harness.wait_until(lambda: (harness.metric(sluice, "sluice_calls_in_flight") or 0) == 0,
                           timeout=30, what="warm-up streams gone")
        before = rss_kib(sluice.pid)
        load = subprocess.Popen(
            ["h2load", "-n", str(total), "-c", str(conns), "-m", str(per_conn), "-T", "120",
             "-d", os.path.join(work, "idle.bin"), "-H", "content-type: application/grpc",
             "-H", "te: trailers", f"http://{sluice.data}/sluice.demo.v1.Ticker/Subscribe"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness.wait_until(
            lambda: (harness.metric(sluice, "sluice_calls_in_flight") or 0) >= total,
            timeout=50, interval=0.2, what=f"{total} open streams")
        opened = rss_kib(sluice.pid)
        threads = sum(1 for _ in os.listdir(f"/proc/{sluice.pid}/task"))
        fds = len(os.listdir(f"/proc/{sluice.pid}/fd"))
        print(f"\n### idle: {total} open idle streams ({conns} connections x {per_conn})\n")
        print("| RSS before | RSS with the streams open | per stream | threads | fds |")
        print("|---|---|---|---|---|")
        print(f"| {before} KiB | {opened} KiB | {(opened - before) * 1024 / total:.0f} B | "
              f"{threads} | {fds} |")
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        sluice.stop()
        upstream.stop()


def main():
    chosen = [a for a in sys.argv[1:] if not a.startswith("--")] or ["rate", "slow", "idle"]
    for name in chosen:
        {"rate": scenario_rate, "slow": scenario_slow, "idle": scenario_idle}[name]()


if __name__ == "__main__":
    main()
