"""Admin health follows the upstreams: an upstream marked `required` that
goes away turns the overall status NOT_SERVING, and SERVING again when it
comes back; a non-required one only changes its own entry. With a
health_check, the upstream's own grpc.health.v1.Health answer counts too."""

import signal
import unittest

import harness
from grpc.health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


free_port = harness.closed_port


def admin_health(sluice):
    """A function: service name -> its status on Sluice's admin port."""
    stub = health_pb2_grpc.HealthStub(harness.channel(sluice.admin))
    return lambda service: stub.Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5).status


class HealthTest(unittest.TestCase):
    def test_required_upstream_drives_overall_health(self):
        port = free_port()
        address = f"127.0.0.1:{port}"
        upstream = harness.start_upstream(address)
        config = harness.write_config(f"""
upstreams:
  - {{name: main, target: "{address}", required: true}}
  - {{name: optional, target: "127.0.0.1:{free_port()}"}}
routes: [{{name: all, match: {{prefix: /}}, upstream: main}}]
""")
        sluice = harness.start_sluice(config_path=config)
        try:
            status = admin_health(sluice)

            def gauges():
                text = harness.scrape(sluice.metrics)
                return (harness.metric_value(text, "sluice_ready"),
                        harness.metric_value(text, "sluice_upstream_serving",
                                             {"upstream": "main"}),
                        harness.metric_value(text, "sluice_upstream_serving",
                                             {"upstream": "optional"}),
                        harness.metric_value(text, "sluice_upstream_serving",
                                             {"upstream": "liveness"}))

            harness.wait_until(lambda: status("") == SERVING, timeout=15, what="SERVING")
            self.assertEqual(status("main"), SERVING)
            # Nothing listens for "optional": its entry is NOT_SERVING, but it
            # is not required, so the overall status stays SERVING.
            self.assertEqual(status("optional"), NOT_SERVING)
            # The same as gauges, for alerts (no series for "liveness").
            self.assertEqual(gauges(), (1.0, 1.0, 0.0, None))

            upstream.stop()
            harness.wait_until(lambda: status("") == NOT_SERVING, timeout=15,
                               what="NOT_SERVING after the upstream stopped")
            self.assertEqual(status("main"), NOT_SERVING)
            self.assertEqual(gauges(), (0.0, 0.0, 0.0, None))
            # The liveness service only says the process runs.
            self.assertEqual(status("liveness"), SERVING)

            upstream = harness.start_upstream(address)
            harness.wait_until(lambda: status("") == SERVING, timeout=30,
                               what="SERVING after the upstream came back")
            self.assertEqual(status("main"), SERVING)
        finally:
            sluice.stop()
            upstream.stop()

    def test_upstream_health_check_must_answer_serving(self):
        upstream = harness.start_upstream()

        def config_text(service):
            return f"""
upstreams:
  - name: main
    target: "{upstream.address}"
    required: true
    health_check: {{service: "{service}", interval: 100ms, timeout: 100ms}}
routes: [{{name: all, match: {{prefix: /}}, upstream: main}}]
"""
        path = harness.write_config(config_text("grpc.testing.TestService"))
        sluice = harness.start_sluice(config_path=path, extra=["--watch_config=false"])
        try:
            status = admin_health(sluice)

            harness.wait_until(lambda: status("") == SERVING, timeout=15, what="SERVING")
            # Connected, but the upstream does not know this service
            # (NOT_FOUND): not serving, and so neither is Sluice.
            with open(path, "w") as f:
                f.write(config_text("no.such.Service"))
            sluice.signal(signal.SIGHUP)
            harness.wait_until(lambda: status("") == NOT_SERVING, timeout=15,
                               what="NOT_SERVING for an unknown upstream service")
            self.assertEqual(status("main"), NOT_SERVING)
            with open(path, "w") as f:
                f.write(config_text(""))  # the upstream's overall status
            sluice.signal(signal.SIGHUP)
            harness.wait_until(lambda: status("") == SERVING, timeout=15,
                               what="SERVING again")
            self.assertEqual(status("main"), SERVING)
        finally:
            sluice.stop()
            upstream.stop()


if __name__ == "__main__":
    harness.main()
