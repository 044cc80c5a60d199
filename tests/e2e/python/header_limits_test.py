"""Header limits at the edge (issue 16): with the real binaries, 50
bystander streams open through Sluice on ONE upstream connection, then
clients send oversized request headers. The offender gets
RESOURCE_EXHAUSTED + `sluice-reason: header_too_large` (nothing of it is
forwarded), every bystander stream completes OK, new calls still work and
Sluice stays up. A header list exactly at proxy.max_header_list_bytes (the
default, 7168, counted name + value + 32 per header over the client's
metadata and :path) passes and is accepted by a default gRPC upstream
(8 KiB) with what Sluice adds; one byte more is refused.

Above gRPC's own transport limit on the data port (the second tier,
GRPC_ARG_MAX_METADATA_SIZE = 64 KiB by default) gRPC refuses the stream
itself, without a sluice-reason; bystanders on other connections are not
touched. What happens on the offender's own connection is measured in
docs/security.md.
"""

import subprocess
import threading
import unittest

import harness
import h2raw
from h2raw import CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, encode_headers, \
    frame, grpc_frame, request_headers
import grpc
from grpc.testing import messages_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

UNARY = "/grpc.testing.TestService/UnaryCall"
LIMIT = 7168          # the default of proxy.max_header_list_bytes
MAX_COUNT = 100       # the default of proxy.max_header_count
TRANSPORT = 64 * 1024  # gRPC's limit on the data port: max(64 KiB, 4 x LIMIT)
BYSTANDERS = 50
TICKS = 30
TICK_MS = 100
OK, RESOURCE_EXHAUSTED = 0, 8

# Defaults for the header limits (nothing set); one upstream connection
# (channels: 1) so every bystander stream shares it; x-forwarded-for on,
# so the at-limit case also carries what Sluice appends.
CONFIG = """
proxy:
  forwarded_for_header: x-forwarded-for
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
    channels: 1
routes:
  - name: ticker
    match: {prefix: /sluice.demo.v1.Ticker/}
    upstream: demo
  - name: default
    match: {prefix: /}
    upstream: demo
"""


def entry(name, value):
    return len(name) + len(value) + 32


def pad_for(total, path, fixed=()):
    """Value length of one `x-pad` header that makes Sluice's count (the
    client's metadata + :path) exactly `total`."""
    return total - entry(":path", path) - sum(entry(k, v) for k, v in fixed) - entry("x-pad", "")


def simple(size):
    return messages_pb2.SimpleRequest(response_size=size).SerializeToString()


def split_headers(sid, block, end_stream_with=None):
    """A header block as HEADERS + CONTINUATIONs of 16 KiB, then one DATA
    frame with END_STREAM (or none)."""
    chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    out = frame(HEADERS, END_HEADERS if len(chunks) == 1 else 0, sid, chunks[0])
    for i, c in enumerate(chunks[1:], 1):
        out += frame(CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, sid, c)
    if end_stream_with is not None:
        out += frame(DATA, END_STREAM, sid, end_stream_with)
    return out


class Bystanders:
    """BYSTANDERS Ticker streams on 5 client connections of their own,
    each expecting TICKS ticks and OK."""

    def __init__(self, address):
        self.channels = [grpc.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(5)]
        self.results = [None] * BYSTANDERS
        self.first_tick = [threading.Event() for _ in range(BYSTANDERS)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(BYSTANDERS)]
        for t in self.threads:
            t.start()

    def _run(self, i):
        stub = ticker_pb2_grpc.TickerStub(self.channels[i % len(self.channels)])
        n = 0
        try:
            call = stub.Subscribe(ticker_pb2.SubscribeRequest(count=TICKS, interval_ms=TICK_MS),
                                  timeout=60)
            for _ in call:
                n += 1
                self.first_tick[i].set()
            self.results[i] = (call.code(), n)
        except grpc.RpcError as e:
            self.results[i] = (e.code(), n, e.details())
        finally:
            self.first_tick[i].set()

    def wait_open(self):
        for i, ev in enumerate(self.first_tick):
            assert ev.wait(20), f"bystander {i} got no tick"

    def finish(self):
        for t in self.threads:
            t.join(60)
        for ch in self.channels:
            ch.close()
        return self.results


class HeaderLimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.sluice = harness.start_sluice(config_path=harness.write_config(CONFIG),
                                          upstream=cls.upstream.address)
        cls.ch = harness.channel(cls.sluice.data)
        cls.stub = test_pb2_grpc.TestServiceStub(cls.ch)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        cls.sluice.stop()
        cls.upstream.stop()

    def rejections(self):
        return harness.metric(self.sluice, "sluice_rejections_total",
                              {"route": "default", "limit": "", "reason": "header_too_large"})

    def assert_alive_and_serving(self, what):
        self.assertIsNone(self.sluice.popen.poll(),
                          f"sluice died after {what}:\n{self.sluice.output()[-3000:]}")
        r = self.stub.UnaryCall(messages_pb2.SimpleRequest(response_size=5), timeout=5)
        self.assertEqual(len(r.payload.body), 5, what)

    def raw_call(self, extra, settle=False, block=None):
        """One UnaryCall on a fresh raw connection (SETTINGS acknowledged
        first when `settle`); returns its Result."""
        conn = h2raw.H2Conn(self.sluice.data, timeout=15)
        try:
            if settle:
                self.assertTrue(conn.settle(timeout=5))
            sid = conn.new_stream()
            if block is None:
                block = encode_headers(request_headers(UNARY, extra=extra))
            conn.send(split_headers(sid, block, grpc_frame(simple(7))))
            return conn.wait_stream(sid, timeout=15)
        finally:
            conn.close()

    def test_offenders_are_refused_and_bystanders_on_the_shared_upstream_connection_finish(self):
        before = self.rejections()
        bystanders = Bystanders(self.sluice.data)
        bystanders.wait_open()

        # A gRPC client: 9,000 bytes of one header. Refused with the reason.
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.UnaryCall(messages_pb2.SimpleRequest(response_size=1),
                                metadata=[("x-big", "a" * 9000)], timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(harness.trailer(e.exception.trailing_metadata(), "sluice-reason"),
                         "header_too_large")
        self.assertIn("proxy.max_header_list_bytes", e.exception.details())

        # A raw client sending 1 MiB before it acknowledges Sluice's
        # SETTINGS: gRPC's transport limit is not in force yet (gRPC 1.51
        # applies it from the ACK), so only Sluice's check stands.
        r = self.raw_call([("x-big", "a" * (1 << 20))])
        self.assertEqual((r.grpc_status, r.get("sluice-reason")),
                         (RESOURCE_EXHAUSTED, "header_too_large"), r)

        # Too many headers, each small.
        r = self.raw_call([(f"x-h{i}", "v") for i in range(MAX_COUNT + 1)])
        self.assertEqual((r.grpc_status, r.get("sluice-reason")),
                         (RESOURCE_EXHAUSTED, "header_too_large"), r)
        self.assertIn("proxy.max_header_count", r.get("grpc-message"))

        # The second tier: 1 MiB after the ACK. gRPC's transport refuses the
        # stream itself (no sluice-reason: Sluice never saw the call).
        r = self.raw_call([("x-big", "a" * (1 << 20))], settle=True)
        self.assertNotEqual(r.grpc_status, OK, r)
        self.assertIsNone(r.get("sluice-reason"), r)

        # Calls started on the shared upstream connection after the
        # offenders work too.
        for size in range(1, 21):
            r2 = self.stub.UnaryCall(messages_pb2.SimpleRequest(response_size=size), timeout=5)
            self.assertEqual(len(r2.payload.body), size)

        results = bystanders.finish()
        bad = [(i, r) for i, r in enumerate(results) if r != (grpc.StatusCode.OK, TICKS)]
        self.assertEqual(bad, [], "bystander streams harmed")
        self.assertEqual(self.rejections() - before, 3.0)  # tier 2 is not Sluice's
        self.assert_alive_and_serving("oversized headers")

    def test_odd_names_and_values_never_reach_the_shared_upstream_connection(self):
        # Names gRPC reserves, hop-by-hop names and odd values from a raw
        # client: each call gets an answer (Sluice drops what gRPC cannot
        # send, gRPC's own parser refuses the rest) and the upstream
        # connection every bystander shares is never reset.
        bystanders = Bystanders(self.sluice.data)
        bystanders.wait_open()
        cases = [("grpc-status", "abc"), ("grpc-message", "x"),
                 ("grpc-previous-rpc-attempts", "zz"), ("grpc-retry-pushback-ms", "-5"),
                 ("grpc-tags-bin", "AAA"), ("grpc-trace-bin", "!!"), ("lb-token", "x"),
                 ("grpc-internal-encoding-request", "gzip"), ("host", "evil"),
                 ("grpc-accept-encoding", "zstd"), ("grpc-encoding", "gzip"),
                 ("content-type", "text/html"), ("te", "gzip"), ("user-agent", "u" * 5000),
                 ("x-a-bin", "=="), ("x-b-bin", "A"), ("x-empty", ""), ("X-Upper", "v"),
                 ("x-nul", "a\0b"), ("x-del", "a\x7fb"), ("n" * 3000, "v")]
        for name, value in cases:
            r = self.raw_call([(name, value)])
            self.assertTrue(r.ended or r.rst is not None, (name, r))
        results = bystanders.finish()
        bad = [(i, r) for i, r in enumerate(results) if r != (grpc.StatusCode.OK, TICKS)]
        self.assertEqual(bad, [], "bystander streams harmed")
        self.assert_alive_and_serving("odd names and values")

    def test_refusal_leaves_the_offenders_connection_serving(self):
        # Below the transport limit the refusal is per call: other streams
        # on the offender's own connection and the streams it opens next
        # are untouched (gRPC parsed the whole header block).
        sub = "/sluice.demo.v1.Ticker/Subscribe"
        req = grpc_frame(ticker_pb2.SubscribeRequest(count=10, interval_ms=50)
                         .SerializeToString())
        conn = h2raw.H2Conn(self.sluice.data, timeout=15)
        try:
            self.assertTrue(conn.settle(timeout=5))
            streams = []
            for i in range(10):
                sid = conn.new_stream()
                conn.send(frame(HEADERS, END_HEADERS, sid,
                                encode_headers(request_headers(sub))) +
                          frame(DATA, END_STREAM, sid, req))
                streams.append(sid)
            for size in (9000, 60 * 1024):  # both under TRANSPORT
                sid = conn.new_stream()
                conn.send(split_headers(
                    sid, encode_headers(request_headers(UNARY, extra=[("x-big", "a" * size)])),
                    grpc_frame(simple(7))))
                r = conn.wait_stream(sid)
                self.assertEqual((r.grpc_status, r.get("sluice-reason")),
                                 (RESOURCE_EXHAUSTED, "header_too_large"), r)
            after = conn.new_stream()
            conn.send(frame(HEADERS, END_HEADERS, after,
                            encode_headers(request_headers(UNARY))) +
                      frame(DATA, END_STREAM, after, grpc_frame(simple(9))))
            self.assertTrue(conn.pump(lambda: all(conn.results[s].ended
                                                  for s in streams + [after])), conn.results)
            for sid in streams:
                r = conn.results[sid]
                self.assertEqual((r.grpc_status, len(r.messages())), (OK, 10), r)
            self.assertEqual(conn.results[after].grpc_status, OK)
            self.assertIsNone(conn.goaway)
            self.assertFalse(conn.closed)
        finally:
            conn.close()

    def test_exactly_at_the_limit_passes_one_byte_more_is_refused(self):
        # grpc-timeout is consumed by gRPC (not counted); Sluice forwards
        # its own, plus x-forwarded-for with the peer address: the upstream
        # (a default gRPC server, 8 KiB) must accept what Sluice sends.
        fixed = [("x-forwarded-for", "10.1.2.3")]
        n = pad_for(LIMIT, UNARY, fixed)
        extra = fixed + [("grpc-timeout", "5S")]
        r = self.raw_call(extra + [("x-pad", "p" * n)])
        self.assertEqual(r.grpc_status, OK, r)
        [msg] = r.messages()
        self.assertEqual(len(messages_pb2.SimpleResponse.FromString(msg).payload.body), 7)

        r = self.raw_call(extra + [("x-pad", "p" * (n + 1))])
        self.assertEqual((r.grpc_status, r.get("sluice-reason")),
                         (RESOURCE_EXHAUSTED, "header_too_large"), r)
        self.assertIn(f"of {LIMIT + 1} bytes", r.get("grpc-message"))

        # Exactly MAX_COUNT headers pass.
        r = self.raw_call([(f"x-h{i}", "v") for i in range(MAX_COUNT)])
        self.assertEqual(r.grpc_status, OK, r)
        self.assert_alive_and_serving("headers at the limit")

    def test_a_grpc_client_at_the_limit_passes(self):
        # What a gRPC client adds (user-agent) is counted too: find the
        # largest x-pad that passes and check that one more byte is refused
        # with the reason, i.e. the refusal is Sluice's, at Sluice's limit.
        def call(n):
            try:
                self.stub.UnaryCall(messages_pb2.SimpleRequest(response_size=2),
                                    metadata=[("x-pad", "p" * n)], timeout=5)
                return "ok"
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertEqual(harness.trailer(e.trailing_metadata(), "sluice-reason"),
                                 "header_too_large")
                return "refused"
        lo, hi = 0, LIMIT  # call(lo) passes, call(hi) is refused
        self.assertEqual((call(lo), call(hi)), ("ok", "refused"))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if call(mid) == "ok":
                lo = mid
            else:
                hi = mid
        # The largest passing pad leaves room only for what the client
        # itself sends (user-agent, about 100 bytes with its overhead).
        self.assertGreater(lo, LIMIT - entry(":path", UNARY) - entry("x-pad", "") - 200)

    def test_transport_limit_is_advertised_well_above_sluices(self):
        conn = h2raw.H2Conn(self.sluice.data)
        try:
            self.assertTrue(conn.settle(timeout=5))
            # SETTINGS_MAX_HEADER_LIST_SIZE (0x6)
            self.assertEqual(conn.server_settings.get(6), TRANSPORT)
        finally:
            conn.close()


class CheckTest(unittest.TestCase):
    """`sluice --check` validates the two fields."""

    def check(self, proxy):
        path = harness.write_config(
            f"proxy: {proxy}\n"
            "upstreams: [{name: a, target: \"127.0.0.1:1\"}]\n"
            "routes: [{name: r, match: {prefix: /}, upstream: a}]\n")
        p = subprocess.run([harness.SLUICE, f"--config={path}", "--check"],
                           capture_output=True, text=True, timeout=20)
        return p.returncode, p.stdout + p.stderr

    def test_valid_values_pass(self):
        rc, out = self.check("{max_header_list_bytes: 16384, max_header_count: 50}")
        self.assertEqual(rc, 0, out)

    def test_out_of_range_values_are_named(self):
        rc, out = self.check("{max_header_list_bytes: 100, max_header_count: 20000}")
        self.assertEqual(rc, 2, out)
        self.assertIn("proxy.max_header_list_bytes: 100 is out of range (1024..1048576)", out)
        self.assertIn("proxy.max_header_count: 20000 is out of range (1..10000)", out)


if __name__ == "__main__":
    harness.main()
