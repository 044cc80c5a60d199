"""Concurrency limits (reject, queue timeout, FIFO hand-over), message
limits (pace and reject) and a mixed soak of 10,000 calls, through the real
sluice binary in front of the demo upstream.

Every test starts its own sluice and ends with sluice_calls_in_flight,
sluice_limit_permits_in_use and sluice_limit_queue_depth back at 0.
"""

import random
import threading
import time
import unittest
from concurrent import futures

import harness
import grpc
from limits_lib import RE, UNARY, LimitsTestBase, unary_req
from sluice.admin.v1 import admin_pb2
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

TICKER = "/sluice.demo.v1.Ticker/"
OK = grpc.StatusCode.OK


class Stream:
    """One Ticker.Subscribe call read by its own thread, which records every
    tick's arrival time. The thread ends when the call does (the tests
    cancel every stream they leave open, and each has a deadline)."""

    def __init__(self, stub, count=0, interval_ms=50, timeout=30):
        self.opened = time.monotonic()
        self.call = stub.Subscribe(
            ticker_pb2.SubscribeRequest(count=count, interval_ms=interval_ms), timeout=timeout)
        self.times = []
        self.seqs = []
        self.first = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for tick in self.call:
                self.times.append(time.monotonic())
                self.seqs.append(tick.seq)
                self.first.set()
        except grpc.RpcError:
            pass
        finally:
            self.ended = time.monotonic()
            self.done.set()

    def resolved(self):
        """Running (got a tick) or over."""
        return self.first.is_set() or self.done.is_set()

    def running(self):
        return self.first.is_set() and not self.done.is_set()

    def cancel(self):
        self.call.cancel()

    def finish(self, timeout=10):
        if not self.done.wait(timeout):
            raise AssertionError("stream did not end")
        self.thread.join(timeout)
        md = tuple(self.call.trailing_metadata() or ())
        return self.call.code(), self.call.details() or "", md


class ConcurrencyTestBase(LimitsTestBase):
    def setUp(self):
        super().setUp()
        self.streams = []

    def tearDown(self):
        for s in self.streams:
            s.cancel()
        for s in self.streams:
            s.done.wait(10)
        super().tearDown()

    def start(self, routes):
        super().start(routes)
        self.ticker = ticker_pb2_grpc.TickerStub(self.ch)

    def open(self, n, **kw):
        opened = [Stream(self.ticker, **kw) for _ in range(n)]
        self.streams += opened
        return opened

    def gauge(self, name, limit, route="tick"):
        return self.metric(name, route=route, limit=limit)

    def wait_gauge(self, name, limit, want, route="tick"):
        harness.wait_for_metric(self.sluice, name, want, {"route": route, "limit": limit})


class ConcurrencyLimitTest(ConcurrencyTestBase):
    def test_ten_run_forty_rejected(self):
        self.start(f"""
  - name: tick
    match: {{prefix: {TICKER}}}
    upstream: demo
    limits:
      - name: ten
        concurrency: {{max: 10}}
""")
        streams = self.open(50)
        harness.wait_until(lambda: all(s.resolved() for s in streams), timeout=15,
                           what="every stream running or rejected")
        running = [s for s in streams if s.running()]
        rejected = [s for s in streams if s.done.is_set()]
        self.assertEqual((len(running), len(rejected)), (10, 40))
        for s in rejected:
            code, details, md = s.finish()
            self.assertEqual(code, RE, details)
            self.assertEqual(harness.trailer(md, "sluice-reason"), "concurrency_limited")
            self.assertIn('"ten"', details)
            self.assertEqual(s.seqs, [])
        # The ten keep streaming.
        harness.wait_until(lambda: all(len(s.seqs) >= 3 for s in running), timeout=10,
                           what="three ticks on every running stream")
        self.assertEqual(self.gauge("sluice_limit_permits_in_use", "ten"), 10)
        self.assertEqual(self.gauge("sluice_limit_queue_depth", "ten"), 0)
        self.assertEqual(self.decisions("tick", "ten", "admitted"), 10)
        self.assertEqual(self.decisions("tick", "ten", "rejected"), 40)
        self.assertEqual(self.metric("sluice_rejections_total", route="tick",
                                     reason="concurrency_limited"), 40)

        for s in running:
            s.cancel()
        for s in running:
            self.assertEqual(s.finish()[0], grpc.StatusCode.CANCELLED)
        self.wait_gauge("sluice_limit_permits_in_use", "ten", 0)
        # Every permit came back: ten new streams fit again.
        again = self.open(10, count=3, interval_ms=1)
        for s in again:
            code, details, _ = s.finish()
            self.assertEqual((code, s.seqs), (OK, [1, 2, 3]), details)
        self.wait_gauge("sluice_limit_permits_in_use", "ten", 0)

    def test_queued_calls_time_out(self):
        self.start(f"""
  - name: tick
    match: {{prefix: {TICKER}}}
    upstream: demo
    limits:
      - name: ten
        concurrency: {{max: 10, queue: 50, max_wait: 300ms}}
""")
        running = self.open(10)
        harness.wait_until(lambda: all(s.first.is_set() for s in running), timeout=10,
                           what="ten streams running")
        queued = self.open(40)
        for s in queued:
            code, details, md = s.finish()
            self.assertEqual(code, RE, details)
            self.assertEqual(harness.trailer(md, "sluice-reason"), "queue_timeout")
            self.assertIn('in the queue of concurrency limit "ten"', details)
            self.assertEqual(s.seqs, [])
            waited = s.ended - s.opened
            self.assertGreaterEqual(waited, 0.29, details)
            self.assertLess(waited, 3.0, details)
        self.assertTrue(all(s.running() for s in running))
        self.assertEqual(self.decisions("tick", "ten", "queued"), 40)
        self.assertEqual(self.decisions("tick", "ten", "rejected"), 40)
        self.assertEqual(self.decisions("tick", "ten", "admitted"), 10)
        self.assertEqual(self.gauge("sluice_limit_queue_depth", "ten"), 0)
        self.assertEqual(self.gauge("sluice_limit_permits_in_use", "ten"), 10)
        for s in running:
            s.cancel()
        self.wait_gauge("sluice_limit_permits_in_use", "ten", 0)

    def test_fifo_hand_over(self):
        self.start(f"""
  - name: tick
    match: {{prefix: {TICKER}}}
    upstream: demo
    limits:
      - name: ten
        concurrency: {{max: 10, queue: 5, max_wait: 20s}}
""")
        running = self.open(10)
        harness.wait_until(lambda: all(s.first.is_set() for s in running), timeout=10,
                           what="ten streams running")
        waiting = []
        for i in range(3):  # one at a time, so their order is known
            waiting += self.open(1)
            self.wait_gauge("sluice_limit_queue_depth", "ten", i + 1)
        self.assertFalse(any(s.resolved() for s in waiting))

        def admitted_next(freed, expect, depth):
            freed.cancel()
            expect.first.wait(10)
            self.assertTrue(expect.first.is_set(), "the oldest waiter did not get the permit")
            self.wait_gauge("sluice_limit_queue_depth", "ten", depth)
            self.assertEqual(self.gauge("sluice_limit_permits_in_use", "ten"), 10)

        admitted_next(running[0], waiting[0], 2)
        self.assertFalse(waiting[1].resolved() or waiting[2].resolved())
        admitted_next(running[1], waiting[1], 1)
        self.assertFalse(waiting[2].resolved())
        # A waiter the client cancels leaves the queue...
        waiting[2].cancel()
        self.assertEqual(waiting[2].finish()[0], grpc.StatusCode.CANCELLED)
        self.wait_gauge("sluice_limit_queue_depth", "ten", 0)
        self.assertEqual(self.gauge("sluice_limit_permits_in_use", "ten"), 10)
        # ...and the queue still hands over to the next one.
        (late,) = self.open(1)
        self.wait_gauge("sluice_limit_queue_depth", "ten", 1)
        admitted_next(running[2], late, 0)
        # Raising the limit at run time lets the next waiters in at once.
        more = []
        for i in range(2):
            more += self.open(1)
            self.wait_gauge("sluice_limit_queue_depth", "ten", i + 1)
        r = self.admin.SetLimit(admin_pb2.SetLimitRequest(route="tick", name="ten",
                                                          concurrency_max=12), timeout=10)
        self.assertEqual(r.limit.concurrency_max, 12)
        harness.wait_until(lambda: all(s.first.is_set() for s in more), timeout=10,
                           what="both waiters running after SetLimit")
        self.wait_gauge("sluice_limit_queue_depth", "ten", 0)
        self.assertEqual(self.gauge("sluice_limit_permits_in_use", "ten"), 12)
        self.assertEqual(self.decisions("tick", "ten", "queued"), 6)
        self.assertEqual(self.decisions("tick", "ten", "admitted"), 15)
        self.assertEqual(self.decisions("tick", "ten", "rejected"), 0)
        self.assertEqual(self.metric("sluice_client_cancels_total", route="tick"), 4)

        for s in self.streams:
            s.cancel()
        self.wait_gauge("sluice_limit_permits_in_use", "ten", 0)
        self.wait_gauge("sluice_limit_queue_depth", "ten", 0)


def assert_paced(test, stream, rate, burst):
    """No message arrived before a bucket of `rate`/s and `burst` (full when
    the stream opened) let Sluice send it: message i (from 1) not before
    opened + (i - burst) / rate. Sluice's pacing starts after the client
    opened the stream, and a late client or scheduler only delays arrivals,
    so only pacing that runs ahead breaks this (1 ms for clock reads)."""
    for i, t in enumerate(stream.times, start=1):
        earliest = stream.opened + max(0, i - burst) / rate
        test.assertGreaterEqual(t, earliest - 0.001,
                                f"message {i} arrived {earliest - t:.4f}s early")


class MessageLimitTest(ConcurrencyTestBase):
    def test_pace(self):
        self.start(f"""
  - name: tick
    match: {{prefix: {TICKER}}}
    upstream: demo
    limits:
      - name: pace
        messages: {{per_second: 50, burst: 1}}
""")
        (s,) = self.open(1, count=100, interval_ms=0)
        code, details, _ = s.finish(timeout=20)
        self.assertEqual(code, OK, details)
        self.assertEqual(s.seqs, list(range(1, 101)))
        duration = s.times[-1] - s.opened
        print(f"100 ticks paced at 50/s in {duration:.3f}s")
        assert_paced(self, s, rate=50, burst=1)
        # and not slower than the rate by more than any scheduler explains
        # (a pacer at half the rate would take 4 s).
        self.assertLess(duration, 3.5, f"100 ticks in {duration:.3f}s")
        self.assertEqual(self.metric("sluice_rejections_total", route="tick"), 0)

    def test_reject(self):
        self.start(f"""
  - name: tick
    match: {{prefix: {TICKER}}}
    upstream: demo
    limits:
      - name: strict
        messages: {{per_second: 50, burst: 2, mode: reject}}
""")
        (s,) = self.open(1, count=100, interval_ms=0)
        code, details, md = s.finish()
        self.assertEqual(code, RE, details)
        self.assertEqual(harness.trailer(md, "sluice-reason"), "stream_rate")
        self.assertIn('"strict"', details)
        self.assertLessEqual(len(s.seqs), 2)
        delay = harness.retry_delay(md)
        self.assertIsNotNone(delay, md)
        self.assertGreater(delay, 0)
        self.assertLessEqual(delay, 0.020 + 1e-6)
        self.assertEqual(self.metric("sluice_rejections_total", route="tick",
                                     reason="stream_rate"), 1)
        # A stream within the rate is left alone.
        (slow,) = self.open(1, count=4, interval_ms=100)
        code, details, _ = slow.finish()
        self.assertEqual((code, slow.seqs), (OK, [1, 2, 3, 4]), details)


class MessageLimitExactnessTest(ConcurrencyTestBase):
    """Message limits as documented: pacing exact from the first message,
    every message limit of a route applied, dry-run decisions counted."""

    def test_pace_burst_is_exact(self):
        self.start(f"""
  - name: tick
    match: {{prefix: {TICKER}}}
    upstream: demo
    limits:
      - name: pace
        messages: {{per_second: 50, burst: 1}}
""")
        (s,) = self.open(1, count=3, interval_ms=0)
        self.assertEqual(s.finish()[0], OK)
        # burst 1: the second message 20 ms after the stream opened at the
        # earliest, the third 40 ms.
        assert_paced(self, s, rate=50, burst=1)

    def test_every_message_limit_applies(self):
        self.start(f"""
  - name: tick
    match: {{prefix: {TICKER}}}
    upstream: demo
    limits:
      - name: loose
        messages: {{per_second: 1000, burst: 10}}
      - name: tight
        messages: {{per_second: 20, burst: 1}}
""")
        (s,) = self.open(1, count=11, interval_ms=0)
        self.assertEqual(s.finish()[0], OK)
        # the tight limit paces all 11 (the loose one alone would let 10
        # through at once).
        assert_paced(self, s, rate=20, burst=1)

    def test_message_dry_run_is_not_enforced(self):
        self.start(f"""
  - name: tick
    match: {{prefix: {TICKER}}}
    upstream: demo
    limits:
      - name: shadow
        messages: {{per_second: 20, burst: 1, mode: reject}}
        dry_run: true
""")
        (s,) = self.open(1, count=20, interval_ms=0)
        code, details, _ = s.finish()
        # Enforced, mode reject would have ended the stream after 1 message.
        self.assertEqual((code, len(s.seqs)), (OK, 20), details)

    def test_message_dry_run_is_counted(self):
        self.start(f"""
  - name: tick
    match: {{prefix: {TICKER}}}
    upstream: demo
    limits:
      - name: shadow
        messages: {{per_second: 20, burst: 1, mode: reject}}
        dry_run: true
""")
        (s,) = self.open(1, count=20, interval_ms=0)
        self.assertEqual(s.finish()[0], OK)
        self.assertGreater(self.decisions("tick", "shadow", "dry_run_rejected"), 0)


class MixedSoakTest(ConcurrencyTestBase):
    CALLS = 10000
    THREADS = 12
    ALLOWED = {OK, RE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
    REASONS = {"rate_limited", "concurrency_limited", "queue_timeout", "stream_rate"}

    def test_mixed_calls_leave_nothing_behind(self):
        self.start(f"""
  - name: unary
    match: {{method: {UNARY}}}
    upstream: demo
    rate_limit_headers: true
    limits:
      - name: rate
        rate: {{per_second: 300, burst: 20}}
      - name: conc
        concurrency: {{max: 4, queue: 4, max_wait: 20ms}}
  - name: tick
    match: {{prefix: {TICKER}}}
    upstream: demo
    limits:
      - name: streams
        concurrency: {{max: 6, queue: 3, max_wait: 30ms}}
      - name: pace
        messages: {{per_second: 2000, burst: 5}}
      - name: shadow
        rate: {{per_second: 100, burst: 10}}
        dry_run: true
""")
        test = self.test
        ticker = self.ticker
        deadline_end = time.monotonic() + 90  # bounds the whole load

        def one(i):
            if time.monotonic() > deadline_end:
                return "skipped", None, None
            rnd = random.Random(i)
            kind = i % 10
            if kind <= 3:  # unary
                try:
                    test.UnaryCall(unary_req(), timeout=10)
                    return "unary", OK, None
                except grpc.RpcError as e:
                    return "unary", e.code(), harness.trailer(e.trailing_metadata(), "sluice-reason")
            if kind == 4:  # unary with a tiny deadline
                try:
                    test.UnaryCall(unary_req(), timeout=rnd.choice([0.001, 0.003, 0.01]))
                    return "unary_deadline", OK, None
                except grpc.RpcError as e:
                    return "unary_deadline", e.code(), harness.trailer(e.trailing_metadata(),
                                                                        "sluice-reason")
            if kind == 5:  # unary the client cancels
                f = test.UnaryCall.future(unary_req(), timeout=10)
                if rnd.random() < 0.5:
                    time.sleep(0.001)
                f.cancel()
                try:
                    f.result(timeout=10)
                except (grpc.RpcError, grpc.FutureCancelledError):
                    pass
                reason = None
                if f.code() != grpc.StatusCode.CANCELLED:
                    reason = harness.trailer(f.trailing_metadata(), "sluice-reason")
                return "unary_cancel", f.code(), reason
            req = ticker_pb2.SubscribeRequest(count=0, interval_ms=2)
            if kind <= 7:  # a whole short stream
                req = ticker_pb2.SubscribeRequest(count=rnd.randint(1, 20), interval_ms=1)
                call = ticker.Subscribe(req, timeout=10)
                try:
                    n = sum(1 for _ in call)
                    assert n == req.count, (n, req.count)
                except grpc.RpcError:
                    pass
                return "stream", call.code(), harness.trailer(call.trailing_metadata(),
                                                              "sluice-reason")
            if kind == 8:  # a stream the client cancels after a tick or two
                call = ticker.Subscribe(req, timeout=10)
                try:
                    for k, _ in enumerate(call):
                        if k >= rnd.randint(0, 2):
                            break
                except grpc.RpcError:
                    pass
                call.cancel()
                return "stream_cancel", call.code(), harness.trailer(call.trailing_metadata(),
                                                                     "sluice-reason")
            # kind 9: an endless stream with a tiny deadline
            call = ticker.Subscribe(req, timeout=rnd.choice([0.002, 0.01, 0.03]))
            try:
                for _ in call:
                    pass
            except grpc.RpcError:
                pass
            return "stream_deadline", call.code(), harness.trailer(call.trailing_metadata(),
                                                                   "sluice-reason")

        start = time.monotonic()
        with futures.ThreadPoolExecutor(self.THREADS) as pool:
            results = list(pool.map(one, range(self.CALLS), timeout=60))
        elapsed = time.monotonic() - start
        self.assertNotIn("skipped", [r[0] for r in results], f"load took {elapsed:.1f}s")

        by, reasons = {}, {}
        for kind, code, reason in results:
            by.setdefault(kind, {}).setdefault(code, 0)
            by[kind][code] += 1
            reasons[reason] = reasons.get(reason, 0) + 1
            self.assertIn(code, self.ALLOWED, f"{kind}: {code} {reason}")
            if code == RE:
                self.assertIn(reason, self.REASONS, kind)
        print(f"\n{self.CALLS} calls in {elapsed:.1f}s:",
              {k: {c.name: n for c, n in v.items()} for k, v in by.items()}, reasons)
        self.assertGreater(by["unary"].get(OK, 0), 0, by)
        self.assertGreater(by["stream"].get(OK, 0), 0, by)
        self.assertGreater(by["unary_cancel"].get(grpc.StatusCode.CANCELLED, 0), 0, by)
        self.assertGreater(sum(c.get(RE, 0) for c in by.values()), 0, by)

        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0, timeout=20)
        harness.wait_for_metric(self.sluice, "sluice_limit_permits_in_use", 0.0, timeout=10)
        harness.wait_for_metric(self.sluice, "sluice_limit_queue_depth", 0.0, timeout=10)
        text = harness.scrape(self.sluice.metrics)
        for route, limit in (("unary", "conc"), ("tick", "streams")):
            labels = {"route": route, "limit": limit}
            self.assertEqual(harness.metric_value(text, "sluice_limit_permits_in_use", labels), 0)
            self.assertEqual(harness.metric_value(text, "sluice_limit_queue_depth", labels), 0)
        # The limits were exercised, not idle.
        queued = sum(harness.metric_value(text, "sluice_limit_decisions_total",
                                          {"limit": limit, "decision": "queued"})
                     for limit in ("conc", "streams"))
        self.assertGreater(queued, 0)
        self.assertGreater(harness.metric_value(text, "sluice_limit_decisions_total",
                                                {"limit": "shadow", "decision": "dry_run_rejected"}), 0)
        self.assertIsNone(self.sluice.popen.poll())
        # And sluice still serves.
        self.assertEqual(test.UnaryCall(unary_req(), timeout=10).payload.body, b"\0")


if __name__ == "__main__":
    harness.main()
