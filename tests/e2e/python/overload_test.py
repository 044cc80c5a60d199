"""The memory ceiling (proxy.max_memory_bytes) with the real binaries: at
the ceiling every new call is refused with RESOURCE_EXHAUSTED +
`sluice-reason: overloaded` before it reaches the upstream, and a reload
that raises the ceiling admits calls again. The ceiling here (16 MiB, the
least allowed) is below Sluice's own resident memory, so it is reached from
the start; the hysteresis itself is unit-tested (memory_guard_test)."""

import signal
import subprocess
import unittest

import grpc
import harness
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc

CONFIG = """
proxy: {{max_memory_bytes: {limit}}}
upstreams:
  - name: app
    target: "{target}"
routes:
  - {{name: all, match: {{prefix: "/"}}, upstream: app}}
"""


class OverloadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.path = harness.write_config(CONFIG.format(limit=16 << 20,
                                                      target=cls.upstream.address))
        cls.sluice = harness.start_sluice(config_path=cls.path)
        cls.ch = harness.channel(cls.sluice.data)
        cls.stub = test_pb2_grpc.TestServiceStub(cls.ch)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        cls.sluice.stop()
        cls.upstream.stop()

    def reload_with(self, limit):
        with open(self.path, "w") as f:
            f.write(CONFIG.format(limit=limit, target=self.upstream.address))
        before = harness.metric(self.sluice, "sluice_config_reloads_total",
                                {"result": "ok"})
        self.sluice.signal(signal.SIGHUP)
        harness.wait_for_metric(self.sluice, "sluice_config_reloads_total", before + 1,
                                {"result": "ok"})

    def test_at_the_ceiling_new_calls_are_refused_then_admitted_after_a_reload(self):
        self.assertGreater(harness.rss_kib(self.sluice.pid) * 1024, 16 << 20,
                           "Sluice's RSS is under the test's ceiling")
        # The ceiling and the memory it is compared with, as gauges.
        self.assertEqual(harness.metric(self.sluice, "sluice_memory_ceiling_bytes"),
                         16 << 20)
        self.assertGreater(harness.metric(self.sluice, "sluice_resident_memory_bytes"),
                           16 << 20)
        unary_before = harness.metric(self.sluice, "sluice_rejections_total",
                                      {"reason": "overloaded"})
        for call in (lambda: self.stub.EmptyCall(empty_pb2.Empty(), timeout=10),
                     lambda: list(self.stub.StreamingOutputCall(
                         messages_pb2.StreamingOutputCallRequest(
                             response_parameters=[messages_pb2.ResponseParameters(size=1)]),
                         timeout=10))):
            with self.assertRaises(grpc.RpcError) as e:
                call()
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(harness.trailer(e.exception.trailing_metadata(),
                                             "sluice-reason"), "overloaded")
            self.assertIn("16 MiB", e.exception.details())
        self.assertEqual(harness.metric(self.sluice, "sluice_rejections_total",
                                        {"reason": "overloaded"}), unary_before + 2)
        # Refused before the upstream: it saw no call.
        self.assertEqual(harness.metric(self.sluice, "grpc_client_started_total"), 0)

        self.reload_with(-1)  # no ceiling
        self.stub.EmptyCall(empty_pb2.Empty(), timeout=10)
        self.assertEqual(harness.metric(self.sluice, "sluice_memory_ceiling_bytes"), 0)
        self.reload_with(1 << 40)  # far above
        self.stub.EmptyCall(empty_pb2.Empty(), timeout=10)

    def test_bad_values_name_the_field(self):
        for bad in ("-2", "1000", "16777215"):
            path = harness.write_config(CONFIG.format(limit=bad, target="127.0.0.1:1"))
            r = subprocess.run([harness.SLUICE, f"--config={path}", "--check"],
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0, bad)
            self.assertIn("proxy.max_memory_bytes", r.stdout + r.stderr, bad)

if __name__ == "__main__":
    harness.main()
