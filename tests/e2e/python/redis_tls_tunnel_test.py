"""The documented TLS recipe for Sluice's Redis link (docs/limits.md, "TLS to
Redis"): Debian 12's hiredis 0.14 has no TLS, so Sluice talks plain RESP to
a local stunnel4 in client mode, which verifies Redis' certificate and
carries the link over TLS. Here a real redis-server listens on a TLS port
only (its plain port off, AUTH required), stunnel4 runs on loopback in
front of it, and a global limit through the tunnel is enforced exactly
(burst 2: 2 admitted, 3 rejected by Redis). Certificates are made by the
test with the openssl command line. Every process is stopped by its PID.
"""

import os
import signal
import socket
import subprocess
import time
import unittest

import harness
import grpc
from grpc.testing import test_pb2_grpc
from limits_lib import UNARY, call_unary, unary_req

OPENSSL = "/usr/bin/openssl"
STUNNEL = "/usr/bin/stunnel4"
PASSWORD = "tunnel-Pw-51e0"


def _openssl(*args):
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """A process this test started; stopped by its PID only."""

    def __init__(self, name, argv):
        self.log_path = os.path.join(harness.TMP, f"{name}-{time.monotonic_ns()}.log")
        self.log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        self.log.close()


@unittest.skipUnless(os.path.exists(STUNNEL), "stunnel4 not installed (scripts/install-deps)")
class RedisTlsTunnelTest(unittest.TestCase):
    def setUp(self):
        self.procs = []
        d = os.path.join(harness.TMP, f"tunnel-{time.monotonic_ns()}")
        os.makedirs(d)
        self.dir = d
        ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=redis-ca")
        cert, key = os.path.join(d, "redis.pem"), os.path.join(d, "redis.key")
        csr, ext = os.path.join(d, "redis.csr"), os.path.join(d, "redis.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
        _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                 "-out", cert, "-days", "2", "-extfile", ext)
        self.ca, self.cert, self.key = ca, cert, key

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()

    def start(self, name, argv):
        p = Proc(name, argv)
        self.procs.append(p)
        return p

    def test_global_limit_through_stunnel(self):
        tls_port = harness.closed_port()
        redis = self.start("redis-tls", [
            "/usr/bin/redis-server", "--port", "0", "--bind", "127.0.0.1",
            "--tls-port", str(tls_port), "--tls-cert-file", self.cert,
            "--tls-key-file", self.key, "--tls-ca-cert-file", self.ca,
            "--tls-auth-clients", "no", "--requirepass", PASSWORD,
            "--save", "", "--appendonly", "no", "--dir", self.dir])
        harness.wait_until(lambda: listening(tls_port) or redis.popen.poll() is not None,
                           timeout=10, what="redis TLS port")
        self.assertIsNone(redis.popen.poll(), redis.output())

        local_port = harness.closed_port()
        conf = os.path.join(self.dir, "stunnel.conf")
        with open(conf, "w") as f:
            f.write(f"""foreground = yes
pid =
[redis]
client = yes
accept = 127.0.0.1:{local_port}
connect = 127.0.0.1:{tls_port}
verifyChain = yes
CAfile = {self.ca}
checkHost = localhost
""")
        tunnel = self.start("stunnel", [STUNNEL, conf])
        harness.wait_until(lambda: listening(local_port) or tunnel.popen.poll() is not None,
                           timeout=10, what="stunnel's local port")
        self.assertIsNone(tunnel.popen.poll(), tunnel.output())

        with open(os.path.join(self.dir, "password"), "w") as f:
            f.write(PASSWORD + "\n")
        config = os.path.join(self.dir, "sluice.yaml")
        with open(config, "w") as f:
            f.write(f"""drain_timeout: 1s
redis:
  address: 127.0.0.1:{local_port}   # stunnel, not Redis
  password_file: password
  timeout: 2s
  connect_timeout: 1s
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
routes:
  - name: shared
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: two
        scope: global
        rate: {{per_second: 1, burst: 2}}
        global: {{fallback: fail_closed}}
""")
        upstream = harness.start_upstream()
        self.procs.append(upstream)
        sluice = harness.start_sluice(config_path=config, upstream=upstream.address)
        self.procs.append(sluice)
        harness.wait_until(
            lambda: harness.metric(sluice, "sluice_limit_redis_state",
                                   {"route": "shared", "limit": "two", "state": "ok"}) == 1
            and "authenticated" in sluice.output(),
            timeout=10, what="redis reached through the tunnel")
        with harness.channel(sluice.data) as ch:
            stub = test_pb2_grpc.TestServiceStub(ch)
            outcomes = [call_unary(stub.UnaryCall, unary_req()) for _ in range(5)]
        codes = [o.code for o in outcomes]
        self.assertEqual(codes.count(grpc.StatusCode.OK), 2, codes)
        for o in outcomes[2:]:
            self.assertEqual(o.code, grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertNotIn("redis unavailable", o.details)  # Redis said no
        self.assertEqual(harness.metric(sluice, "sluice_limit_fallback_active"), 0)
        self.assertEqual(harness.metric(sluice, "sluice_redis_errors_total") or 0, 0)


if __name__ == "__main__":
    harness.main()
