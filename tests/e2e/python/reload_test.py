"""Reloading the real daemon (SIGHUP):
- restart-only settings (listeners, workers, tls...) changed in the file
  are named in the warning and stay as they run; `GetStatus`, `GetConfig`
  and `sluice_config_info` report the config in effect, whose hash is the
  one `--check` gives a file holding exactly that;
- `--check` and a reload report schema errors and semantic errors
  together (exit 2 for `--check`; the old config kept on reload);
- a limit changed by reloads keeps the load it carries (issue 15, point 6):
  while a concurrency limit alternates between max 10 and 11 a hundred
  times in about 10 s under 30 concurrent long calls, the calls active at
  the upstream (as the upstream counts them) never exceed 11 + 1; while a
  rate alternates between 20/s and 21/s, the calls admitted in any 1 s
  window (by the upstream's clock) never exceed 1.1 * 21 + burst."""

import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

import grpc
import harness
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc


def config_text(upstream, admin, workers, drain="30s", extra_route=""):
    return f"""
listeners: {{data: "127.0.0.1:0", admin: "{admin}", metrics: "127.0.0.1:0"}}
workers: {workers}
drain_timeout: {drain}
upstreams: [{{name: demo, target: "{upstream}"}}]
routes:
{extra_route}
  - {{name: all, match: {{prefix: /}}, upstream: demo}}
"""


EXTRA_ROUTE = "  - {name: extra, match: {prefix: /extra.v1.Service/}, upstream: demo}"


def start_from_file(path):
    """sluice with the listeners of the file (no override flags), reloaded
    only by SIGHUP."""
    ready = os.path.join(harness.TMP, f"reload-{time.monotonic_ns()}.ready.json")
    p = harness.Proc("sluice", [harness.SLUICE, f"--config={path}", f"--ready_file={ready}",
                                "--watch_config=false"], ready)
    p.data, p.admin, p.metrics = p.info["data"], p.info["admin"], p.info["metrics"]
    return p


def rewrite(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def reload(sluice, result):
    before = harness.metric(sluice, "sluice_config_reloads_total", {"result": result}) or 0
    sluice.signal(signal.SIGHUP)
    harness.wait_for_metric(sluice, "sluice_config_reloads_total", before + 1,
                            {"result": result})


def check(path):
    return subprocess.run([harness.SLUICE, f"--config={path}", "--check"],
                          capture_output=True, text=True, timeout=30)


def accepts(address):
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, int(port))) == 0


class RestartOnlySettingsTest(unittest.TestCase):
    def test_changed_listener_and_workers_stay_as_they_run(self):
        upstream = harness.start_upstream()
        self.addCleanup(upstream.stop)
        old_admin = f"127.0.0.1:{harness.closed_port()}"
        new_admin = f"127.0.0.1:{harness.closed_port()}"
        path = harness.write_config(config_text(upstream.address, old_admin, 2))
        sluice = start_from_file(path)
        self.addCleanup(sluice.stop)
        self.assertEqual(sluice.admin, old_admin)
        ch = harness.channel(old_admin)
        self.addCleanup(ch.close)
        admin = admin_pb2_grpc.AdminStub(ch)
        before = admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
        self.assertEqual(before.workers, 2)

        # The new admin address and workers need a restart; the new route and
        # drain_timeout do not.
        rewrite(path, config_text(upstream.address, new_admin, 3, drain="5s",
                                  extra_route=EXTRA_ROUTE))
        reload(sluice, "ok")

        warnings = [line for line in sluice.output().splitlines()
                    if "config reload:" in line and "only at restart" in line]
        self.assertEqual(len(warnings), 1, sluice.output())
        self.assertIn(f'listeners.admin ("{old_admin}" -> "{new_admin}")', warnings[0])
        self.assertIn("workers (2 -> 3)", warnings[0])

        # Still answering on the old address, nothing on the new one.
        status = admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
        self.assertEqual(status.admin_address, old_admin)
        self.assertEqual(status.workers, 2)
        self.assertFalse(accepts(new_admin))
        self.assertNotEqual(status.config_hash, before.config_hash)  # new route

        config = admin.GetConfig(admin_pb2.GetConfigRequest(), timeout=5)
        effective = json.loads(config.config_json)
        self.assertEqual(effective["listeners"]["admin"], old_admin)
        self.assertEqual(effective["workers"], 2)
        self.assertEqual(effective["drain_timeout"], "5s")
        self.assertEqual([r["name"] for r in effective["routes"]], ["extra", "all"])
        self.assertEqual(config.config_hash, status.config_hash)

        self.assertEqual(harness.metric(sluice, "sluice_config_info",
                                        {"hash": status.config_hash}), 1)
        self.assertIsNone(harness.metric(sluice, "sluice_config_info",
                                         {"hash": before.config_hash}))

        # The hash is that of the config in effect: a file holding exactly
        # it checks to the same hash.
        in_effect = harness.write_config(config_text(upstream.address, old_admin, 2,
                                                     drain="5s", extra_route=EXTRA_ROUTE))
        r = check(in_effect)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"(hash {status.config_hash})", r.stdout)


SCHEMA_AND_SEMANTIC = """
wokers: 2
upstreams: [{name: demo, target: "UPSTREAM"}]
routes:
  - {name: all, match: {prefix: /}, upstream: nowhere}
"""


def both_errors(path):
    return [f'{path}: wokers (line 2): unknown field "wokers" (did you mean "workers"?)',
            f'{path}: routes[0].upstream: unknown upstream "nowhere"']


class ErrorsTogetherTest(unittest.TestCase):
    def test_check_reports_schema_and_semantic_errors_together(self):
        path = harness.write_config(SCHEMA_AND_SEMANTIC.replace("UPSTREAM", "127.0.0.1:1"))
        r = check(path)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.splitlines(), both_errors(path))

    def test_reload_reports_schema_and_semantic_errors_together(self):
        upstream = harness.start_upstream()
        self.addCleanup(upstream.stop)
        admin_address = f"127.0.0.1:{harness.closed_port()}"
        path = harness.write_config(config_text(upstream.address, admin_address, 1))
        sluice = start_from_file(path)
        self.addCleanup(sluice.stop)
        ch = harness.channel(sluice.admin)
        self.addCleanup(ch.close)
        admin = admin_pb2_grpc.AdminStub(ch)
        before = admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5).config_hash

        rewrite(path, SCHEMA_AND_SEMANTIC.replace("UPSTREAM", upstream.address))
        reload(sluice, "failed")
        log = sluice.output()
        for line in both_errors(path):
            self.assertIn(line, log)
        self.assertEqual(admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5).config_hash,
                         before)


def churn_config(upstream, limit):
    """One route for the Ticker with the limit under test (a YAML flow map)."""
    return f"""
listeners: {{data: "127.0.0.1:0", admin: "127.0.0.1:0", metrics: "127.0.0.1:0"}}
workers: 2
upstreams: [{{name: demo, target: "{upstream}"}}]
routes:
  - name: ticks
    match: {{prefix: /sluice.demo.v1.Ticker/}}
    upstream: demo
    limits:
      - {limit}
  - {{name: all, match: {{prefix: /}}, upstream: demo}}
"""


CHANGES = 100      # reloads per churn
CHURN_SECONDS = 10  # aimed at; each reload waits for its counter


def churn(test, sluice, path, texts):
    """Rewrites the config alternating between `texts` and reloads it
    CHANGES times, one every CHURN_SECONDS / CHANGES s (later if a reload
    takes longer), each confirmed by sluice_config_reloads_total. Bounded:
    fails past 60 s. Returns the seconds it took."""
    t0 = time.monotonic()
    for i in range(CHANGES):
        rewrite(path, texts[(i + 1) % len(texts)])
        reload(sluice, "ok")
        test.assertLess(time.monotonic() - t0, 60, f"only {i + 1} reloads in 60 s")
        delay = t0 + (i + 1) * CHURN_SECONDS / CHANGES - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return time.monotonic() - t0


def max_in_window(times, window):
    """The most of the sorted `times` within any `window` (half-open)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class LimitChurnTest(unittest.TestCase):
    """Issue 15, point 6: a limit changed by reload keeps counting the load
    it carries."""

    def start(self, limit, values):
        upstream = harness.start_upstream()
        self.addCleanup(upstream.stop)
        texts = [churn_config(upstream.address, limit.format(v)) for v in values]
        path = harness.write_config(texts[0])
        sluice = start_from_file(path)
        self.addCleanup(sluice.stop)
        ch = harness.channel(sluice.data)
        self.addCleanup(ch.close)
        return sluice, path, texts, ticker_pb2_grpc.TickerStub(ch)

    def test_concurrency_alternating_10_11_never_exceeds_11_plus_1(self):
        sluice, path, texts, stub = self.start(
            "{{name: c, concurrency: {{max: {}, queue: 64, max_wait: 10s}}}}", (10, 11))
        stop = threading.Event()
        lock = threading.Lock()
        seen = {"max": 0, "ok": 0, "other": []}

        def caller():
            # Long-ish calls (4 ticks 100 ms apart), back to back, until told
            # to stop; bounded by the event and each call's deadline.
            deadline = time.monotonic() + 90
            while not stop.is_set() and time.monotonic() < deadline:
                top = 0
                try:
                    for tick in stub.Subscribe(
                            ticker_pb2.SubscribeRequest(count=4, interval_ms=100), timeout=20):
                        top = max(top, tick.max_streams_active)
                    with lock:
                        seen["ok"] += 1
                except grpc.RpcError as e:
                    with lock:
                        seen["other"].append(e.code())
                with lock:
                    seen["max"] = max(seen["max"], top)

        threads = [threading.Thread(target=caller, daemon=True) for _ in range(30)]
        for t in threads:
            t.start()
        # The load has filled the limit and queued the rest before the churn.
        harness.wait_for_metric(sluice, "sluice_limit_permits_in_use", 10.0,
                                {"route": "ticks", "limit": "c"})
        took = churn(self, sluice, path, texts)
        stop.set()
        for t in threads:
            t.join(timeout=30)
            self.assertFalse(t.is_alive(), "caller stuck")
        print(f"concurrency churn: {CHANGES} reloads in {took:.1f} s, "
              f"{seen['ok']} calls OK, max {seen['max']} active at the upstream",
              flush=True)
        self.assertEqual(seen["other"], [])
        self.assertGreaterEqual(seen["max"], 10)  # the load reached the limit
        self.assertLessEqual(seen["max"], 11 + 1)
        harness.wait_for_metric(sluice, "sluice_limit_permits_in_use", 0.0,
                                {"route": "ticks", "limit": "c"})

    def test_rate_alternating_20_21_admits_at_most_the_larger_rate(self):
        burst = 5
        sluice, path, texts, stub = self.start(
            "{{name: r, rate: {{per_second: {}, burst: " + str(burst) + "}}}}", (20, 21))
        stop = threading.Event()
        lock = threading.Lock()
        admitted = []  # upstream unix_micros of each admitted call
        outcomes = {"ok": 0, "rejected": 0, "other": []}
        senders, per_sender = 3, 20.0  # 60 calls/s offered, open loop
        t0 = time.monotonic() + 0.05

        def sender(k):
            i = 0
            deadline = time.monotonic() + 90
            while not stop.is_set() and time.monotonic() < deadline:
                delay = t0 + (i + k / senders) / per_sender - time.monotonic()
                i += 1
                if delay > 0:
                    time.sleep(delay)
                try:
                    ticks = list(stub.Subscribe(ticker_pb2.SubscribeRequest(count=1),
                                                timeout=5))
                    with lock:
                        outcomes["ok"] += 1
                        admitted.extend(t.unix_micros for t in ticks[:1])
                except grpc.RpcError as e:
                    with lock:
                        if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            outcomes["rejected"] += 1
                        else:
                            outcomes["other"].append(e.code())

        threads = [threading.Thread(target=sender, args=(k,), daemon=True)
                   for k in range(senders)]
        for t in threads:
            t.start()
        took = churn(self, sluice, path, texts)
        stop.set()
        for t in threads:
            t.join(timeout=30)
            self.assertFalse(t.is_alive(), "sender stuck")
        times = sorted(us / 1e6 for us in admitted)
        most = max_in_window(times, 1.0)
        span = times[-1] - times[0]
        print(f"rate churn: {CHANGES} reloads in {took:.1f} s, {outcomes['ok']} admitted, "
              f"{outcomes['rejected']} rejected over {span:.1f} s; "
              f"most in any 1 s window: {most}", flush=True)
        self.assertEqual(outcomes["other"], [])
        self.assertGreater(outcomes["rejected"], 0)  # the load exceeded the rate
        self.assertLessEqual(most, 1.1 * 21 + burst)
        # Not starved either: about 20/s got through over the run.
        self.assertGreaterEqual(len(times), 15 * span)


if __name__ == "__main__":
    harness.main()
