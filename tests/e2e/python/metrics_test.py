"""/metrics through the real sluice binary.

At start-up, before any call: exactly the series the configuration makes
possible (docs/metrics.md, "Which series exist"), every one at 0, none
that cannot happen; a reload that adds a route and a limit adds theirs at 0.

After a known mix of calls: the exact counts of the go-grpc-prometheus
series (grpc_server_*, grpc_client_* with the upstream label; grpc_type
from the descriptor set), Sluice's own rejections by route, limit and
reason, the queue-wait histogram, paced time against the bounds the
configured rate sets, the bounded label set for unknown methods, and the
config hash and reload counters when the config file changes on disk.
"""

import os
import re
import threading
import time
import unittest

from google.protobuf import descriptor_pb2

import harness
import grpc
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

DESCRIPTORS = os.path.join(harness.ROOT, "deploy", "examples", "demo-descriptors.pb")
TS = "grpc.testing.TestService"
# The ticker route paces ticks to TICK_RATE/s with a burst of TICK_BURST; the
# mix reads TICKS of them.
TICK_RATE, TICK_BURST, TICKS = 50, 1, 10


def config_text(upstream, extra_route=""):
    return f"""
upstreams:
  - name: demo
    target: {upstream}
routes:
  - name: rated
    match: {{method: /{TS}/EmptyCall}}
    upstream: demo
    limits:
      - name: five
        rate: {{per_minute: 5, burst: 5}}
  - name: single
    match: {{method: /{TS}/StreamingInputCall}}
    upstream: demo
    limits:
      - name: one-at-a-time
        concurrency: {{max: 1, queue: 4, max_wait: 10s}}
  - name: testing
    match: {{prefix: /{TS}/}}
    upstream: demo
  - name: ticker
    match: {{prefix: /sluice.demo.v1.Ticker/}}
    upstream: demo
    limits:
      - name: pace
        messages: {{per_second: {TICK_RATE}, burst: {TICK_BURST}, mode: pace}}
{extra_route}
metrics:
  descriptor_sets: [{DESCRIPTORS}]
"""


def server_labels(method, type_, service=TS):
    return {"grpc_service": service, "grpc_method": method, "grpc_type": type_}


class MetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.config_path = harness.write_config(config_text(cls.upstream.address))
        cls.sluice = harness.start_sluice(cls.config_path)
        cls.ch = harness.channel(cls.sluice.data)
        cls.test = test_pb2_grpc.TestServiceStub(cls.ch)
        cls.run_mix()
        cls.text = harness.scrape(cls.sluice.metrics)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        cls.sluice.stop()
        cls.upstream.stop()

    @classmethod
    def run_mix(cls):
        t = cls.test
        for _ in range(7):
            t.UnaryCall(messages_pb2.SimpleRequest(response_size=10), timeout=10)
        for _ in range(4):
            with unittest.TestCase().assertRaises(grpc.RpcError) as e:
                t.UnaryCall(messages_pb2.SimpleRequest(
                    response_status=messages_pb2.EchoStatus(code=5, message="nope")),
                    timeout=10)
            assert e.exception.code() == grpc.StatusCode.NOT_FOUND
        cls.empty_codes = []
        for _ in range(8):
            try:
                t.EmptyCall(empty_pb2.Empty(), timeout=10)
                cls.empty_codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                cls.empty_codes.append(e.code())
        for _ in range(2):
            req = messages_pb2.StreamingOutputCallRequest(response_parameters=[
                messages_pb2.ResponseParameters(size=8) for _ in range(10)])
            assert len(list(t.StreamingOutputCall(req, timeout=10))) == 10
        # Two uploads at once under a concurrency limit of 1: one waits.
        gate = threading.Event()

        def upload(hold):
            def requests():
                for i in range(6):
                    if hold and i == 1:
                        gate.wait(10)
                    yield messages_pb2.StreamingInputCallRequest(
                        payload=messages_pb2.Payload(body=b"x" * 4))
            return t.StreamingInputCall(requests(), timeout=20)

        first = threading.Thread(target=upload, args=(True,), daemon=True)
        first.start()
        harness.wait_for_metric(cls.sluice, "sluice_limit_permits_in_use", 1,
                                {"limit": "one-at-a-time"})
        second_done = []
        second = threading.Thread(target=lambda: second_done.append(upload(False)),
                                  daemon=True)
        second.start()
        harness.wait_for_metric(cls.sluice, "sluice_limit_queue_depth", 1,
                                {"limit": "one-at-a-time"})
        gate.set()
        first.join(20)
        second.join(20)
        assert second_done, "queued upload did not finish"
        # Unknown methods: one no route matches, one the prefix route takes.
        for path in ["/foo.Bar/Baz", f"/{TS}/NoSuchMethod"]:
            call = cls.ch.unary_unary(path)
            with unittest.TestCase().assertRaises(grpc.RpcError) as e:
                call(b"", timeout=10)
            assert e.exception.code() == grpc.StatusCode.UNIMPLEMENTED
        # Each tick's arrival, in seconds after the call was started, and
        # the time its status came.
        start = time.monotonic()
        cls.tick_arrivals = [
            time.monotonic() - start
            for _ in ticker_pb2_grpc.TickerStub(cls.ch).Subscribe(
                ticker_pb2.SubscribeRequest(count=TICKS), timeout=10)]
        cls.tick_stream_seconds = time.monotonic() - start
        assert len(cls.tick_arrivals) == TICKS
        # Every call above is finished for its client; wait until Sluice has
        # counted the last of them (26 data-port calls in all).
        harness.wait_for_metric(cls.sluice, "grpc_server_handled_total", 26)

    def value(self, name, **labels):
        return harness.metric_value(self.text, name, labels) or 0.0

    def test_server_side_counts_per_method_and_code(self):
        unary = server_labels("UnaryCall", "unary")
        self.assertEqual(self.value("grpc_server_started_total", **unary), 11)
        self.assertEqual(self.value("grpc_server_handled_total", grpc_code="OK", **unary), 7)
        self.assertEqual(self.value("grpc_server_handled_total", grpc_code="NotFound", **unary), 4)
        self.assertEqual(self.value("grpc_server_handling_seconds_count", **unary), 11)
        self.assertEqual(self.value("grpc_server_msg_received_total", **unary), 7 + 4)
        self.assertEqual(self.value("grpc_server_msg_sent_total", **unary), 7)

        empty = server_labels("EmptyCall", "unary")
        self.assertEqual(self.empty_codes.count(grpc.StatusCode.OK), 5)
        self.assertEqual(self.value("grpc_server_started_total", **empty), 8)
        self.assertEqual(self.value("grpc_server_handled_total", grpc_code="OK", **empty), 5)
        self.assertEqual(self.value("grpc_server_handled_total",
                                    grpc_code="ResourceExhausted", **empty), 3)

        out = server_labels("StreamingOutputCall", "server_stream")
        self.assertEqual(self.value("grpc_server_msg_sent_total", **out), 20)
        self.assertEqual(self.value("grpc_server_msg_received_total", **out), 2)
        upload = server_labels("StreamingInputCall", "client_stream")
        self.assertEqual(self.value("grpc_server_msg_received_total", **upload), 12)
        self.assertEqual(self.value("grpc_server_handled_total", grpc_code="OK", **upload), 2)
        tick = server_labels("Subscribe", "server_stream", service="sluice.demo.v1.Ticker")
        self.assertEqual(self.value("grpc_server_msg_sent_total", **tick), TICKS)

    def test_client_side_counts_only_calls_that_reached_the_upstream(self):
        empty = dict(server_labels("EmptyCall", "unary"), upstream="demo")
        self.assertEqual(self.value("grpc_client_started_total", **empty), 5)
        self.assertEqual(self.value("grpc_client_handled_total", grpc_code="OK", **empty), 5)
        self.assertEqual(self.value("grpc_client_handled_total",
                                    grpc_code="ResourceExhausted", **empty), 0)
        unary = dict(server_labels("UnaryCall", "unary"), upstream="demo")
        self.assertEqual(self.value("grpc_client_handled_total", grpc_code="NotFound", **unary), 4)
        self.assertEqual(self.value("grpc_client_handling_seconds_count", **unary), 11)
        out = dict(server_labels("StreamingOutputCall", "server_stream"), upstream="demo")
        self.assertEqual(self.value("grpc_client_msg_received_total", **out), 20)
        self.assertEqual(self.value("grpc_client_msg_sent_total", **out), 2)
        upload = dict(server_labels("StreamingInputCall", "client_stream"), upstream="demo")
        self.assertEqual(self.value("grpc_client_msg_sent_total", **upload), 12)

    def test_unknown_methods_collapse_into_other(self):
        other = {"grpc_service": "other", "grpc_method": "other", "grpc_type": "unknown"}
        self.assertEqual(self.value("grpc_server_started_total", **other), 2)
        self.assertEqual(self.value("grpc_server_handled_total", grpc_code="Unimplemented",
                                    **other), 2)
        # Only the one a route took reached the upstream.
        self.assertEqual(self.value("grpc_client_handled_total", grpc_code="Unimplemented",
                                    upstream="demo", **other), 1)
        for line in self.text.splitlines():
            self.assertNotIn("NoSuchMethod", line)
            self.assertNotIn("foo.Bar", line)

    def test_sluice_rejections_by_route_limit_and_reason(self):
        self.assertEqual(self.value("sluice_rejections_total", route="rated", limit="five",
                                    reason="rate_limited"), 3)
        self.assertEqual(self.value("sluice_rejections_total", route="none", limit="",
                                    reason="no_route"), 1)
        self.assertEqual(self.value("sluice_rejections_total"), 4)
        self.assertEqual(self.value("sluice_calls_handled_total", route="rated",
                                    grpc_code="ResourceExhausted"), 3)

    def test_queue_wait_and_paced_time(self):
        labels = {"route": "single", "limit": "one-at-a-time"}
        self.assertEqual(self.value("sluice_queue_wait_seconds_count", **labels), 1)
        self.assertGreater(self.value("sluice_queue_wait_seconds_sum", **labels), 0)
        # The upstream sends its ticks at once; Sluice reads tick k only when
        # its token is due, so (GCRA, bucket full when the stream starts)
        # tick k reaches the client no sooner than (k - burst) / rate after
        # the call started. Exact: only a pacing defect arrives earlier.
        for k, arrival in enumerate(self.tick_arrivals, start=1):
            self.assertGreaterEqual(arrival, max(0, k - TICK_BURST) / TICK_RATE,
                                    f"tick {k} of {TICKS} at {TICK_RATE}/s, burst {TICK_BURST}")
        # The paced time is the part of those waits a read spent held back
        # by a timer. The stream's own work between two timers (a read, a
        # write) lets tokens come due too and is not counted, so a slow
        # scheduler shrinks the paced time without bound: no lower bound
        # derived from the rate holds for it (about TICKS / rate here, the
        # read that finds the stream's end waiting for a token too). It is
        # > 0 unless each of the reads after the burst took a whole token
        # period (20 ms) of such work, and it cannot exceed the stream's
        # time as the client saw it.
        paced = self.value("sluice_stream_paced_seconds_total", route="ticker",
                           direction="to_client")
        print(f"\nticker: last tick at {self.tick_arrivals[-1]:.4f}s (bound "
              f"{(TICKS - TICK_BURST) / TICK_RATE:.4f}s), {paced:.4f}s paced of a "
              f"{self.tick_stream_seconds:.4f}s stream")
        self.assertGreater(paced, 0)
        self.assertLessEqual(paced, self.tick_stream_seconds)
        self.assertEqual(self.value("sluice_calls_in_flight"), 0)
        self.assertEqual(self.value("sluice_limit_permits_in_use"), 0)

    def test_config_hash_and_reload_when_the_file_changes(self):
        admin = admin_pb2_grpc.AdminStub(harness.channel(self.sluice.admin))
        before = admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=10).config_hash
        self.assertEqual(harness.metric(self.sluice, "sluice_config_info", {"hash": before}), 1)
        # A good edit, written in place: the daemon notices and reloads.
        with open(self.config_path, "w") as f:
            f.write(config_text(self.upstream.address, extra_route="""
  - name: extra
    match: {prefix: /extra.v1.Service/}
    upstream: demo
"""))
        harness.wait_for_metric(self.sluice, "sluice_config_reloads_total", 1,
                                {"result": "ok"})
        after = admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=10).config_hash
        self.assertNotEqual(after, before)
        self.assertEqual(harness.metric(self.sluice, "sluice_config_info", {"hash": after}), 1)
        self.assertIsNone(harness.metric(self.sluice, "sluice_config_info", {"hash": before}))
        # A bad edit: counted, logged with the field, old config kept.
        with open(self.config_path, "w") as f:
            f.write(config_text(self.upstream.address).replace("per_minute: 5", "per_minute: -5"))
        harness.wait_for_metric(self.sluice, "sluice_config_reloads_total", 1,
                                {"result": "failed"})
        self.assertEqual(admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=10).config_hash,
                         after)
        harness.wait_until(lambda: "routes[0].limits[0].rate.per_minute" in self.sluice.output(),
                           what="the reload error in the log")
        self.test.UnaryCall(messages_pb2.SimpleRequest(), timeout=10)


# ---- start-up: exactly the possible series, at 0 ----

GO_CODES = ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
            "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
            "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
            "Unauthenticated"]
# Families the daemon (not server/metrics) exports; their values are not 0.
# (The state gauges' series are checked in health_test and overload_test.)
DAEMON_FAMILIES = {"sluice_config_info", "sluice_build_info",
                   "sluice_config_last_reload_success_timestamp_seconds",
                   "sluice_config_reloads_total", "sluice_ready",
                   "sluice_upstream_serving", "sluice_resident_memory_bytes",
                   "sluice_memory_ceiling_bytes",
                   # Per upstream, what its reflection gave (reflection_shapes_test).
                   "sluice_upstream_reflected_methods"}


def startup_config(upstream, extra_route=""):
    """Every kind of limit, a route with an idle timeout, an upstream used
    by an exact route only and one no route uses; no Redis, no access log."""
    return f"""
upstreams:
  - name: demo
    target: {upstream}
  - name: spare
    target: {upstream}
  - name: unused
    target: {upstream}
routes:
  - name: rated
    match: {{method: /{TS}/EmptyCall}}
    upstream: spare
    limits:
      - name: five
        rate: {{per_minute: 5}}
        key: [peer]
  - name: single
    match: {{method: /{TS}/StreamingInputCall}}
    upstream: demo
    limits:
      - name: one
        concurrency: {{max: 1, queue: 0}}
  - name: shadow
    match: {{method: /{TS}/UnaryCall}}
    upstream: demo
    limits:
      - name: would
        rate: {{per_second: 1}}
        concurrency: {{max: 1, queue: 2}}
        dry_run: true
  - name: strict
    match: {{method: /{TS}/FullDuplexCall}}
    upstream: demo
    limits:
      - name: per-stream
        messages: {{per_second: 10, mode: reject, client_to_upstream: true}}
  - name: testing
    match: {{prefix: /{TS}/}}
    upstream: demo
    deadline: {{stream_idle_timeout: 30s}}
  - name: ticker
    match: {{prefix: /sluice.demo.v1.Ticker/}}
    upstream: demo
    limits:
      - name: pace
        messages: {{per_second: 100, mode: pace}}
{extra_route}
metrics:
  descriptor_sets: [{DESCRIPTORS}]
"""


# The route of each routed service/method of the descriptor set, as
# startup_config routes them: upstream by method path.
STARTUP_UPSTREAMS = {f"/{TS}/EmptyCall": "spare"}
STARTUP_PREFIXES = {f"/{TS}/": "demo", "/sluice.demo.v1.Ticker/": "demo"}


def descriptor_methods():
    """(path, service, method, grpc_type) of every method of the descriptor
    set (what Sluice labels them with)."""
    fds = descriptor_pb2.FileDescriptorSet()
    with open(DESCRIPTORS, "rb") as f:
        fds.ParseFromString(f.read())
    out = []
    for file in fds.file:
        for service in file.service:
            full = f"{file.package}.{service.name}" if file.package else service.name
            for m in service.method:
                type_ = {(False, False): "unary", (True, False): "client_stream",
                         (False, True): "server_stream", (True, True): "bidi_stream"}[
                    (m.client_streaming, m.server_streaming)]
                out.append((f"/{full}/{m.name}", full, m.name, type_))
    return out


def parse_series(text, prefixes=("sluice_", "grpc_")):
    """{(name, frozenset(labels)): value} of a Prometheus text scrape; a
    histogram is its _count sample under the histogram's name (its buckets
    and sum come with it)."""
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        assert m, line
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if not name.startswith(prefixes):
            continue
        pairs = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
        if name.endswith(("_bucket", "_sum")):
            continue
        if name.endswith("_count"):
            name = name[:-len("_count")]
        series[(name, frozenset(pairs.items()))] = value
    return series


def sid(name, **labels):
    """A series' identity in parse_series()."""
    return (name, frozenset(labels.items()))


def show(keys, limit=40):
    """Series identities as Prometheus text, one a line (the first `limit`)."""
    lines = sorted(name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}"
                   for name, labels in keys)
    more = [f"... and {len(lines) - limit} more"] if len(lines) > limit else []
    return "\n" + "\n".join(lines[:limit] + more)


def method_series(side, routed, **labels):
    p = f"grpc_{side}_"
    out = [sid(p + "started_total", **labels), sid(p + "handling_seconds", **labels)]
    if routed:
        out += [sid(p + "msg_received_total", **labels), sid(p + "msg_sent_total", **labels)]
        out += [sid(p + "handled_total", grpc_code=c, **labels) for c in GO_CODES]
    else:
        out += [sid(p + "handled_total", grpc_code="Unimplemented", **labels)]
    return out


def route_series(route, idle=False, paced=(), limits=()):
    """Sluice's series of a route; `limits`: (limit, [reasons], queue_wait)."""
    out = [sid("sluice_calls_handled_total", route=route, grpc_code=c) for c in GO_CODES]
    out += [sid(n, route=route) for n in ("sluice_call_duration_seconds",
                                         "sluice_client_cancels_total",
                                         "sluice_msg_received_total",
                                         "sluice_msg_sent_total",
                                         "sluice_route_open_calls")]
    out += [sid("sluice_stream_backpressure_seconds_total", route=route, direction=d)
            for d in ("to_upstream", "to_client")]
    out += [sid("sluice_stream_paced_seconds_total", route=route, direction=d) for d in paced]
    reasons = ["deadline_budget", "draining", "early_cancels", "header_too_large",
               "upstream_unavailable"] + \
        (["idle_timeout"] if idle else [])
    out += [sid("sluice_rejections_total", route=route, limit="", reason=r) for r in reasons]
    for limit, limit_reasons, queue_wait in limits:
        out += [sid("sluice_rejections_total", route=route, limit=limit, reason=r)
                for r in limit_reasons]
        if queue_wait:
            out.append(sid("sluice_queue_wait_seconds", route=route, limit=limit))
    return out


def limit_series(route, limit, decisions, gauges=()):
    return ([sid("sluice_limit_decisions_total", route=route, limit=limit, decision=d)
             for d in decisions] +
            [sid(g, route=route, limit=limit) for g in gauges])


def startup_expected(extra=False):
    """Every series startup_config (with the extra route of the reload when
    `extra`) makes possible, except the daemon's own families."""
    prefixes = dict(STARTUP_PREFIXES)
    if extra:
        prefixes["/extra.v1.Service/"] = "spare"
    # The flood counter exists while the early-cancel defence is on (the
    # default).
    out = [sid("sluice_calls_in_flight"), sid("sluice_flood_connections_closed_total")]
    for path, service, method, type_ in descriptor_methods():
        labels = dict(grpc_service=service, grpc_method=method, grpc_type=type_)
        upstream = STARTUP_UPSTREAMS.get(path) or next(
            (u for p, u in prefixes.items() if path.startswith(p)), None)
        out += method_series("server", upstream is not None, **labels)
        if upstream:
            out += method_series("client", True, upstream=upstream, **labels)
    other = dict(grpc_service="other", grpc_method="other", grpc_type="unknown")
    out += method_series("server", True, **other)
    # Only prefix routes take methods the config does not know.
    for upstream in sorted(set(prefixes.values())):
        out += method_series("client", True, upstream=upstream, **other)
    out += [sid("sluice_calls_handled_total", route="none", grpc_code="Unimplemented"),
            sid("sluice_rejections_total", route="none", limit="", reason="no_route"),
            sid("sluice_route_open_calls", route="none"),
            sid("sluice_call_duration_seconds", route="none")]
    out += route_series("rated", limits=[("five", ["rate_limited"], False)])
    out += limit_series("rated", "five", ["admitted", "rejected"],
                        ["sluice_limit_keys", "sluice_limit_key_overflow_total"])
    # queue: 0 queues once the admin API gives it a queue.
    out += route_series("single", limits=[
        ("one", ["concurrency_limited", "queue_timeout"], True)])
    out += limit_series("single", "one", ["admitted", "rejected", "queued"],
                        ["sluice_limit_permits_in_use", "sluice_limit_queue_depth"])
    out += route_series("shadow", limits=[("would", [], False)])
    out += limit_series("shadow", "would", ["admitted", "dry_run_rejected"],
                        ["sluice_limit_permits_in_use"])
    out += route_series("strict", limits=[("per-stream", ["stream_rate"], False)])
    out += limit_series("strict", "per-stream", ["rejected"])
    out += route_series("testing", idle=True)
    out += route_series("ticker", paced=["to_client"], limits=[("pace", [], False)])
    if extra:
        out += route_series("extra", limits=[("burst", ["rate_limited"], False)])
        out += limit_series("extra", "burst", ["admitted", "rejected"])
    assert len(out) == len(set(out)), "a series listed twice"
    return set(out)


class StartupSeriesTest(unittest.TestCase):
    longMessage = False  # our messages list the series; not the whole scrape

    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.config_path = harness.write_config(startup_config(cls.upstream.address))
        cls.sluice = harness.start_sluice(cls.config_path)
        # Scraped before any call reaches the data port.
        cls.startup = parse_series(harness.scrape(cls.sluice.metrics))

    @classmethod
    def tearDownClass(cls):
        cls.sluice.stop()
        cls.upstream.stop()

    def check_exactly(self, series, expected):
        mine = {k: v for k, v in series.items() if k[0] not in DAEMON_FAMILIES}
        missing = expected - set(mine)
        extra = set(mine) - expected
        self.assertFalse(missing, "possible series missing:" + show(missing))
        self.assertFalse(extra, "impossible series exported:" + show(extra))
        not_zero = {k for k, v in mine.items() if v != 0}
        self.assertFalse(not_zero, "series not at 0 before any call:" + show(not_zero))

    def test_every_possible_series_at_zero_and_no_impossible_one(self):
        self.check_exactly(self.startup, startup_expected())
        for name in DAEMON_FAMILIES - {"sluice_config_reloads_total"}:
            self.assertTrue(any(k[0] == name for k in self.startup), name)
        self.assertEqual(self.startup[sid("sluice_config_reloads_total", result="ok")], 0)
        self.assertEqual(self.startup[sid("sluice_config_reloads_total", result="failed")], 0)

    def test_the_impossible_series_the_issue_names(self):
        def absent(key):
            self.assertNotIn(key, self.startup, "exported:" + show([key]))
        names = {k[0] for k in self.startup}
        # A pace-mode message limit never rejects, a reject-mode one never paces.
        absent(sid("sluice_rejections_total", route="ticker", limit="pace",
                   reason="stream_rate"))
        self.assertEqual(self.startup.get(sid("sluice_rejections_total", route="strict",
                                              limit="per-stream", reason="stream_rate")), 0)
        absent(sid("sluice_stream_paced_seconds_total", route="strict", direction="to_client"))
        # A concurrency limit never rate-limits; a named route never misses.
        absent(sid("sluice_rejections_total", route="single", limit="one",
                   reason="rate_limited"))
        absent(sid("sluice_rejections_total", route="testing", limit="", reason="no_route"))
        # No Redis configured: no Redis series, no fallback gauge; no access
        # log: no drop counter.
        for name in ("sluice_redis_errors_total", "sluice_redis_request_duration_seconds",
                     "sluice_limit_fallback_active", "sluice_access_log_dropped_total"):
            self.assertNotIn(name, names)
        # An upstream only exact routes use never gets "other" methods, and
        # one no route uses gets no call series (only its serving status,
        # which the admin health reports for every upstream, and what its
        # reflection gave).
        absent(sid("grpc_client_started_total", grpc_service="other", grpc_method="other",
                   grpc_type="unknown", upstream="spare"))
        self.assertEqual([k for k in self.startup if ("upstream", "unused") in k[1]
                          and k[0] not in ("sluice_upstream_serving",
                                           "sluice_upstream_reflected_methods")], [])
        self.assertIn(sid("sluice_upstream_serving", upstream="unused"), self.startup)

    def test_a_reload_adds_its_route_and_limit_at_zero(self):
        with open(self.config_path, "w") as f:
            f.write(startup_config(self.upstream.address, extra_route="""
  - name: extra
    match: {prefix: /extra.v1.Service/}
    upstream: spare
    limits:
      - name: burst
        rate: {per_second: 1}
"""))
        harness.wait_for_metric(self.sluice, "sluice_config_reloads_total", 1,
                                {"result": "ok"})
        self.check_exactly(parse_series(harness.scrape(self.sluice.metrics)),
                           startup_expected(extra=True))


if __name__ == "__main__":
    harness.main()
