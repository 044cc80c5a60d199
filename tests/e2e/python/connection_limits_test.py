"""Connection limits on the data port (issue 16), with the real binaries.

1. Idle connections: 2,000 connections from 127.0.0.3, 1,600 sending only
   the HTTP/2 preface + SETTINGS and 400 sending nothing at all, against a
   Sluice with `proxy.connections: {max_idle: 1s, handshake_timeout: 1s}`.
   Sluice closes every one of them (the preface+SETTINGS ones by max_idle,
   the silent ones by the handshake timeout; both with a GOAWAY) within 10x
   the setting, stays up, its RSS stays under 128 MiB and comes back within
   16 MiB of its baseline, and a bystander on 127.0.0.1 making unary calls
   all along sees no error. A gRPC client whose connection max_idle closed
   reconnects by itself (no call fails), and a quiet stream is not idle.

2. The same on a TLS data port: connections that never send a
   ClientHello, that finish TLS and send nothing, and that send the
   preface + SETTINGS over TLS.

3. Ping policy: one Sluice in front of another. The back Sluice's data
   port has `min_ping_interval: 2s`; the front Sluice's upstream keepalive
   pings it every 2.2 s (1.1x, the ratio of Sluice's own defaults, 5m30s
   against 5m) through a quiet stream, and the stream ends OK with no
   GOAWAY too_many_pings. A front pinging every 1 s (half the interval)
   does get one, so the check can fail.

4. `sluice --check` names a bad proxy.connections field.

`python3 connection_limits_test.py --measure [SLUICE_BINARY]` (with
TEST_SRCDIR pointing at this test's runfiles) runs the measurement of
docs/security.md instead: the defaults (nothing set), 2,000 connections
(the silent 400 close at the 10 s handshake timeout), then 1,600 held to
20 s, RSS before / with / 12 s after, and the bystander's latency.
"""

import os
import resource
import selectors
import socket
import ssl
import subprocess
import struct
import sys
import threading
import time
import unittest

import harness
import h2raw
from h2raw import GOAWAY, PREFACE, SETTINGS, frame
import grpc
from grpc.testing import messages_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

WITH_SETTINGS = 1600
SILENT = 400
FLEET_SOURCE = "127.0.0.3"  # the idle connections' address; the bystander's is 127.0.0.1
ENHANCE_YOUR_CALM = 0xB


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise unittest.SkipTest(f"needs {need} descriptors, hard limit {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


class Fleet:
    """Idle client connections and what the server did with each: when it
    closed it (EOF or reset), and whether a GOAWAY came first."""

    def __init__(self, address, with_settings, silent, tls=None):
        """`with_settings` connections send the preface + SETTINGS, `silent`
        ones nothing; with `tls` (an ssl.SSLContext) both first complete
        the TLS handshake."""
        host, port = address.rsplit(":", 1)
        self.sel = selectors.DefaultSelector()
        self.opened, self.closed, self.goaway, self.buf = {}, {}, {}, {}
        self.kind = {}
        for i in range(with_settings + silent):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((FLEET_SOURCE, 0))
            s.connect((host, int(port)))
            opened = time.monotonic()
            if tls is not None:
                s = tls.wrap_socket(s, server_hostname="localhost")
            if i < with_settings:
                s.sendall(PREFACE + frame(SETTINGS, 0, 0))
                self.kind[s] = "settings"
            else:
                self.kind[s] = "silent"
            self.opened[s] = opened
            self.buf[s] = b""
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)

    def open_count(self):
        return len(self.opened) - len(self.closed)

    def poll(self, timeout):
        for key, _ in self.sel.select(timeout):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                continue
            except OSError:  # reset, or a TLS connection cut without close_notify
                chunk = b""
            if chunk:
                self.buf[s] += chunk
                self._frames(s)
            else:
                self.closed[s] = time.monotonic()
                self.sel.unregister(s)
                s.close()

    def _frames(self, s):
        b = self.buf[s]
        while len(b) >= 9 and len(b) >= 9 + int.from_bytes(b[:3], "big"):
            n, ftype = int.from_bytes(b[:3], "big"), b[3]
            if ftype == GOAWAY and s not in self.goaway:
                # (error code, debug data)
                self.goaway[s] = (struct.unpack(">I", b[13:17])[0], bytes(b[17:9 + n]))
            b = b[9 + n:]
        self.buf[s] = b

    def lifetimes(self, kind):
        return sorted(self.closed[s] - self.opened[s] for s in self.closed
                      if self.kind[s] == kind)

    def close_all(self):
        for s in list(self.opened):
            if s not in self.closed:
                self.sel.unregister(s)
                s.close()
        self.sel.close()


class Bystander:
    """Unary calls one after another from 127.0.0.1 until stopped."""

    def __init__(self, address):
        self.ch = harness.channel(address)
        self.stub = test_pb2_grpc.TestServiceStub(self.ch)
        self.latencies, self.errors = [], []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        req = messages_pb2.SimpleRequest(response_size=10)
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                self.stub.UnaryCall(req, timeout=10)
                self.latencies.append(time.monotonic() - t0)
            except grpc.RpcError as e:
                self.errors.append((e.code(), e.details()))
            self.stop_event.wait(0.01)

    def stop(self):
        self.stop_event.set()
        self.thread.join(30)
        self.ch.close()

    def p(self, q):
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None


def warm_up(address):
    ch = harness.channel(address)
    stub = test_pb2_grpc.TestServiceStub(ch)
    for _ in range(200):
        stub.UnaryCall(messages_pb2.SimpleRequest(response_size=10), timeout=10)
    ch.close()


class IdleConnectionsTest(unittest.TestCase):
    def setUp(self):
        raise_fd_limit(WITH_SETTINGS + SILENT + 1000)
        self.upstream = harness.start_upstream()
        config = harness.write_config("""
proxy:
  connections: {max_idle: 1s, handshake_timeout: 1s}
upstreams:
  - {name: demo, target: "127.0.0.1:1"}
routes:
  - {name: all, match: {prefix: /}, upstream: demo}
""")
        self.sluice = harness.start_sluice(config_path=config, upstream=self.upstream.address)

    def tearDown(self):
        self.sluice.stop()
        self.upstream.stop()

    def test_idle_connections_are_closed_and_bystander_unharmed(self):
        warm_up(self.sluice.data)
        baseline = harness.rss_kib(self.sluice.pid)
        bystander = Bystander(self.sluice.data)
        fleet = Fleet(self.sluice.data, WITH_SETTINGS, SILENT)
        peak = baseline
        try:
            end = time.monotonic() + 60
            while fleet.open_count() and time.monotonic() < end:
                fleet.poll(0.05)
                peak = max(peak, harness.rss_kib(self.sluice.pid))
            self.assertIsNone(self.sluice.popen.poll(), "sluice exited")
            self.assertEqual(fleet.open_count(), 0, "connections still open after 60 s")
            settings, silent = fleet.lifetimes("settings"), fleet.lifetimes("silent")
            print(f"preface+SETTINGS: {len(settings)} closed after "
                  f"{settings[0]:.2f}..{settings[-1]:.2f}s; silent: {len(silent)} closed "
                  f"after {silent[0]:.2f}..{silent[-1]:.2f}s; "
                  f"RSS baseline {baseline} KiB, peak {peak} KiB")
            # max_idle and handshake_timeout are 1 s: a defect (a limit not
            # applied) shows as gRPC's 120 s handshake default or forever.
            self.assertLessEqual(settings[-1], 10.0)
            self.assertLessEqual(silent[-1], 10.0)
            # Not at once either (a limit read in the wrong unit): gRPC's
            # timers fire up to ~0.1 s early (measured 0.89 s for 1 s).
            self.assertGreaterEqual(settings[0], 0.5)
            self.assertGreaterEqual(silent[0], 0.5)
            # gRPC 1.51 closes both with a GOAWAY (INTERNAL_ERROR), then the
            # socket (debug data in docs/security.md).
            codes = {}
            for s, c in fleet.goaway.items():
                codes.setdefault(fleet.kind[s], set()).add(c)
            print(f"GOAWAY codes by kind: {codes}")
            self.assertEqual(sum(fleet.kind[s] == "settings" for s in fleet.goaway),
                             WITH_SETTINGS)
        finally:
            fleet.close_all()
        # The memory comes back: within 16 MiB of the baseline (the target
        # of issue 16) once the connections are gone; measured in
        # docs/security.md.
        if not os.environ.get("SLUICE_SANITIZER"):
            self.assertLess(peak, 128 * 1024, "RSS over 128 MiB with 2,000 idle connections")
            seen = []

            def back():
                seen.append(harness.rss_kib(self.sluice.pid))
                return seen[-1] if seen[-1] <= baseline + 16 * 1024 else None

            after = harness.wait_until(
                back, timeout=15, interval=0.2,
                what=lambda: f"RSS back within 16 MiB of the baseline {baseline} KiB (peak "
                             f"{peak} KiB; last {seen[-5:]} KiB)")
            print(f"RSS after {after} KiB")
        time.sleep(1)  # the bystander keeps calling after the fleet is gone
        bystander.stop()
        print(f"bystander: {len(bystander.latencies)} calls, {len(bystander.errors)} errors, "
              f"p50 {bystander.p(0.5) * 1000:.1f} ms, p99 {bystander.p(0.99) * 1000:.1f} ms, "
              f"max {max(bystander.latencies) * 1000:.1f} ms")
        self.assertEqual(bystander.errors, [])
        self.assertGreater(len(bystander.latencies), 20)
        # Generous: a bystander stalled behind the fleet (a blocked worker)
        # takes seconds; the measured p99 is in docs/security.md.
        self.assertLess(bystander.p(0.99), 1.0)


    def test_max_idle_spares_clients(self):
        """A gRPC client whose connection max_idle closed reconnects by
        itself: calls spaced around the 1 s limit (some land as the close
        happens) all succeed; a stream quiet for 3 s is not idle (a call is
        open) and completes."""
        ch = harness.channel(self.sluice.data)
        try:
            stub = test_pb2_grpc.TestServiceStub(ch)
            errors = []
            for gap in [1.5, 0.99, 1.0, 1.01, 1.02, 0.98, 1.0, 1.0, 1.01, 0.995]:
                time.sleep(gap)  # the client's pause, the subject of the test
                try:
                    stub.UnaryCall(messages_pb2.SimpleRequest(response_size=1), timeout=5)
                except grpc.RpcError as e:
                    errors.append((gap, e.code(), e.details()))
            self.assertEqual(errors, [])
            ticker = ticker_pb2_grpc.TickerStub(ch)
            ticks = ticker.Subscribe(ticker_pb2.SubscribeRequest(count=2, interval_ms=3000),
                                     timeout=20)
            self.assertEqual([t.seq for t in ticks], [1, 2])
        finally:
            ch.close()


class TlsHandshakeTimeoutTest(unittest.TestCase):
    """The same limits on a TLS data port: 100 connections that never send
    a ClientHello, 100 that finish TLS and then send nothing, 100 that send
    the preface + SETTINGS over TLS; all closed within 10x the settings."""

    N = 100

    def setUp(self):
        raise_fd_limit(3 * self.N + 1000)
        cert, key = os.path.join(harness.TMP, "conn-cert.pem"), os.path.join(harness.TMP,
                                                                            "conn-key.pem")
        subprocess.run(["/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        self.upstream = harness.start_upstream()
        config = harness.write_config(f"""
tls: {{cert_file: {cert}, key_file: {key}}}
proxy:
  connections: {{max_idle: 1s, handshake_timeout: 1s}}
upstreams:
  - {{name: demo, target: "127.0.0.1:1"}}
routes:
  - {{name: all, match: {{prefix: /}}, upstream: demo}}
""")
        self.sluice = harness.start_sluice(config_path=config, upstream=self.upstream.address)
        self.context = ssl.create_default_context(cafile=cert)
        self.context.set_alpn_protocols(["h2"])

    def tearDown(self):
        self.sluice.stop()
        self.upstream.stop()

    def test_tls_connections_are_closed(self):
        no_hello = Fleet(self.sluice.data, 0, self.N)
        handshaken = Fleet(self.sluice.data, self.N, self.N, tls=self.context)
        try:
            end = time.monotonic() + 60
            while (no_hello.open_count() or handshaken.open_count()) and \
                    time.monotonic() < end:
                no_hello.poll(0.02)
                handshaken.poll(0.02)
            self.assertEqual(no_hello.open_count() + handshaken.open_count(), 0,
                             "connections still open after 60 s")
            lifetimes = {"no ClientHello": no_hello.lifetimes("silent"),
                         "TLS, then nothing": handshaken.lifetimes("silent"),
                         "TLS + preface + SETTINGS": handshaken.lifetimes("settings")}
            for what, times in lifetimes.items():
                print(f"{what}: {len(times)} closed after {times[0]:.2f}..{times[-1]:.2f}s")
                self.assertEqual(len(times), self.N)
                self.assertLessEqual(times[-1], 10.0, what)
                self.assertGreaterEqual(times[0], 0.5, what)
            print(f"GOAWAY: {set(handshaken.goaway.values())}; to no ClientHello: "
                  f"{len(no_hello.goaway)}, bytes {sum(map(len, no_hello.buf.values()))}")
            self.assertIsNone(self.sluice.popen.poll(), "sluice exited")
        finally:
            no_hello.close_all()
            handshaken.close_all()


class MaxAgeTest(unittest.TestCase):
    """max_age 2s, max_age_grace 2s: at 2 s +-10% a GOAWAY NO_ERROR, the
    stream in flight keeps receiving, and at the end of the grace it is
    ended and the connection closed."""

    def setUp(self):
        self.upstream = harness.start_upstream()
        config = harness.write_config("""
proxy:
  connections: {max_age: 2s, max_age_grace: 2s}
upstreams:
  - {name: demo, target: "127.0.0.1:1"}
routes:
  - {name: all, match: {prefix: /}, upstream: demo}
""")
        self.sluice = harness.start_sluice(config_path=config, upstream=self.upstream.address)

    def tearDown(self):
        self.sluice.stop()
        self.upstream.stop()

    def test_goaway_then_grace_then_close(self):
        c = h2raw.H2Conn(self.sluice.data)
        t0 = time.monotonic()
        sid = c.start_call("/sluice.demo.v1.Ticker/Subscribe", ticker_pb2.SubscribeRequest(
            count=10, interval_ms=1000).SerializeToString())
        self.assertTrue(c.pump(lambda: c.goaway is not None, timeout=30), "no GOAWAY")
        goaway_at = time.monotonic() - t0
        data_at_goaway = len(c.results[sid].data)
        c.pump(lambda: False, timeout=30)  # until the server closes it
        closed_at = time.monotonic() - t0
        print(f"max_age: GOAWAY {c.goaway} after {goaway_at:.2f}s, closed after "
              f"{closed_at:.2f}s, {len(c.results[sid].messages())} ticks")
        self.assertTrue(c.closed, "connection not closed in 30 s")
        self.assertEqual(c.goaway[1], 0)  # NO_ERROR
        self.assertGreaterEqual(goaway_at, 1.5)
        self.assertLess(goaway_at, 20)
        # The grace: the stream still received after the GOAWAY, and the
        # close came about max_age_grace after it.
        self.assertGreater(len(c.results[sid].data), data_at_goaway)
        self.assertGreaterEqual(closed_at - goaway_at, 1.0)
        self.assertLess(closed_at - goaway_at, 20)


class CheckTest(unittest.TestCase):
    def test_check_names_the_field(self):
        path = harness.write_config("""
proxy:
  connections: {handshake_timeout: 10m, max_idle: 1}
upstreams: [{name: a, target: "127.0.0.1:1"}]
routes: [{name: r, match: {prefix: /}, upstream: a}]
""")
        p = subprocess.run([harness.SLUICE, f"--config={path}", "--check"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn(f"{path}: proxy.connections.handshake_timeout: must be between "
                      f"\"100ms\" and \"5m\"; got \"10m\"", p.stderr)
        self.assertIn(f"{path}: proxy.connections.max_idle: invalid duration", p.stderr)


class PingPolicyTest(unittest.TestCase):
    """A front Sluice whose upstream is a back Sluice."""

    def setUp(self):
        self.procs = []
        self.upstream = self.start(harness.start_upstream())
        back_config = harness.write_config("""
proxy:
  connections: {min_ping_interval: 2s}
upstreams:
  - {name: demo, target: "127.0.0.1:1"}
routes:
  - {name: all, match: {prefix: /}, upstream: demo}
""")
        self.back = self.start(harness.start_sluice(config_path=back_config,
                                                    upstream=self.upstream.address))

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()

    def start(self, proc):
        self.procs.append(proc)
        return proc

    def front(self, keepalive_time):
        config = harness.write_config(f"""
upstreams:
  - name: back
    target: "{self.back.data}"
    channels: 1
    keepalive: {{time: {keepalive_time}, timeout: 5s}}
routes:
  - {{name: all, match: {{prefix: /}}, upstream: back}}
""")
        return self.start(harness.start_sluice(config_path=config))

    def quiet_stream(self, front):
        """2 ticks 6 s apart through both Sluices: the back Sluice sends
        nothing on that connection for 6 s at a time."""
        ch = harness.channel(front.data)
        try:
            ticker = ticker_pb2_grpc.TickerStub(ch)
            return [t.seq for t in ticker.Subscribe(
                ticker_pb2.SubscribeRequest(count=2, interval_ms=6000), timeout=30)]
        finally:
            ch.close()

    def test_keepalive_at_the_documented_interval_is_accepted(self):
        front = self.front("2.2s")
        self.assertEqual(self.quiet_stream(front), [1, 2])
        self.assertNotIn("too_many_pings", front.output())

    def test_keepalive_faster_than_the_interval_earns_a_goaway(self):
        # A gRPC 1.51 client sends a ping without data at most every 1 s
        # whatever its keepalive time (measured, docs/security.md): 1 s is
        # half the back Sluice's interval.
        front = self.front("1s")
        try:
            ticks = self.quiet_stream(front)
            failed = None
        except grpc.RpcError as e:
            ticks, failed = None, e
        self.assertIsNotNone(failed, f"the stream ended OK with ticks {ticks}")
        self.assertIn("too_many_pings", front.output())


def measure(sluice_binary=None):
    """The docs/security.md figures: Sluice with the defaults."""
    if sluice_binary:
        harness.SLUICE = sluice_binary
    raise_fd_limit(WITH_SETTINGS + SILENT + 1000)
    upstream = harness.start_upstream()
    sluice = harness.start_sluice(upstream=upstream.address, extra=["--log_level=debug"])
    try:
        warm_up(sluice.data)
        time.sleep(1)
        baseline = harness.rss_kib(sluice.pid)
        bystander = Bystander(sluice.data)
        time.sleep(3)
        quiet = sorted(bystander.latencies)
        t0 = time.monotonic()
        fleet = Fleet(sluice.data, WITH_SETTINGS, SILENT)
        opened = time.monotonic() - t0
        # All 2,000 are open until the silent ones' 10 s handshake timeout.
        end = time.monotonic() + 3
        while time.monotonic() < end:
            fleet.poll(0.1)
        open_all, held_all = fleet.open_count(), harness.rss_kib(sluice.pid)
        end = time.monotonic() + 17
        while time.monotonic() < end:
            fleet.poll(0.1)
        held = harness.rss_kib(sluice.pid)
        fds = harness.fd_count(sluice.pid)
        open_now = fleet.open_count()
        fleet.close_all()
        time.sleep(12)  # two heap trim periods
        after = harness.rss_kib(sluice.pid)
        time.sleep(1)
        bystander.stop()
        n = len(quiet)
        print(f"opened {WITH_SETTINGS}+{SILENT} in {opened:.2f}s; still open after 20 s: "
              f"{open_now}; sluice fds {fds}")
        print(f"RSS KiB: baseline {baseline}; with {open_all} idle {held_all} "
              f"(+{(held_all - baseline) / max(open_all, 1):.1f} KiB each); with {open_now} "
              f"idle {held}; 12 s after closing them {after} (+{after - baseline})")
        print(f"bystander: {len(bystander.latencies)} calls, {len(bystander.errors)} errors, "
              f"p50 {bystander.p(0.5) * 1000:.2f} ms, p99 {bystander.p(0.99) * 1000:.2f} ms, "
              f"max {max(bystander.latencies) * 1000:.1f} ms; before the fleet p99 "
              f"{quiet[int(0.99 * n)] * 1000:.2f} ms")
        print("\n".join(line for line in sluice.output().splitlines() if "heap trim" in line))
    finally:
        sluice.stop()
        upstream.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        measure(sys.argv[2] if len(sys.argv) > 2 else None)
    else:
        harness.main()
