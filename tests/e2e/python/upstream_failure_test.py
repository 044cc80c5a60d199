"""Upstream failures seen through the real sluice binary: an upstream that is
not running, one killed (SIGKILL) in the middle of a server stream, and one
restarted on the same port. Calls fail promptly with a status instead of
hanging, new calls succeed once the upstream is back, and Sluice frees every
call (sluice_calls_in_flight back to 0)."""

import signal
import threading
import time
import unittest

import harness
import grpc
from grpc.testing import empty_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

# Generous client deadlines: a test fails on its own time bound long before
# one of these ends a call, so a hang shows as a failure, not a slow pass.
CLIENT_DEADLINE = 30.0


class StreamReader:
    """Reads a server stream on a thread: the ticks, how it ended and when."""

    def __init__(self, call):
        self.call = call
        self.ticks = 0
        self.first = threading.Event()
        self.code = None
        self.trailers = None
        self.ended_at = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for _ in self.call:
                self.ticks += 1
                if self.ticks >= 3:
                    self.first.set()
            self.code = self.call.code()
        except grpc.RpcError as e:
            self.code = e.code()
            self.trailers = e.trailing_metadata()
        finally:
            self.ended_at = time.monotonic()
            self.first.set()

    def join(self, timeout):
        self.thread.join(timeout)
        return not self.thread.is_alive()


class UpstreamFailureTest(unittest.TestCase):
    def setUp(self):
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()

    def start_sluice(self, upstream):
        s = harness.start_sluice(upstream=upstream)
        self.procs.append(s)
        return s

    def start_upstream(self, address="127.0.0.1:0"):
        u = harness.start_upstream(address)
        self.procs.append(u)
        return u

    def assert_no_calls_left(self, sluice):
        harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0, timeout=15)
        self.assertIsNone(sluice.popen.poll(), sluice.output()[-4000:])

    def test_upstream_not_running_is_unavailable_promptly(self):
        sluice = self.start_sluice(upstream=f"127.0.0.1:{harness.closed_port()}")
        ch = harness.channel(sluice.data)
        stub = test_pb2_grpc.TestServiceStub(ch)
        for _ in range(3):  # the first call (connecting) and later ones (backoff)
            start = time.monotonic()
            with self.assertRaises(grpc.RpcError) as e:
                stub.EmptyCall(empty_pb2.Empty(), timeout=CLIENT_DEADLINE)
            elapsed = time.monotonic() - start
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE, e.exception.details())
            self.assertLess(elapsed, 3.0, "UNAVAILABLE should come at once, not at the deadline")
        # A stream fails the same way.
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as e:
            list(ticker_pb2_grpc.TickerStub(ch).Subscribe(
                ticker_pb2.SubscribeRequest(count=0, interval_ms=10), timeout=CLIENT_DEADLINE))
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE, e.exception.details())
        self.assertLess(time.monotonic() - start, 3.0)
        ch.close()
        self.assert_no_calls_left(sluice)

    def kill_mid_stream(self, upstream, ch):
        """Opens a Ticker stream, SIGKILLs the upstream once ticks flow, and
        checks the stream ends with an error within a few seconds."""
        reader = StreamReader(ticker_pb2_grpc.TickerStub(ch).Subscribe(
            ticker_pb2.SubscribeRequest(count=0, interval_ms=10), timeout=CLIENT_DEADLINE))
        self.assertTrue(reader.first.wait(10), "no ticks through sluice")
        self.assertIsNone(reader.code, "the stream ended before the kill")
        killed_at = time.monotonic()
        upstream.signal(signal.SIGKILL)
        upstream.wait(timeout=10)
        self.assertTrue(reader.join(10), "the client stream hangs after the upstream died")
        self.assertNotEqual(reader.code, grpc.StatusCode.OK)
        self.assertIn(reader.code, (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                                    grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED),
                      f"ended with {reader.code}")
        self.assertLess(reader.ended_at - killed_at, 5.0)
        return reader

    def test_upstream_killed_mid_stream_ends_the_stream(self):
        upstream = self.start_upstream()
        sluice = self.start_sluice(upstream=upstream.address)
        ch = harness.channel(sluice.data)
        reader = self.kill_mid_stream(upstream, ch)
        self.assertEqual(reader.code, grpc.StatusCode.UNAVAILABLE)
        self.assertGreaterEqual(reader.ticks, 3)
        # New calls fail promptly too while the upstream is gone.
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as e:
            test_pb2_grpc.TestServiceStub(ch).EmptyCall(empty_pb2.Empty(), timeout=CLIENT_DEADLINE)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertLess(time.monotonic() - start, 3.0)
        ch.close()
        self.assert_no_calls_left(sluice)

    def test_upstream_restarted_on_same_port_serves_again(self):
        upstream = self.start_upstream()
        address = upstream.address
        sluice = self.start_sluice(upstream=address)
        ch = harness.channel(sluice.data)
        stub = test_pb2_grpc.TestServiceStub(ch)
        stub.EmptyCall(empty_pb2.Empty(), timeout=CLIENT_DEADLINE)
        self.kill_mid_stream(upstream, ch)

        restarted = self.start_upstream(address)
        self.assertEqual(restarted.address, address)
        # Sluice reconnects on its own schedule (gRPC's backoff): retry,
        # bounded in attempts and time.
        deadline = time.monotonic() + 30
        codes = []
        for _ in range(200):
            try:
                stub.EmptyCall(empty_pb2.Empty(), timeout=2)
                break
            except grpc.RpcError as e:
                codes.append(e.code())
                self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e.details())
                if time.monotonic() > deadline:
                    self.fail(f"no success 30s after the restart: {codes[-5:]}")
                time.sleep(0.1)  # pacing retries of a reconnecting channel
        else:
            self.fail(f"no success after 200 attempts: {codes[-5:]}")
        # Streams work again too, end to end.
        ticks = list(ticker_pb2_grpc.TickerStub(ch).Subscribe(
            ticker_pb2.SubscribeRequest(count=5, interval_ms=10), timeout=CLIENT_DEADLINE))
        self.assertEqual([t.seq for t in ticks], [1, 2, 3, 4, 5])
        ch.close()
        self.assert_no_calls_left(sluice)


if __name__ == "__main__":
    harness.main()
