"""gRPC's interop test cases (grpc/doc/interop-test-descriptions.md), run from
Python through the real sluice binary in front of the demo upstream, plus the
calls Sluice itself ends: no_route, deadline_budget and idle_timeout.

Every test ends with sluice_calls_in_flight back at 0, so each test starts
with the counters of the previous ones settled.
"""

import queue
import threading
import time
import unittest
from concurrent import futures

import harness
import grpc
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

TIMEOUT = 10  # seconds: the client deadline of every call meant to succeed
ECHO_INITIAL = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
ECHO_TRAILING = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
PROBE_METHOD = "/sluice.e2e.Probe/Budget"


def zeros(n):
    return messages_pb2.Payload(body=b"\0" * n)


def streaming_request(size, body=None, status=None):
    req = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=size)] if size is not None else [])
    if body is not None:
        req.payload.CopyFrom(zeros(body))
    if status is not None:
        req.response_status.CopyFrom(messages_pb2.EchoStatus(code=status[0], message=status[1]))
    return req


class Requests:
    """A request iterator the test feeds one message at a time. It ends on
    close(), or by itself after `timeout` seconds so no thread is left
    waiting on it forever."""

    _END = object()

    def __init__(self, timeout=30.0):
        self._queue = queue.Queue()
        self._deadline = time.monotonic() + timeout

    def put(self, message):
        self._queue.put(message)

    def close(self):
        self._queue.put(self._END)

    def __iter__(self):
        return self

    def __next__(self):
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise StopIteration
        try:
            message = self._queue.get(timeout=remaining)
        except queue.Empty:
            raise StopIteration
        if message is self._END:
            raise StopIteration
        return message


class Probe:
    """An in-process gRPC server that answers any method with an empty
    message and counts the calls it sees: an upstream that tells whether
    Sluice forwarded a call."""

    def __init__(self):
        self.calls = 0
        self._lock = threading.Lock()
        probe = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                with probe._lock:
                    probe.calls += 1
                return grpc.unary_unary_rpc_method_handler(lambda request, context: b"")

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((Handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def count(self):
        with self._lock:
            return self.calls

    def stop(self):
        self.server.stop(grace=None).wait(timeout=10)


CONFIG = """
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
  - name: probe
    target: 127.0.0.1:{probe_port}
routes:
  - name: budget
    match: {{prefix: /sluice.e2e.Probe/}}
    upstream: probe
    deadline: {{min_budget: 50ms}}
  - name: ticker
    match: {{prefix: /sluice.demo.v1.Ticker/}}
    upstream: demo
    deadline: {{stream_idle_timeout: 300ms}}
  - name: testing
    match: {{prefix: /grpc.testing.TestService/}}
    upstream: demo
  - name: unimplemented_service
    match: {{prefix: /grpc.testing.UnimplementedService/}}
    upstream: demo
"""


class InteropThroughSluiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.probe = Probe()
        cls.upstream = harness.start_upstream()
        try:
            cls.sluice = harness.start_sluice(
                config_path=harness.write_config(CONFIG.format(probe_port=cls.probe.port)),
                upstream=cls.upstream.address)
        except Exception:
            cls.upstream.stop()
            cls.probe.stop()
            raise
        cls.ch = harness.channel(cls.sluice.data)
        cls.stub = test_pb2_grpc.TestServiceStub(cls.ch)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        cls.sluice.stop()
        cls.upstream.stop()
        cls.probe.stop()

    def tearDown(self):
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)

    def metric(self, name, **labels):
        return harness.metric(self.sluice, name, labels) or 0.0

    # ---- the interop cases ----

    def test_empty_unary(self):
        resp = self.stub.EmptyCall(empty_pb2.Empty(), timeout=TIMEOUT)
        self.assertIsInstance(resp, empty_pb2.Empty)
        self.assertEqual(resp.ByteSize(), 0)

    def test_large_unary(self):
        resp = self.stub.UnaryCall(
            messages_pb2.SimpleRequest(response_size=314159, payload=zeros(271828)),
            timeout=TIMEOUT)
        self.assertEqual(resp.payload.body, b"\0" * 314159)

    def test_client_streaming(self):
        reqs = [messages_pb2.StreamingInputCallRequest(payload=zeros(n))
                for n in (27182, 8, 1828, 45904)]
        resp = self.stub.StreamingInputCall(iter(reqs), timeout=TIMEOUT)
        self.assertEqual(resp.aggregated_payload_size, 74922)

    def test_server_streaming(self):
        sizes = [31415, 9, 2653, 58979]
        req = messages_pb2.StreamingOutputCallRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=s) for s in sizes])
        call = self.stub.StreamingOutputCall(req, timeout=TIMEOUT)
        got = [len(r.payload.body) for r in call]
        self.assertEqual(got, sizes)
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_ping_pong(self):
        requests = Requests()
        call = self.stub.FullDuplexCall(requests, timeout=TIMEOUT)
        try:
            got = []
            for size, body in ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904)):
                requests.put(streaming_request(size, body))
                got.append(len(next(call).payload.body))  # the reply comes before the next ping
            requests.close()
            self.assertEqual(list(call), [])
            self.assertEqual(got, [31415, 9, 2653, 58979])
            self.assertEqual(call.code(), grpc.StatusCode.OK)
        finally:
            requests.close()

    def test_empty_stream(self):
        call = self.stub.FullDuplexCall(iter([]), timeout=TIMEOUT)
        self.assertEqual(list(call), [])
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_cancel_after_begin(self):
        requests = Requests()
        try:
            fut = self.stub.StreamingInputCall.future(requests, timeout=TIMEOUT)
            fut.cancel()
            self.assertTrue(fut.cancelled())
            self.assertEqual(fut.code(), grpc.StatusCode.CANCELLED)
        finally:
            requests.close()

    def test_cancel_after_first_response(self):
        cancels = self.metric("sluice_client_cancels_total", route="testing")
        requests = Requests()
        try:
            call = self.stub.FullDuplexCall(requests, timeout=TIMEOUT)
            requests.put(streaming_request(31415, 27182))
            self.assertEqual(len(next(call).payload.body), 31415)
            call.cancel()
            with self.assertRaises(grpc.RpcError) as e:
                next(call)
            self.assertEqual(e.exception.code(), grpc.StatusCode.CANCELLED)
            self.assertEqual(call.code(), grpc.StatusCode.CANCELLED)
        finally:
            requests.close()
        # Sluice saw the cancel (and freed the call: tearDown).
        harness.wait_for_metric(self.sluice, "sluice_client_cancels_total", cancels + 1,
                                {"route": "testing"})

    def test_timeout_on_sleeping_server(self):
        requests = Requests()
        try:
            requests.put(streaming_request(None, 27182))
            call = self.stub.FullDuplexCall(requests, timeout=0.001)
            with self.assertRaises(grpc.RpcError) as e:
                list(call)
            self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        finally:
            requests.close()

    def test_custom_metadata_unary(self):
        resp, call = self.stub.UnaryCall.with_call(
            messages_pb2.SimpleRequest(response_size=314159, payload=zeros(271828)),
            metadata=[ECHO_INITIAL, ECHO_TRAILING], timeout=TIMEOUT)
        self.assertEqual(len(resp.payload.body), 314159)
        self.assertEqual(harness.trailer(call.initial_metadata(), ECHO_INITIAL[0]), ECHO_INITIAL[1])
        self.assertEqual(harness.trailer(call.trailing_metadata(), ECHO_TRAILING[0]), ECHO_TRAILING[1])

    def test_custom_metadata_full_duplex(self):
        call = self.stub.FullDuplexCall(iter([streaming_request(314159, 271828)]),
                                        metadata=[ECHO_INITIAL, ECHO_TRAILING], timeout=TIMEOUT)
        self.assertEqual(harness.trailer(call.initial_metadata(), ECHO_INITIAL[0]), ECHO_INITIAL[1])
        self.assertEqual([len(r.payload.body) for r in call], [314159])
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        self.assertEqual(harness.trailer(call.trailing_metadata(), ECHO_TRAILING[0]), ECHO_TRAILING[1])

    def assert_status(self, err, code, message):
        self.assertEqual(err.code(), code)
        self.assertEqual(err.details(), message)
        self.assertIsNone(harness.trailer(err.trailing_metadata(), "sluice-reason"),
                          "the upstream's status, not Sluice's")

    def test_status_code_and_message_unary(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.UnaryCall(messages_pb2.SimpleRequest(
                response_status=messages_pb2.EchoStatus(code=2, message="test status message")),
                timeout=TIMEOUT)
        self.assert_status(e.exception, grpc.StatusCode.UNKNOWN, "test status message")

    def test_status_code_and_message_full_duplex(self):
        call = self.stub.FullDuplexCall(
            iter([streaming_request(None, status=(2, "test status message"))]), timeout=TIMEOUT)
        with self.assertRaises(grpc.RpcError) as e:
            list(call)
        self.assert_status(e.exception, grpc.StatusCode.UNKNOWN, "test status message")

    def test_special_status_message(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.UnaryCall(messages_pb2.SimpleRequest(
                response_status=messages_pb2.EchoStatus(code=2, message=SPECIAL_MESSAGE)),
                timeout=TIMEOUT)
        self.assert_status(e.exception, grpc.StatusCode.UNKNOWN, SPECIAL_MESSAGE)

    def test_unimplemented_method(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.UnimplementedCall(empty_pb2.Empty(), timeout=TIMEOUT)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertIsNone(harness.trailer(e.exception.trailing_metadata(), "sluice-reason"))

    def test_unimplemented_service(self):
        stub = test_pb2_grpc.UnimplementedServiceStub(self.ch)
        with self.assertRaises(grpc.RpcError) as e:
            stub.UnimplementedCall(empty_pb2.Empty(), timeout=TIMEOUT)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        # The upstream said so (the route exists), not Sluice.
        self.assertIsNone(harness.trailer(e.exception.trailing_metadata(), "sluice-reason"))
        # Counted once the status is sent, which may be just after the client saw it.
        harness.wait_for_metric(self.sluice, "sluice_calls_handled_total", 1.0,
                                {"route": "unimplemented_service", "grpc_code": "Unimplemented"})

    # ---- calls Sluice itself ends ----

    def test_deadline_budget_rejects_without_calling_upstream(self):
        call_probe = self.ch.unary_unary(PROBE_METHOD)
        before = self.probe.count()
        with self.assertRaises(grpc.RpcError) as e:
            call_probe(b"", timeout=0.010)  # 10ms < the route's min_budget of 50ms
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(harness.trailer(e.exception.trailing_metadata(), "sluice-reason"),
                         "deadline_budget", e.exception.details())
        self.assertEqual(self.metric("sluice_rejections_total", route="budget",
                                     reason="deadline_budget"), 1.0)
        self.assertEqual(self.probe.count(), before, "the upstream saw the rejected call")
        # Control: with enough budget the same route does reach the probe.
        self.assertEqual(call_probe(b"", timeout=TIMEOUT), b"")
        self.assertEqual(self.probe.count(), before + 1)

    def test_idle_stream_times_out(self):
        ticker = ticker_pb2_grpc.TickerStub(self.ch)
        start = time.monotonic()
        call = ticker.Subscribe(ticker_pb2.SubscribeRequest(count=0, interval_ms=10000), timeout=5)
        with self.assertRaises(grpc.RpcError) as e:
            list(call)
        elapsed = time.monotonic() - start
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e.exception.details())
        self.assertEqual(harness.trailer(e.exception.trailing_metadata(), "sluice-reason"),
                         "idle_timeout")
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 3.0)
        self.assertEqual(self.metric("sluice_rejections_total", route="ticker",
                                     reason="idle_timeout"), 1.0)

    def test_active_stream_outlives_idle_timeout(self):
        # A tick every 50ms for 0.75s: never idle for 300ms, so never ended.
        ticker = ticker_pb2_grpc.TickerStub(self.ch)
        ticks = list(ticker.Subscribe(ticker_pb2.SubscribeRequest(count=15, interval_ms=50),
                                      timeout=TIMEOUT))
        self.assertEqual([t.seq for t in ticks], list(range(1, 16)))


class NoRouteTest(unittest.TestCase):
    def test_unrouted_method_is_unimplemented_with_no_route(self):
        upstream = harness.start_upstream()
        try:
            sluice = harness.start_sluice(
                config_path=harness.write_config(
                    "upstreams:\n  - name: demo\n    target: 127.0.0.1:1\n"
                    "routes:\n  - name: testing\n"
                    "    match: {prefix: /grpc.testing.TestService/}\n"
                    "    upstream: demo\n"),
                upstream=upstream.address)
            try:
                ch = harness.channel(sluice.data)
                # The upstream implements Ticker; only Sluice can say UNIMPLEMENTED.
                call = ticker_pb2_grpc.TickerStub(ch).Subscribe(
                    ticker_pb2.SubscribeRequest(count=1), timeout=TIMEOUT)
                with self.assertRaises(grpc.RpcError) as e:
                    list(call)
                self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
                self.assertEqual(harness.trailer(e.exception.trailing_metadata(), "sluice-reason"),
                                 "no_route")
                self.assertIn("/sluice.demo.v1.Ticker/Subscribe", e.exception.details())
                # The routed service still works through the same sluice.
                test_pb2_grpc.TestServiceStub(ch).EmptyCall(empty_pb2.Empty(), timeout=TIMEOUT)
                self.assertEqual(harness.metric(sluice, "sluice_rejections_total",
                                                {"route": "none", "reason": "no_route"}), 1.0)
                ch.close()
                harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0)
            finally:
                self.assertEqual(sluice.stop(), 0, sluice.output())
        finally:
            upstream.stop()


class UpstreamCallStillStartingTest(unittest.TestCase):
    """A request message that reaches Sluice before the upstream call's start
    (its initial metadata) has completed. The upstream here allows one
    concurrent stream, so while one call holds it the next call's start
    waits for HTTP/2 concurrency; the client's message arrives meanwhile and
    must wait too, not be written on top of the pending start."""

    def test_request_arrives_while_upstream_call_is_still_starting(self):
        release = threading.Event()
        seen = []

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                seen.append(details.method)
                if details.method.endswith("/Hold"):
                    def hold(request, context):
                        release.wait(10)
                        return b"held"
                    return grpc.unary_unary_rpc_method_handler(hold)
                return grpc.unary_unary_rpc_method_handler(lambda request, context: b"echo")

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             options=[("grpc.max_concurrent_streams", 1)])
        server.add_generic_rpc_handlers((Handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            sluice = harness.start_sluice(config_path=harness.write_config(
                "upstreams:\n  - name: one_stream\n"
                f"    target: 127.0.0.1:{port}\n    channels: 1\n"
                # This upstream answers every method (it would take a
                # reflection fetch for a call, and its one stream).
                "    reflection: false\n"
                "routes:\n  - name: all\n    match: {prefix: /}\n    upstream: one_stream\n"))
            try:
                ch = harness.channel(sluice.data)
                held = ch.unary_unary("/sluice.e2e.Probe/Hold").future(b"1", timeout=TIMEOUT)
                harness.wait_until(lambda: len(seen) == 1, timeout=5, what="the upstream holding a call")
                queued = ch.unary_unary("/sluice.e2e.Probe/Echo").future(b"2", timeout=TIMEOUT)
                # Sluice has the second call (and soon its request message)
                # while the upstream has no stream for it yet.
                harness.wait_for_metric(sluice, "sluice_route_open_calls", 2.0, {"route": "all"})
                release.set()
                self.assertEqual(held.result(), b"held")
                self.assertEqual(queued.result(), b"echo")
                self.assertIsNone(sluice.popen.poll(), sluice.output())
                ch.close()
                harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0)
                self.assertEqual(sluice.stop(), 0, sluice.output()[-4000:])
            finally:
                release.set()
                sluice.stop()
        finally:
            server.stop(grace=None).wait(timeout=10)


if __name__ == "__main__":
    harness.main()
