"""A listener port another process holds is refused, not shared: the real
sluice exits non-zero with one line per busy listener naming the listener,
the address and the OS's reason, e.g.

    sluice: listeners.admin: cannot listen on 127.0.0.1:9901: address already in use

and neither gRPC's multi-line error dump nor civetweb's "null context".
The holder is a plain socket, a gRPC server with gRPC's default
SO_REUSEPORT (the demo upstream), or another sluice."""

import socket
import subprocess
import unittest

import harness
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc

IN_USE = "address already in use"


class HeldPortTest(unittest.TestCase):
    def hold(self):
        """A 127.0.0.1 address a listening socket of this process holds."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        self.addCleanup(s.close)
        return f"127.0.0.1:{s.getsockname()[1]}"

    def run_sluice(self, data="127.0.0.1:0", admin="127.0.0.1:0", metrics="127.0.0.1:0",
                   health=None):
        """Runs sluice to its exit (it must not start: a timeout fails)."""
        argv = [harness.SLUICE, f"--upstream=127.0.0.1:{harness.closed_port()}",
                f"--listen={data}", f"--admin={admin}", f"--metrics={metrics}",
                "--workers=1"] + ([f"--health={health}"] if health else [])
        return subprocess.run(argv, capture_output=True, text=True, timeout=20)

    def assert_refused(self, result, *lines):
        """Exit status 1 and exactly `lines` as the whole output."""
        output = (result.stdout + result.stderr).splitlines()
        self.assertEqual(result.returncode, 1, output)
        self.assertEqual(output, ["sluice: " + lines[0]] + list(lines[1:]))

    def test_data_port_held_by_another_process(self):
        address = self.hold()
        self.assert_refused(self.run_sluice(data=address),
                            f"listeners.data: cannot listen on {address}: {IN_USE}")

    def test_admin_port_held_by_another_process(self):
        address = self.hold()
        self.assert_refused(self.run_sluice(admin=address),
                            f"listeners.admin: cannot listen on {address}: {IN_USE}")

    def test_metrics_port_held_by_another_process(self):
        address = self.hold()
        self.assert_refused(self.run_sluice(metrics=address),
                            f"listeners.metrics: cannot listen on {address}: {IN_USE}")

    def test_health_port_held_by_another_process(self):
        address = self.hold()
        self.assert_refused(self.run_sluice(health=address),
                            f"listeners.health: cannot listen on {address}: {IN_USE}")

    def test_every_busy_listener_is_named_at_once(self):
        data, metrics = self.hold(), self.hold()
        self.assert_refused(self.run_sluice(data=data, metrics=metrics),
                            f"listeners.data: cannot listen on {data}: {IN_USE}",
                            f"listeners.metrics: cannot listen on {metrics}: {IN_USE}")

    def test_ports_of_a_grpc_server_with_so_reuseport(self):
        # gRPC servers set SO_REUSEPORT by default, and two such servers
        # share a port silently; Sluice's listeners do not set it.
        upstream = harness.start_upstream()
        self.addCleanup(upstream.stop)
        for listener in ("data", "admin", "health"):
            self.assert_refused(
                self.run_sluice(**{listener: upstream.address}),
                f"listeners.{listener}: cannot listen on {upstream.address}: {IN_USE}")

    def test_admin_port_of_a_running_sluice(self):
        upstream = harness.start_upstream()
        self.addCleanup(upstream.stop)
        admin = f"127.0.0.1:{harness.closed_port()}"
        first = harness.start_sluice(upstream=upstream.address, extra=[f"--admin={admin}"])
        self.addCleanup(first.stop)
        self.assertEqual(first.admin, admin)
        self.assert_refused(self.run_sluice(admin=admin),
                            f"listeners.admin: cannot listen on {admin}: {IN_USE}")
        # Every admin call still reaches the first sluice (before, the
        # kernel split them between the two processes).
        ch = harness.channel(admin)
        self.addCleanup(ch.close)
        stub = admin_pb2_grpc.AdminStub(ch)
        for _ in range(10):
            status = stub.GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
            self.assertEqual(status.data_address, first.data)


if __name__ == "__main__":
    harness.main()
