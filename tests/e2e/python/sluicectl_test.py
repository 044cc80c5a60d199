"""sluicectl, the admin API's command line client, against the real sluice
binary: every command in table and --json form, set-limit's error paths,
`health` (readiness, liveness, an upstream, an unknown name, a drain),
offline `check` (same messages and exit codes as `sluice --check`), usage
errors, --help and an unreachable admin port.

One daemon (with limits) serves the read-only and set-limit tests; the drain
test starts its own, since draining ends the process.
"""

import json
import os
import subprocess
import threading
import unittest

import harness
import grpc
from grpc.testing import empty_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

SLUICECTL = os.path.join(harness.ROOT, "client", "sluicectl", "sluicectl")

CONFIG = """
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
routes:
  - name: api
    match: {prefix: /grpc.testing.TestService/}
    upstream: demo
    limits:
      - name: per-key   # slow refill: the keys' tokens differ for minutes
        rate: {per_minute: 6, burst: 20}
        key: ["header:x-api-key"]
        default_key: anonymous
      - name: in-flight
        concurrency: {max: 64, queue: 128, max_wait: 500ms}
      - name: global
        rate: {per_minute: 600}
        dry_run: true
  - name: feed
    match: {prefix: /sluice.demo.v1.Ticker/}
    upstream: demo
    limits:
      - name: pace
        messages: {per_second: 100, burst: 10}
      - name: spare
        rate: {per_second: 50}
"""

BAD_CONFIG = """
upstreams:
  - name: demo
    target: 127.0.0.1:1
routes:
  - name: api
    match: {prefix: /grpc.testing.TestService/}
    upstream: demo
    limits:
      - name: both
        rate: {per_second: 10, per_minute: 60}
      - name: empty
  - name: other
    match: {prefix: /x.Y/}
    upstream: backend
"""

DRAIN_CONFIG = """
drain_timeout: 10s
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
routes:
  - name: default
    match: {prefix: /}
    upstream: demo
"""

LIMIT_COLUMNS = ["ROUTE", "LIMIT", "RATE/BURST/TOKENS", "KEYS", "IN USE/MAX", "QUEUE/MAX",
                 "MSG/S", "ADMITTED", "REJECTED", "DRY-RUN", "QUEUED", "OVERRIDDEN"]


def sluicectl(*args, admin=None):
    """Runs sluicectl; returns the CompletedProcess (text stdout/stderr)."""
    argv = [SLUICECTL] + ([f"--admin={admin}"] if admin else []) + list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def sluice_check(path):
    return subprocess.run([harness.SLUICE, f"--config={path}", "--check"],
                          capture_output=True, text=True, timeout=60)


def parse_table(text, columns):
    """Rows of an aligned table as dicts, cut at the header's column
    offsets (so it also checks that every cell lines up with its header).
    Stops at the first blank line."""
    lines = text.splitlines()
    header = lines[0]
    starts = [header.index(c) for c in columns]
    assert starts == sorted(starts), header
    rows = []
    for line in lines[1:]:
        if not line.strip():
            break
        for start in starts[1:]:
            # Every cell ends before the two-space gutter of the next column.
            assert len(line) <= start or line[start - 2:start] == "  ", (line, header)
        row = {}
        for i, c in enumerate(columns):
            end = starts[i + 1] if i + 1 < len(columns) else None
            row[c] = line[starts[i]:end].strip()
        rows.append(row)
    return rows


class SluicectlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.config_path = harness.write_config(CONFIG)
        cls.sluice = harness.start_sluice(config_path=cls.config_path,
                                          upstream=cls.upstream.address)
        cls.data = harness.channel(cls.sluice.data)

    @classmethod
    def tearDownClass(cls):
        cls.data.close()
        cls.sluice.stop()
        cls.upstream.stop()

    def ctl(self, *args, ok=True):
        r = sluicectl(*args, admin=self.sluice.admin)
        if ok:
            self.assertEqual(r.returncode, 0, f"sluicectl {args}: {r.stderr}")
            self.assertEqual(r.stderr, "")
        return r

    def ctl_json(self, *args):
        return json.loads(self.ctl("--json", *args).stdout)

    def limit(self, name, top_keys=None):
        args = ["limits"] + ([f"--top_keys={top_keys}"] if top_keys else [])
        for lim in self.ctl_json(*args)["limits"]:
            if lim["name"] == name:
                return lim
        self.fail(f"no limit {name}")

    # ---- status / config --------------------------------------------------

    def test_status_table(self):
        out = self.ctl("status").stdout
        fields = {}
        for line in out.splitlines():
            key, _, value = line.partition("  ")
            fields[key] = value.strip()
        self.assertEqual(fields["version"], "0.1.0")
        self.assertEqual(fields["workers"], "2")
        self.assertEqual(fields["draining"], "no")
        self.assertEqual(fields["data address"], self.sluice.data)
        self.assertEqual(fields["admin address"], self.sluice.admin)
        self.assertEqual(fields["metrics address"], self.sluice.metrics)
        self.assertRegex(fields["config hash"], r"^[0-9a-f]{16}$")
        self.assertRegex(fields["uptime"], r"^[0-9hms.]+s$")
        self.assertIn("calls in flight", fields)
        # The values line up in one column.
        self.assertEqual(len({len(line) - len(v) for line, v in
                              zip(out.splitlines(), fields.values())}), 1, out)

    def test_status_json(self):
        s = self.ctl_json("status")
        self.assertEqual(s["version"], "0.1.0")
        self.assertEqual(s["workers"], 2)
        self.assertIs(s["draining"], False)
        self.assertEqual(s["calls_in_flight"], "0")   # int64: a JSON string
        self.assertEqual(s["admin_address"], self.sluice.admin)
        self.assertEqual(s["data_address"], self.sluice.data)
        self.assertGreater(s["uptime_seconds"], 0)

    def test_config(self):
        status = self.ctl_json("status")
        c = self.ctl_json("config")
        self.assertEqual(sorted(c), ["config_hash", "config_json", "source"])
        self.assertEqual(c["source"], self.config_path)
        self.assertEqual(c["config_hash"], status["config_hash"])
        config = json.loads(c["config_json"])
        self.assertEqual([r["name"] for r in config["routes"]], ["api", "feed"])
        self.assertEqual([lim["name"] for lim in config["routes"][0]["limits"]],
                         ["per-key", "in-flight", "global"])
        self.assertEqual(config["upstreams"][0]["target"], self.upstream.address)

        out = self.ctl("config").stdout
        head, _, body = out.partition("\n\n")
        self.assertEqual(head.splitlines(), [f"source  {self.config_path}",
                                             f"hash    {c['config_hash']}"])
        self.assertEqual(json.loads(body), config)

    # ---- health -------------------------------------------------------------

    def test_health(self):
        r = self.ctl("health")   # readiness, the service ""
        self.assertEqual(r.stdout, "SERVING\n")
        self.assertEqual(self.ctl("health", "liveness").stdout, "SERVING\n")
        self.assertEqual(self.ctl_json("health"), {"status": "SERVING"})
        # An upstream's entry: SERVING once a channel to it is connected.
        harness.wait_until(lambda: sluicectl("health", "demo", admin=self.sluice.admin)
                           .returncode == 0, what="upstream demo SERVING")
        self.assertEqual(self.ctl("health", "demo").stdout, "SERVING\n")
        # The token is sent (health itself needs none).
        token = os.path.join(harness.TMP, "health-token")
        with open(token, "w") as f:
            f.write("not-needed\n")
        self.assertEqual(self.ctl(f"--token_file={token}", "--timeout=2s", "health").stdout,
                         "SERVING\n")

    def test_health_unknown_service(self):
        r = self.ctl("health", "nope", ok=False)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (4, "SERVICE_UNKNOWN\n", ""))
        r = self.ctl("--json", "health", "nope", ok=False)
        self.assertEqual((r.returncode, json.loads(r.stdout)), (4, {"status": "SERVICE_UNKNOWN"}))

    # ---- limits -------------------------------------------------------------

    def test_limits(self):
        stub = test_pb2_grpc.TestServiceStub(self.data)
        for key in ["alice", "alice", "alice", "bob"]:
            stub.EmptyCall(empty_pb2.Empty(), metadata=[("x-api-key", key)], timeout=10)

        lim = self.limit("per-key", top_keys=1)
        self.assertEqual(lim["route"], "api")
        self.assertEqual(lim["key"], ["header:x-api-key"])
        self.assertEqual(lim["keys"], "2")
        self.assertAlmostEqual(lim["rate_per_second"], 0.1)
        self.assertEqual(lim["burst"], "20")
        self.assertEqual(len(lim["top_keys"]), 1)
        self.assertEqual(lim["top_keys"][0]["key"], "alice")   # fewest tokens left
        self.assertLess(lim["top_keys"][0]["tokens"], 18)
        self.assertEqual(lim["admitted"], "4")
        self.assertEqual(lim["rejected"], "0")
        top = self.limit("per-key")["top_keys"]   # server default: 10
        self.assertEqual([k["key"] for k in top], ["alice", "bob"])
        self.assertLess(top[0]["tokens"], top[1]["tokens"])

        out = self.ctl("limits").stdout
        rows = {(r["ROUTE"], r["LIMIT"]): r for r in parse_table(out, LIMIT_COLUMNS)}
        self.assertEqual(set(rows), {("api", "per-key"), ("api", "in-flight"),
                                     ("api", "global (dry run)"), ("feed", "pace"),
                                     ("feed", "spare")})
        per_key = rows[("api", "per-key")]
        self.assertEqual(per_key["RATE/BURST/TOKENS"], "0.1/20/-")
        self.assertEqual(per_key["KEYS"], "2 (header:x-api-key)")
        self.assertEqual(per_key["IN USE/MAX"], "-")
        self.assertEqual(per_key["ADMITTED"], "4")
        self.assertEqual(per_key["OVERRIDDEN"], "no")
        self.assertEqual(rows[("api", "global (dry run)")]["RATE/BURST/TOKENS"][:6], "10/10/")
        # (spare may have been overridden by test_set_limit_rate already.)
        self.assertRegex(rows[("feed", "spare")]["RATE/BURST/TOKENS"], r"^[\d.]+/\d+/\d+\.\d$")
        self.assertEqual(rows[("feed", "pace")]["MSG/S"], "100")
        # In-flight may have been overridden by test_set_limit_* already.
        self.assertRegex(rows[("api", "in-flight")]["IN USE/MAX"], r"^0/\d+$")
        self.assertRegex(rows[("api", "in-flight")]["QUEUE/MAX"], r"^0/\d+$")

        _, _, keys = out.partition("\ntop keys (fewest tokens left first):\n")
        key_rows = parse_table(keys, ["ROUTE", "LIMIT", "KEY", "TOKENS"])
        self.assertEqual([(r["ROUTE"], r["LIMIT"], r["KEY"]) for r in key_rows],
                         [("api", "per-key", "alice"), ("api", "per-key", "bob")])

    # ---- set-limit ----------------------------------------------------------

    def test_set_limit_rate(self):
        out = self.ctl("set-limit", "feed", "spare", "--rate=7", "--burst=3").stdout
        [row] = parse_table(out, LIMIT_COLUMNS)
        self.assertEqual((row["ROUTE"], row["LIMIT"]), ("feed", "spare"))
        # Nothing calls feed: its bucket is full and carries no debt.
        self.assertRegex(row["RATE/BURST/TOKENS"], r"^7/3/3\.0$")
        self.assertEqual(row["OVERRIDDEN"], "yes")

        r = self.ctl_json("set-limit", "feed", "spare", "--rate", "2.5")
        self.assertEqual(r["limit"]["rate_per_second"], 2.5)
        self.assertEqual(r["limit"]["burst"], "3")   # unchanged
        self.assertIs(r["limit"]["overridden"], True)
        lim = self.limit("spare")
        self.assertEqual((lim["rate_per_second"], lim["burst"], lim["overridden"]),
                         (2.5, "3", True))

    def test_set_limit_concurrency(self):
        r = self.ctl_json("set-limit", "api", "in-flight", "--concurrency=2", "--queue=1")
        self.assertEqual((r["limit"]["concurrency_max"], r["limit"]["queue_max"]), ("2", "1"))
        [row] = parse_table(self.ctl("set-limit", "api", "in-flight", "--queue=0").stdout,
                            LIMIT_COLUMNS)
        self.assertEqual((row["IN USE/MAX"], row["QUEUE/MAX"]), ("0/2", "0/0"))

    def test_set_limit_errors_from_the_server(self):
        cases = [
            (["api", "nope", "--rate=5"], 'NOT_FOUND: no limit "nope" on route "api"'),
            (["nope", "per-key", "--rate=5"], 'NOT_FOUND: no limit "per-key" on route "nope"'),
            (["feed", "pace", "--rate=5"],
             "FAILED_PRECONDITION: this limit has no rate part to override"),
            (["api", "per-key", "--concurrency=5"],
             "FAILED_PRECONDITION: this limit has no concurrency part to override"),
            (["api", "per-key", "--burst=0"], "INVALID_ARGUMENT: burst must be >= 1"),
            (["api", "per-key", "--rate=-1"], "INVALID_ARGUMENT: rate_per_second must be > 0"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                r = self.ctl("set-limit", *args, ok=False)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertEqual(r.stdout, "")
                self.assertEqual(r.stderr,
                                 f"sluicectl: set-limit {args[0]} {args[1]}: {message}\n")
        # Nothing was changed by the refused requests.
        self.assertIs(self.limit("per-key")["overridden"], False)

    # ---- usage errors -------------------------------------------------------

    def test_usage_errors(self):
        cases = [
            ([], "no command given"),
            (["frobnicate"], 'unknown command "frobnicate"'),
            (["status", "extra"], "status takes no arguments"),
            (["set-limit", "api"], "set-limit needs ROUTE LIMIT"),
            (["set-limit", "api", "per-key"],
             "set-limit needs at least one of --rate, --burst, --concurrency, --queue"),
            (["check"], "check needs CONFIG"),
            (["health", "a", "b"], "health takes at most one argument, SERVICE"),
            (["health", "--top_keys=3"], "--top_keys only applies to limits"),
            (["--bogus", "status"], "unknown flag --bogus"),
            (["limits", "--top_keys=many"], 'bad value "many" for --top_keys'),
            (["limits", "--top_keys=0"], "--top_keys must be >= 1"),
            (["status", "--rate=5"], "--rate only applies to set-limit"),
            (["set-limit", "api", "per-key", "--burst"], "flag --burst needs a value"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                r = self.ctl(*args, ok=False)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(r.stdout, "")
                self.assertTrue(r.stderr.startswith(f"sluicectl: {message}"), r.stderr)
                self.assertIn("usage: sluicectl", r.stderr)

    def test_help(self):
        r = self.ctl("--help", ok=False)
        self.assertEqual(r.returncode, 1, r.stderr)   # what absl's --help exits with
        self.assertIn("usage: sluicectl", r.stdout)
        self.assertIn("health [SERVICE]", r.stdout)
        self.assertNotIn("--flagfile", r.stdout)      # not absl's own flags
        for flag in ("--admin", "--token_file", "--timeout", "--json", "--top_keys",
                     "--rate"):
            self.assertIn(f"    {flag} (", r.stdout)   # absl's list of the flags

    # ---- unreachable --------------------------------------------------------

    def test_unreachable_admin_port(self):
        address = f"127.0.0.1:{harness.closed_port()}"
        for args in (["status"], ["config"], ["limits"], ["drain"], ["--json", "status"],
                     ["health"], ["health", "liveness"],
                     ["set-limit", "api", "per-key", "--rate=1"]):
            with self.subTest(args=args):
                r = sluicectl(*args, admin=address)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertEqual(r.stdout, "")
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                self.assertTrue(r.stderr.startswith(
                    f"sluicectl: cannot reach the admin API at {address}: UNAVAILABLE"),
                    r.stderr)


class CheckTest(unittest.TestCase):
    """`sluicectl check` needs no daemon and says what `sluice --check` says."""

    def test_good_file(self):
        path = harness.write_config(CONFIG)
        r = sluicectl("check", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, rf"^config OK: {path} \(hash [0-9a-f]{{16}}\)\n$")
        self.assertEqual(r.stderr, "")
        daemon = sluice_check(path)
        self.assertEqual((daemon.returncode, daemon.stdout), (0, r.stdout))

        j = json.loads(sluicectl("--json", "check", path).stdout)
        self.assertEqual(j, {"ok": True, "source": path,
                             "config_hash": r.stdout.split("hash ")[1].rstrip(")\n")})

    def test_bad_file(self):
        path = harness.write_config(BAD_CONFIG)
        r = sluicectl("check", path)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        lines = r.stderr.splitlines()
        self.assertGreaterEqual(len(lines), 3, r.stderr)
        for line in lines:
            self.assertTrue(line.startswith(f"{path}: "), line)
        self.assertIn(f"{path}: routes[0].limits[0].rate: set only one of per_second and "
                      "per_minute", lines)
        self.assertIn(f'{path}: routes[1].upstream: unknown upstream "backend"', lines)
        self.assertTrue(any("routes[0].limits[1]" in line for line in lines), lines)
        daemon = sluice_check(path)
        self.assertEqual((daemon.returncode, daemon.stderr), (2, r.stderr))

        j = sluicectl("--json", "check", path)
        self.assertEqual(j.returncode, 2)
        self.assertEqual(json.loads(j.stdout), {"ok": False, "source": path, "errors": lines})

    def test_missing_file(self):
        path = os.path.join(harness.TMP, "no-such-config.yaml")
        r = sluicectl("check", path)
        self.assertEqual(r.returncode, 2)
        self.assertIn(path, r.stderr)
        self.assertEqual(sluice_check(path).stderr, r.stderr)


class DrainTest(unittest.TestCase):
    def setUp(self):
        self.upstream = harness.start_upstream()
        self.sluice = harness.start_sluice(config_path=harness.write_config(DRAIN_CONFIG),
                                           upstream=self.upstream.address)

    def tearDown(self):
        self.sluice.stop()
        self.upstream.stop()

    def test_drain(self):
        admin = self.sluice.admin
        ch = harness.channel(self.sluice.data)
        # An endless stream keeps the daemon draining (not exited) until
        # the test cancels it.
        call = ticker_pb2_grpc.TickerStub(ch).Subscribe(
            ticker_pb2.SubscribeRequest(count=0, interval_ms=50), timeout=60)
        flowing = threading.Event()

        def read():
            try:
                for _ in call:
                    flowing.set()
            except grpc.RpcError:
                pass
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self.assertTrue(flowing.wait(10), "no ticks")
        harness.wait_until(
            lambda: json.loads(sluicectl("--json", "status", admin=admin).stdout)
            ["calls_in_flight"] == "1", what="one call in flight")

        r = sluicectl("drain", admin=admin)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "drain started\n", ""))
        status = json.loads(sluicectl("--json", "status", admin=admin).stdout)
        self.assertIs(status["draining"], True)
        self.assertEqual(status["calls_in_flight"], "1")
        self.assertIn("draining         yes", sluicectl("status", admin=admin).stdout)
        # Draining: not ready (readiness and the upstream), still alive.
        r = sluicectl("health", admin=admin)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (3, "NOT_SERVING\n", ""))
        r = sluicectl("--json", "health", "demo", admin=admin)
        self.assertEqual((r.returncode, json.loads(r.stdout)), (3, {"status": "NOT_SERVING"}))
        r = sluicectl("health", "liveness", admin=admin)
        self.assertEqual((r.returncode, r.stdout), (0, "SERVING\n"))
        r = sluicectl("--json", "drain", admin=admin)
        self.assertEqual((r.returncode, json.loads(r.stdout)), (0, {"started": False}))
        r = sluicectl("drain", admin=admin)
        self.assertEqual((r.returncode, r.stdout), (0, "already draining\n"))

        # The last call ends: the drain completes and the daemon exits 0;
        # its admin API is then unreachable.
        call.cancel()
        reader.join(10)
        ch.close()
        self.assertEqual(self.sluice.wait(timeout=20), 0, self.sluice.output()[-2000:])
        r = sluicectl("status", admin=admin)
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith(
            f"sluicectl: cannot reach the admin API at {admin}: "), r.stderr)


if __name__ == "__main__":
    harness.main()
