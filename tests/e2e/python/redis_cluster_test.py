"""Global limits through a Redis Cluster (redis.cluster): a local cluster of 3
masters + 3 replicas created by each test (redis_cluster.py: redis-server
--cluster-enabled yes on free loopback ports, redis-cli --cluster create
--cluster-replicas 1, cluster-node-timeout 1 s, a password on every node),
the real sluice binary in front of the demo upstream.

- Keys spread over the three masters are each enforced exactly, every
  request going straight to the key's master (no redirection once the
  slot map is known), with AUTH on every node.
- A slot being migrated: ASK is followed (ASKING on the importing node) and
  the key's state lives there.
- The master serving a limit's key is killed (SIGKILL of the PID this test
  started): the limit enters its fallback, then enforces globally again
  once the replica is promoted.
"""

import os
import time
import unittest

import harness
import grpc
import redis_cluster
from grpc.testing import test_pb2_grpc
from limits_lib import RE, UNARY, call_unary, unary_req

PASSWORD = "cluster-s3cret"


def config(seeds, password_file, routes):
    listed = ", ".join(f'"{s}"' for s in seeds)
    return f"""drain_timeout: 1s
redis:
  cluster: [{listed}]
  password_file: {password_file}
  timeout: 500ms
  connect_timeout: 500ms
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
routes:
{routes}
  - name: default
    match: {{prefix: /}}
    upstream: demo
"""


class RedisClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()

    @classmethod
    def tearDownClass(cls):
        cls.upstream.stop()

    def setUp(self):
        self.cluster = redis_cluster.RedisCluster(masters=3, node_timeout_ms=1000,
                                                  password=PASSWORD)
        self.sluice = None
        self.ch = None

    def tearDown(self):
        try:
            if self.ch is not None:
                self.ch.close()
            if self.sluice is not None:
                rc = self.sluice.stop()
                self.assertEqual(rc, 0, self.sluice.output()[-3000:])
        finally:
            self.cluster.stop()

    def start(self, routes):
        password_file = os.path.join(harness.TMP, f"cluster-password-{time.monotonic_ns()}")
        with open(password_file, "w") as f:
            f.write(PASSWORD + "\n")
        path = harness.write_config(config(self.cluster.seeds(), password_file, routes))
        self.sluice = harness.start_sluice(config_path=path, upstream=self.upstream.address)
        self.ch = harness.channel(self.sluice.data)
        self.stub = test_pb2_grpc.TestServiceStub(self.ch)
        # The slot map is read once a node is up: wait for the log line.
        harness.wait_until(lambda: "masters serve 16384 of 16384 slots" in self.sluice.output(),
                           timeout=10, what="the slot map")

    def call(self, user=None):
        md = (("x-user", user),) if user is not None else None
        return call_unary(self.stub.UnaryCall, unary_req(), metadata=md)

    def round_trips(self):
        return harness.metric(self.sluice, "sluice_redis_request_duration_seconds_count") or 0

    def test_keys_on_every_master_each_enforced_with_no_redirection(self):
        self.start(f"""  - name: keyed
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: per_user
        scope: global
        key: ["header:x-user"]
        rate: {{per_minute: 1, burst: 3}}
""")
        # Two users whose keys land on each of the three masters.
        by_master = {}
        for i in range(300):
            user = f"u{i}"
            port = self.cluster.master_for(f"sluice:keyed:per_user:{user}")
            if len(by_master.setdefault(port, [])) < 2:
                by_master[port].append(user)
            if len(by_master) == 3 and all(len(u) == 2 for u in by_master.values()):
                break
        self.assertEqual(len(by_master), 3, "keys on every master")
        users = sum(by_master.values(), [])
        before = self.round_trips()
        for user in users:
            outcomes = [self.call(user) for _ in range(5)]
            codes = [o.code for o in outcomes]
            # Burst 3, one token a minute: exactly 3 of 5, whichever master.
            self.assertEqual(codes[:3], [grpc.StatusCode.OK] * 3, (user, outcomes))
            self.assertEqual(outcomes[3].code, RE, (user, outcomes))
            self.assertEqual(outcomes[3].reason, "rate_limited")
        trips = self.round_trips() - before
        # Each of the first four calls of a user asks Redis once (the fifth
        # is rejected from the refusal cache); the periodic slot-map
        # refresh (every 5 s) may add a trip or two on a slow machine. No
        # key needed a redirection.
        self.assertGreaterEqual(trips, 4 * len(users), f"{trips} round trips")
        self.assertLess(trips, 5 * len(users), f"{trips} round trips")
        self.assertEqual(harness.metric(self.sluice, "sluice_redis_cluster_redirects_total",
                                        {"kind": "moved"}), 0)
        self.assertEqual(harness.metric(self.sluice, "sluice_redis_errors_total") or 0, 0)
        self.assertEqual(harness.metric(self.sluice, "sluice_limit_redis_state",
                                        {"state": "ok"}), 1)

    def test_ask_during_a_slot_migration_is_followed(self):
        self.start(f"""  - name: keyed
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: per_user
        scope: global
        key: ["header:x-user"]
        rate: {{per_minute: 1, burst: 1}}
""")
        user = "migrating"
        key = f"sluice:keyed:per_user:{user}"
        slot = int(self.cluster.cli(self.cluster.ports[0], "CLUSTER", "KEYSLOT", key))
        source = self.cluster.master_for(key)
        target = next(p for p in self.cluster.masters() if p != source)
        source_id = self.cluster.cli(source, "CLUSTER", "MYID")
        target_id = self.cluster.cli(target, "CLUSTER", "MYID")
        self.assertEqual(self.cluster.cli(target, "CLUSTER", "SETSLOT", str(slot),
                                          "IMPORTING", source_id), "OK")
        self.assertEqual(self.cluster.cli(source, "CLUSTER", "SETSLOT", str(slot),
                                          "MIGRATING", target_id), "OK")
        # The key is not on the source: it answers ASK, and the script runs
        # on the target after ASKING.
        first = self.call(user)
        self.assertEqual(first.code, grpc.StatusCode.OK, first)
        self.assertEqual(self.cluster.cli(target, "CLUSTER", "COUNTKEYSINSLOT", str(slot)), "1")
        self.assertEqual(self.cluster.cli(source, "CLUSTER", "COUNTKEYSINSLOT", str(slot)), "0")
        # The state is the target's: the second call is refused there.
        second = self.call(user)
        self.assertEqual((second.code, second.reason), (RE, "rate_limited"), second)
        self.assertEqual(harness.metric(self.sluice, "sluice_redis_errors_total") or 0, 0)

    def test_master_killed_fallback_then_global_again_after_promotion(self):
        self.start(f"""  - name: closed
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: g
        scope: global
        rate: {{per_second: 20, burst: 20}}
        global: {{fallback: fail_closed}}
""")
        t = time.monotonic()
        before = [self.call() for _ in range(30)]
        refill = int((time.monotonic() - t) * 20) + 1
        n_before = sum(o.code == grpc.StatusCode.OK for o in before)
        self.assertGreaterEqual(n_before, 20, before)
        self.assertLessEqual(n_before, 20 + refill, before)

        victim = self.cluster.master_for("sluice:closed:g")
        t_kill = time.monotonic()
        self.cluster.kill(victim)

        def in_fallback():
            # A failed request gets the fallback at once; three in a row
            # put the limit in fallback.
            o = self.call()
            return (o.code == RE and "redis unavailable" in o.details and
                    harness.metric(self.sluice, "sluice_limit_fallback_active",
                                   {"route": "closed"}) == 1)
        harness.wait_until(in_fallback, timeout=10, interval=0.05, what="fallback")
        entered = time.monotonic() - t_kill

        def enforced_again():
            o = self.call()
            return o.code == grpc.StatusCode.OK or (
                o.code == RE and "redis unavailable" not in o.details)
        # The replica's promotion takes cluster-node-timeout (1 s) and an
        # election: a few seconds; 30 s only a defect exceeds.
        harness.wait_until(enforced_again, timeout=30, interval=0.05,
                           what="global enforcement after the promotion")
        left = time.monotonic() - t_kill
        self.assertNotEqual(self.cluster.master_for("sluice:closed:g"), victim)
        self.assertEqual(harness.metric(self.sluice, "sluice_limit_fallback_active",
                                        {"route": "closed"}), 0)
        print(f"master 127.0.0.1:{victim} killed: fallback after {entered:.2f}s, "
              f"global enforcement again after {left:.2f}s")
        log = self.sluice.output()
        self.assertIn("fallback \"fail_closed\" in effect", log)
        self.assertIn("global enforcement resumed", log)
        self.assertNotIn(PASSWORD, log)

        # Enforced through the promoted master (AUTH on its new connection):
        # a fresh burst is admitted, then refused by the rate, not by the
        # fallback.
        time.sleep(1.1)  # Redis' clock refills the bucket (20/s, burst 20)
        t = time.monotonic()
        after = [self.call() for _ in range(30)]
        refill = int((time.monotonic() - t) * 20) + 1
        n_after = sum(o.code == grpc.StatusCode.OK for o in after)
        self.assertGreaterEqual(n_after, 15, after)
        self.assertLessEqual(n_after, 20 + refill, after)
        refused = [o for o in after if o.code != grpc.StatusCode.OK]
        self.assertTrue(refused, after)
        for o in refused:
            self.assertEqual((o.code, o.reason), (RE, "rate_limited"), o)
            self.assertNotIn("redis unavailable", o.details)


if __name__ == "__main__":
    harness.main()
