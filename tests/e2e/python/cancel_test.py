"""Client cancellation at scale, through the real sluice binary: 200
concurrent Ticker streams, each reads a couple of ticks, then all cancel.
Sluice counts every cancel and frees every call (and with it the upstream
call it cancelled)."""

import time
import unittest

import harness
import grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

STREAMS = 200

CONFIG = """
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
routes:
  - name: ticker
    match: {prefix: /sluice.demo.v1.Ticker/}
    upstream: demo
  - name: default
    match: {prefix: /}
    upstream: demo
"""


class ConcurrentCancelTest(unittest.TestCase):
    def setUp(self):
        self.upstream = harness.start_upstream()
        self.sluice = harness.start_sluice(config_path=harness.write_config(CONFIG),
                                           upstream=self.upstream.address)

    def tearDown(self):
        self.sluice.stop()
        self.upstream.stop()

    def metric(self, name, **labels):
        return harness.metric(self.sluice, name, labels) or 0.0

    def test_200_streams_cancelled(self):
        cancels = self.metric("sluice_client_cancels_total", route="ticker")
        ch = harness.channel(self.sluice.data)
        stub = ticker_pb2_grpc.TickerStub(ch)
        calls = []
        try:
            for _ in range(STREAMS):
                calls.append(stub.Subscribe(
                    ticker_pb2.SubscribeRequest(count=0, interval_ms=5), timeout=60))
            for i, call in enumerate(calls):
                seqs = [next(call).seq, next(call).seq]
                self.assertEqual(seqs, [1, 2], f"stream {i}")
            # All of them are open through sluice at once.
            self.assertEqual(self.metric("sluice_route_open_calls", route="ticker"), STREAMS)
            self.assertEqual(self.metric("sluice_calls_in_flight"), STREAMS)
            for call in calls:
                call.cancel()
            for call in calls:
                self.assertEqual(call.code(), grpc.StatusCode.CANCELLED)
        finally:
            for call in calls:
                call.cancel()

        start = time.monotonic()
        harness.wait_for_metric(self.sluice, "sluice_client_cancels_total", cancels + STREAMS,
                                {"route": "ticker"}, timeout=20)
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0, timeout=20)
        harness.wait_for_metric(self.sluice, "sluice_route_open_calls", 0.0,
                                {"route": "ticker"}, timeout=5)
        elapsed = time.monotonic() - start
        self.assertLess(elapsed, 20)
        # Sluice did not count them as finished by itself or by the upstream.
        self.assertEqual(self.metric("sluice_rejections_total", route="ticker"), 0.0)
        self.assertIsNone(self.sluice.popen.poll(), self.sluice.output()[-4000:])

        # And it still serves: a new stream on the same channel works.
        ticks = list(stub.Subscribe(ticker_pb2.SubscribeRequest(count=3, interval_ms=1), timeout=10))
        self.assertEqual([t.seq for t in ticks], [1, 2, 3])
        ch.close()
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)


if __name__ == "__main__":
    harness.main()
