"""Adaptive concurrency (concurrency.adaptive, issue 20) through the real
sluice binary in front of the demo upstream in capacity mode (N calls at
once in S each, slower beyond): offered more than N, the limit comes down
towards N; when N is raised at run time (sluice.demo.v1.Capacity/Set), it
goes back up. Visible as sluice_adaptive_limit, in the admin API and in
`sluicectl limits`. In dry_run it is computed and reported, and nothing is
rejected.

Load: sluice-bench, closed loop, in runs bounded by --duration.
The assertions poll the limit's state with a bound (no sleeps).
"""

import json
import os
import subprocess
import threading
import unittest

import harness
from limits_lib import UNARY, LimitsTestBase, set_capacity
from sluice.admin.v1 import admin_pb2

BENCH = os.path.join(harness.ROOT, "client", "bench", "sluice-bench")
SLUICECTL = os.path.join(harness.ROOT, "client", "sluicectl", "sluicectl")

N = 10
SERVICE_US = 20000  # S = 20 ms: C = N / S = 500 calls/s


def route(dry_run=False):
    return f"""
  - name: adapt
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: gradient
        dry_run: {"true" if dry_run else "false"}
        concurrency:
          queue: 200
          max_wait: 2s
          adaptive: {{min: 2, max: 200, initial: 100, window: 50ms,
                      probe_interval: 3s, probe_timeout: 1s}}
"""


class Load:
    """sluice-bench closed loop (`concurrency` calls in flight) against
    `target`, in runs of `chunk` seconds one after the other (sluice-bench
    reports only at its end) until stop() or `seconds` in all. Each run is
    a child process of this test, waited for by its PID."""

    def __init__(self, target, concurrency, seconds, chunk=2):
        self.argv = [BENCH, f"--target={target}", "--json", "--threads=1",
                     "--connections=2", f"--concurrency={concurrency // 2}",
                     f"--duration={chunk}s", "--timeout=5s", "--request_bytes=10",
                     "--response_bytes=10"]
        self.runs = max(1, int(seconds / chunk))
        self.reports = []
        self.errors = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for _ in range(self.runs):
            if self.stopping.is_set():
                return
            r = subprocess.run(self.argv, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                self.errors.append(r.stderr)
                return
            self.reports.append(json.loads(r.stdout))

    def stop(self):
        """Ends the load (the run under way finishes) and returns
        (calls, {status: count}) over every run."""
        self.stopping.set()
        return self.finish()

    def finish(self):
        """Waits for every run to end; (calls, {status: count})."""
        self.thread.join(timeout=90 + 3 * self.runs)
        if self.thread.is_alive():
            raise AssertionError("sluice-bench did not end")
        if self.errors:
            raise AssertionError(f"sluice-bench failed: {self.errors[0]}")
        status = {}
        for rep in self.reports:
            for k, v in rep["status"].items():
                status[k] = status.get(k, 0) + v
        return sum(rep["calls"] for rep in self.reports), status


class AdaptiveLimitTest(LimitsTestBase):
    def setUp(self):
        super().setUp()
        set_capacity(self.upstream.address, N, SERVICE_US)
        self.load = None

    def tearDown(self):
        if self.load is not None:
            self.load.stop()
        set_capacity(self.upstream.address, 0)
        super().tearDown()

    def adaptive(self):
        return self.limit_status("adapt", "gradient").adaptive

    def settled(self, check):
        """The adaptive status when `check` holds of it outside a probe
        (a probe shows `min`, which says nothing about the estimate)."""
        def poll():
            self.assertIsNone(self.sluice.popen.poll(), "sluice exited")
            a = self.adaptive()
            return a if (not a.probing and check(a)) else None
        return poll

    def test_follows_capacity_down_and_up(self):
        self.start(route())
        a = self.adaptive()
        self.assertEqual((a.limit, a.min, a.max), (100, 2, 200))
        self.load = Load(self.sluice.data, 60, 60)
        # Offered 60 calls at once, capacity 10: the estimate comes down
        # towards N (Gradient2's fixed point is ~1.7 N at rtt_tolerance 1.2).
        down = harness.wait_until(self.settled(lambda a: a.estimated_limit <= 2.5 * N),
                                  timeout=30, interval=0.2, what="limit down towards N")
        self.assertGreaterEqual(down.probes, 1)  # the no-load latency was measured
        self.assertLess(down.long_rtt_seconds, 2.5 * SERVICE_US / 1e6, down)
        gauge = harness.metric(self.sluice, "sluice_adaptive_limit",
                               {"route": "adapt", "limit": "gradient"})
        self.assertLessEqual(gauge, 2.5 * N + 10)  # read a moment later
        # Capacity raised at run time: the limit follows it up.
        set_capacity(self.upstream.address, 4 * N)
        up = harness.wait_until(self.settled(lambda a: a.estimated_limit >= 3 * N),
                                timeout=30, interval=0.2, what="limit up after N x 4")
        self.assertGreater(up.samples, down.samples)
        calls, status = self.load.stop()
        self.load = None
        self.assertGreater(calls, 0)
        # Every call was admitted (the queue, 200, holds the 60 offered at
        # once; none waits max_wait, 2 s).
        self.assertEqual(status, {"OK": calls})

        # Load stopped: no sample ends a window, so the value holds still;
        # the admin API, sluicectl and /metrics show the same limit.
        a = self.adaptive()
        ctl = subprocess.run([SLUICECTL, f"--admin={self.sluice.admin}", "limits"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(ctl.returncode, 0, ctl.stderr)
        section = ctl.stdout.split("\nadaptive concurrency:\n", 1)
        self.assertEqual(len(section), 2, ctl.stdout)
        header, row = section[1].splitlines()[:2]
        cells = row.split()
        self.assertEqual(header.split()[:3], ["ROUTE", "LIMIT", "LIMIT/MIN/MAX"])
        self.assertEqual(cells[:2], ["adapt", "gradient"])
        self.assertEqual(cells[2], f"{a.limit}/2/200", ctl.stdout)
        self.assertEqual(harness.metric(self.sluice, "sluice_adaptive_limit",
                                        {"route": "adapt", "limit": "gradient"}), a.limit)
        self.assertEqual(harness.metric(self.sluice, "sluice_adaptive_limit_samples_total",
                                        {"route": "adapt", "limit": "gradient"}), a.samples)
        self.assertEqual(self.limit_status("adapt", "gradient").concurrency_max, a.limit)

    def test_dry_run_computes_and_rejects_nothing(self):
        self.start(route(dry_run=True))
        # A dry run enforces nothing, so a probe sees calls start at `min`
        # in flight only if the callers send no more: the probe at the
        # first sample learns the no-load latency under a light load (2 =
        # min calls at once).
        calls, status = Load(self.sluice.data, 2, 2).finish()
        self.assertEqual(status, {"OK": calls})
        a = self.adaptive()
        self.assertEqual(a.probes, 1, a)
        self.assertFalse(a.probing, a)
        self.assertLess(a.long_rtt_seconds, 2.5 * SERVICE_US / 1e6, a)
        # App-limited windows never grow it, nor bring it below twice the
        # calls in flight.
        self.assertTrue(4 <= a.limit <= 100, a)
        self.load = Load(self.sluice.data, 60, 60)
        # Computed and reported: the upstream queues (60 at once against
        # N = 10: 6x the no-load latency), the gradient says so and the
        # estimate comes down; the calls over it count as dry-run
        # rejections.
        harness.wait_until(self.settled(lambda a: a.estimated_limit <= 50 and a.gradient < 0.8
                                        and a.short_rtt_seconds > 3 * a.long_rtt_seconds),
                           timeout=30, interval=0.2, what="dry-run limit computed and reported")
        harness.wait_until(lambda: self.limit_status("adapt", "gradient").dry_run_rejected > 0,
                           timeout=30, interval=0.2, what="dry_run_rejected counted")
        calls, status = self.load.stop()
        self.load = None
        self.assertGreater(calls, 0)
        self.assertEqual(status, {"OK": calls})
        s = self.limit_status("adapt", "gradient")
        self.assertEqual(s.rejected, 0)
        self.assertEqual(s.queued, 0)
        self.assertEqual(self.metric("sluice_rejections_total", route="adapt"), 0)
        self.assertGreater(self.metric("sluice_limit_decisions_total", route="adapt",
                                       limit="gradient", decision="dry_run_rejected"), 0)
        self.assertLessEqual(s.adaptive.limit, 50)


if __name__ == "__main__":
    harness.main()
