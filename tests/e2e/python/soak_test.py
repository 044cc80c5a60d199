"""A bounded soak through the real binaries (issue #8, "Load and soak"):
three sluice-bench processes in open loop for SOAK_SECONDS (default 60;
`SLUICE_SOAK_SECONDS=600` for the 10-minute run in docs/BENCHMARKS.md):

- unary UnaryCall at 600/s, through a route with a rate limit of 500/s
  (about 1 in 6 rejected: limits active and hit);
- server streams (Ticker, 20 ticks) at 40/s, through a concurrency limit;
- bidi ping-pong (20 rounds) at 40/s with a 4 ms deadline per call, so
  a share of them end DEADLINE_EXCEEDED mid-stream;
- plus a Python loop cancelling streams after two ticks (bounded count).

Sluice's resident memory, open file descriptors and threads are sampled
from /proc once a second after a warm-up (the first 20% of the run).
Each bound is one that only a leak breaks, never a scheduler:
  RSS     a least-squares fit of the samples on time and on the calls in
          flight rises with time by less than 4 MiB over the sampled window
          (a leak of one 100-byte object per call would be 6 MiB per minute
          at this rate; calls piling up on a machine too busy for the
          open-loop load hold memory while they wait, which the fit
          assigns to the calls in flight);
  fds     never more than 16 above the first sample (the load opens
          ~40,000 calls, ~2,400 streams and ~1,200 client cancels on a
          handful of connections: a descriptor leaked per call, stream or
          cancel would be thousands);
  threads never more than 16 above the first sample (gRPC core starts
          executor and timer threads on demand, a bounded handful that may
          appear at any time; a thread per call or stream would be
          thousands). A fitted slope of threads is not used: one pool
          thread started late fits as a "rise" of 2.
"""

import json
import os
import subprocess
import threading
import time
import unittest

import harness
import grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

SOAK_SECONDS = int(os.environ.get("SLUICE_SOAK_SECONDS", "60"))
RSS_RISE_KIB = 4 * 1024
FD_RISE = 16
THREAD_RISE = 16

CONFIG = """
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
routes:
  - name: unary
    match: {method: /grpc.testing.TestService/UnaryCall}
    upstream: demo
    limits:
      - name: rate
        rate: {per_second: 500, burst: 50}
  - name: ticker
    match: {prefix: /sluice.demo.v1.Ticker/}
    upstream: demo
    limits:
      - name: streams
        concurrency: {max: 64, queue: 64, max_wait: 200ms}
  - name: default
    match: {prefix: /}
    upstream: demo
"""


proc_stats = harness.proc_stats


def slope(xs, ys):
    """Least-squares slope of ys over xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def slope_beside(xs, zs, ys):
    """The slope of ys over xs in a least-squares fit y = a + b*x + c*z:
    the rise with time once what z explains is taken out. Here z is the
    calls in flight: on a machine too busy to keep up with the open-loop
    load, calls pile up (up to the clients' 2 s timeout) and hold memory
    for as long as they wait, a rise a leak-free Sluice shows too."""
    n = len(xs)
    mx, mz, my = sum(xs) / n, sum(zs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    szz = sum((z - mz) ** 2 for z in zs)
    sxz = sum((x - mx) * (z - mz) for x, z in zip(xs, zs))
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    szy = sum((z - mz) * (y - my) for z, y in zip(zs, ys))
    det = sxx * szz - sxz * sxz
    if szz == 0 or abs(det) < 1e-9 * sxx * szz:
        return sxy / sxx  # z did not vary (or varied with x alone)
    return (sxy * szz - szy * sxz) / det


class SoakTest(unittest.TestCase):
    def test_soak(self):
        upstream = harness.start_upstream()
        sluice = harness.start_sluice(config_path=harness.write_config(CONFIG),
                                      upstream=upstream.address)
        bench_bin = os.path.join(harness.ROOT, "client", "bench", "sluice-bench")
        common = [f"--target={sluice.data}", f"--duration={SOAK_SECONDS}s", "--json",
                  "--threads=1"]
        loads = {
            "unary": ["--scenario=unary", "--rate=600", "--connections=2", "--timeout=2s"],
            "ticker": ["--scenario=ticker", "--rate=40", "--stream_messages=20",
                       "--connections=2", "--timeout=5s"],
            "pingpong": ["--scenario=pingpong", "--rate=40", "--pingpong_rounds=20",
                         "--connections=2", "--timeout=4ms"],
        }
        benches = {}
        stop = threading.Event()
        cancelled = [0]

        def canceller():
            ch = grpc.insecure_channel(sluice.data)
            stub = ticker_pb2_grpc.TickerStub(ch)
            for _ in range(SOAK_SECONDS * 20):  # bounded
                if stop.wait(0.05):
                    break
                call = stub.Subscribe(ticker_pb2.SubscribeRequest(count=0, interval_ms=5),
                                      timeout=5)
                try:
                    next(call)
                    next(call)
                except (grpc.RpcError, StopIteration):
                    pass
                call.cancel()
                cancelled[0] += 1
            ch.close()

        samples = []
        try:
            for name, args in loads.items():
                benches[name] = subprocess.Popen([bench_bin] + common + args,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            t = threading.Thread(target=canceller)
            t.start()
            start = time.monotonic()
            warm = SOAK_SECONDS * 0.2
            while time.monotonic() - start < SOAK_SECONDS:
                now = time.monotonic() - start
                if now >= warm:
                    in_flight = harness.metric(sluice, "sluice_calls_in_flight") or 0
                    samples.append((now,) + proc_stats(sluice.pid) + (in_flight,))
                self.assertIsNone(sluice.popen.poll(), sluice.output()[-3000:])
                time.sleep(1.0)  # the sampling period
            stop.set()
            t.join(10)
            reports = {}
            for name, p in benches.items():
                out, err = p.communicate(timeout=60)
                self.assertEqual(p.returncode, 0, f"{name}: {err.decode()[-2000:]}")
                reports[name] = json.loads(out)
        finally:
            stop.set()
            for p in benches.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
        try:
            for name, r in reports.items():
                print(f"{name}: {r['calls']} calls, status {r['status']}, "
                      f"reasons {r['sluice_reason']}, dropped {r['dropped']}")
            print(f"cancelled by the client: {cancelled[0]}")
            xs = [s[0] for s in samples]
            rss = [s[1] for s in samples]
            threads = [s[2] for s in samples]
            fds = [s[3] for s in samples]
            window = xs[-1] - xs[0]
            in_flight = [s[4] for s in samples]
            rises = {"rss_kib": slope_beside(xs, in_flight, rss) * window,
                     "rss_kib_time_only": slope(xs, rss) * window,
                     "fds": slope(xs, fds) * window, "threads": slope(xs, threads) * window}
            print(f"soak {SOAK_SECONDS}s, {len(samples)} samples over {window:.0f}s: "
                  f"RSS {min(rss)}..{max(rss)} KiB (slope {slope(xs, rss):.2f} KiB/s), "
                  f"fds {min(fds)}..{max(fds)} (slope {slope(xs, fds):.4f}/s), "
                  f"threads {min(threads)}..{max(threads)} (slope {slope(xs, threads):.4f}/s), "
                  f"calls in flight {min(in_flight):.0f}..{max(in_flight):.0f}; "
                  f"fitted rise over the window {rises}")
            # The load really ran, with limits hit and deadlines and cancels mixed in.
            self.assertGreater(reports["unary"]["status"].get("OK", 0), 300 * SOAK_SECONDS * 0.8)
            self.assertGreater(reports["unary"]["sluice_reason"].get("rate_limited", 0), 0)
            self.assertGreater(reports["ticker"]["status"].get("OK", 0), 30 * SOAK_SECONDS * 0.8)
            self.assertGreater(reports["pingpong"]["status"].get("DEADLINE_EXCEEDED", 0), 0)
            self.assertGreater(cancelled[0], SOAK_SECONDS)
            for name, r in reports.items():
                self.assertLessEqual(set(r["status"]), {"OK", "RESOURCE_EXHAUSTED",
                                                        "DEADLINE_EXCEEDED", "CANCELLED"},
                                     f"{name}: {r['status']}")
            self.assertLess(rises["rss_kib"], RSS_RISE_KIB)
            self.assertLessEqual(max(fds) - fds[0], FD_RISE, fds)
            self.assertLessEqual(max(threads) - threads[0], THREAD_RISE, threads)
            harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0, timeout=20)
            harness.wait_for_metric(sluice, "sluice_limit_permits_in_use", 0.0)
        finally:
            sluice.stop()
            upstream.stop()


if __name__ == "__main__":
    harness.main()
