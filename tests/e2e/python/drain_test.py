"""Draining on SIGTERM, through the real sluice binary: admin health turns
NOT_SERVING, new calls are refused, in-flight calls get drain_timeout to
finish, the rest end with UNAVAILABLE + sluice-reason: draining, and the
process exits 0."""

import collections
import signal
import socket
import threading
import time
import unittest

import harness
import grpc
from grpc.health.v1 import health_pb2, health_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

DRAIN_TIMEOUT = 3.0  # seconds; drain_timeout in the config below

CONFIG = """
drain_timeout: 3s
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


def tcp_accepts(address):
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except ConnectionRefusedError:
        return False


class StreamReader:
    """Reads a server stream on a thread: the ticks, how it ended and when."""

    def __init__(self, call):
        self.call = call
        self.seqs = []
        self.flowing = threading.Event()
        self.code = None
        self.details = None
        self.trailers = None
        self.ended_at = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for tick in self.call:
                self.seqs.append(tick.seq)
                self.flowing.set()
            self.code = self.call.code()
            self.trailers = self.call.trailing_metadata()
        except grpc.RpcError as e:
            self.code, self.details = e.code(), e.details()
            self.trailers = e.trailing_metadata()
        finally:
            self.ended_at = time.monotonic()
            self.flowing.set()

    def join(self, timeout):
        self.thread.join(timeout)
        return not self.thread.is_alive()


class DrainTest(unittest.TestCase):
    def setUp(self):
        self.upstream = harness.start_upstream()
        self.sluice = harness.start_sluice(config_path=harness.write_config(CONFIG),
                                           upstream=self.upstream.address)

    def tearDown(self):
        self.sluice.stop()
        self.upstream.stop()

    def subscribe(self, ch, count, interval_ms):
        return StreamReader(ticker_pb2_grpc.TickerStub(ch).Subscribe(
            ticker_pb2.SubscribeRequest(count=count, interval_ms=interval_ms), timeout=30))

    def test_sigterm_drains(self):
        ch = harness.channel(self.sluice.data)
        admin = health_pb2_grpc.HealthStub(harness.channel(self.sluice.admin))
        self.assertEqual(admin.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status,
                         health_pb2.HealthCheckResponse.SERVING)

        finishing = self.subscribe(ch, count=20, interval_ms=50)   # ~1s: fits in drain_timeout
        endless = self.subscribe(ch, count=0, interval_ms=100)     # outlives drain_timeout
        self.assertTrue(finishing.flowing.wait(10) and endless.flowing.wait(10), "no ticks")
        self.assertIsNone(finishing.code)
        self.assertIsNone(endless.code)
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 2.0)

        sigterm_at = time.monotonic()
        self.sluice.signal(signal.SIGTERM)

        # Health turns NOT_SERVING while the process still runs.
        def not_serving():
            try:
                status = admin.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
            except grpc.RpcError as e:
                self.fail(f"admin health failed during drain: {e.code()} {e.details()}")
            return status == health_pb2.HealthCheckResponse.NOT_SERVING
        harness.wait_until(not_serving, timeout=DRAIN_TIMEOUT / 2, what="health NOT_SERVING")
        self.assertIsNone(self.sluice.popen.poll(), "sluice exited before the drain ended")
        # Liveness stays SERVING through the drain (no restart mid-drain).
        self.assertEqual(
            admin.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=2).status,
            health_pb2.HealthCheckResponse.SERVING)

        # The data listener closes (observed with plain TCP connects), and a
        # new call on a new channel is then refused. (Calls racing the
        # listener's close: test_calls_racing_the_drain_are_refused.)
        harness.wait_until(lambda: not tcp_accepts(self.sluice.data), timeout=DRAIN_TIMEOUT / 2,
                           what="the data port to refuse connections")
        # A channel of its own connections (grpcio shares subchannels
        # between channels to one target by default).
        fresh = grpc.insecure_channel(self.sluice.data,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            start = time.monotonic()
            with self.assertRaises(grpc.RpcError) as e:
                list(ticker_pb2_grpc.TickerStub(fresh).Subscribe(
                    ticker_pb2.SubscribeRequest(count=1), timeout=5))
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE, e.exception.details())
            self.assertLess(time.monotonic() - start, 2.0)
        finally:
            fresh.close()
        self.assertIsNone(self.sluice.popen.poll(), "sluice exited before the drain ended")

        # The stream that fits in drain_timeout completes normally.
        self.assertTrue(finishing.join(DRAIN_TIMEOUT + 5), "the finishing stream hangs")
        self.assertEqual(finishing.code, grpc.StatusCode.OK, finishing.details)
        self.assertEqual(finishing.seqs, list(range(1, 21)))
        self.assertLess(finishing.ended_at - sigterm_at, DRAIN_TIMEOUT)

        # The endless one is ended by Sluice at drain_timeout.
        self.assertTrue(endless.join(DRAIN_TIMEOUT + 5), "the endless stream outlives the drain")
        self.assertEqual(endless.code, grpc.StatusCode.UNAVAILABLE, endless.details)
        self.assertEqual(harness.trailer(endless.trailers, "sluice-reason"), "draining")
        ended = endless.ended_at - sigterm_at
        self.assertGreater(ended, DRAIN_TIMEOUT - 0.5, "ended long before drain_timeout")
        self.assertLess(ended, DRAIN_TIMEOUT + 2.0, "ended long after drain_timeout")
        self.assertGreater(len(endless.seqs), 20, "the stream kept flowing during the drain")

        self.assertEqual(self.sluice.wait(timeout=20), 0, self.sluice.output()[-4000:])
        ch.close()

    def test_sigterm_with_nothing_in_flight_exits_at_once(self):
        ch = harness.channel(self.sluice.data)
        ticks = list(ticker_pb2_grpc.TickerStub(ch).Subscribe(
            ticker_pb2.SubscribeRequest(count=3, interval_ms=1), timeout=10))
        self.assertEqual(len(ticks), 3)
        ch.close()
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)
        start = time.monotonic()
        self.sluice.signal(signal.SIGTERM)
        self.assertEqual(self.sluice.wait(timeout=20), 0, self.sluice.output()[-4000:])
        self.assertLess(time.monotonic() - start, DRAIN_TIMEOUT,
                        "an idle sluice should not wait out drain_timeout")


class DrainRaceTest(unittest.TestCase):
    """Calls arriving while the drain begins: each one either runs (it came
    before the drain) or is refused with UNAVAILABLE + draining during the
    refuse window. Only streams that reach the port in the instant gRPC
    core closes it (GOAWAY in flight) may end CANCELLED by the transport,
    with no sluice-reason: a known limit of gRPC core's server shutdown,
    bounded here at 1% of the racing calls (measured: ~0.15%)."""

    TRIALS = 8     # sluice processes, each drained once under load
    CALLERS = 3    # threads making calls, each on a new channel

    def test_calls_racing_the_drain_are_refused(self):
        upstream = harness.start_upstream()
        config = harness.write_config(CONFIG)
        outcomes = collections.Counter()
        try:
            for trial in range(self.TRIALS):
                sluice = harness.start_sluice(config_path=config, upstream=upstream.address)
                try:
                    outcomes.update(self.hammer_through_drain(sluice))
                    self.assertEqual(sluice.wait(timeout=20), 0, sluice.output()[-4000:])
                finally:
                    sluice.stop()
        finally:
            upstream.stop()
        transport_cancels = sum(n for k, n in outcomes.items()
                                if k != "OK" and k[0] == grpc.StatusCode.CANCELLED.name
                                and k[2] is None)
        bad = {k: n for k, n in outcomes.items()
               if k != "OK" and k[0] not in (grpc.StatusCode.UNAVAILABLE.name,
                                             grpc.StatusCode.CANCELLED.name)}
        self.assertFalse(bad, f"calls arriving as the drain began ended neither OK nor "
                              f"UNAVAILABLE (code, details, sluice-reason): {dict(outcomes)}")
        refused = sum(n for k, n in outcomes.items()
                      if k != "OK" and k[2] == "draining")
        self.assertGreater(refused, 0, dict(outcomes))
        self.assertLessEqual(transport_cancels, sum(outcomes.values()) // 100,
                             f"too many transport cancels at port close: {dict(outcomes)}")

    def hammer_through_drain(self, sluice):
        outcomes = collections.Counter()
        lock = threading.Lock()
        go = threading.Barrier(self.CALLERS + 1)

        def caller():
            go.wait(10)
            end = time.monotonic() + 10
            for _ in range(2000):
                if time.monotonic() > end:
                    return
                ch = grpc.insecure_channel(sluice.data)
                try:
                    list(ticker_pb2_grpc.TickerStub(ch).Subscribe(
                        ticker_pb2.SubscribeRequest(count=1), timeout=5))
                    key = "OK"
                except grpc.RpcError as e:
                    key = (e.code().name, e.details(),
                           harness.trailer(e.trailing_metadata(), "sluice-reason"))
                finally:
                    ch.close()
                with lock:
                    outcomes[key] += 1
                if key != "OK" and "Connection refused" in key[1]:
                    return  # the listener is closed: the drain has begun for good

        threads = [threading.Thread(target=caller, daemon=True) for _ in range(self.CALLERS)]
        for t in threads:
            t.start()
        go.wait(10)
        # Calls are flowing: that many calls have been handled.
        harness.wait_until(lambda: (harness.metric(sluice, "sluice_calls_handled_total") or 0) >= 10,
                           timeout=10, what="calls flowing")
        sluice.signal(signal.SIGTERM)
        for t in threads:
            t.join(15)
            self.assertFalse(t.is_alive(), "a caller hangs")
        return outcomes


class SignalsDuringShutdownTest(unittest.TestCase):
    """SIGHUP (a reload) arriving while Sluice drains and exits: the signal
    thread is stopped and joined before the daemon is destroyed, so a late
    SIGHUP stays pending instead of reaching a destroyed Daemon (issue 15,
    bug 4). Five shutdowns, each under a storm of SIGHUPs until the process
    is gone; every one must exit 0."""

    def test_sighup_storm_during_shutdown(self):
        upstream = harness.start_upstream()
        try:
            for _ in range(5):  # bounded
                sluice = harness.start_sluice(upstream=upstream.address,
                                              extra=["--log_level=warn"])
                self.addCleanup(sluice.stop)
                sluice.popen.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 20
                while sluice.popen.poll() is None and time.monotonic() < deadline:
                    try:
                        sluice.popen.send_signal(signal.SIGHUP)
                    except ProcessLookupError:
                        break
                    time.sleep(0.0005)
                rc = sluice.wait(timeout=20)
                self.assertEqual(rc, 0, sluice.output()[-3000:])
        finally:
            upstream.stop()


if __name__ == "__main__":
    harness.main()
