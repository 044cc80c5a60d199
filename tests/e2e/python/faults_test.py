"""Faults through the real binaries on 127.0.0.1 (issue #8, "Faults"), at
scale: the upstream killed with 500 streams open and restarted, an upstream
that accepts TCP but never speaks HTTP/2, an upstream slower than the
deadline, clients that vanish (TCP RST) with 1,000 streams open, a client
that never reads, and config reloads and SIGTERM under load.
(upstream_failure_test.py, cancel_test.py and drain_test.py cover the
single-stream versions of some of these.)

For each: the right status to every caller, promptly; every upstream call
ended (a call object is freed only once its upstream call is over, so
in-flight back to 0 shows it); in-flight, open-call and permit gauges back
to 0; file descriptors and resident memory
back within the bounds below.

Bounds, and why:
- FD_SLACK = 4 descriptors over the baseline taken before the fault:
  Sluice keeps `channels` (2) connections per upstream, which may be in
  the middle of reconnecting; everything per call or per client
  connection must be gone.
- RSS: glibc keeps freed heap (per-thread arenas), so RSS does not fall
  back byte for byte once streams are gone; what is kept is a high-water
  mark, measured at about 37 KiB per stream after 1,000 streams. Bound:
  RSS_FLOOR_KIB (8 MiB) + RSS_PER_STREAM_KIB (64 KiB) per stream of the
  fault over the baseline,
  and a leak check where it matters most (clients reset): after the first
  round of 1,000 streams, two more identical rounds (ROUNDS = 4) may add at
  most LEAK_RSS_KIB = 24 MiB together: a leak of 12 KiB per stream would
  exceed it, one leaked call object per stream (~35 KB) by far. A single
  round's RSS step is not a bound: glibc's arenas moved one round by
  9.3 MiB and the next by 0.4 MiB on the same binary.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import harness
import h2raw
import grpc
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

FD_SLACK = 4
RSS_FLOOR_KIB = 8 * 1024
RSS_PER_STREAM_KIB = 64
LEAK_RSS_KIB = 24 * 1024
SETTLED_RSS_KIB = 16 * 1024
ROUNDS = int(os.environ.get("SLUICE_FAULT_ROUNDS", "4"))

CONFIG = """
drain_timeout: 2s
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
routes:
  - name: ticker
    match: {prefix: /sluice.demo.v1.Ticker/}
    upstream: demo
    deadline: {stream_idle_timeout: 2s}
    limits:
      - name: streams
        concurrency: {max: 2000}
  - name: default
    match: {prefix: /}
    upstream: demo
    deadline: {default_timeout: 1s}
    limits:
      - name: rate
        rate: {per_second: RATE}
"""


def config(rate=100000):
    return CONFIG.replace("RATE", str(rate))


proc_stats = harness.proc_stats


class SilentUpstream:
    """Accepts TCP connections and reads whatever comes, never writes a
    byte: an upstream that accepts but never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []
        self.bytes_read = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                if key.fileobj is self.sock:
                    c, _ = self.sock.accept()
                    self.conns.append(c)
                    sel.register(c, selectors.EVENT_READ)
                else:
                    data = key.fileobj.recv(65536)
                    if not data:
                        sel.unregister(key.fileobj)
                    self.bytes_read += len(data)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


class FaultTest(unittest.TestCase):
    def setUp(self):
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()

    def start(self, upstream_address, cfg=None):
        s = harness.start_sluice(config_path=harness.write_config(cfg or config()),
                                 upstream=upstream_address)
        self.procs.append(s)
        return s

    def start_upstream(self, address="127.0.0.1:0"):
        u = harness.start_upstream(address)
        self.procs.append(u)
        return u

    def m(self, sluice, name, **labels):
        return harness.metric(sluice, name, labels or None) or 0.0

    def warm_baseline(self, sluice, ch):
        """One call of each kind so connections and threads exist, then
        (rss, threads, fds)."""
        test_pb2_grpc.TestServiceStub(ch).EmptyCall(empty_pb2.Empty(), timeout=5)
        list(ticker_pb2_grpc.TickerStub(ch).Subscribe(
            ticker_pb2.SubscribeRequest(count=2), timeout=5))
        harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0)
        return proc_stats(sluice.pid)

    def assert_all_released(self, sluice, base, what, streams):
        harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0, timeout=20)
        harness.wait_for_metric(sluice, "sluice_route_open_calls", 0.0, timeout=5)
        harness.wait_for_metric(sluice, "sluice_limit_permits_in_use", 0.0, timeout=5)
        rss0, _, fds0 = base
        harness.wait_until(lambda: proc_stats(sluice.pid)[2] <= fds0 + FD_SLACK, timeout=15,
                           what=f"{what}: fds back to {fds0} + {FD_SLACK} "
                                f"(now {proc_stats(sluice.pid)[2]})")
        # The heap a burst freed goes back to the kernel at Sluice's next
        # trim check (once a second, server/common/heap_trim.h): RSS read
        # before it would be the peak's, after it the settled value, and
        # rounds compared across that moment look like a leak (or hide
        # one). So take the least RSS until it is within 16 MiB of the
        # baseline, or 5 s (a leak never gets there).
        low = [proc_stats(sluice.pid)[0]]
        def settled():
            low.append(min(low[-1], proc_stats(sluice.pid)[0]))
            return low[-1] <= rss0 + SETTLED_RSS_KIB
        try:
            harness.wait_until(settled, timeout=5, interval=0.1, what="RSS settled")
        except AssertionError:
            pass  # judged below, by the caller's bounds
        _, threads, fds = proc_stats(sluice.pid)
        rss = low[-1]
        print(f"{what}: RSS {rss0} -> {rss} KiB, fds {fds0} -> {fds}, threads {threads}")
        self.assertLess(rss - rss0, RSS_FLOOR_KIB + RSS_PER_STREAM_KIB * streams, what)
        self.assertIsNone(sluice.popen.poll(), sluice.output()[-3000:])
        return rss

    def open_streams(self, ch, n, interval_ms=50):
        stub = ticker_pb2_grpc.TickerStub(ch)
        return [stub.Subscribe(ticker_pb2.SubscribeRequest(count=0, interval_ms=interval_ms),
                               timeout=60) for _ in range(n)]

    def test_upstream_killed_with_500_streams_open_then_restarted(self):
        upstream = self.start_upstream()
        sluice = self.start(upstream.address)
        ch = harness.channel(sluice.data)
        base = self.warm_baseline(sluice, ch)
        calls = self.open_streams(ch, 500)
        try:
            for c in calls:  # every stream is flowing
                self.assertEqual(next(c).seq, 1)
            harness.wait_for_metric(sluice, "sluice_calls_in_flight", 500.0)
            killed = time.monotonic()
            upstream.signal(signal.SIGKILL)
            upstream.wait(10)
            codes = {}
            for c in calls:  # all end together; read what is left, then the status
                try:
                    for _ in c:
                        pass
                except grpc.RpcError:
                    pass
                codes[c.code()] = codes.get(c.code(), 0) + 1
            elapsed = time.monotonic() - killed
            self.assertEqual(codes, {grpc.StatusCode.UNAVAILABLE: 500})
            self.assertLess(elapsed, 5.0, "the callers learned of the kill late")
        finally:
            for c in calls:
                c.cancel()
        self.assert_all_released(sluice, base, "upstream killed, 500 streams", 500)

        # Restarted on the same port: 500 streams flow again, end OK.
        self.start_upstream(upstream.address)
        stub = test_pb2_grpc.TestServiceStub(ch)
        harness.wait_until(lambda: self._call_ok(stub), timeout=30, interval=0.1,
                           what="a call through the restarted upstream")
        tick_stub = ticker_pb2_grpc.TickerStub(ch)
        calls = [tick_stub.Subscribe(ticker_pb2.SubscribeRequest(count=3, interval_ms=20),
                                     timeout=30) for _ in range(500)]
        for c in calls:
            self.assertEqual([t.seq for t in c], [1, 2, 3])
        self.assert_all_released(sluice, base, "restarted upstream, 500 streams", 500)
        ch.close()

    @staticmethod
    def _call_ok(stub):
        try:
            stub.EmptyCall(empty_pb2.Empty(), timeout=2)
            return True
        except grpc.RpcError:
            return False

    def test_upstream_that_accepts_but_never_answers(self):
        silent = SilentUpstream()
        try:
            sluice = self.start(silent.address)
            ch = grpc.insecure_channel(sluice.data)
            stub = test_pb2_grpc.TestServiceStub(ch)
            base = proc_stats(sluice.pid)
            harness.wait_until(lambda: silent.conns, timeout=10, what="sluice to connect")
            # A connection that never completes HTTP/2's handshake fails
            # after the upstream's connect timeout (1 s for loopback), so a
            # call ends either at its deadline (DEADLINE_EXCEEDED) or, when
            # that failure comes first, as Sluice's UNAVAILABLE with
            # sluice-reason upstream_unavailable; never hangs, never an
            # unexplained UNAVAILABLE.
            def ended_by_sluice(call):
                code = call.code()
                if code == grpc.StatusCode.UNAVAILABLE:
                    return harness.trailer(call.trailing_metadata(),
                                           "sluice-reason") == "upstream_unavailable"
                return code == grpc.StatusCode.DEADLINE_EXCEEDED

            # With a deadline: ended by it.
            start = time.monotonic()
            with self.assertRaises(grpc.RpcError) as e:
                stub.EmptyCall(empty_pb2.Empty(), timeout=0.5)
            self.assertTrue(ended_by_sluice(e.exception), e.exception)
            self.assertLess(time.monotonic() - start, 1.5)
            # Without one: the route's default_timeout (1s) bounds it.
            start = time.monotonic()
            with self.assertRaises(grpc.RpcError) as e:
                stub.EmptyCall(empty_pb2.Empty())
            self.assertTrue(ended_by_sluice(e.exception), e.exception)
            self.assertLess(time.monotonic() - start, 2.5)
            # 200 at once, unary and streams, each ends by its own deadline.
            futures = [stub.EmptyCall.future(empty_pb2.Empty(), timeout=1.0) for _ in range(100)]
            streams = [ticker_pb2_grpc.TickerStub(ch).Subscribe(
                ticker_pb2.SubscribeRequest(count=0), timeout=1.0) for _ in range(100)]
            start = time.monotonic()
            for f in futures:
                f.exception()  # waits for the end
            for st in streams:
                st.code()
            ended = [ended_by_sluice(c) for c in futures + streams]
            self.assertTrue(all(ended),
                            [(c.code(), c.details()) for c in futures + streams][:5])
            self.assertLess(time.monotonic() - start, 3.0)
            ch.close()
            self.assertIsNone(sluice.popen.poll())
            harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0)
            harness.wait_until(lambda: proc_stats(sluice.pid)[2] <= base[2] + FD_SLACK,
                               timeout=10, what="fds back")
        finally:
            silent.close()

    def test_upstream_slower_than_the_deadline(self):
        upstream = self.start_upstream()
        sluice = self.start(upstream.address)
        ch = harness.channel(sluice.data)
        base = self.warm_baseline(sluice, ch)
        stub = test_pb2_grpc.TestServiceStub(ch)
        slow = messages_pb2.StreamingOutputCallRequest(response_parameters=[
            messages_pb2.ResponseParameters(size=10, interval_us=5_000_000)])
        start = time.monotonic()
        calls = [stub.StreamingOutputCall(slow, timeout=0.5) for _ in range(200)]
        codes = set()
        for c in calls:
            codes.add(c.code())
        self.assertEqual(codes, {grpc.StatusCode.DEADLINE_EXCEEDED})
        self.assertLess(time.monotonic() - start, 2.5)
        self.assert_all_released(sluice, base, "slow upstream, 200 calls", 200)
        ch.close()

    def test_clients_reset_with_1000_streams_open(self):
        # 20 raw connections x 50 streams, then each closed with SO_LINGER
        # 0: Sluice sees a TCP RST, not a goodbye.
        upstream = self.start_upstream()
        # The flood defence is off here: on a loaded machine many of the
        # 1,000 streams have no response headers yet when they are reset,
        # so they count as early cancels, and by the third round the
        # address's budget refused all but ~30 new calls
        # (sluice-reason early_cancels; flood_test covers that defence).
        sluice = self.start(upstream.address, config() +
                            "proxy: {connections: {early_cancels_per_second: 0}}\n")
        ch = harness.channel(sluice.data)
        base = self.warm_baseline(sluice, ch)
        req = ticker_pb2.SubscribeRequest(count=0, interval_ms=50).SerializeToString()
        after = []
        for round_ in range(ROUNDS):
            cancels = self.m(sluice, "sluice_client_cancels_total", route="ticker")
            conns = []
            try:
                for _ in range(20):
                    c = h2raw.H2Conn(sluice.data)
                    c.settle(timeout=5)
                    for _ in range(50):
                        c.start_call("/sluice.demo.v1.Ticker/Subscribe", req)
                    conns.append(c)
                harness.wait_for_metric(sluice, "sluice_calls_in_flight", 1000.0, timeout=20)
            finally:
                for c in conns:
                    c.reset()
            harness.wait_for_metric(sluice, "sluice_client_cancels_total", cancels + 1000,
                                    {"route": "ticker"}, timeout=20)
            after.append(self.assert_all_released(sluice, base, f"1000 streams reset, round "
                                                  f"{round_ + 1}", 1000))
        print(f"RSS after each round of 1000 reset streams: {after} KiB")
        self.assertLess(after[-1] - after[-3], LEAK_RSS_KIB, f"RSS after each round: {after}")
        ch.close()

    # KNOWN BUG (reported, not fixed here: server/proxy/proxy_call.cc).
    # docs/metrics.md: grpc_client_handled_total counts upstream calls "by
    # the status the upstream (or its channel) gave; `Canceled` when Sluice
    # cancelled it". An upstream call Sluice cancels because its client
    # vanished is never counted (nor observed in grpc_client_handling_seconds):
    # started 50, handled 0. Remove the marker once fixed.
    def test_upstream_calls_cancelled_for_a_vanished_client_are_counted(self):
        upstream = self.start_upstream()
        sluice = self.start(upstream.address)
        ch = harness.channel(sluice.data)
        self.warm_baseline(sluice, ch)
        ch.close()
        started = self.m(sluice, "grpc_client_started_total")
        handled = self.m(sluice, "grpc_client_handled_total")
        conn = h2raw.H2Conn(sluice.data)
        conn.settle(timeout=5)
        req = ticker_pb2.SubscribeRequest(count=0, interval_ms=50).SerializeToString()
        for _ in range(50):
            conn.start_call("/sluice.demo.v1.Ticker/Subscribe", req)
        harness.wait_for_metric(sluice, "sluice_calls_in_flight", 50.0)
        conn.reset()
        harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0)
        self.assertEqual(self.m(sluice, "grpc_client_started_total"), started + 50)
        harness.wait_for_metric(sluice, "grpc_client_handled_total", handled + 50, timeout=5)

    def stuck_client(self, sluice):
        """A raw client that opens 20 fast streams of 16 KiB ticks and never
        reads its socket."""
        req = ticker_pb2.SubscribeRequest(count=0, interval_ms=0,
                                          payload_bytes=16384).SerializeToString()
        conn = h2raw.H2Conn(sluice.data)
        conn.settle(timeout=5)
        for _ in range(20):
            conn.start_call("/sluice.demo.v1.Ticker/Subscribe", req)
        harness.wait_for_metric(sluice, "sluice_calls_in_flight", 20.0)
        return conn

    def test_client_that_never_reads(self):
        # Sluice's writes stall (flow control, then a full socket buffer);
        # stream_idle_timeout (2s) ends each stream and cancels its upstream
        # call; other clients are served meanwhile; once the client goes,
        # everything is freed.
        upstream = self.start_upstream()
        sluice = self.start(upstream.address)
        ch = harness.channel(sluice.data)
        base = self.warm_baseline(sluice, ch)
        idle = self.m(sluice, "sluice_rejections_total", route="ticker", reason="idle_timeout")
        conn = self.stuck_client(sluice)
        try:
            stub = test_pb2_grpc.TestServiceStub(ch)
            r = stub.UnaryCall(messages_pb2.SimpleRequest(response_size=123), timeout=5)
            self.assertEqual(len(r.payload.body), 123)
            harness.wait_for_metric(sluice, "sluice_rejections_total", idle + 20,
                                    {"route": "ticker", "reason": "idle_timeout"}, timeout=15)
        finally:
            conn.reset()
        self.assert_all_released(sluice, base, "client that never reads", 20)
        ch.close()

    # KNOWN BUG (reported, not fixed here: server/proxy/proxy_call.cc and
    # the permit's owner). docs/limits.md: a permit is released "when the
    # call's final status is sent (... idle timeout ...)". With a client
    # that never reads, Sluice ends the stream (idle_timeout counted) but
    # its Finish cannot complete while the client's flow-control window is
    # shut, so the call object and its concurrency permit live on as long
    # as that client keeps its connection open: a few stuck connections
    # can hold a route's whole `concurrency.max`. Remove the marker once
    # fixed.
    def test_never_reading_client_gives_permits_back_at_idle_timeout(self):
        upstream = self.start_upstream()
        sluice = self.start(upstream.address)
        idle = self.m(sluice, "sluice_rejections_total", route="ticker", reason="idle_timeout")
        conn = self.stuck_client(sluice)
        try:
            harness.wait_for_metric(sluice, "sluice_rejections_total", idle + 20,
                                    {"route": "ticker", "reason": "idle_timeout"}, timeout=15)
            harness.wait_for_metric(sluice, "sluice_limit_permits_in_use", 0.0, timeout=5)
        finally:
            conn.reset()

    def test_config_reload_under_load(self):
        # Unary calls on 4 threads (each answer checked: its own size and
        # echoed id) and one long stream (its ticks in order) while the
        # config is reloaded 5 times: no call lost or answered wrongly.
        upstream = self.start_upstream()
        path = harness.write_config(config())
        sluice = harness.start_sluice(config_path=path, upstream=upstream.address)
        self.procs.append(sluice)
        ch = harness.channel(sluice.data)
        stop = threading.Event()
        results = {"ok": 0, "bad": []}
        lock = threading.Lock()

        def caller(n):
            stub = test_pb2_grpc.TestServiceStub(ch)
            for i in range(5000):  # bounded; normally stopped far earlier
                if stop.is_set():
                    return
                size = 1 + (n * 5000 + i) % 997
                tag = f"{n}-{i}"
                try:
                    r, call = stub.UnaryCall.with_call(
                        messages_pb2.SimpleRequest(response_size=size), timeout=5,
                        metadata=[("x-grpc-test-echo-initial", tag)])
                    good = (len(r.payload.body) == size and
                            harness.trailer(call.initial_metadata(),
                                            "x-grpc-test-echo-initial") == tag)
                    with lock:
                        if good:
                            results["ok"] += 1
                        else:
                            results["bad"].append((tag, "wrong answer"))
                except grpc.RpcError as e:
                    with lock:
                        results["bad"].append((tag, e.code(), e.details()))

        stream = ticker_pb2_grpc.TickerStub(ch).Subscribe(
            ticker_pb2.SubscribeRequest(count=200, interval_ms=20), timeout=30)
        seqs = []
        reader = threading.Thread(target=lambda: seqs.extend(t.seq for t in stream))
        threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
        reader.start()
        for t in threads:
            t.start()
        try:
            for k in range(5):
                ok = self.m(sluice, "sluice_config_reloads_total", result="ok")
                harness.wait_until(lambda: results["ok"] >= (k + 1) * 100, timeout=10,
                                   what="calls flowing")
                with open(path, "w") as f:
                    f.write(config(rate=100000 + k + 1))  # a changed limit each time
                sluice.signal(signal.SIGHUP)
                # At least one more: the file watcher may see the write and
                # reload too, before or after the SIGHUP.
                harness.wait_until(
                    lambda: self.m(sluice, "sluice_config_reloads_total",
                                   result="ok") >= ok + 1,
                    timeout=10, what="the reload")
        finally:
            stop.set()
            for t in threads:
                t.join(20)
            reader.join(30)
        self.assertEqual(results["bad"], [])
        self.assertGreater(results["ok"], 500)
        self.assertEqual(seqs, list(range(1, 201)))
        self.assertEqual(self.m(sluice, "sluice_config_reloads_total", result="failed"), 0)
        harness.wait_for_metric(sluice, "sluice_calls_in_flight", 0.0)
        ch.close()

    def test_sigterm_drain_under_load(self):
        # sluice-bench keeps 32 unary calls in flight and 20 slow streams
        # (5 responses 100 ms apart: they fit in drain_timeout) are open
        # when SIGTERM comes. The streams complete with all their data;
        # every bench call ends OK, or UNAVAILABLE once the drain began
        # (CANCELLED only for calls racing the port's close, < 1%).
        upstream = self.start_upstream()
        sluice = self.start(upstream.address)
        ch = harness.channel(sluice.data)
        stub = test_pb2_grpc.TestServiceStub(ch)
        bench = subprocess.Popen(
            [os.path.join(harness.ROOT, "client", "bench", "sluice-bench"),
             f"--target={sluice.data}", "--duration=6s", "--calls=200000", "--connections=2",
             "--concurrency=16", "--timeout=5s", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            harness.wait_until(lambda: self.m(sluice, "sluice_calls_handled_total") > 500,
                               timeout=10, what="bench calls flowing")
            slow = messages_pb2.StreamingOutputCallRequest(response_parameters=[
                messages_pb2.ResponseParameters(size=100 + i, interval_us=100_000)
                for i in range(5)])
            streams = [stub.StreamingOutputCall(slow, timeout=10) for _ in range(20)]
            for s in streams:
                s.initial_metadata()  # each has reached the upstream
            sluice.signal(signal.SIGTERM)
            for s in streams:
                self.assertEqual([len(r.payload.body) for r in s], [100, 101, 102, 103, 104])
                self.assertEqual(s.code(), grpc.StatusCode.OK)
            self.assertEqual(sluice.wait(20), 0, sluice.output()[-3000:])
            out, err = bench.communicate(timeout=30)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
        report = json.loads(out)
        status = report["status"]
        print(f"bench through SIGTERM: {status} reasons {report['sluice_reason']}")
        self.assertEqual(sum(status.values()), report["calls"])
        self.assertGreater(status.get("OK", 0), 500)
        self.assertLessEqual(set(status), {"OK", "UNAVAILABLE", "CANCELLED"}, status)
        self.assertLessEqual(status.get("CANCELLED", 0), max(1, report["calls"] // 100))
        ch.close()


if __name__ == "__main__":
    harness.main()
