"""Shared by the limits e2e tests (limits_test.py,
limits_concurrency_test.py): a test base that starts one sluice per test in
front of one demo upstream per class, and small call helpers."""

import os
import signal
import threading
import time
import unittest

import harness
import grpc
from grpc.testing import messages_pb2, test_pb2_grpc
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc

RE = grpc.StatusCode.RESOURCE_EXHAUSTED
UNARY = "/grpc.testing.TestService/UnaryCall"
EMPTY = "/grpc.testing.TestService/EmptyCall"

ROUTES_TAIL = """
  - name: default
    match: {prefix: /}
    upstream: demo
"""


def config(routes, extra=""):
    return ("drain_timeout: 1s\n" + extra +
            "upstreams:\n  - name: demo\n    target: 127.0.0.1:1   # replaced by --upstream\n"
            "routes:\n" + routes + ROUTES_TAIL)


def access_log_times(path, method):
    """The start times (seconds since the epoch, microseconds) of the calls
    of `method` in Sluice's JSON access log at `path`: when Sluice took each
    call, which is when it decided its admission."""
    import datetime
    import json
    times = []
    if not os.path.exists(path):
        return times
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            entry = json.loads(line)
            if entry["method"] != method:
                continue
            t = datetime.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
            times.append(t.replace(tzinfo=datetime.timezone.utc).timestamp())
    return times


def unary_req():
    return messages_pb2.SimpleRequest(response_size=1)


class Outcome:
    """What one finished call looked like to the client."""

    def __init__(self, call):
        self.code = call.code()
        self.details = call.details() or ""
        self.initial = tuple(call.initial_metadata() or ())
        self.trailing = tuple(call.trailing_metadata() or ())
        self.reason = harness.trailer(self.trailing, "sluice-reason")

    def __repr__(self):
        return f"Outcome({self.code}, {self.details!r}, reason={self.reason!r})"


def call_unary(stub_method, request, metadata=None, timeout=10):
    """Runs one unary call; returns its Outcome (never raises RpcError)."""
    try:
        _, call = stub_method.with_call(request, metadata=metadata, timeout=timeout)
        return Outcome(call)
    except grpc.RpcError as e:
        return Outcome(e)


def offer_open_loop(test, stubs, rate, seconds):
    """Offers unary calls open loop, one thread per stub: call i of stub k is
    due at t0 + (i + k / len(stubs)) / rate, whatever became of the earlier
    ones; rate * seconds calls per stub (bounded). Returns the Outcome of
    every call (each with `.sent`, its send time on time.monotonic(), and
    `.done`, a time after it finished) and the
    time between the first and the last send."""
    per_thread = int(rate * seconds)
    futures = [[] for _ in stubs]
    sent = [[] for _ in stubs]
    t0 = time.monotonic() + 0.05

    def offer(k):
        for i in range(per_thread):
            delay = t0 + (i + k / len(stubs)) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent[k].append(time.monotonic())
            futures[k].append(stubs[k].UnaryCall.future(unary_req(), timeout=10))

    threads = [threading.Thread(target=offer, args=(k,), daemon=True)
               for k in range(len(stubs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 20)
        test.assertFalse(t.is_alive(), "load thread stuck")
    duration = max(s[-1] for s in sent) - min(s[0] for s in sent)
    outcomes = []
    for k, fs in enumerate(futures):
        for f, at in zip(fs, sent[k]):
            try:
                f.result(timeout=15)
            except grpc.RpcError:
                pass
            outcome = Outcome(f)
            outcome.sent = at
            outcome.done = time.monotonic()  # at the latest
            outcomes.append(outcome)
    return outcomes, duration


def gcra_admits(times, rate, burst):
    """How many of calls arriving at `times` (seconds) a token bucket of
    `rate`/s and `burst` admits, starting full: the exact GCRA that Sluice
    implements, run on the schedule the client really achieved. A client
    that stalls (a busy machine) and then catches up loses tokens in the
    model exactly as at the proxy, so comparing Sluice's count with this one
    tests Sluice, not the client's scheduling."""
    interval = 1.0 / rate
    tat = None
    admitted = 0
    for t in sorted(times):
        start = t if tat is None else max(tat, t)
        if start + interval - t <= burst * interval + 1e-9:
            tat = start + interval
            admitted += 1
    return admitted


class LimitsTestBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.stopping = []

    @classmethod
    def tearDownClass(cls):
        # Each test's sluice was sent SIGTERM in tearDown; its shutdown
        # (about 2 s) overlapped the next tests. Collect the exit codes now.
        try:
            for sluice in cls.stopping:
                try:
                    sluice.wait(timeout=30)
                finally:
                    rc = sluice.stop()  # no second signal once it has exited
                if rc != 0:
                    raise AssertionError(f"sluice exited {rc}:\n{sluice.output()[-4000:]}")
        finally:
            cls.upstream.stop()

    def start(self, routes, extra=""):
        self.config_path = harness.write_config(config(routes, extra))
        self.sluice = harness.start_sluice(config_path=self.config_path,
                                           upstream=self.upstream.address)
        self.ch = harness.channel(self.sluice.data)
        self.test = test_pb2_grpc.TestServiceStub(self.ch)
        self.admin_ch = harness.channel(self.sluice.admin)
        self.admin = admin_pb2_grpc.AdminStub(self.admin_ch)

    def tearDown(self):
        sluice = getattr(self, "sluice", None)
        if sluice is None:
            return
        try:
            if sluice.popen.poll() is None:
                harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0)
                harness.wait_for_metric(sluice, "sluice_limit_permits_in_use", 0.0)
                harness.wait_for_metric(sluice, "sluice_limit_queue_depth", 0.0)
        finally:
            self.ch.close()
            self.admin_ch.close()
            sluice.signal(signal.SIGTERM)
            self.stopping.append(sluice)

    def metric(self, name, **labels):
        return harness.metric(self.sluice, name, labels) or 0.0

    def decisions(self, route, limit, decision):
        return self.metric("sluice_limit_decisions_total", route=route, limit=limit,
                           decision=decision)

    def limit_status(self, route, name):
        for s in self.admin.ListLimits(admin_pb2.ListLimitsRequest(), timeout=10).limits:
            if s.route == route and s.name == name:
                return s
        self.fail(f"ListLimits has no {route}/{name}")

    def assert_rate_limited(self, o, limit, route):
        self.assertEqual(o.code, RE, o)
        self.assertEqual(o.reason, "rate_limited", o)
        self.assertIn(f'"{limit}"', o.details)
        self.assertIn(f'"{route}"', o.details)


def set_capacity(upstream_address, capacity, service_time_us=0):
    """The demo upstream's capacity mode (docs/limits.md): N calls at once
    in S each, slower beyond; applies to calls starting from now. Returns
    the CapacityState it answers."""
    from sluice.demo.v1 import capacity_pb2, capacity_pb2_grpc
    ch = harness.channel(upstream_address)
    try:
        return capacity_pb2_grpc.CapacityStub(ch).Set(
            capacity_pb2.SetCapacityRequest(capacity=capacity,
                                            service_time_us=service_time_us),
            timeout=10)
    finally:
        ch.close()


def get_capacity(upstream_address):
    from sluice.demo.v1 import capacity_pb2, capacity_pb2_grpc
    ch = harness.channel(upstream_address)
    try:
        return capacity_pb2_grpc.CapacityStub(ch).Get(capacity_pb2.GetCapacityRequest(),
                                                     timeout=10)
    finally:
        ch.close()
