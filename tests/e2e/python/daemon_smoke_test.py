"""The real sluice binary: starts on port 0, serves health, metrics and the
admin API, validates configs with --check, lists its flags with --help, and
stops cleanly on SIGTERM."""

import glob
import os
import signal
import subprocess
import unittest

import harness
import grpc
from grpc.health.v1 import health_pb2, health_pb2_grpc
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc


class DaemonSmokeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.sluice = harness.start_sluice(upstream=cls.upstream.address)

    @classmethod
    def tearDownClass(cls):
        cls.sluice.stop()
        cls.upstream.stop()

    def test_health_serving_on_admin_port(self):
        stub = health_pb2_grpc.HealthStub(harness.channel(self.sluice.admin))
        resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING)
        # The upstream's own entry turns SERVING once a channel is connected.
        harness.wait_until(
            lambda: stub.Check(health_pb2.HealthCheckRequest(service="default"),
                               timeout=5).status == health_pb2.HealthCheckResponse.SERVING,
            timeout=10, what="upstream default SERVING")

    def test_unknown_health_service_is_not_found(self):
        stub = health_pb2_grpc.HealthStub(harness.channel(self.sluice.admin))
        with self.assertRaises(grpc.RpcError) as e:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_metrics_answer(self):
        text = harness.scrape(self.sluice.metrics)
        self.assertEqual(harness.metric_value(text, "sluice_build_info"), 1.0)
        self.assertIsNotNone(harness.metric_value(text, "sluice_calls_in_flight"))

    def test_admin_status_and_config(self):
        stub = admin_pb2_grpc.AdminStub(harness.channel(self.sluice.admin))
        status = stub.GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
        self.assertEqual(status.data_address, self.sluice.data)
        self.assertEqual(status.workers, 2)
        self.assertFalse(status.draining)
        config = stub.GetConfig(admin_pb2.GetConfigRequest(), timeout=5)
        self.assertEqual(config.source, "flags")
        self.assertIn(self.upstream.address, config.config_json)
        self.assertEqual(config.config_hash, status.config_hash)


class CheckFlagTest(unittest.TestCase):
    def run_check(self, path):
        return subprocess.run([harness.SLUICE, f"--config={path}", "--check"],
                              capture_output=True, text=True, timeout=30)

    def test_every_example_config_is_valid(self):
        examples = glob.glob(os.path.join(harness.ROOT, "deploy", "examples", "*.yaml"))
        self.assertTrue(examples)
        for path in examples:
            r = self.run_check(path)
            self.assertEqual(r.returncode, 0, f"{path}: {r.stderr}")
            self.assertIn("config OK", r.stdout)

    def test_bad_config_exits_2_naming_file_and_field(self):
        path = harness.write_config(
            "upstreams:\n  - name: a\n    target: 127.0.0.1:1\n"
            "routes:\n  - name: r\n    match: {prefix: /}\n    upstream: b\n")
        r = self.run_check(path)
        self.assertEqual(r.returncode, 2)
        self.assertIn(path, r.stderr)
        self.assertIn("routes[0].upstream", r.stderr)

    def test_daemon_refuses_to_start_on_bad_config(self):
        path = harness.write_config("workers: lots\n")
        r = subprocess.run([harness.SLUICE, f"--config={path}"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("workers", r.stderr)

    def test_missing_file(self):
        r = self.run_check("/nonexistent/sluice.yaml")
        self.assertEqual(r.returncode, 2)
        self.assertIn("/nonexistent/sluice.yaml", r.stderr)


class HelpTest(unittest.TestCase):
    def test_help_lists_the_flags(self):
        r = subprocess.run([harness.SLUICE, "--help"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)   # what absl's --help exits with
        self.assertIn("sluice --config=FILE", r.stdout)
        self.assertNotIn("No flags matched", r.stdout)
        self.assertNotIn("--flagfile", r.stdout)      # not absl's own flags
        for flag in ("--config", "--check", "--listen", "--admin", "--upstream",
                     "--ready_file", "--watch_config"):
            self.assertIn(flag, r.stdout)


class SignalTest(unittest.TestCase):
    def test_sigterm_exits_zero(self):
        upstream = harness.start_upstream()
        try:
            s = harness.start_sluice(upstream=upstream.address)
            s.signal(signal.SIGTERM)
            self.assertEqual(s.wait(timeout=30), 0, s.output())
            s.stop()
        finally:
            upstream.stop()


if __name__ == "__main__":
    harness.main()
