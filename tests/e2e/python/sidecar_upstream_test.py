"""A sidecar that follows its app, with the real sluice and demo upstream:
Sluice starts first and the app later (as a Kubernetes native sidecar
does), the app is killed and restarted, frozen (SIGSTOP) and thawed, and
answers UNAVAILABLE itself.

While the app is not listening, calls wait up to `connect_wait` and end
UNAVAILABLE + `sluice-reason: upstream_unavailable`, naming the upstream by
its config name and never its address. Once it listens, Sluice's first OK
call and readiness SERVING follow within a bound only a defect breaks
(the loopback reconnect backoff is at most 1 s), and no call fails after
the first OK one. A status the app sends itself passes untouched."""

import signal
import socket
import time
import unittest

import grpc
import harness
from grpc.health.v1 import health_pb2, health_pb2_grpc
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

# A defect bound, not a timing target: the backoff is at most 1 s and
# connect_wait 1 s; a regression to gRPC's default backoff (up to 120 s)
# or to a second channel still backing off shows far above it.
RECOVERY_BOUND = 5.0
CLIENT_DEADLINE = 10.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class SidecarUpstreamTest(unittest.TestCase):
    def setUp(self):
        self.procs = []
        self.port = harness.closed_port()
        self.address = f"127.0.0.1:{self.port}"

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()

    def start(self, proc):
        self.procs.append(proc)
        return proc

    def start_sluice_with_config(self, extra=""):
        config = harness.write_config(f"""{extra}
upstreams:
  - name: app
    target: "{self.address}"
    required: true
    connect_wait: 1s
routes:
  - {{name: all, match: {{prefix: "/"}}, upstream: app}}
""")
        return self.start(harness.start_sluice(config_path=config))

    def readiness(self, sluice):
        stub = health_pb2_grpc.HealthStub(harness.channel(sluice.admin))
        return lambda: stub.Check(health_pb2.HealthCheckRequest(service=""),
                                  timeout=5).status

    def assert_unavailable_from_sluice(self, stub):
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as e:
            stub.EmptyCall(empty_pb2.Empty(), timeout=CLIENT_DEADLINE)
        elapsed = time.monotonic() - start
        err = e.exception
        self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE, err.details())
        self.assertEqual(harness.trailer(err.trailing_metadata(), "sluice-reason"),
                         "upstream_unavailable", err.details())
        self.assertIn('upstream "app"', err.details())
        self.assertNotIn(str(self.port), err.details())
        self.assertNotIn("127.0.0.1", err.details())
        # It waited for the connection (connect_wait 1 s), not the deadline.
        self.assertLess(elapsed, CLIENT_DEADLINE / 2, err.details())
        return elapsed

    def wait_first_ok(self, stub, listening_at):
        """Calls until one is OK; returns its time after `listening_at`.
        Failures before it must be Sluice's upstream_unavailable."""
        while True:
            try:
                stub.EmptyCall(empty_pb2.Empty(), timeout=CLIENT_DEADLINE)
                return time.monotonic() - listening_at
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e.details())
                self.assertEqual(harness.trailer(e.trailing_metadata(), "sluice-reason"),
                                 "upstream_unavailable")
            self.assertLess(time.monotonic() - listening_at, RECOVERY_BOUND,
                            "no OK call within the bound after the app listens")

    def wait_serving(self, health, listening_at):
        harness.wait_until(lambda: health() == SERVING, timeout=RECOVERY_BOUND,
                           interval=0.05, what="readiness SERVING")
        return time.monotonic() - listening_at

    def assert_no_failures(self, stub, n=40):
        """Every call after the first OK one succeeds (both channels)."""
        for i in range(n):
            stub.EmptyCall(empty_pb2.Empty(), timeout=CLIENT_DEADLINE)

    def test_late_app_then_restart(self):
        sluice = self.start_sluice_with_config()
        ch = harness.channel(sluice.data)
        stub = test_pb2_grpc.TestServiceStub(ch)
        health = self.readiness(sluice)
        self.assertEqual(health(), NOT_SERVING)
        waited = self.assert_unavailable_from_sluice(stub)
        self.assertGreater(waited, 0.5, "the call did not wait for the upstream")
        time.sleep(2.0)  # the app starts ~3 s after Sluice: backoff has grown

        upstream = self.start(harness.start_upstream(self.address))
        listening_at = time.monotonic()  # its ready file: it listens
        first_ok = self.wait_first_ok(stub, listening_at)
        serving = self.wait_serving(health, listening_at)
        self.assert_no_failures(stub)
        print(f"late app: first OK {first_ok:.3f}s, SERVING {serving:.3f}s after listening")

        # Killed: its open stream and new calls end as Sluice's
        # upstream_unavailable, and readiness drops.
        stream = ticker_pb2_grpc.TickerStub(ch).Subscribe(
            ticker_pb2.SubscribeRequest(count=0, interval_ms=50), timeout=60)
        next(stream)
        upstream.signal(signal.SIGKILL)
        upstream.wait(timeout=10)
        with self.assertRaises(grpc.RpcError) as e:
            for _ in stream:
                pass
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(harness.trailer(e.exception.trailing_metadata(), "sluice-reason"),
                         "upstream_unavailable", e.exception.details())
        self.assertNotIn(str(self.port), e.exception.details())
        self.assert_unavailable_from_sluice(stub)
        harness.wait_until(lambda: health() == NOT_SERVING, timeout=RECOVERY_BOUND,
                           interval=0.05, what="readiness NOT_SERVING")

        # Restarted on the same port: back within the bound.
        restarted = self.start(harness.start_upstream(self.address))
        listening_at = time.monotonic()
        first_ok = self.wait_first_ok(stub, listening_at)
        serving = self.wait_serving(health, listening_at)
        self.assert_no_failures(stub)
        print(f"restart: first OK {first_ok:.3f}s, SERVING {serving:.3f}s after listening")
        self.assertIsNone(restarted.popen.poll())
        ch.close()

    def test_cancelled_while_waiting_for_the_app_ends_at_once(self):
        """A call waiting (connect_wait 30 s) for an app that is not there
        is gone soon after its client cancels, not when the wait ends."""
        # A port whose kernel accepts connections but nobody speaks HTTP/2
        # (like a stopped app): the channel stays CONNECTING for the 30 s
        # connect timeout, so no state change ends the wait early.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        self.addCleanup(silent.close)
        config = harness.write_config(f"""
upstreams:
  - name: app
    target: "127.0.0.1:{silent.getsockname()[1]}"
    connect_wait: 30s
    reconnect: {{connect_timeout: 30s}}
routes:
  - {{name: all, match: {{prefix: "/"}}, upstream: app}}
""")
        sluice = self.start(harness.start_sluice(config_path=config))
        stub = test_pb2_grpc.TestServiceStub(harness.channel(sluice.data))
        future = stub.EmptyCall.future(empty_pb2.Empty(), timeout=60)
        harness.wait_for_metric(sluice, "sluice_calls_in_flight", 1.0)
        future.cancel()
        # The wait is watched in 100 ms slices; 30 s would mean it waited
        # out connect_wait.
        harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0, timeout=5.0)

    def test_connection_lost_delivers_what_was_read(self):
        """Responses Sluice already read from the upstream still reach the
        client before the upstream_unavailable status when the upstream's
        connection fails (as they would before an error the app sent)."""
        upstream = self.start(harness.start_upstream(self.address))
        # Sluice may hold up to 64 responses read from the upstream and not
        # yet written to the client.
        sluice = self.start_sluice_with_config(extra="proxy: {stream_window: 64}")
        ch = harness.channel(sluice.data)
        size = 256 * 1024  # each over the client's 64 KiB stream window
        request = messages_pb2.StreamingOutputCallRequest(response_parameters=[
            messages_pb2.ResponseParameters(size=size, interval_us=50_000)
            for _ in range(400)])
        stream = test_pb2_grpc.TestServiceStub(ch).StreamingOutputCall(
            request, timeout=CLIENT_DEADLINE * 3)
        # The client reads nothing yet: Sluice's first write to it waits on
        # its window, and Sluice reads and holds each response the upstream
        # sends (one per 50 ms, ~40 in these 2 s), with a read posted for
        # the next: when the upstream dies, that read fails at once and the
        # status comes while Sluice holds them.
        time.sleep(2.0)
        upstream.signal(signal.SIGKILL)
        upstream.wait(timeout=10)
        time.sleep(0.5)  # Sluice meets the failure before the client reads
        received = 0
        with self.assertRaises(grpc.RpcError) as e:
            for response in stream:
                self.assertEqual(len(response.payload.body), size)
                received += 1
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(harness.trailer(e.exception.trailing_metadata(), "sluice-reason"),
                         "upstream_unavailable", e.exception.details())
        # Dropping what Sluice held would leave the write in flight (and
        # what the client's transport had buffered): a few at most.
        self.assertGreaterEqual(received, 10)
        print(f"connection lost: {received} of 400 responses delivered before the status")
        ch.close()

    def start_fast_keepalive_pair(self, health_check=True):
        """A demo upstream that permits pings every 500 ms, and Sluice
        pinging it every 1 s (keepalive timeout 1 s): scaled down together
        from gRPC's 5 min and Sluice's default 5m30s. With `health_check`,
        its health is checked every second."""
        upstream = self.start(harness.start_upstream(
            self.address, extra=["--min_ping_interval=500ms"]))
        check = "    health_check: {interval: 1s, timeout: 500ms}\n" if health_check else ""
        self.fast_keepalive_config = lambda required: f"""
upstreams:
  - name: app
    target: "{self.address}"
    required: {"true" if required else "false"}
    keepalive: {{time: 1s, timeout: 1s}}
{check}routes:
  - {{name: all, match: {{prefix: "/"}}, upstream: app}}
"""
        self.config_path = harness.write_config(self.fast_keepalive_config(True))
        return upstream, self.start(harness.start_sluice(config_path=self.config_path))

    def test_frozen_app_ends_streams_and_recovers(self):
        upstream, sluice = self.start_fast_keepalive_pair()
        ch = harness.channel(sluice.data)
        ticker = ticker_pb2_grpc.TickerStub(ch)
        stream = ticker.Subscribe(ticker_pb2.SubscribeRequest(count=0, interval_ms=50),
                                  timeout=60)
        next(stream)  # flowing
        upstream.signal(signal.SIGSTOP)  # frozen: TCP open, nobody answers
        frozen_at = time.monotonic()
        try:
            with self.assertRaises(grpc.RpcError) as e:
                for _ in stream:
                    pass
            ended = time.monotonic() - frozen_at
            err = e.exception
            self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE, err.details())
            self.assertEqual(harness.trailer(err.trailing_metadata(), "sluice-reason"),
                             "upstream_unavailable", err.details())
            self.assertNotIn(str(self.port), err.details())
            # keepalive time + timeout = 2 s; a defect shows as the 60 s
            # deadline (or a hang the test runner's timeout ends).
            self.assertLess(ended, 10.0)
            print(f"frozen app: stream ended {ended:.3f}s after SIGSTOP")
            # Readiness drops while it is frozen: its health Check times out.
            # (Connectivity alone cannot tell: a connection without calls
            # sends no keepalive ping, so the pool's idle channel stays READY
            # to the stopped process.)
            health = self.readiness(sluice)
            harness.wait_until(lambda: health() == NOT_SERVING, timeout=RECOVERY_BOUND,
                               interval=0.05, what="readiness NOT_SERVING while frozen")
            print(f"frozen app: NOT_SERVING {time.monotonic() - frozen_at:.3f}s after SIGSTOP")
        finally:
            upstream.signal(signal.SIGCONT)
        thawed_at = time.monotonic()
        stub = test_pb2_grpc.TestServiceStub(ch)
        self.wait_first_ok(stub, thawed_at)
        self.assert_no_failures(stub)
        ch.close()

    def test_frozen_app_without_health_check_drops_readiness(self):
        """No health_check: the keepalive timeout its stream met marks the
        app frozen (its idle channel, which sends no pings, would still look
        READY), and readiness
        comes back by itself once the app answers again."""
        upstream, sluice = self.start_fast_keepalive_pair(health_check=False)
        health = self.readiness(sluice)
        harness.wait_until(lambda: health() == SERVING, timeout=RECOVERY_BOUND,
                           interval=0.05, what="readiness SERVING")
        ch = harness.channel(sluice.data)
        stream = ticker_pb2_grpc.TickerStub(ch).Subscribe(
            ticker_pb2.SubscribeRequest(count=0, interval_ms=50), timeout=60)
        next(stream)
        upstream.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            with self.assertRaises(grpc.RpcError) as e:
                for _ in stream:
                    pass
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertEqual(harness.trailer(e.exception.trailing_metadata(),
                                             "sluice-reason"), "upstream_unavailable")
            harness.wait_until(lambda: health() == NOT_SERVING, timeout=RECOVERY_BOUND,
                               interval=0.05, what="readiness NOT_SERVING while frozen")
            print(f"frozen app, no health_check: NOT_SERVING "
                  f"{time.monotonic() - frozen_at:.3f}s after SIGSTOP")
            # It stays down while the app is frozen (asked every second).
            watch_until = time.monotonic() + 2.5
            while time.monotonic() < watch_until:
                self.assertEqual(health(), NOT_SERVING, "SERVING while frozen")
                time.sleep(0.1)
            # A reload that changes only health settings (required) keeps
            # the channels, and the mark: the app itself stays NOT_SERVING.
            with open(self.config_path, "w") as f:
                f.write(self.fast_keepalive_config(False))
            reloads = harness.metric(sluice, "sluice_config_reloads_total", {"result": "ok"})
            sluice.signal(signal.SIGHUP)
            harness.wait_for_metric(sluice, "sluice_config_reloads_total", reloads + 1,
                                    {"result": "ok"})
            app = health_pb2_grpc.HealthStub(harness.channel(sluice.admin))
            watch_until = time.monotonic() + 1.5
            while time.monotonic() < watch_until:
                self.assertEqual(app.Check(health_pb2.HealthCheckRequest(service="app"),
                                           timeout=5).status, NOT_SERVING,
                                 "the app SERVING after a reload while frozen")
                time.sleep(0.1)
        finally:
            upstream.signal(signal.SIGCONT)
        thawed_at = time.monotonic()
        app = health_pb2_grpc.HealthStub(harness.channel(sluice.admin))
        serving = self.wait_serving(
            lambda: app.Check(health_pb2.HealthCheckRequest(service="app"), timeout=5).status,
            thawed_at)
        print(f"frozen app, no health_check: SERVING {serving:.3f}s after SIGCONT")
        stub = test_pb2_grpc.TestServiceStub(ch)
        self.wait_first_ok(stub, thawed_at)
        self.assert_no_failures(stub)
        ch.close()

    def test_fast_keepalive_spares_healthy_idle_streams(self):
        _, sluice = self.start_fast_keepalive_pair()
        ch = harness.channel(sluice.data)
        ticker = ticker_pb2_grpc.TickerStub(ch)
        # 3 ticks 2.5 s apart: silent for 2.5 keepalive intervals each time.
        ticks = list(ticker.Subscribe(
            ticker_pb2.SubscribeRequest(count=3, interval_ms=2500), timeout=30))
        self.assertEqual([t.seq for t in ticks], [1, 2, 3])
        ch.close()

    def test_status_from_the_app_passes_untouched(self):
        self.start(harness.start_upstream(self.address))
        sluice = self.start_sluice_with_config()
        ch = harness.channel(sluice.data)
        stub = test_pb2_grpc.TestServiceStub(ch)
        request = messages_pb2.SimpleRequest(response_status=messages_pb2.EchoStatus(
            code=grpc.StatusCode.UNAVAILABLE.value[0], message="app says: busy"))
        with self.assertRaises(grpc.RpcError) as e:
            stub.UnaryCall(request, timeout=CLIENT_DEADLINE)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(e.exception.details(), "app says: busy")
        self.assertIsNone(harness.trailer(e.exception.trailing_metadata(), "sluice-reason"))
        ch.close()

    def test_quick_start_upstream_is_required(self):
        sluice = self.start(harness.start_sluice(upstream=self.address))
        health = self.readiness(sluice)
        self.assertEqual(health(), NOT_SERVING)
        stub = test_pb2_grpc.TestServiceStub(harness.channel(sluice.data))
        with self.assertRaises(grpc.RpcError) as e:
            stub.EmptyCall(empty_pb2.Empty(), timeout=CLIENT_DEADLINE)
        self.assertEqual(harness.trailer(e.exception.trailing_metadata(), "sluice-reason"),
                         "upstream_unavailable")
        self.assertIn('upstream "default"', e.exception.details())
        self.start(harness.start_upstream(self.address))
        listening_at = time.monotonic()
        self.wait_first_ok(stub, listening_at)
        self.wait_serving(health, listening_at)


if __name__ == "__main__":
    harness.main()
