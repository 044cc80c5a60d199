"""/metrics after a known mix of calls, through the real sluice binary.

Checks the exact counts of the go-grpc-prometheus series (grpc_server_*,
grpc_client_* with the upstream label; grpc_type from the descriptor set),
Sluice's own rejections by route, limit and reason, the queue-wait
histogram, paced time, the bounded label set for unknown methods, and the
config hash and reload counters when the config file changes on disk.
"""

import os
import threading
import time
import unittest

import harness
import grpc
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

DESCRIPTORS = os.path.join(harness.ROOT, "deploy", "examples", "demo-descriptors.pb")
TS = "grpc.testing.TestService"


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
        messages: {{per_second: 400, burst: 1, mode: pace}}
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
        ticks = list(ticker_pb2_grpc.TickerStub(cls.ch).Subscribe(
            ticker_pb2.SubscribeRequest(count=40), timeout=10))
        assert len(ticks) == 40
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
        self.assertEqual(self.value("grpc_server_msg_sent_total", **tick), 40)

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
        # 40 ticks paced at 400/s with a burst of 1: about 0.1 s held back.
        paced = self.value("sluice_stream_paced_seconds_total", route="ticker",
                           direction="to_client")
        self.assertGreater(paced, 0.05)
        self.assertLess(paced, 5)
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


if __name__ == "__main__":
    harness.main()
