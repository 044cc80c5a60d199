"""Admission control through the real sluice binary in front of the demo
upstream: rate limits (accuracy under open-loop overload, RetryInfo,
x-ratelimit-* headers, keyed buckets, dry run), the admin API's run-time
overrides, and what a SIGHUP reload does to limit state.

Concurrency limits, message limits and a mixed soak are in
limits_concurrency_test.py.

Every test starts its own sluice (buckets start full) in front of one demo
upstream shared by the module, and ends with sluice_calls_in_flight at 0.
"""

import collections
import os
import signal
import time
import unittest

import harness
import grpc
from grpc.testing import empty_pb2
from limits_lib import (EMPTY, RE, UNARY, LimitsTestBase, access_log_times, call_unary,
                        config, gcra_admits, offer_open_loop, unary_req)
from sluice.admin.v1 import admin_pb2


class RateLimitTest(LimitsTestBase):
    RATE, BURST = 100, 10
    THREADS, PER_THREAD_RATE, SECONDS = 3, 100, 5.0

    def test_open_loop_overload_admits_the_configured_rate(self):
        log_path = os.path.join(harness.TMP, f"access-{time.monotonic_ns()}.log")
        self.start(f"""
  - name: rated
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: hundred
        rate: {{per_second: {self.RATE}, burst: {self.BURST}}}
""", extra=f'access_log: {{path: "{log_path}"}}\n')
        outcomes, duration = offer_open_loop(
            self, [self.test] * self.THREADS, self.PER_THREAD_RATE, self.SECONDS)
        ok = [o for o in outcomes if o.code == grpc.StatusCode.OK]
        rejected = [o for o in outcomes if o.code != grpc.StatusCode.OK]
        offered_rate = len(outcomes) / duration
        # What an exact bucket admits of the schedule the client achieved
        # (its stalls included), and the hard ceiling of any window: no
        # scheduling delay can raise Sluice's count above RATE x the span in
        # which its decisions fell + BURST; only a defect can.
        expected = gcra_admits([o.sent for o in outcomes], self.RATE, self.BURST)
        span = max(o.done for o in outcomes) - min(o.sent for o in outcomes)
        admitted_rate = (len(ok) - self.BURST) / duration
        print(f"\n{len(ok)} of {len(outcomes)} admitted in {duration:.3f}s: "
              f"{admitted_rate:.2f}/s admitted, {offered_rate:.0f}/s offered; "
              f"an exact bucket admits {expected} of this schedule")
        # The load exercised the limit (3 x 100/s offered against 100/s: about
        # two thirds are over it; a client too starved to offer that much
        # still offers well over the rate).
        self.assertLess(expected, 0.8 * len(outcomes),
                        f"the client offered only {offered_rate:.0f}/s")
        self.assertLessEqual(len(ok), self.RATE * span + self.BURST + 1)
        # Sluice decides when it takes a call, not when Python sent it: the
        # reference is the same exact bucket run on Sluice's own times (its
        # access log, to the microsecond), so neither the client's stalls
        # nor Sluice's own (a busy machine) move it; a wrong rate or a lost
        # refill does.
        arrivals = harness.wait_until(
            lambda: (lambda t: t if len(t) >= len(outcomes) else None)(
                access_log_times(log_path, UNARY)),
            timeout=20, what="every call in the access log")
        at_sluice = gcra_admits(arrivals, self.RATE, self.BURST)
        print(f"an exact bucket on Sluice's own times admits {at_sluice}")
        self.assertAlmostEqual(len(ok), at_sluice, delta=0.01 * at_sluice + 2,
                               msg=f"{len(ok)} admitted of {len(outcomes)} in {duration:.3f}s")

        delays = []
        for o in rejected:
            self.assert_rate_limited(o, "hundred", "rated")
            delay = harness.retry_delay(o.trailing)
            self.assertIsNotNone(delay, f"no RetryInfo in {o.trailing}")
            delays.append(delay)
            status = harness.status_details(o.trailing)
            self.assertEqual(status.code, RE.value[0])
            self.assertEqual(status.message, o.details)
        self.assertTrue(delays)
        # GCRA: a rejected call could be admitted within one emission interval.
        self.assertGreater(min(delays), 0.0)
        self.assertLessEqual(max(delays), 1.0 / self.RATE + 1e-6)

        # Sluice's own counters agree with what the client saw, exactly.
        self.assertEqual(self.decisions("rated", "hundred", "admitted"), len(ok))
        self.assertEqual(self.decisions("rated", "hundred", "rejected"), len(rejected))
        self.assertEqual(self.decisions("rated", "hundred", "dry_run_rejected"), 0)
        self.assertEqual(self.metric("sluice_rejections_total", route="rated",
                                     reason="rate_limited"), len(rejected))
        s = self.limit_status("rated", "hundred")
        self.assertEqual((s.admitted, s.rejected), (len(ok), len(rejected)))
        self.assertAlmostEqual(s.rate_per_second, self.RATE)
        self.assertEqual(s.burst, self.BURST)

    def test_rate_limit_headers(self):
        # 6/min: one token per 10 s, so nothing refills during the test.
        self.start(f"""
  - name: rated
    match: {{method: {UNARY}}}
    upstream: demo
    rate_limit_headers: true
    limits:
      - name: slow
        rate: {{per_minute: 6, burst: 3}}
  - name: plain
    match: {{method: {EMPTY}}}
    upstream: demo
    limits:
      - name: slow
        rate: {{per_minute: 6, burst: 3}}
""")
        echo = ("x-grpc-test-echo-initial", "hello")

        def headers(md):
            return tuple(harness.trailer(md, k) for k in
                         ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"))

        for i in range(3):
            o = call_unary(self.test.UnaryCall, unary_req(), metadata=[echo])
            self.assertEqual(o.code, grpc.StatusCode.OK, o)
            # The upstream's own headers still come through, next to ours.
            self.assertEqual(harness.trailer(o.initial, echo[0]), echo[1])
            # After call i+1: 2-i tokens left, full again in (i+1)*10 s.
            self.assertEqual(headers(o.initial), ("3", str(2 - i), str((i + 1) * 10)),
                             o.initial)
            self.assertEqual(headers(o.trailing), (None, None, None))
        o = call_unary(self.test.UnaryCall, unary_req(), metadata=[echo])
        self.assert_rate_limited(o, "slow", "rated")
        self.assertEqual(headers(o.trailing), ("3", "0", "30"), o.trailing)

        # A route without rate_limit_headers sends none.
        for i in range(4):
            o = call_unary(self.test.EmptyCall, empty_pb2.Empty())
            self.assertEqual(headers(o.initial), (None, None, None))
            self.assertEqual(headers(o.trailing), (None, None, None))
            self.assertEqual(o.code, grpc.StatusCode.OK if i < 3 else RE)

    def test_keyed_by_header(self):
        self.start(f"""
  - name: keyed
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: per-key
        rate: {{per_minute: 6, burst: 2}}
        key: ["header:x-api-key"]
        default_key: anon
""")

        def call(key):
            md = [("x-api-key", key)] if key is not None else None
            return call_unary(self.test.UnaryCall, unary_req(), metadata=md)

        codes = lambda key, n: [call(key).code for _ in range(n)]  # noqa: E731
        ok2_then_re = [grpc.StatusCode.OK] * 2 + [RE]
        self.assertEqual(codes("alpha", 3), ok2_then_re)
        # Another key has its own, full bucket...
        self.assertEqual(codes("beta", 3), ok2_then_re)
        # ...and calls without the header share the default_key's bucket,
        self.assertEqual(codes(None, 3), ok2_then_re)
        # which is the bucket a client naming that key explicitly gets.
        o = call("anon")
        self.assert_rate_limited(o, "per-key", "keyed")
        self.assertIsNotNone(harness.retry_delay(o.trailing))
        self.assertEqual(call("alpha").code, RE)
        self.assertEqual(call("gamma").code, grpc.StatusCode.OK)

        self.assertEqual(self.metric("sluice_limit_keys", route="keyed", limit="per-key"), 4)
        s = self.admin.ListLimits(admin_pb2.ListLimitsRequest(top_keys=10), timeout=10)
        (s,) = [x for x in s.limits if x.route == "keyed"]
        self.assertEqual(list(s.key), ["header:x-api-key"])
        self.assertEqual(s.keys, 4)
        tokens = {k.key: k.tokens for k in s.top_keys}
        self.assertEqual(set(tokens), {"alpha", "beta", "anon", "gamma"})
        for k in ("alpha", "beta", "anon"):
            self.assertLess(tokens[k], 0.5, tokens)
        self.assertGreater(tokens["gamma"], 0.9, tokens)
        self.assertEqual((s.admitted, s.rejected), (7, 5))
        self.assertEqual(self.decisions("keyed", "per-key", "admitted"), 7)
        self.assertEqual(self.decisions("keyed", "per-key", "rejected"), 5)

    def test_max_keys_bounds_memory_under_a_key_flood(self):
        # The bound is split evenly over the map's 16 shards (see
        # docs/limits.md): a key whose shard is full shares the overflow
        # bucket, whose rate is the per-key rate; the total never exceeds
        # max_keys.
        self.start(f"""
  - name: keyed
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: per-key
        rate: {{per_minute: 6, burst: 2}}
        key: ["header:x-api-key"]
        max_keys: 32
""")
        codes = collections.Counter()
        for k in range(300):
            md = [("x-api-key", f"flood-{k}")]
            codes[call_unary(self.test.UnaryCall, unary_req(), metadata=md).code] += 1
        self.assertEqual(set(codes) - {grpc.StatusCode.OK, RE}, set(), codes)
        keys = harness.metric_value(harness.scrape(self.sluice.metrics), "sluice_limit_keys",
                                    {"route": "keyed", "limit": "per-key"})
        self.assertGreater(keys, 0)
        self.assertLessEqual(keys, 32)
        # Keys beyond the bound were still limited (by the overflow bucket).
        self.assertGreater(codes[RE], 0, codes)

    def test_dry_run_rejects_nothing_but_counts(self):
        self.start(f"""
  - name: shadow
    match: {{method: {UNARY}}}
    upstream: demo
    rate_limit_headers: true
    limits:
      - name: would-limit
        rate: {{per_minute: 6, burst: 2}}
        dry_run: true
""")
        for _ in range(10):
            o = call_unary(self.test.UnaryCall, unary_req())
            self.assertEqual(o.code, grpc.StatusCode.OK, o)
            self.assertIsNone(o.reason)
        self.assertEqual(self.decisions("shadow", "would-limit", "admitted"), 2)
        self.assertEqual(self.decisions("shadow", "would-limit", "dry_run_rejected"), 8)
        self.assertEqual(self.decisions("shadow", "would-limit", "rejected"), 0)
        self.assertEqual(self.metric("sluice_rejections_total", route="shadow"), 0)
        s = self.limit_status("shadow", "would-limit")
        self.assertTrue(s.dry_run)
        self.assertEqual((s.admitted, s.rejected, s.dry_run_rejected), (2, 0, 8))


class AdminOverrideTest(LimitsTestBase):
    def test_set_limit(self):
        self.start(f"""
  - name: api
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: slow
        rate: {{per_minute: 6, burst: 2}}
      - name: inflight
        concurrency: {{max: 5}}
""")
        codes = lambda n: [call_unary(self.test.UnaryCall, unary_req()).code  # noqa: E731
                           for _ in range(n)]
        self.assertEqual(codes(3), [grpc.StatusCode.OK] * 2 + [RE])
        before = self.limit_status("api", "slow")
        self.assertFalse(before.overridden)
        self.assertAlmostEqual(before.rate_per_second, 0.1)
        self.assertEqual(before.burst, 2)
        self.assertLess(before.tokens, 0.5)

        r = self.admin.SetLimit(admin_pb2.SetLimitRequest(
            route="api", name="slow", rate_per_second=100, burst=50), timeout=10)
        self.assertTrue(r.limit.overridden)
        self.assertAlmostEqual(r.limit.rate_per_second, 100)
        self.assertEqual(r.limit.burst, 50)
        # A new rate carries the debt (the 2 tokens taken, which refill at
        # the new rate: 20 ms at 100/s), never a fresh burst.
        self.assertGreater(r.limit.tokens, 47.9)
        self.assertLess(r.limit.tokens, 49.5)
        self.assertEqual(codes(20), [grpc.StatusCode.OK] * 20)
        s = self.limit_status("api", "slow")
        self.assertTrue(s.overridden)
        self.assertAlmostEqual(s.rate_per_second, 100)
        self.assertEqual(s.burst, 50)
        # The counters belong to the limit, not to the bucket.
        self.assertEqual((s.admitted, s.rejected), (22, 1))

        # Only the fields given change.
        r = self.admin.SetLimit(admin_pb2.SetLimitRequest(route="api", name="slow", burst=7),
                                timeout=10)
        self.assertAlmostEqual(r.limit.rate_per_second, 100)
        self.assertEqual(r.limit.burst, 7)
        # About 20 tokens are owed (refilling at 100/s), more than the new
        # burst: the bucket is in debt until they are paid back.
        self.assertLess(r.limit.tokens, 1)
        harness.wait_until(lambda: self.limit_status("api", "slow").tokens >= 1,
                           timeout=10, interval=0.05, what="the debt paid back")
        r = self.admin.SetLimit(admin_pb2.SetLimitRequest(
            route="api", name="inflight", concurrency_max=3, concurrency_queue=4), timeout=10)
        self.assertEqual((r.limit.concurrency_max, r.limit.queue_max), (3, 4))
        self.assertTrue(r.limit.overridden)
        self.assertEqual(self.limit_status("api", "inflight").concurrency_max, 3)
        self.assertEqual(codes(1), [grpc.StatusCode.OK])

        def set_limit_error(**fields):
            with self.assertRaises(grpc.RpcError) as cm:
                self.admin.SetLimit(admin_pb2.SetLimitRequest(**fields), timeout=10)
            return cm.exception.code(), cm.exception.details()

        code, details = set_limit_error(route="api", name="nope", rate_per_second=5)
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("nope", details)
        code, _ = set_limit_error(route="nope", name="slow", rate_per_second=5)
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        code, details = set_limit_error(route="api", name="slow", concurrency_max=3)
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
        code, details = set_limit_error(route="api", name="inflight", rate_per_second=3)
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
        code, details = set_limit_error(route="api", name="slow", rate_per_second=0)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        code, details = set_limit_error(route="api", name="slow", burst=0)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        # Failed requests changed nothing.
        s = self.limit_status("api", "slow")
        self.assertAlmostEqual(s.rate_per_second, 100)
        self.assertEqual(s.burst, 7)


class ReloadTest(LimitsTestBase):
    ROUTES = f"""
  - name: keep
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: bucket
        rate: {{per_minute: 6, burst: 2}}
  - name: change
    match: {{method: {EMPTY}}}
    upstream: demo
    limits:
      - name: bucket
        rate: {{per_minute: 6, burst: BURST}}
"""

    def reload(self, text, result):
        before = self.metric("sluice_config_reloads_total", result=result)
        with open(self.config_path + ".tmp", "w") as f:
            f.write(text)
        os.replace(self.config_path + ".tmp", self.config_path)
        self.sluice.signal(signal.SIGHUP)
        harness.wait_for_metric(self.sluice, "sluice_config_reloads_total", before + 1,
                                {"result": result})

    def test_reload_keeps_unchanged_limits_and_survives_bad_config(self):
        self.start(self.ROUTES.replace("BURST", "2"))
        keep = lambda: call_unary(self.test.UnaryCall, unary_req())  # noqa: E731
        change = lambda: call_unary(self.test.EmptyCall, empty_pb2.Empty())  # noqa: E731
        self.assertEqual([keep().code for _ in range(3)], [grpc.StatusCode.OK] * 2 + [RE])
        self.assertEqual([change().code for _ in range(3)], [grpc.StatusCode.OK] * 2 + [RE])

        # Unchanged "keep/bucket", changed "change/bucket" (burst 2 -> 3).
        self.reload(config(self.ROUTES.replace("BURST", "3")), "ok")
        self.assertEqual(self.metric("sluice_config_reloads_total", result="failed"), 0)
        o = keep()
        self.assert_rate_limited(o, "bucket", "keep")  # still drained
        # The changed limit carries its load: 2 tokens owed of the new burst
        # of 3, so one more call, and its counters go on.
        self.assertEqual([change().code for _ in range(4)], [grpc.StatusCode.OK] + [RE] * 3)
        k, c = self.limit_status("keep", "bucket"), self.limit_status("change", "bucket")
        self.assertEqual((k.admitted, k.rejected), (2, 2))  # the same state, counters too
        self.assertEqual((c.admitted, c.rejected, c.burst), (3, 4, 3))  # carried state
        self.assertEqual(self.decisions("keep", "bucket", "rejected"), 2)
        self.assertEqual(self.decisions("change", "bucket", "admitted"), 3)
        hash_before = self.admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=10).config_hash

        # A bad file: logged, counted, and the running config stays.
        bad = config(self.ROUTES.replace("BURST", "3")).replace(
            "per_minute: 6, burst: 2", "per_minute: 6, per_second: 1, burst: 2")
        self.reload(bad, "failed")
        self.assertEqual(self.metric("sluice_config_reloads_total", result="failed"), 1)
        self.assertEqual(self.metric("sluice_config_reloads_total", result="ok"), 1)
        self.assertEqual(
            self.admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=10).config_hash,
            hash_before)
        self.assertIn("set only one of per_second and per_minute", self.sluice.output())
        self.assert_rate_limited(keep(), "bucket", "keep")
        self.assertEqual(change().code, RE)
        o = call_unary(self.test.CacheableUnaryCall, unary_req())  # the default route
        self.assertEqual(o.code, grpc.StatusCode.OK, o)
        k = self.limit_status("keep", "bucket")
        self.assertEqual((k.admitted, k.rejected), (2, 3))


if __name__ == "__main__":
    harness.main()
