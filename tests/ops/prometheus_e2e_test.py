"""A real Prometheus (Debian's /usr/bin/prometheus, on 127.0.0.1) scrapes a
real Sluice under a scripted load, evaluating the shipped rules
(deploy/prometheus/sluice-rules.yaml, copied with every `for:` set to 0s:
the shipped durations are covered by //tests/ops:rules_test). Through
Prometheus's HTTP API the test checks that:
- every rule loads and evaluates without error on real series;
- the alerts of the faults it scripts fire: a rate limit tripped
  (SluiceLimitRejecting), Redis killed under a global limit
  (SluiceGlobalLimitFallback), a failed reload (SluiceConfigReloadFailed),
  Sluice killed (SluiceDown);
- every query of the Grafana dashboard (deploy/grafana/sluice-dashboard.json)
  and of its variables executes and returns data, and the panels the
  scenario exercises show it (a value > 0). The memory-ceiling panel
  returns data (the config sets proxy.max_memory_bytes, far above what
  Sluice uses) but stays at 0: nothing here reaches the ceiling; so do
  "Upstream unavailable" (the upstream stays up) and the gauges, which read
  whatever is open at the moment of the query.
Outside Kubernetes the scrape config adds the `namespace` and `pod` labels
that the rules and the dashboard's variables use."""

import json
import math
import os
import re
import signal
import subprocess
import threading
import time
import unittest
import sys
import urllib.error
import urllib.parse
import urllib.request

# The e2e harness (//tests/e2e/python:harness.py, in runfiles).
_ROOT = os.environ.get("TEST_SRCDIR") and os.path.join(
    os.environ["TEST_SRCDIR"], os.environ.get("TEST_WORKSPACE", "sluice"))
if not _ROOT or not os.path.isdir(_ROOT):
    _ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(_ROOT, "tests", "e2e", "python"))

import harness  # noqa: E402
import grpc  # noqa: E402
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc  # noqa: E402
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc  # noqa: E402

PROMETHEUS = "/usr/bin/prometheus"
RULES = os.path.join(harness.ROOT, "deploy", "prometheus", "sluice-rules.yaml")
DASHBOARD = os.path.join(harness.ROOT, "deploy", "grafana", "sluice-dashboard.json")
DESCRIPTORS = os.path.join(harness.ROOT, "deploy", "examples", "demo-descriptors.pb")
NAMESPACE, POD = "e2e", "sluice-0"
# Grafana's variables as this scenario sets them; $__rate_interval long
# enough to span the whole load.
VARIABLES = {"namespace": NAMESPACE, "pod": POD, "route": ".*", "__rate_interval": "2m"}

# Dashboard panels (by title) that must show a value > 0 (in some series)
# once the load has run: what the scenario exercises.
EXERCISED = {
    "Calls by route", "Calls by status", "Error ratio: Sluice vs upstream",
    "Rejections by reason", "Client cancels",
    "Call duration p50 / p99 by route (client side)", "Handling p99 by method (client side)",
    "Upstream p99 by method (upstream side)",
    "Limit decisions", "Rejected share per limit", "Queue wait p99", "Queue timeouts share",
    "Paced time", "Keys per keyed limit", "Messages", "Backpressure time",
    "Upstream calls by status",
    "Upstream calls started", "Targets up", "Config reloads",
    "Redis request p99", "Redis errors", "Global limits on fallback",
}


def config_text(upstream, redis_port, rate="20"):
    return f"""
redis:
  address: 127.0.0.1:{redis_port}
  timeout: 200ms
  connect_timeout: 200ms
upstreams:
  - name: demo
    target: {upstream}
proxy:
  max_memory_bytes: 4294967296
routes:
  - name: streams
    match: {{method: /grpc.testing.TestService/StreamingOutputCall}}
    upstream: demo
  - name: global
    match: {{method: /grpc.testing.TestService/EmptyCall}}
    upstream: demo
    limits:
      - name: fleet
        scope: global
        rate: {{per_second: 1000, burst: 100}}
  - name: testing
    match: {{prefix: /grpc.testing.TestService/}}
    upstream: demo
    limits:
      - name: per-client
        rate: {{per_second: {rate}, burst: 5}}
        key: [peer]
  - name: ticker
    match: {{prefix: /sluice.demo.v1.Ticker/}}
    upstream: demo
    limits:
      - name: one-stream
        concurrency: {{max: 1, queue: 2, max_wait: 200ms}}
      - name: pace
        messages: {{per_second: 50, burst: 1, mode: pace}}
metrics:
  descriptor_sets: [{DESCRIPTORS}]
"""


def test_rules():
    """The shipped rules with every `for:` at 0s."""
    with open(RULES) as f:
        text = f.read()
    text, n = re.subn(r"^(\s+)for: \S+$", r"\1for: 0s", text, flags=re.M)
    assert n > 0
    path = os.path.join(harness.TMP, "rules-e2e.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


class Prometheus:
    def __init__(self, targets):
        self.port = harness.closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "900ms"},
            "rule_files": [test_rules()],
            "scrape_configs": [{
                "job_name": "sluice",
                "static_configs": [{"targets": targets,
                                    "labels": {"namespace": NAMESPACE, "pod": POD}}],
            }],
        }
        path = os.path.join(harness.TMP, "prometheus.yml")
        with open(path, "w") as f:
            json.dump(config, f)
        self.log_path = os.path.join(harness.TMP, "prometheus.log")
        self.log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            [PROMETHEUS, f"--config.file={path}",
             f"--storage.tsdb.path={os.path.join(harness.TMP, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        harness.wait_until(self.ready, timeout=30, interval=0.1, what="Prometheus ready")

    def ready(self):
        if self.popen.poll() is not None:
            raise AssertionError(f"prometheus exited {self.popen.returncode}:\n{self.output()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def api(self, path, **params):
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr):
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def firing(self, alertname):
        return self.query(f'ALERTS{{alertname="{alertname}", alertstate="firing"}}')

    def wait_firing(self, alertname, timeout=30):
        return harness.wait_until(lambda: self.firing(alertname), timeout=timeout,
                                  interval=0.25, what=f"{alertname} firing")

    def stop(self):
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()


def dashboard_queries():
    """(panel title, expr with the variables substituted) for every query."""
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace("$" + name, value)
            assert "$" not in expr, expr
            out.append((panel["title"], expr))
    return dash, out


def run_load(sluice, seconds):
    """The scripted load, bounded by `seconds` (plus the calls' deadlines):
    three unary calls that the upstream fails (INTERNAL), then unary calls
    far above the per-client rate (most rejected), calls through a global
    (Redis) limit at about 50/s (all admitted), paced Ticker streams
    three at a time against a concurrency of 1 and a queue of 2 (queued,
    some time out, some refused at once), and server streams left unread
    (backpressure) until their client cancels them.
    Returns the count of each outcome."""
    outcomes = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def count(key):
        with lock:
            outcomes[key] = outcomes.get(key, 0) + 1

    ch = grpc.insecure_channel(sluice.data, options=[("grpc.http2.bdp_probe", 0)])
    test = test_pb2_grpc.TestServiceStub(ch)
    ticker = ticker_pb2_grpc.TickerStub(ch)

    def unary(req):
        try:
            test.UnaryCall(req, timeout=5)
            count("OK")
        except grpc.RpcError as e:
            count(e.code().name)

    def flood():
        while time.monotonic() < end:
            unary(messages_pb2.SimpleRequest(response_size=8))

    def global_calls():
        while time.monotonic() < end:
            try:
                test.EmptyCall(empty_pb2.Empty(), timeout=5)
                count("global OK")
            except grpc.RpcError as e:
                count("global " + e.code().name)
            time.sleep(0.02)  # the client's pace, real time

    def stream():
        while time.monotonic() < end:
            try:
                n = len(list(ticker.Subscribe(ticker_pb2.SubscribeRequest(count=15), timeout=5)))
                count(f"ticks {n}")
            except grpc.RpcError as e:
                count("ticker " + e.code().name)

    def held(seconds):
        # StreamingOutputCall (route "streams", no limit): the upstream
        # sends 2 MB at once; nothing reads it for `seconds`, then the
        # client cancels.
        req = messages_pb2.StreamingOutputCallRequest(response_parameters=[
            messages_pb2.ResponseParameters(size=1024) for _ in range(2000)])
        while time.monotonic() < end:
            call = test.StreamingOutputCall(req, timeout=10)
            time.sleep(seconds)  # the client not reading, real time
            call.cancel()
            count(f"held {seconds}s and cancelled")

    # First, within the rate limit's burst (5): three calls the upstream
    # fails (INTERNAL, an upstream error).
    failing = messages_pb2.SimpleRequest()
    failing.response_status.code = 13
    for _ in range(3):
        unary(failing)
    threads = [threading.Thread(target=f, args=a, daemon=True)
               for f, a in [(flood, ()), (flood, ()), (stream, ()), (stream, ()),
                            (stream, ()), (held, (1.5,)), (held, (0.3,)),
                            (global_calls, ())]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 15)
    ch.close()
    assert not any(t.is_alive() for t in threads), "load threads still running"
    return outcomes


class PrometheusE2ETest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.started = []
        try:
            cls.upstream = cls._start(harness.start_upstream)
            cls.redis = cls._start(harness.RedisServer)
            cls.config_path = harness.write_config(config_text(cls.upstream.address,
                                                               cls.redis.port))
            cls.sluice = cls._start(harness.start_sluice, cls.config_path,
                                    extra=["--watch_config=false"])
            cls.prom = cls._start(Prometheus, [cls.sluice.metrics])
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _start(cls, fn, *args, **kwargs):
        proc = fn(*args, **kwargs)
        cls.started.append(proc)
        return proc

    @classmethod
    def tearDownClass(cls):
        for proc in reversed(cls.started):  # each stops only its own PID
            proc.stop()
        cls.started = []

    def test_scenario(self):
        prom, sluice = self.prom, self.sluice
        harness.wait_until(lambda: prom.query(f'up{{job="sluice", namespace="{NAMESPACE}", '
                                              f'pod="{POD}"}} == 1'),
                           timeout=20, interval=0.2, what="Sluice scraped")
        t0 = time.monotonic()
        outcomes = run_load(sluice, seconds=6)
        print(f"\nload: {outcomes}")
        self.assertGreater(outcomes.get("RESOURCE_EXHAUSTED", 0), 0)
        self.assertEqual(outcomes.get("INTERNAL", 0), 3)
        self.assertGreater(outcomes.get("global OK", 0), 0)

        # 1. A limit tripped.
        alerts = prom.wait_firing("SluiceLimitRejecting")
        # The per-client rate limit; the ticker's concurrency limit trips too
        # (three streams at a time against a concurrency of 1 and a queue of 2).
        tripped = {(a["metric"]["route"], a["metric"]["limit"], a["metric"]["reason"])
                   for a in alerts}
        print(f"SluiceLimitRejecting: {sorted(tripped)}")
        self.assertIn(("testing", "per-client", "rate_limited"), tripped)
        self.assertTrue(tripped <= {("testing", "per-client", "rate_limited"),
                                    ("ticker", "one-stream", "concurrency_limited"),
                                    ("ticker", "one-stream", "queue_timeout")}, tripped)
        self.assertEqual(alerts[0]["metric"]["namespace"], NAMESPACE)
        print(f"SluiceLimitRejecting firing {time.monotonic() - t0:.1f}s after the load started")

        # Every rule evaluates without error on the real series.
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        with open(RULES) as f:
            shipped = len(re.findall(r"^\s+- (record|alert): ", f.read(), re.M))
        self.assertEqual(len(rules), shipped)
        for r in rules:
            self.assertNotEqual(r.get("health"), "err", f"{r['name']}: {r.get('lastError')}")

        # 2. Redis killed: the global limit goes to its fallback (at once:
        # with no connection up each request fails immediately).
        self.redis.stop()
        test = test_pb2_grpc.TestServiceStub(harness.channel(sluice.data))

        def fallback_firing():
            test.EmptyCall(empty_pb2.Empty(), timeout=5)  # fallback: local, admitted
            return prom.firing("SluiceGlobalLimitFallback")
        alerts = harness.wait_until(fallback_firing, timeout=30, interval=0.1,
                                    what="SluiceGlobalLimitFallback firing")
        self.assertEqual({(a["metric"]["route"], a["metric"]["limit"]) for a in alerts},
                         {("global", "fleet")})

        # 3. The dashboard: variables, then every panel query.
        harness.wait_until(lambda: prom.query("pod_route:sluice_calls:rate5m"),
                           timeout=10, what="recording rules evaluated")
        dash, queries = dashboard_queries()
        for var in dash["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", var["query"]["query"])
            self.assertTrue(m, var["query"]["query"])
            selector = m.group(1)
            for name, value in VARIABLES.items():
                selector = selector.replace("$" + name, value)
            values = prom.api(f"label/{m.group(2)}/values", **{"match[]": selector})
            self.assertTrue(values, f"variable {var['name']}: no values")
            print(f"variable {var['name']}: {values}")
        shown = {}
        for title, expr in queries:
            result = prom.query(expr)
            self.assertTrue(result, f"panel {title!r} returns no data: {expr}")
            # NaN: 0/0, a route with no calls (route "none").
            values = [v for v in (float(s["value"][1]) for s in result) if not math.isnan(v)]
            shown.setdefault(title, []).append(max(values, default=0.0))
        for title in sorted(shown):
            print(f"panel {title!r}: max per query {['%.4g' % v for v in shown[title]]}")
        self.assertEqual(EXERCISED - set(shown), set())
        for title in EXERCISED:  # a value > 0 in some series of the panel
            self.assertGreater(max(shown[title]), 0, f"panel {title!r} shows nothing")

        # 4. A failed reload.
        with open(self.config_path, "w") as f:
            f.write(config_text(self.upstream.address, self.redis.port, rate="-5"))
        sluice.signal(signal.SIGHUP)
        alerts = prom.wait_firing("SluiceConfigReloadFailed")
        self.assertEqual(alerts[0]["metric"]["pod"], POD)

        # 5. Sluice killed.
        self.assertEqual(prom.firing("SluiceDown"), [])
        sluice.signal(signal.SIGKILL)
        sluice.wait(10)
        alerts = prom.wait_firing("SluiceDown")
        self.assertEqual({(a["metric"]["namespace"], a["metric"]["pod"]) for a in alerts},
                         {(NAMESPACE, POD)})
        print(f"scenario took {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    harness.main()
