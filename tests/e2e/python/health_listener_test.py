"""The health-only listener (listeners.health, here --health): the same
grpc.health.v1.Health statuses as the admin port, from the same source
("" readiness, one entry per upstream, "liveness"), Check and Watch, also
while draining; and nothing else: the admin API and reflection are
UNIMPLEMENTED there."""

import queue
import threading
import unittest

import grpc
import harness
from grpc.health.v1 import health_pb2, health_pb2_grpc
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Watcher:
    """grpc.health.v1.Health/Watch of one service on a thread: its updates,
    in order, on a queue."""

    def __init__(self, stub, service):
        self.updates = queue.Queue()
        self.call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=60)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for response in self.call:
                self.updates.put(response.status)
        except grpc.RpcError:
            pass

    def next(self, timeout=20):
        return self.updates.get(timeout=timeout)

    def cancel(self):
        self.call.cancel()


class HealthListenerTest(unittest.TestCase):
    def setUp(self):
        # The required upstream starts down: its port is known, nothing on it.
        self.upstream_address = f"127.0.0.1:{harness.closed_port()}"
        self.upstream = None
        config = harness.write_config(f"""
drain_timeout: 3s
upstreams:
  - {{name: main, target: "{self.upstream_address}", required: true}}
  - {{name: optional, target: "127.0.0.1:{harness.closed_port()}"}}
routes: [{{name: all, match: {{prefix: /}}, upstream: main}}]
""")
        self.sluice = harness.start_sluice(config_path=config,
                                           extra=["--health=127.0.0.1:0",
                                                  "--watch_config=false"])
        self.health_address = self.sluice.info["health"]
        self.channels = [harness.channel(a) for a in (self.sluice.admin, self.health_address)]
        self.admin_health, self.port_health = (health_pb2_grpc.HealthStub(c)
                                               for c in self.channels)

    def tearDown(self):
        for c in self.channels:
            c.close()
        self.sluice.stop()
        if self.upstream:
            self.upstream.stop()

    def both(self, service):
        """(admin port's status, health port's status) of `service`."""
        request = health_pb2.HealthCheckRequest(service=service)
        return (self.admin_health.Check(request, timeout=5).status,
                self.port_health.Check(request, timeout=5).status)

    def wait_both(self, service, status, what, timeout=15):
        harness.wait_until(lambda: self.both(service) == (status, status),
                           timeout=timeout, what=what)

    def test_same_statuses_as_admin_through_upstream_changes_and_drain(self):
        self.assertNotEqual(self.health_address, self.sluice.admin)
        # Upstream down: not ready on either port; liveness is.
        self.wait_both("", NOT_SERVING, "NOT_SERVING with the upstream down")
        self.assertEqual(self.both("main"), (NOT_SERVING, NOT_SERVING))
        self.assertEqual(self.both("optional"), (NOT_SERVING, NOT_SERVING))
        self.assertEqual(self.both("liveness"), (SERVING, SERVING))
        for stub in (self.admin_health, self.port_health):
            with self.assertRaises(grpc.RpcError) as e:
                stub.Check(health_pb2.HealthCheckRequest(service="no.such"), timeout=5)
            self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

        watch = Watcher(self.port_health, "")
        self.addCleanup(watch.cancel)
        self.assertEqual(watch.next(), NOT_SERVING)

        # The upstream comes up: SERVING on both, and Watch says so.
        self.upstream = harness.start_upstream(self.upstream_address)
        self.wait_both("", SERVING, "SERVING once the upstream is up", timeout=30)
        self.assertEqual(self.both("main"), (SERVING, SERVING))
        self.assertEqual(self.both("optional"), (NOT_SERVING, NOT_SERVING))
        self.assertEqual(watch.next(), SERVING)

        # Drain (the admin API) with a stream in flight, so the process
        # stays up for drain_timeout: NOT_SERVING on both; liveness stays.
        data = harness.channel(self.sluice.data)
        self.addCleanup(data.close)
        stream = ticker_pb2_grpc.TickerStub(data).Subscribe(
            ticker_pb2.SubscribeRequest(count=0, interval_ms=100), timeout=30)
        next(stream)
        admin_pb2_grpc.AdminStub(self.channels[0]).Drain(admin_pb2.DrainRequest(), timeout=5)
        self.assertEqual(watch.next(), NOT_SERVING)
        self.assertEqual(self.both(""), (NOT_SERVING, NOT_SERVING))
        self.assertEqual(self.both("main"), (NOT_SERVING, NOT_SERVING))
        self.assertEqual(self.both("liveness"), (SERVING, SERVING))
        self.assertIsNone(self.sluice.popen.poll(), "sluice exited before the drain ended")
        stream.cancel()
        self.assertEqual(self.sluice.wait(timeout=20), 0, self.sluice.output()[-4000:])

    def test_only_health_is_served(self):
        ch = self.channels[1]
        admin = admin_pb2_grpc.AdminStub(ch)
        for call, request in ((admin.GetStatus, admin_pb2.GetStatusRequest()),
                              (admin.Drain, admin_pb2.DrainRequest()),
                              (admin.SetLimit, admin_pb2.SetLimitRequest())):
            with self.assertRaises(grpc.RpcError) as e:
                call(request, timeout=5)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED, call)
        # Reflection: a bidi stream; UNIMPLEMENTED at its first read.
        with self.assertRaises(grpc.RpcError) as e:
            list_services(ch)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        # The data plane's methods are not proxied here either.
        with self.assertRaises(grpc.RpcError) as e:
            ch.unary_unary("/grpc.testing.TestService/EmptyCall")(b"", timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        # Nothing was drained: the admin port still says live, and the admin
        # API there still answers.
        status = admin_pb2_grpc.AdminStub(self.channels[0]).GetStatus(
            admin_pb2.GetStatusRequest(), timeout=5)
        self.assertFalse(status.draining)
        self.assertEqual(status.health_address, self.health_address)
        # Reflection does answer on the admin port (the health port's
        # refusal is not a missing plugin).
        self.assertIn(b"sluice.admin.v1.Admin", list_services(self.channels[0]))


def list_services(channel):
    """The raw first reply of server reflection's list_services ("")."""
    call = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    # ServerReflectionRequest{list_services: ""}: field 7, length 0.
    return next(iter(call(iter([b"\x3a\x00"]), timeout=5)))


class HealthListenerFlagTest(unittest.TestCase):
    def test_off_by_default(self):
        upstream = harness.start_upstream()
        self.addCleanup(upstream.stop)
        sluice = harness.start_sluice(upstream=upstream.address)
        self.addCleanup(sluice.stop)
        self.assertNotIn("health", sluice.info)
        with harness.channel(sluice.admin) as ch:
            status = admin_pb2_grpc.AdminStub(ch).GetStatus(admin_pb2.GetStatusRequest(),
                                                            timeout=5)
        self.assertEqual(status.health_address, "")


if __name__ == "__main__":
    harness.main()
