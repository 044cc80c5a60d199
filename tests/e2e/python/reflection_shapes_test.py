"""Method shapes from the upstream's own server reflection (issue 18), with
the real binaries: sluice started with flags only (no descriptor set) in
front of the demo upstream, which serves grpc.reflection.v1alpha, learns the
shape of its 12 methods (sluice_upstream_reflected_methods) and proxies
every kind of call; with `reflection: false` it learns none and proxies them
the same. (Which batches a call takes, and the fallback of a method that
breaks its shape, are tested in process: tests/proxy/reflection_shapes_test.)
"""

import unittest

import harness
from grpc.testing import messages_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

TIMEOUT = 10
DEMO_METHODS = 14  # TestService 8, Ticker 1, Capacity 2, health 2, reflection 1


def exercise(test, sluice):
    channel = harness.channel(sluice.data)
    stub = test_pb2_grpc.TestServiceStub(channel)
    resp = stub.UnaryCall(messages_pb2.SimpleRequest(response_size=7), timeout=TIMEOUT)
    test.assertEqual(len(resp.payload.body), 7)
    sizes = [len(r.payload.body) for r in stub.StreamingOutputCall(
        messages_pb2.StreamingOutputCallRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=s) for s in (1, 2, 3)]),
        timeout=TIMEOUT)]
    test.assertEqual(sizes, [1, 2, 3])
    agg = stub.StreamingInputCall(
        iter([messages_pb2.StreamingInputCallRequest(
            payload=messages_pb2.Payload(body=b"x" * n)) for n in (3, 5, 7)]), timeout=TIMEOUT)
    test.assertEqual(agg.aggregated_payload_size, 15)
    ticks = list(ticker_pb2_grpc.TickerStub(channel).Subscribe(
        ticker_pb2.SubscribeRequest(count=3, interval_ms=0), timeout=TIMEOUT))
    test.assertEqual(len(ticks), 3)
    harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0)
    test.assertIsNone(harness.metric(sluice, "sluice_method_shape_fallbacks_total"))


class FlagsOnlyLearnsShapes(unittest.TestCase):
    def setUp(self):
        self.upstream = harness.start_upstream()
        self.addCleanup(self.upstream.stop)

    def test_flags_only(self):
        sluice = harness.start_sluice(upstream=self.upstream.address)
        self.addCleanup(sluice.stop)
        harness.wait_for_metric(sluice, "sluice_upstream_reflected_methods", DEMO_METHODS)
        self.assertIn(f"reflection gave the shape of {DEMO_METHODS} methods", sluice.output())
        exercise(self, sluice)

    def test_reflection_off(self):
        config = harness.write_config(f"""
upstreams: [{{name: demo, target: "{self.upstream.address}", reflection: false}}]
routes: [{{name: all, match: {{prefix: /}}, upstream: demo}}]
""")
        sluice = harness.start_sluice(config_path=config)
        self.addCleanup(sluice.stop)
        exercise(self, sluice)
        self.assertEqual(harness.metric(sluice, "sluice_upstream_reflected_methods"), 0)
        self.assertNotIn("reflection gave", sluice.output())


if __name__ == "__main__":
    harness.main()
