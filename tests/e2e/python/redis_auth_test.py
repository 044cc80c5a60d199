"""Redis AUTH for global limits (issue 19) through the real sluice binary and
real redis-server processes (Debian's, each on a free 127.0.0.1 port,
stopped by PID): the right password with an ACL user enforces the limit;
a wrong password and a missing one are reported (log at error level naming
the Redis and the limit, sluice_redis_errors_total{kind="auth"},
sluice_limit_redis_state{state="auth"}, the admin API) before any call,
never as "unreachable" and never showing the secret; a rotated password
file fixes it on SIGHUP; redis.not_ready_in_fallback turns readiness
NOT_SERVING meanwhile; --check stays offline but checks the files.
"""

import os
import signal
import subprocess
import time
import unittest

import harness
import grpc
from grpc.health.v1 import health_pb2, health_pb2_grpc
from grpc.testing import test_pb2_grpc
from limits_lib import UNARY, call_unary, unary_req
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc

ADMIN_PW = "admin-Pw-0d6f"
USER_PW = "user-Pw-93ab"
WRONG_PW = "wrong-Pw-77c1"


def auth_redis():
    """A redis-server with requirepass and an ACL user "sluice"."""
    return harness.RedisServer(
        extra=["--requirepass", ADMIN_PW,
               "--user", "sluice", "on", f">{USER_PW}", "~*", "+@all"],
        ready_reply=b"-NOAUTH")


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)  # as a Secret mount swaps its files


class RedisAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.redis = auth_redis()

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()
        cls.upstream.stop()

    def setUp(self):
        self.dir = os.path.join(harness.TMP, f"auth-{time.monotonic_ns()}")
        os.makedirs(self.dir)
        self.sluice = None
        self.channels = []

    def tearDown(self):
        for ch in self.channels:
            ch.close()
        if self.sluice is not None:
            rc = self.sluice.stop()
            self.assertEqual(rc, 0, self.sluice.output()[-3000:])

    def config(self, auth, extra=""):
        # Paths relative to the config file's folder, like a Secret mount.
        return f"""drain_timeout: 1s
redis:
  address: 127.0.0.1:{self.redis.port}
  key_prefix: "t{time.monotonic_ns()}:"
  timeout: 2s
  connect_timeout: 500ms
{auth}{extra}upstreams:
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
  - name: default
    match: {{prefix: /}}
    upstream: demo
"""

    def start(self, auth, extra=""):
        path = os.path.join(self.dir, "sluice.yaml")
        with open(path, "w") as f:
            f.write(self.config(auth, extra))
        self.config_path = path
        self.sluice = harness.start_sluice(config_path=path, upstream=self.upstream.address)
        ch = harness.channel(self.sluice.data)
        self.channels.append(ch)
        admin = harness.channel(self.sluice.admin)
        self.channels.append(admin)
        self.stub = test_pb2_grpc.TestServiceStub(ch)
        self.admin = admin_pb2_grpc.AdminStub(admin)
        self.health = health_pb2_grpc.HealthStub(admin)

    def state(self):
        text = harness.scrape(self.sluice.metrics)
        for s in ("ok", "connecting", "auth", "unreachable", "slow", "error"):
            if harness.metric_value(text, "sluice_limit_redis_state",
                                    {"route": "shared", "limit": "two", "state": s}) == 1:
                return s
        return None

    def global_status(self):
        (limit,) = [l for l in self.admin.ListLimits(admin_pb2.ListLimitsRequest(),
                                                     timeout=5).limits
                    if l.name == "two"]
        return limit.HasField("global"), getattr(limit, "global")

    def ready(self):
        return self.health.Check(health_pb2.HealthCheckRequest(service=""),
                                 timeout=5).status == health_pb2.HealthCheckResponse.SERVING

    def assert_enforced(self):
        """Burst 2 at 1/s: of 5 calls at once, 2 admitted, 3 rate limited by
        Redis (with a RetryInfo, unlike fail_closed's rejections)."""
        outcomes = [call_unary(self.stub.UnaryCall, unary_req()) for _ in range(5)]
        codes = [o.code for o in outcomes]
        self.assertEqual(codes.count(grpc.StatusCode.OK), 2, codes)
        for o in outcomes[2:]:
            self.assertEqual(o.code, grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertNotIn("redis unavailable", o.details)

    def assert_no_secret(self):
        out = self.sluice.output()
        for secret in (ADMIN_PW, USER_PW, WRONG_PW):
            self.assertNotIn(secret, out)
        cfg = self.admin.GetConfig(admin_pb2.GetConfigRequest(), timeout=5)
        for secret in (ADMIN_PW, USER_PW, WRONG_PW):
            self.assertNotIn(secret, str(cfg))

    def test_acl_user_and_right_password(self):
        write(os.path.join(self.dir, "user"), "sluice\n")
        write(os.path.join(self.dir, "password"), USER_PW + "\n")
        self.start("  username_file: user\n  password_file: password\n")
        harness.wait_until(lambda: self.state() == "ok", timeout=10, what="redis state ok")
        self.assert_enforced()
        has, g = self.global_status()
        self.assertTrue(has)
        self.assertEqual((g.link, g.redis_state, g.fallback_active, g.fallback),
                         ("up", "ok", False, "fail_closed"))
        self.assertEqual(g.redis, f"127.0.0.1:{self.redis.port}")
        self.assertEqual(harness.metric(self.sluice, "sluice_redis_errors_total",
                                        {"kind": "auth"}), 0)
        self.assertIn("connected and authenticated", self.sluice.output())
        self.assert_no_secret()

    def test_wrong_password_reported_then_rotated_file_fixes_it(self):
        pw = os.path.join(self.dir, "password")
        write(pw, WRONG_PW + "\n")
        self.start("  password_file: password\n", "  not_ready_in_fallback: true\n")
        # Reported without any call: metric, log, admin API, readiness.
        harness.wait_until(lambda: self.state() == "auth", timeout=10, what="redis state auth")
        self.assertGreater(harness.metric(self.sluice, "sluice_redis_errors_total",
                                          {"kind": "auth"}), 0)
        out = self.sluice.output()
        line = [l for l in out.splitlines() if "authentication failed" in l][0]
        self.assertIn(" error ", line)
        self.assertIn(f"redis 127.0.0.1:{self.redis.port}", line)
        self.assertIn('"shared/two"', line)
        self.assertIn("WRONGPASS", line)
        self.assertNotIn("unreachable", out)
        _, g = self.global_status()
        self.assertEqual((g.link, g.redis_state), ("auth_failed", "auth"))
        self.assertTrue(g.redis_error.startswith("WRONGPASS"), g.redis_error)
        harness.wait_until(lambda: not self.ready(), timeout=5, what="NOT_SERVING")
        # fail_closed: every call rejected, naming Redis.
        o = call_unary(self.stub.UnaryCall, unary_req())
        self.assertEqual(o.code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("redis unavailable", o.details)
        # Reload with the file unchanged: said again.
        self.sluice.signal(signal.SIGHUP)
        harness.wait_until(lambda: "authentication still fails" in self.sluice.output(),
                           timeout=10, what="error repeated on reload")
        # The Secret is rotated behind the same path; SIGHUP picks it up.
        write(pw, ADMIN_PW + "\n")
        self.sluice.signal(signal.SIGHUP)
        harness.wait_until(lambda: self.state() == "ok", timeout=10, what="redis state ok")
        harness.wait_until(self.ready, timeout=5, what="SERVING")
        _, g = self.global_status()
        self.assertEqual((g.link, g.redis_state, g.redis_error), ("up", "ok", ""))
        self.assert_enforced()
        self.assert_no_secret()

    def test_missing_password_is_noauth_and_readiness_unchanged_by_default(self):
        self.start("")
        harness.wait_until(lambda: self.state() == "auth", timeout=10, what="redis state auth")
        line = [l for l in self.sluice.output().splitlines()
                if "authentication failed" in l][0]
        self.assertIn("NOAUTH", line)
        self.assertIn("redis.password_file", line)
        _, g = self.global_status()
        self.assertEqual(g.link, "auth_failed")
        self.assertTrue(self.ready())  # not_ready_in_fallback is off

    def test_check_is_offline_and_checks_the_files(self):
        def check(auth):
            path = os.path.join(self.dir, f"check-{time.monotonic_ns()}.yaml")
            with open(path, "w") as f:
                f.write(self.config(auth).replace(str(self.redis.port), "1"))
            p = subprocess.run([harness.SLUICE, f"--config={path}", "--check"],
                               capture_output=True, text=True, timeout=20)
            return p.returncode, p.stdout + p.stderr
        rc, out = check("  password_file: absent\n")
        self.assertEqual(rc, 2, out)
        self.assertIn("redis.password_file", out)
        write(os.path.join(self.dir, "pw"), USER_PW + "\n")
        rc, out = check("  password_file: pw\n")  # Redis on port 1: not asked
        self.assertEqual(rc, 0, out)
        self.assertNotIn(USER_PW, out)
        # A URL with credentials is refused with a hint, never echoed.
        path = os.path.join(self.dir, "url.yaml")
        with open(path, "w") as f:
            f.write(self.config("").replace(f"127.0.0.1:{self.redis.port}",
                                            f"redis://sluice:{USER_PW}@127.0.0.1:1"))
        p = subprocess.run([harness.SLUICE, f"--config={path}", "--check"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("redis.password_file", p.stdout + p.stderr)
        self.assertNotIn(USER_PW, p.stdout + p.stderr)


if __name__ == "__main__":
    harness.main()
