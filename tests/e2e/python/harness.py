"""End-to-end test harness: real binaries on 127.0.0.1, Python clients.

Runs under Debian's /usr/bin/python3 (python3-grpcio). Generates the Python
stubs it needs with /usr/bin/protoc + grpc_python_plugin into a temporary
folder, starts the demo upstream and sluice on port 0 (their --ready_file
tells the bound addresses) and stops only the processes it started, by PID.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import xml.etree.ElementTree as ET

ROOT = os.environ.get("TEST_SRCDIR") and os.path.join(
    os.environ["TEST_SRCDIR"], os.environ.get("TEST_WORKSPACE", "sluice"))
if not ROOT or not os.path.isdir(ROOT):
    ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))

SLUICE = os.path.join(ROOT, "server", "sluice")
DEMO_UPSTREAM = os.path.join(ROOT, "server", "demo", "demo_upstream")
TMP = os.environ.get("TEST_TMPDIR") or tempfile.mkdtemp(prefix="sluice-e2e-")

_PROTOS = [
    ("/usr/share/grpc-proto", "grpc/testing/empty.proto"),
    ("/usr/share/grpc-proto", "grpc/testing/messages.proto"),
    ("/usr/share/grpc-proto", "grpc/testing/test.proto"),
    ("/usr/share/grpc-proto", "grpc/health/v1/health.proto"),
    (os.path.join(ROOT, "proto"), "sluice/demo/v1/ticker.proto"),
    (os.path.join(ROOT, "proto"), "sluice/admin/v1/admin.proto"),
    (os.path.join(ROOT, "proto"), "sluice/rpc/v1/error_details.proto"),
]
# The demo upstream's Capacity service: only the targets that list it in
# their data have it (the limits tests and benches that use capacity mode).
if os.path.exists(os.path.join(ROOT, "proto", "sluice/demo/v1/capacity.proto")):
    _PROTOS.append((os.path.join(ROOT, "proto"), "sluice/demo/v1/capacity.proto"))


def _generate_stubs():
    out = os.path.join(TMP, "pystubs")
    if not os.path.isdir(out):
        os.makedirs(out + ".tmp", exist_ok=True)
        includes = sorted({inc for inc, _ in _PROTOS}) + ["/usr/include"]
        for inc, rel in _PROTOS:
            cmd = ["/usr/bin/protoc"] + ["-I" + i for i in includes] + [
                "--python_out=" + out + ".tmp",
                "--grpc_out=" + out + ".tmp",
                "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                os.path.join(inc, rel)]
            subprocess.run(cmd, check=True)
        os.rename(out + ".tmp", out)
    if out not in sys.path:
        sys.path.insert(0, out)


_generate_stubs()

import grpc  # noqa: E402

# The generated grpc/testing and grpc/health/v1 modules sit under the name of
# grpcio's own (regular) package `grpc`, which would hide them: let `grpc`
# find its missing subpackages in the generated folder too.
_STUB_GRPC = os.path.join(TMP, "pystubs", "grpc")
if _STUB_GRPC not in grpc.__path__:
    grpc.__path__.append(_STUB_GRPC)


class Proc:
    """A process this test started; stop() signals only its own PID."""

    def __init__(self, name, argv, ready_file):
        self.name = name
        self.log_path = os.path.join(TMP, f"{name}-{time.monotonic_ns()}.log")
        self.log = open(self.log_path, "wb")
        self.ready_file = ready_file
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.popen.pid
        self.info = self._wait_ready()

    def _wait_ready(self, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.popen.returncode}:\n{self.output()}")
            if os.path.exists(self.ready_file):
                with open(self.ready_file) as f:
                    return json.load(f)
            time.sleep(0.02)  # waiting for a child process to bind, not for logic time
        raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{self.output()}")

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout=30.0):
        return self.popen.wait(timeout=timeout)

    def stop(self, timeout=30.0):
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()
        return self.popen.returncode


def _ready_path(name):
    return os.path.join(TMP, f"{name}-{time.monotonic_ns()}.ready.json")


def start_upstream(address="127.0.0.1:0", extra=()):
    ready = _ready_path("upstream")
    p = Proc("upstream", [DEMO_UPSTREAM, f"--listen={address}", f"--ready_file={ready}"]
             + list(extra), ready)
    p.address = p.info["address"]
    return p


def write_config(text):
    path = os.path.join(TMP, f"config-{time.monotonic_ns()}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def start_sluice(config_path=None, upstream=None, extra=()):
    ready = _ready_path("sluice")
    argv = [SLUICE, f"--ready_file={ready}", "--listen=127.0.0.1:0",
            "--admin=127.0.0.1:0", "--metrics=127.0.0.1:0", "--workers=2"]
    if config_path:
        argv.append(f"--config={config_path}")
    if upstream:
        argv.append(f"--upstream={upstream}")
    argv += list(extra)
    p = Proc("sluice", argv, ready)
    p.data, p.admin, p.metrics = p.info["data"], p.info["admin"], p.info["metrics"]
    return p


def channel(address):
    ch = grpc.insecure_channel(address)
    grpc.channel_ready_future(ch).result(timeout=10)
    return ch


def scrape(metrics_address):
    import urllib.request
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as r:
        return r.read().decode()


def metric_value(text, name, labels=None):
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        have = {}
        if rest:
            for part in rest.rstrip("}").split(","):
                if "=" in part:
                    k, v = part.split("=", 1)
                    have[k] = v.strip('"')
        if labels and any(have.get(k) != v for k, v in labels.items()):
            continue
        total += float(value)
        found = True
    return total if found else None


def trailer(metadata, key):
    for k, v in metadata or ():
        if k == key:
            return v
    return None


RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"


def status_details(metadata):
    """The google.rpc.Status (Sluice's wire-compatible sluice.rpc.v1.Status)
    carried in the `grpc-status-details-bin` trailer, or None."""
    from sluice.rpc.v1 import error_details_pb2
    raw = trailer(metadata, "grpc-status-details-bin")
    if raw is None:
        return None
    return error_details_pb2.Status.FromString(raw)


def retry_delay(metadata):
    """Seconds of the RetryInfo in a call's `grpc-status-details-bin`
    trailer, or None if there is none."""
    from sluice.rpc.v1 import error_details_pb2
    status = status_details(metadata)
    if status is None:
        return None
    for any_ in status.details:
        if any_.type_url == RETRY_INFO_TYPE:
            info = error_details_pb2.RetryInfo.FromString(any_.value)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def wait_until(fn, timeout=10.0, interval=0.02, what="condition"):
    """Polls fn() until it returns a truthy value (returned) or `timeout`
    seconds pass (AssertionError naming `what` and the last value). For
    observing state another process changes, not for waiting on time."""
    end = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= end:
            if callable(what):
                what = what()
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                 f"last value {last!r}")
        time.sleep(interval)


def metric(proc, name, labels=None):
    """metric_value() of one fresh scrape of a sluice Proc's /metrics."""
    return metric_value(scrape(proc.metrics), name, labels)


def wait_for_metric(proc, name, want, labels=None, timeout=10.0):
    """Polls /metrics until `name` (summed over `labels`) equals `want`."""
    seen = []

    def check():
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited {proc.popen.returncode} while waiting "
                                 f"for {name} == {want}")
        try:
            v = metric(proc, name, labels) or 0.0
        except OSError:  # not answering (yet, or any more): look again
            return False
        seen[:] = [v]
        return v == want
    try:
        wait_until(check, timeout=timeout, interval=0.05, what=f"{name}{labels or ''} == {want}")
    except AssertionError as e:
        raise AssertionError(f"{e} (last {seen})\n--- {proc.name} log ---\n"
                             f"{proc.output()[-4000:]}") from None
    return want


def closed_port():
    """A 127.0.0.1 port nothing listens on (bound, then released): also a
    free port for a server that cannot bind port 0 itself."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server this test started on 127.0.0.1 (`port`, or a free
    one), without persistence; `extra`: more arguments (a password, ACL
    users). Ready once a PING is answered with `ready_reply` (b"+PONG", or
    b"-NOAUTH" when a password is required). Stopped by its PID only."""

    def __init__(self, port=None, extra=(), ready_reply=b"+PONG"):
        self.port = port or closed_port()
        self.log_path = os.path.join(TMP, f"redis-{self.port}-{time.monotonic_ns()}.log")
        self.log = open(self.log_path, "wb")
        self.ready_reply = ready_reply
        self.popen = subprocess.Popen(
            ["/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", TMP] + list(extra),
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self.answers, timeout=10, what=f"redis on port {self.port}")

    def answers(self):
        import socket
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(self.ready_reply)
        except OSError:
            return False

    def signal(self, sig):
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def stop(self):
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGCONT)  # a stopped one too
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        self.log.close()


def proc_stats(pid):
    """(VmRSS KiB, threads, open descriptors) of a process, from /proc."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads, len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    return proc_stats(pid)[0]


def fd_count(pid):
    return proc_stats(pid)[2]


def slow_streams_rss(sluice, streams, seconds):
    """Backpressure, measured: opens `streams` Ticker streams through
    `sluice`, each offered 100,000 x 1 KiB (100 MB), and reads each at one
    message per 5 ms for `seconds` (the clients' slow reading, real time).
    Returns (Sluice's RSS KiB before, RSS KiB with the slow streams,
    the list of messages read per stream, whether every reader thread
    stopped)."""
    from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc
    # 64 KiB windows on the client too: the bound is Sluice's, not ours.
    ch = grpc.insecure_channel(sluice.data, options=[("grpc.http2.bdp_probe", 0)])
    try:
        stub = ticker_pb2_grpc.TickerStub(ch)
        # Warm up: connections, threads and allocator arenas exist.
        list(stub.Subscribe(ticker_pb2.SubscribeRequest(count=100, payload_bytes=1024),
                            timeout=10))
        before = rss_kib(sluice.pid)
        stop = threading.Event()
        reads = [0] * streams

        def reader(i, call):
            try:
                for _ in call:
                    reads[i] += 1
                    if stop.wait(0.005):
                        break
            except grpc.RpcError:
                pass

        calls, threads = [], []
        for i in range(streams):
            call = stub.Subscribe(ticker_pb2.SubscribeRequest(count=100000, payload_bytes=1024),
                                  timeout=seconds + 60)
            calls.append(call)
            t = threading.Thread(target=reader, args=(i, call), daemon=True)
            t.start()
            threads.append(t)
        time.sleep(seconds)  # the clients' slow reading, not logic time
        peak = rss_kib(sluice.pid)
        stop.set()
        for c in calls:
            c.cancel()
        for t in threads:
            t.join(timeout=10)
        return before, peak, list(reads), not any(t.is_alive() for t in threads)
    finally:
        ch.close()


def main():
    """Runs the unittest cases of __main__ and writes JUnit XML for Bazel."""
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules["__main__"])
    # Listed before running: a suite drops its tests as it runs them.
    tests = list(_iter_tests(suite))
    result = unittest.TextTestRunner(verbosity=2, resultclass=_RecordingResult).run(suite)
    xml_path = os.environ.get("XML_OUTPUT_FILE")
    if xml_path:
        root = ET.Element("testsuites")
        ts = ET.SubElement(root, "testsuite", name=os.path.basename(sys.argv[0]),
                           tests=str(len(tests)))
        bad = {t.id(): msg for t, msg in result.failures + result.errors}
        skipped = {t.id(): reason for t, reason in result.skipped}
        # A test that never reported (its setUpClass or setUpModule raised
        # SkipTest, which unittest records under the class) did not run: it
        # is skipped, never passed.
        for test in tests:
            if (test.id() not in bad and test.id() not in skipped
                    and test.id() not in result.succeeded):
                skipped[test.id()] = "did not run"
        ts.set("skipped", str(sum(t.id() in skipped for t in tests)))
        for test in tests:
            tc = ET.SubElement(ts, "testcase", name=test.id())
            if test.id() in bad:
                ET.SubElement(tc, "failure", message="failed").text = bad[test.id()]
            elif test.id() in skipped:
                # JUnit's (and gtest's) form: the runner counts it as skipped.
                ET.SubElement(tc, "skipped", message=skipped[test.id()])
        ET.ElementTree(root).write(xml_path)
    sys.exit(0 if result.wasSuccessful() else 1)


class _RecordingResult(unittest.TextTestResult):
    """TextTestResult that also remembers which tests passed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.succeeded = set()

    def addSuccess(self, test):
        super().addSuccess(test)
        self.succeeded.add(test.id())


def _iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _iter_tests(t)
        else:
            yield t
