"""Flood resistance (issue 16), with the real binaries: a rapid-reset flood
(HTTP/2 HEADERS + RST_STREAM pairs, CVE-2023-44487) from 127.0.0.2 while a
bystander calls from 127.0.0.1 on its own connection.

Asserted: Sluice stays up; the bystander sees no error; Sluice's RSS stays
under a generous ceiling and comes back near its baseline afterwards (the
freed heap is returned, server/common/heap_trim.h); once the flooding
address has spent its early-cancel budget, Sluice closes each connection
that goes on resetting the calls it refuses (counted in
sluice_flood_connections_closed_total), its further resets do not reach
the upstream beyond a small bound, and a connection from that address
that does not reset its calls is not closed (its calls are served, or
refused with RESOURCE_EXHAUSTED + `sluice-reason: early_cancels` while the
budget is spent: DeadlineCancelTest checks that refusal) while the
bystander's calls still pass.
Latency is not asserted (measured in docs/security.md with
scripts/flood_probe.py).
"""

import socket
import struct
import threading
import time
import unittest

import harness
import h2raw
import grpc
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

EMPTY = "/grpc.testing.TestService/EmptyCall"
ATTACKER = "127.0.0.2"
RSS_CEILING_KIB = 256 * 1024
RSS_RETURN_SLACK_KIB = 48 * 1024
RESOURCE_EXHAUSTED = 8


def reset_pairs(first_sid, count):
    block = h2raw.encode_headers(h2raw.request_headers(EMPTY))
    rst = struct.pack(">I", 8)  # CANCEL
    out = bytearray()
    for i in range(count):
        sid = first_sid + 2 * i
        out += h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, sid, block)
        out += h2raw.frame(h2raw.RST_STREAM, 0, sid, rst)
    return bytes(out)


def flood(address, resets, seconds, plain=0, slices=20, expect_close=False):
    """`resets` pairs spread over `seconds` on one connection from ATTACKER,
    then `plain` ordinary calls on it; a thread reads (and HPACK-decodes)
    what the server sends. With `expect_close`, waits up to 20 s for the
    server to close the connection. Returns (pairs sent, the plain calls'
    Results, whether the server closed the connection)."""
    conn = h2raw.H2Conn(address, source=ATTACKER)
    stop = threading.Event()
    reader = threading.Thread(
        target=lambda: conn.pump(lambda: stop.is_set(), timeout=60), daemon=True)
    reader.start()
    sid, sent, start = 1, 0, time.monotonic()
    per = max(1, resets // slices)
    for s in range(slices if resets > 0 else 0):
        n = per if s < slices - 1 else resets - sent
        if n <= 0 or not conn.send(reset_pairs(sid, n)):
            break
        sid += 2 * n
        sent += n
        wait = start + seconds * (s + 1) / slices - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # pacing the attack, not waiting for logic
    conn.next_stream = sid
    results = [conn.results[conn.start_call(EMPTY, message=b"")] for _ in range(plain)]
    end = time.monotonic() + 20
    while time.monotonic() < end and not conn.closed and \
            not all(r.ended or r.rst is not None for r in results):
        time.sleep(0.05)  # the reader thread fills the results
    while expect_close and time.monotonic() < end and not conn.closed:
        time.sleep(0.05)  # the reader thread sees the close
    time.sleep(0.3)  # the last frames reach the server before the close
    closed_by_server = conn.closed
    stop.set()
    try:
        conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
    except OSError:
        pass
    reader.join(timeout=15)
    conn.close()
    return sent, results, closed_by_server


def metric_sum(sluice, prefix):
    total = 0.0
    for line in harness.scrape(sluice.metrics).splitlines():
        if line.startswith(prefix):
            total += float(line.rsplit(" ", 1)[1])
    return total


class FloodTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.sluice = harness.start_sluice(upstream=cls.upstream.address)

    @classmethod
    def tearDownClass(cls):
        cls.sluice.stop()
        cls.upstream.stop()

    def started_upstream(self):
        return metric_sum(self.sluice, "grpc_client_started_total")

    def refused(self):
        return metric_sum(self.sluice,
                          'sluice_rejections_total{limit="",reason="early_cancels"')

    def closed_connections(self):
        return metric_sum(self.sluice, "sluice_flood_connections_closed_total")

    def test_rapid_reset(self):
        stub = test_pb2_grpc.TestServiceStub(harness.channel(self.sluice.data))
        for _ in range(20):
            stub.EmptyCall(empty_pb2.Empty(), timeout=5)
        time.sleep(0.5)  # the warm-up's allocations settle before the baseline
        base = harness.rss_kib(self.sluice.pid)

        calls, errors, peak = [], [], [0]
        stop = threading.Event()

        def bystander():
            end = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < end:
                try:
                    stub.EmptyCall(empty_pb2.Empty(), timeout=10)
                    calls.append(1)
                except grpc.RpcError as e:
                    errors.append(e.code())

        def sampler():
            end = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < end:
                peak[0] = max(peak[0], harness.rss_kib(self.sluice.pid))
                time.sleep(0.01)  # sampling interval

        threads = [threading.Thread(target=f, daemon=True) for f in (bystander, sampler)]
        for t in threads:
            t.start()
        try:
            # Round 1 spends the address's early-cancel budget (500): its
            # later calls are refused, and since it resets those too,
            # Sluice closes its connection, long before the 3000 pairs.
            _, _, closed1 = flood(self.sluice.data, 3000, 0.25, expect_close=True)
            harness.wait_until(lambda: self.closed_connections() >= 1, timeout=20,
                               what="the flooding connection closed")
            # Round 2 right after, on a new connection: refused at once,
            # without upstream calls (the budget refills at 100/s while
            # refused resets keep it spent), and closed again.
            started, by0 = self.started_upstream(), len(calls)
            _, _, closed2 = flood(self.sluice.data, 5000, 0.25, expect_close=True)
            harness.wait_until(lambda: self.closed_connections() >= 2, timeout=20,
                               what="the second flooding connection closed")
            time.sleep(1.0)  # the round's last calls end
            # Upstream calls started meanwhile, less the bystander's.
            second_round = self.started_upstream() - started - (len(calls) - by0)
            # Plain calls from that address on a connection that does not
            # reset them: served or refused (as the budget refills), never
            # disconnected.
            _, plain, closed3 = flood(self.sluice.data, 0, 0, plain=5)
            n_before = len(calls)
            stub.EmptyCall(empty_pb2.Empty(), timeout=5)  # the bystander still passes
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)

        print(f"flood: peak RSS {peak[0]} KiB (baseline {base}), second round "
              f"{second_round:.0f} upstream calls, {len(calls)} bystander calls, "
              f"{self.refused():.0f} refused", flush=True)
        self.assertIsNone(self.sluice.popen.poll(), "sluice exited")
        self.assertEqual(errors, [])
        self.assertGreater(n_before, 0)
        self.assertTrue(closed1, "the first flooding connection was not closed")
        self.assertTrue(closed2, "the second flooding connection was not closed")
        self.assertFalse(closed3, "a connection that does not reset was closed")
        outcomes = [(r.grpc_status, r.get("sluice-reason")) for r in plain]
        for outcome in outcomes:
            self.assertIn(outcome, [(0, None), (RESOURCE_EXHAUSTED, "early_cancels")],
                          outcomes)
        self.assertLess(second_round, 1000,
                        f"{second_round:.0f} of the second round's 5000 resets reached the upstream")
        self.assertEqual(self.closed_connections(), 2)
        self.assertLess(peak[0], RSS_CEILING_KIB, f"peak RSS {peak[0]} KiB")
        # The freed heap goes back to the system within a few seconds.
        harness.wait_until(
            lambda: harness.rss_kib(self.sluice.pid) < base + RSS_RETURN_SLACK_KIB,
            timeout=15, interval=0.2,
            what=f"RSS back near its baseline {base} KiB (peak {peak[0]} KiB)")



class EarlyCancelRefundTest(unittest.TestCase):
    """An address that spent over half its budget pays one token up front
    for each new call; a call that completes normally gives it back, so a
    busy client that once had a burst of cancels is not throttled by its
    good calls (before the refund, 3x its burst of sequential calls were
    enough to be refused)."""

    def test_good_calls_after_a_burst_of_resets_are_not_throttled(self):
        upstream = harness.start_upstream()
        config = harness.write_config(f"""
proxy: {{connections: {{early_cancels_per_second: 1, early_cancels_burst: 20}}}}
upstreams: [{{name: app, target: "{upstream.address}"}}]
routes: [{{name: all, match: {{prefix: /}}, upstream: app}}]
""")
        sluice = harness.start_sluice(config_path=config)
        try:
            # 15 resets: under half of the 20 left, refilled at 1/s only.
            sent, _, closed = flood(sluice.data, 15, 0.05, slices=1)
            self.assertFalse(closed)
            self.assertEqual(sent, 15)
            time.sleep(0.5)  # the resets' cancels reach Sluice
            conn = h2raw.H2Conn(sluice.data, source=ATTACKER)
            try:
                statuses = []
                for _ in range(60):  # 3x the burst, one after the other
                    sid = conn.start_call(EMPTY, message=b"")
                    r = conn.results[sid]
                    end = time.monotonic() + 10
                    while not (r.ended or r.rst is not None) and time.monotonic() < end:
                        conn.pump(lambda: r.ended or r.rst is not None, timeout=1)
                    statuses.append((r.grpc_status, r.get("sluice-reason")))
            finally:
                conn.close()
            self.assertEqual(statuses, [(0, None)] * 60)
        finally:
            sluice.stop()
            upstream.stop()


class EarlyCancelsOffTest(unittest.TestCase):
    """proxy.connections.early_cancels_per_second: 0 (for a Sluice behind a
    proxy or NAT, where every client shares one address): the same resets
    spend no budget, and the address's next calls are served."""

    def test_off_refuses_nothing(self):
        upstream = harness.start_upstream()
        config = harness.write_config(f"""
proxy: {{connections: {{early_cancels_per_second: 0}}}}
upstreams: [{{name: app, target: "{upstream.address}"}}]
routes: [{{name: all, match: {{prefix: /}}, upstream: app}}]
""")
        sluice = harness.start_sluice(config_path=config)
        try:
            sent, plain, closed = flood(sluice.data, 1500, 0.1, plain=5)
            self.assertEqual(sent, 1500)
            self.assertFalse(closed)
            self.assertEqual([r.grpc_status for r in plain], [0] * 5,
                             [(r.grpc_status, r.get("sluice-reason")) for r in plain])
            self.assertEqual(metric_sum(sluice, 'sluice_rejections_total{limit="",'
                                                'reason="early_cancels"'), 0)
            self.assertNotIn("sluice_flood_connections_closed_total",
                             harness.scrape(sluice.metrics))
        finally:
            sluice.stop()
            upstream.stop()


class DeadlineCancelTest(unittest.TestCase):
    def test_cancels_at_the_deadline_are_not_early(self):
        # A client that gives up at its deadline resets the stream a moment
        # before Sluice's own copy of that deadline (started when the call
        # arrived) ends: that is the deadline, not a flood. The upstream
        # (capacity mode, 30 s per call) never answers in time.
        upstream = harness.start_upstream(extra=["--capacity=1", "--service_time=30s"])
        config = harness.write_config(f"""
proxy: {{connections: {{early_cancels_per_second: 1, early_cancels_burst: 2}}}}
upstreams: [{{name: app, target: "{upstream.address}"}}]
routes: [{{name: all, match: {{prefix: /}}, upstream: app}}]
""")
        sluice = harness.start_sluice(config_path=config)
        ch = harness.channel(sluice.data)
        stub = test_pb2_grpc.TestServiceStub(ch)
        ticker = ticker_pb2_grpc.TickerStub(ch)

        def cancelled_at(seconds, calls):
            futures = [stub.UnaryCall.future(messages_pb2.SimpleRequest(response_size=1),
                                             timeout=5) for _ in range(calls)]
            timers = [threading.Timer(seconds, f.cancel) for f in futures]
            for t in timers:
                t.start()
            for f, t in zip(futures, timers):
                with self.assertRaises(grpc.FutureCancelledError):
                    f.result(timeout=30)
                t.join(10)

        def one_tick():
            try:
                return len(list(ticker.Subscribe(ticker_pb2.SubscribeRequest(count=1),
                                                 timeout=10))), None
            except grpc.RpcError as e:
                return 0, e

        try:
            # Cancelled 4.8 s into 5 s (the margin is max(100 ms, 0.5 s)):
            # six of them against a burst of 2, and nothing is refused.
            cancelled_at(4.8, 6)
            n, err = one_tick()
            self.assertEqual(n, 1, err)
            self.assertEqual(metric_sum(sluice, 'sluice_rejections_total{limit="",'
                                                'reason="early_cancels"'), 0)
            # The control: cancelled 0.2 s in, they are early cancels, and
            # the address's next call is refused.
            cancelled_at(0.2, 4)
            n, err = one_tick()
            self.assertEqual(n, 0)
            self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, err)
            self.assertEqual(harness.trailer(err.trailing_metadata(), "sluice-reason"),
                             "early_cancels")
        finally:
            ch.close()
            sluice.stop()
            upstream.stop()

if __name__ == "__main__":
    harness.main()
