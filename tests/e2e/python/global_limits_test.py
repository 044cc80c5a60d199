"""Global limits (scope: global) through the real sluice binary and a real
redis-server (Debian's /usr/bin/redis-server, started by each test on a free
127.0.0.1 port and stopped by its PID): two and three replicas share one rate,
each its fair part of it; Redis
killed -> each fallback mode; Redis back -> global enforcement resumes;
Redis stopped (SIGSTOP) -> other routes keep their latency and global calls
get the fallback within the Redis timeout.
"""

import os
import signal
import threading
import time
import unittest

import harness
import grpc
from grpc.testing import test_pb2_grpc
from limits_lib import (RE, UNARY, Outcome, access_log_times, call_unary, gcra_admits,
                        offer_open_loop, unary_req)
from grpc.testing import empty_pb2, messages_pb2





def config(redis_port, routes, timeout="50ms", access_log=None):
    log = f'access_log: {{path: "{access_log}"}}\n' if access_log else ""
    return f"""drain_timeout: 1s
{log}redis:
  address: 127.0.0.1:{redis_port}
  timeout: {timeout}
  connect_timeout: 200ms
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
routes:
{routes}
  - name: default
    match: {{prefix: /}}
    upstream: demo
"""


class GlobalLimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()

    @classmethod
    def tearDownClass(cls):
        cls.upstream.stop()

    def setUp(self):
        self.redis = harness.RedisServer()
        self.sluices = []
        self.channels = []

    def tearDown(self):
        for ch in self.channels:
            ch.close()
        for s in self.sluices:
            rc = s.stop()
            self.assertEqual(rc, 0, s.output()[-3000:])
        self.redis.stop()

    def start_sluice(self, routes, **kw):
        path = harness.write_config(config(self.redis.port, routes, **kw))
        s = harness.start_sluice(config_path=path, upstream=self.upstream.address)
        self.sluices.append(s)
        ch = harness.channel(s.data)
        self.channels.append(ch)
        return s, test_pb2_grpc.TestServiceStub(ch)

    def offer_replicas(self, RATE, BURST, SECONDS, lease=1, replicas=2):
        """`replicas` sluices sharing one global limit of RATE/s, offered
        2 x RATE in all, the same to each. Returns every call's Outcome, the
        admitted ones, the rejected ones, what one exact bucket admits of
        the replicas' arrivals, and the admitted count of each replica."""
        routes = f"""  - name: shared
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: hundred
        scope: global
        rate: {{per_second: {RATE}, burst: {BURST}}}
        global: {{lease: {lease}}}
"""
        logs = [os.path.join(harness.TMP, f"access-{time.monotonic_ns()}-{i}.jsonl")
                for i in range(replicas)]
        # A Redis timeout a busy machine cannot reach: three timeouts in a
        # row would put the limit in its documented fallback (admitting
        # more), which is not what this measures.
        stubs = [self.start_sluice(routes, access_log=log, timeout="2s")[1] for log in logs]
        # Open loop, 2x the limit, the same to each replica.
        outcomes, duration = offer_open_loop(self, stubs, 2.0 * RATE / replicas, SECONDS)
        ok = [o for o in outcomes if o.code == grpc.StatusCode.OK]
        rejected = [o for o in outcomes if o.code != grpc.StatusCode.OK]
        # offer_open_loop returns each stub's calls in turn, as many each.
        per = len(outcomes) // replicas
        admitted_each = [sum(o.code == grpc.StatusCode.OK for o in outcomes[k * per:(k + 1) * per])
                         for k in range(replicas)]
        offered = len(outcomes) / duration
        admitted = (len(ok) - BURST) / duration
        # What one exact bucket admits of the calls as the replicas took
        # them (their access logs, to the microsecond; Redis decides a few
        # milliseconds later): the reference that neither the clients'
        # stalls nor the replicas' own on a busy machine move, only Sluice's
        # errors. (The clients' send times are not: a stalled client's
        # calls reach Sluice spread out.)
        arrivals = harness.wait_until(
            lambda: (lambda t: t if len(t) >= len(outcomes) else None)(
                sorted(sum((access_log_times(log, UNARY) for log in logs), []))),
            timeout=20, what="every call in the access logs")
        expected = gcra_admits(arrivals, RATE, BURST)
        print(f"{replicas} replicas, lease {lease}: offered {offered:.0f}/s, admitted "
              f"{admitted:.2f}/s combined (limit {RATE}/s) over {duration:.2f}s; "
              f"{len(ok)} admitted ({', '.join(map(str, admitted_each))} per replica), "
              f"an exact bucket admits {expected} of the replicas' arrivals "
              f"({gcra_admits([o.sent for o in outcomes], RATE, BURST)} of the "
              f"clients' send times)")
        self.assertLess(expected, 0.8 * len(outcomes),
                        f"the clients offered only {offered:.0f}/s")
        return outcomes, ok, rejected, expected, admitted_each

    def assert_fair(self, admitted_each):
        # Equal replicas, equal load: each gets about 1/n of the total
        # (docs/limits-bench.md: within 1% measured). Half of that fair share
        # is a bound only a defect breaks: before reservations one of two
        # replicas got 4% of the total.
        total = sum(admitted_each)
        for n in admitted_each:
            self.assertGreaterEqual(n, total / len(admitted_each) / 2, admitted_each)

    def test_two_replicas_share_one_rate(self):
        RATE, BURST, SECONDS = 100, 10, 10.0
        outcomes, ok, rejected, expected, each = self.offer_replicas(RATE, BURST, SECONDS)
        # Redis decides when a call's request reaches it: milliseconds after
        # the send, a few tokens; a replica counting alone would admit twice.
        self.assertAlmostEqual(len(ok), expected, delta=0.05 * expected)
        self.assert_fair(each)
        for o in rejected:
            self.assertEqual(o.code, RE, o)
            self.assertEqual(o.reason, "rate_limited", o)
        for s in self.sluices:
            self.assertEqual(harness.metric(s, "sluice_limit_fallback_active"), 0)
            self.assertEqual(harness.metric(s, "sluice_redis_errors_total") or 0, 0)
            self.assertGreater(harness.metric(s, "sluice_redis_request_duration_seconds_count"), 0)

    def test_three_replicas_share_one_rate_fairly(self):
        RATE, BURST, SECONDS = 90, 9, 6.0
        outcomes, ok, rejected, expected, each = self.offer_replicas(
            RATE, BURST, SECONDS, replicas=3)
        self.assertAlmostEqual(len(ok), expected, delta=0.05 * expected)
        self.assert_fair(each)

    def test_leasing_at_saturation_stays_within_its_stated_cost(self):
        RATE, BURST, SECONDS, LEASE = 100, 10, 4.0, 10
        outcomes, ok, rejected, expected, each = self.offer_replicas(
            RATE, BURST, SECONDS, lease=LEASE)
        # Stated cost: up to LEASE-1 tokens per replica taken early (admitted
        # later, or never at the end of the run).
        slack = 2 * (LEASE - 1)
        self.assertGreaterEqual(len(ok), 0.95 * expected - slack)
        self.assertLessEqual(len(ok), 1.05 * expected + slack)
        self.assert_fair(each)
        round_trips = sum(harness.metric(s, "sluice_redis_request_duration_seconds_count")
                          for s in self.sluices)
        # At saturation a lease rarely finds more than one whole token, so it
        # saves few round trips here (bench/micro/global_limits_bench.cc
        # measures the unsaturated case); printed for the record.
        print(f"lease {LEASE}: {round_trips:.0f} Redis round trips for {len(outcomes)} calls")
        self.assertLessEqual(round_trips, len(outcomes))

    FALLBACK_ROUTES = "".join(f"""  - name: {mode}
    match: {{method: /grpc.testing.TestService/{method}}}
    upstream: demo
    limits:
      - name: g
        scope: global
        rate: {{per_second: 20, burst: 20}}
        global: {{fallback: {mode}, expected_replicas: 2}}
""" for mode, method in (("fail_open", "UnaryCall"), ("fail_closed", "EmptyCall"),
                         ("local", "StreamingOutputCall")))

    def burst(self, stub, mode, n):
        outcomes = []
        for _ in range(n):
            if mode == "fail_open":
                outcomes.append(call_unary(stub.UnaryCall, unary_req()))
            elif mode == "fail_closed":
                outcomes.append(call_unary(stub.EmptyCall, empty_pb2.Empty()))
            else:
                try:
                    call = stub.StreamingOutputCall(
                        messages_pb2.StreamingOutputCallRequest(), timeout=10)
                    for _ in call:
                        pass
                    outcomes.append(Outcome(call))
                except grpc.RpcError as e:
                    outcomes.append(Outcome(e))
        return outcomes

    def test_redis_killed_then_restarted(self):
        sluice, stub = self.start_sluice(self.FALLBACK_ROUTES)
        # Healthy: the global bucket (burst 20) admits 20 of 30.
        t = time.monotonic()
        before = self.burst(stub, "fail_open", 30)
        refill = int((time.monotonic() - t) * 20) + 1  # 20/s while the calls ran
        n_before = sum(o.code == grpc.StatusCode.OK for o in before)
        self.assertGreaterEqual(n_before, 20, before)
        self.assertLessEqual(n_before, 20 + refill, before)

        port = self.redis.port
        self.redis.stop()
        # Past the last rejection's retry-after (<= 50 ms at 20/s), which the
        # replica caches locally (Redis' answer stays true without Redis).
        time.sleep(0.2)
        results = {m: self.burst(stub, m, 30) for m in ("fail_open", "fail_closed")}
        t = time.monotonic()
        results["local"] = self.burst(stub, "local", 30)
        local_refill = int((time.monotonic() - t) * 10) + 1
        opened = results["fail_open"]
        self.assertTrue(all(o.code == grpc.StatusCode.OK for o in opened), opened)
        closed = results["fail_closed"]
        self.assertTrue(all(o.code == RE and o.reason == "rate_limited" for o in closed), closed)
        self.assertIn("redis", closed[-1].details)
        local = results["local"]
        n_local = sum(o.code == grpc.StatusCode.OK for o in local)
        # rate/expected_replicas: 10/s, burst 10, plus what refills meanwhile
        # (calls decided by failing Redis requests use the same local bucket).
        self.assertGreaterEqual(n_local, 10, local)
        self.assertLessEqual(n_local, 10 + local_refill, local)
        for o in local:
            if o.code != grpc.StatusCode.OK:
                self.assertEqual((o.code, o.reason), (RE, "rate_limited"))
        for mode in ("fail_open", "fail_closed", "local"):
            self.assertEqual(harness.metric(sluice, "sluice_limit_fallback_active",
                                            {"route": mode}), 1, mode)
        self.assertGreater(harness.metric(sluice, "sluice_redis_errors_total",
                                          {"kind": "connection"}), 0)
        self.assertIn("redis failing", sluice.output())

        # Redis back on the same port: the client reconnects, a probe call
        # succeeds and global enforcement resumes (fresh Redis: full bucket).
        self.redis = harness.RedisServer(port)

        def recovered():
            self.burst(stub, "fail_closed", 1)
            return harness.metric(sluice, "sluice_limit_fallback_active",
                                  {"route": "fail_closed"}) == 0
        harness.wait_until(recovered, timeout=15, interval=0.1, what="fallback left")
        self.assertIn("global enforcement resumed", sluice.output())
        time.sleep(1.2)  # let the bucket refill (20/s, burst 20)

        def open_recovered():
            self.burst(stub, "fail_open", 1)
            return harness.metric(sluice, "sluice_limit_fallback_active",
                                  {"route": "fail_open"}) == 0
        harness.wait_until(open_recovered, timeout=15, interval=0.1, what="fail_open left")
        time.sleep(1.2)
        t = time.monotonic()
        after = self.burst(stub, "fail_open", 30)
        refill = int((time.monotonic() - t) * 20) + 1
        n_after = sum(o.code == grpc.StatusCode.OK for o in after)
        self.assertGreaterEqual(n_after, 20, after)
        self.assertLessEqual(n_after, 20 + refill, after)
        self.assertTrue(any("exceeded" in o.details for o in after), after)

    def test_slow_redis_does_not_block_the_data_path(self):
        routes = f"""  - name: global
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: g
        scope: global
        rate: {{per_second: 1000, burst: 1000}}
        global: {{fallback: fail_open}}
"""
        # A Redis timeout of 2 s: a worker blocked on Redis would show as
        # seconds of latency on the other route, far above any scheduling
        # hiccup; a global call waiting without a bound would run into its
        # 10 s deadline.
        sluice, stub = self.start_sluice(routes, timeout="2s")
        for _ in range(5):
            self.assertEqual(call_unary(stub.UnaryCall, unary_req()).code, grpc.StatusCode.OK)
        self.redis.signal(signal.SIGSTOP)
        try:
            stop = threading.Event()
            global_latency = []

            def global_calls():
                while not stop.is_set():
                    t = time.monotonic()
                    o = call_unary(stub.UnaryCall, unary_req())
                    global_latency.append((time.monotonic() - t, o.code))

            th = threading.Thread(target=global_calls, daemon=True)
            th.start()
            other = []
            for _ in range(50):
                t = time.monotonic()
                o = call_unary(stub.EmptyCall, empty_pb2.Empty())  # route without limits
                other.append(time.monotonic() - t)
                self.assertEqual(o.code, grpc.StatusCode.OK)
                time.sleep(0.01)
            stop.set()
            th.join(timeout=10)
        finally:
            self.redis.signal(signal.SIGCONT)
        other.sort()
        print(f"slow redis: other route p50 {other[25]*1000:.1f} ms, max {other[-1]*1000:.1f} ms; "
              f"global route max {max(l for l, _ in global_latency)*1000:.1f} ms "
              f"over {len(global_latency)} calls")
        # Not one call of the route without global limits waited for Redis.
        self.assertLess(other[-1], 1.0, other)
        # Every global call got the fallback (fail_open) within the timeout
        # (2 s), not its deadline (10 s).
        self.assertTrue(all(c == grpc.StatusCode.OK for _, c in global_latency))
        self.assertLess(max(l for l, _ in global_latency), 2.0 + 3.0)
        self.assertGreater(harness.metric(sluice, "sluice_redis_errors_total",
                                          {"kind": "timeout"}), 0)


if __name__ == "__main__":
    harness.main()
