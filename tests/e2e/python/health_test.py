"""Admin health follows the upstreams: an upstream marked `required` that
goes away turns the overall status NOT_SERVING, and SERVING again when it
comes back; a non-required one only changes its own entry."""

import socket
import unittest

import harness
from grpc.health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
            stub = health_pb2_grpc.HealthStub(harness.channel(sluice.admin))

            def status(service):
                return stub.Check(health_pb2.HealthCheckRequest(service=service),
                                  timeout=5).status

            harness.wait_until(lambda: status("") == SERVING, timeout=15, what="SERVING")
            self.assertEqual(status("main"), SERVING)
            # Nothing listens for "optional": its entry is NOT_SERVING, but it
            # is not required, so the overall status stays SERVING.
            self.assertEqual(status("optional"), NOT_SERVING)

            upstream.stop()
            harness.wait_until(lambda: status("") == NOT_SERVING, timeout=15,
                               what="NOT_SERVING after the upstream stopped")
            self.assertEqual(status("main"), NOT_SERVING)

            upstream = harness.start_upstream(address)
            harness.wait_until(lambda: status("") == SERVING, timeout=30,
                               what="SERVING after the upstream came back")
            self.assertEqual(status("main"), SERVING)
        finally:
            sluice.stop()
            upstream.stop()


if __name__ == "__main__":
    harness.main()
