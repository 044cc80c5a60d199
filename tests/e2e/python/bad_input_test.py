"""Hostile or broken input through the real sluice binary (issue #8, "Bad
input"), each case with its expected outcome in a table: malformed HTTP/2
from a raw socket client (h2raw.py), malformed and huge metadata,
grpc-timeout edge values, oversized messages both ways, a flood of
distinct rate-limit keys, many connections and streams at once, and
malformed config files through `sluice --check`.

After every case Sluice must still be alive and serve a normal call with
the right answer; no case may answer one caller with another's data; at the
end no call is left in flight.
"""

import subprocess
import threading
import time
import unittest

import harness
import h2raw
from h2raw import (CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PING,
                   RST_STREAM, SETTINGS, WINDOW_UPDATE, encode_headers, frame, grpc_frame,
                   request_headers)
import grpc
from grpc.testing import messages_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2

UNARY = "/grpc.testing.TestService/UnaryCall"
MAX_RECEIVE = 2 << 20        # proxy.max_receive_message_bytes below
UPSTREAM_MAX = 1 << 20       # upstreams[].max_message_bytes below
MAX_STREAMS = 50             # proxy.max_concurrent_streams below
MAX_KEYS = 64                # the keyed limit's max_keys below

CONFIG = f"""
proxy:
  max_receive_message_bytes: {MAX_RECEIVE}
  max_concurrent_streams: {MAX_STREAMS}
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
    max_message_bytes: {UPSTREAM_MAX}
routes:
  - name: ticker
    match: {{prefix: /sluice.demo.v1.Ticker/}}
    upstream: demo
  - name: keyed
    match: {{prefix: /grpc.testing.TestService/EmptyCall}}
    upstream: demo
    limits:
      - name: per-key
        rate: {{per_second: 1000, burst: 1000}}
        key: ["header:x-key"]
        max_keys: {MAX_KEYS}
  - name: default
    match: {{prefix: /}}
    upstream: demo
    deadline: {{default_timeout: 1s}}
"""

# grpc-status codes as numbers (the raw client reads them off the wire).
OK, CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, \
    INTERNAL, UNAVAILABLE = 0, 1, 2, 4, 8, 12, 13, 14


def simple(size):
    return messages_pb2.SimpleRequest(response_size=size).SerializeToString()


rss_kib = harness.rss_kib
fd_count = harness.fd_count


def headers_then(path, extra=(), data=None, flags=END_HEADERS):
    """HEADERS for `path` on stream 1, then `data` (bytes) as one DATA frame
    with END_STREAM."""
    out = frame(HEADERS, flags, 1, encode_headers(request_headers(path, extra=extra)))
    if data is not None:
        out += frame(DATA, END_STREAM, 1, data)
    return out


def split_headers(path, extra, data):
    """A header block too big for one frame, as HEADERS + CONTINUATIONs
    of 16 KiB (the default SETTINGS_MAX_FRAME_SIZE)."""
    block = encode_headers(request_headers(path, extra=extra))
    chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    out = frame(HEADERS, END_HEADERS if len(chunks) == 1 else 0, 1, chunks[0])
    for i, c in enumerate(chunks[1:], 1):
        out += frame(CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, 1, c)
    return out + frame(DATA, END_STREAM, 1, data)


def good_call(extra=()):
    return headers_then(UNARY, extra=extra, data=grpc_frame(simple(10)))


# Expected outcomes of the raw HTTP/2 table:
#   ("status", code): stream 1 ends with this grpc-status and no message,
#       and the same connection then serves a normal call;
#   ("status+closed", code): stream 1 ends with this grpc-status, then the
#       server closes the connection (its HPACK state cannot be trusted);
#   "closed": the server closes the connection (connection error);
#   "ignored": the server does not answer stream 1, and the same connection
#       then serves a normal call;
#   ("ok", None): stream 1 is served normally (the oddity is tolerated).
RAW_CASES = [
    # Frames that break HTTP/2 framing rules.
    ("frame longer than SETTINGS_MAX_FRAME_SIZE",
     lambda: frame(DATA, 0, 1, b"\0" * 100, length=1 << 20), "closed"),
    ("SETTINGS with a length not a multiple of 6",
     lambda: frame(SETTINGS, 0, 0, b"\0" * 5), "closed"),
    ("PING of 3 bytes", lambda: frame(PING, 0, 0, b"\0" * 3), "closed"),
    ("WINDOW_UPDATE of 0 on the connection",
     lambda: frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), "closed"),
    ("CONTINUATION without HEADERS",
     lambda: frame(CONTINUATION, END_HEADERS, 1, encode_headers(request_headers(UNARY))),
     "closed"),
    ("HTTP/1.1 request instead of the preface",
     lambda: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "closed"),
    # gRPC core tolerates these connection-level errors instead of closing.
    ("DATA on stream 0", lambda: frame(DATA, 0, 0, b"xx"), "ignored"),
    ("RST_STREAM on stream 0", lambda: frame(RST_STREAM, 0, 0, b"\0\0\0\x08"), "ignored"),
    ("HEADERS on an even (server) stream id",
     lambda: frame(HEADERS, END_HEADERS, 2, encode_headers(request_headers(UNARY))), "ignored"),
    ("frame of an unknown type", lambda: frame(0x42, 0, 1, b"hello"), "ignored"),
    # Broken HPACK: the stream fails, then the connection is closed.
    ("HEADERS with an endless HPACK integer",
     lambda: frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff" * 6),
     ("status+closed", UNAVAILABLE)),
    ("HEADERS indexing past the HPACK tables",
     lambda: frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xfe"),
     ("status+closed", UNAVAILABLE)),
    ("HEADERS without END_HEADERS, then DATA",
     lambda: frame(HEADERS, 0, 1, encode_headers(request_headers(UNARY))) + frame(DATA, 0, 1, b"x"),
     ("status+closed", UNAVAILABLE)),
    # Requests that are not valid gRPC.
    ("no te: trailers",
     lambda: frame(HEADERS, END_HEADERS, 1, encode_headers(
         [(k, v) for k, v in request_headers(UNARY) if k != "te"])) +
     frame(DATA, END_STREAM, 1, grpc_frame(simple(10))), ("status", UNKNOWN)),
    ("GET instead of POST",
     lambda: frame(HEADERS, END_HEADERS | END_STREAM, 1, encode_headers(
         [(":method", "GET"), (":scheme", "http"), (":path", UNARY), (":authority", "x")])),
     ("status", UNKNOWN)),
    ("no :path",
     lambda: frame(HEADERS, END_HEADERS | END_STREAM, 1, encode_headers(
         [(k, v) for k, v in request_headers(UNARY) if k != ":path"])), ("status", UNKNOWN)),
    ("a :path that is no method name",
     lambda: headers_then("not-a-path\x01", data=grpc_frame(simple(10))), ("status", UNIMPLEMENTED)),
    # Broken gRPC messages reach the upstream, which answers for itself.
    ("gRPC length prefix longer than the data",
     lambda: headers_then(UNARY, data=b"\0\0\0\0\x10ab"), ("status", UNIMPLEMENTED)),
    ("message that is no protobuf",
     lambda: headers_then(UNARY, data=grpc_frame(b"\xff\xff\xff\xff")), ("status", UNIMPLEMENTED)),
    ("compressed flag without grpc-encoding",
     lambda: headers_then(UNARY, data=grpc_frame(simple(10), compressed=True)), ("ok", None)),
    ("unknown grpc-encoding",
     lambda: headers_then(UNARY, extra=[("grpc-encoding", "zstd-nope")],
                          data=grpc_frame(simple(10))), ("ok", None)),
    ("DATA after END_STREAM",
     lambda: good_call() + frame(DATA, 0, 1, grpc_frame(simple(10))), ("ok", None)),
    # Metadata.
    ("one 64 KiB header value (HEADERS + CONTINUATIONs)",
     lambda: split_headers(UNARY, [("x-big", "a" * 65536)], grpc_frame(simple(10))),
     ("status", RESOURCE_EXHAUSTED)),
    ("header value over one frame, in one frame",
     lambda: headers_then(UNARY, extra=[("x-big", "a" * 20000)], data=grpc_frame(simple(10))),
     "closed"),
    ("2,000 headers", lambda: headers_then(
        UNARY, extra=[(f"x-h{i}", "v") for i in range(2000)], data=grpc_frame(simple(10))),
     "closed"),
    ("-bin header that is no base64",
     lambda: headers_then(UNARY, extra=[("x-a-bin", "!!!###")], data=grpc_frame(simple(10))),
     ("status+closed", UNAVAILABLE)),
    # gRPC core would assert (kill Sluice) if Sluice forwarded these: they
    # are dropped (server/proxy/metadata_filter.cc) and the call goes on.
    ("upper-case header name",
     lambda: headers_then(UNARY, extra=[("X-Upper", "v")], data=grpc_frame(simple(10))),
     ("ok", None)),
    ("header name with a space",
     lambda: headers_then(UNARY, extra=[("x bad", "v")], data=grpc_frame(simple(10))),
     ("ok", None)),
]

# Header values gRPC's parser accepts from a peer but refuses to send:
# forwarding one kills Sluice (an assertion in gRPC core). Kept apart from
# RAW_CASES because the fix belongs in server/proxy/proxy_call.cc (see
# test_header_values_grpc_cannot_send).
BAD_VALUE_CASES = [
    ("header value with a NUL", [("x-a", "a\0b")]),
    ("header value with a DEL", [("x-a", "a\x7fb")]),
    ("header value with a tab", [("x-a", "a\tb")]),
]

# grpc-timeout values on the wire and what the caller gets (route
# default_timeout is 1s; the demo answers a UnaryCall at once).
TIMEOUT_CASES = [
    ("0n", DEADLINE_EXCEEDED),             # already expired
    ("0S", DEADLINE_EXCEEDED),
    ("1n", DEADLINE_EXCEEDED),
    ("100m", OK),
    ("99999999S", OK),                     # 8 digits: 3 years
    ("99999999M", OK),                     # 190 years
    # Malformed: gRPC core logs "invalid value" and the call has no
    # deadline, so the route's default_timeout applies.
    ("-1S", OK), ("1x", OK), ("1", OK), ("", OK), ("abcS", OK), (" 1S", OK),
    ("99999999999H", OK),                  # more than 8 digits
]


class Fixture(unittest.TestCase):
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

    def assert_alive_and_serving(self, what=""):
        self.assertIsNone(self.sluice.popen.poll(),
                          f"sluice died after {what}:\n{self.sluice.output()[-3000:]}")
        for size in (3, 17):  # a fresh connection each time
            ch = grpc.insecure_channel(self.sluice.data,
                                       options=[("grpc.use_local_subchannel_pool", 1)])
            try:
                r = test_pb2_grpc.TestServiceStub(ch).UnaryCall(
                    messages_pb2.SimpleRequest(response_size=size), timeout=5)
                self.assertEqual(len(r.payload.body), size, what)
            finally:
                ch.close()

    def serves_on(self, conn, size=11):
        """A normal call on an existing raw connection; its answer must be
        its own (`size` bytes of payload)."""
        conn.next_stream = max(conn.next_stream, 11)
        sid = conn.start_call(UNARY, simple(size))
        r = conn.wait_stream(sid, timeout=5)
        self.assertEqual(r.grpc_status, OK, r)
        [msg] = r.messages()
        self.assertEqual(len(messages_pb2.SimpleResponse.FromString(msg).payload.body), size)

    def run_raw_case(self, name, payload, expect):
        conn = h2raw.H2Conn(self.sluice.data,
                            handshake=not name.startswith("HTTP/1.1"))
        try:
            conn.results[1] = h2raw.Result()
            conn.next_stream = 3
            conn.send(payload)
            r = conn.results[1]
            if expect == "closed":
                conn.pump(lambda: conn.goaway is not None, timeout=5)
                self.assertTrue(conn.closed or conn.goaway is not None,
                                f"{name}: connection still open: {r}")
            elif expect == "ignored":
                self.serves_on(conn)
                self.assertFalse(r.ended or r.rst is not None, f"{name}: {r}")
            else:
                kind, code = expect
                conn.pump(lambda: r.ended or r.rst is not None or conn.closed, timeout=5)
                self.assertTrue(r.ended, f"{name}: {r}")
                self.assertEqual(r.grpc_status, code or OK, f"{name}: {r}")
                if kind != "ok":
                    self.assertEqual(r.messages(), [], f"{name}: {r}")
                if kind == "status+closed":
                    conn.pump(lambda: conn.goaway is not None, timeout=5)
                    self.assertTrue(conn.closed or conn.goaway is not None, name)
                else:
                    self.serves_on(conn)
        finally:
            conn.close()


class RawHttp2Test(Fixture):
    def test_malformed_http2_table(self):
        for name, build, expect in RAW_CASES:
            with self.subTest(name):
                start = time.monotonic()
                self.run_raw_case(name, build(), expect)
                self.assertLess(time.monotonic() - start, 5, f"{name}: slow")
                self.assert_alive_and_serving(name)
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)


    def test_grpc_timeout_table(self):
        for value, code in TIMEOUT_CASES:
            with self.subTest(timeout=value):
                conn = h2raw.H2Conn(self.sluice.data)
                try:
                    start = time.monotonic()
                    sid = conn.start_call(UNARY, simple(5), extra_headers=[("grpc-timeout", value)])
                    r = conn.wait_stream(sid, timeout=5)
                    self.assertEqual(r.grpc_status, code, f"grpc-timeout {value!r}: {r}")
                    self.assertLess(time.monotonic() - start, 2.0)
                    self.serves_on(conn)
                finally:
                    conn.close()
        self.assert_alive_and_serving("grpc-timeout values")

    def test_malformed_grpc_timeout_gets_the_route_default(self):
        # A slow upstream call with a malformed timeout ends at the route's
        # default_timeout (1s), not never.
        req = messages_pb2.StreamingOutputCallRequest(response_parameters=[
            messages_pb2.ResponseParameters(size=1, interval_us=5_000_000)]).SerializeToString()
        for value in ("1x", "99999999999H"):
            conn = h2raw.H2Conn(self.sluice.data)
            try:
                start = time.monotonic()
                sid = conn.start_call("/grpc.testing.TestService/StreamingOutputCall", req,
                                      extra_headers=[("grpc-timeout", value)])
                r = conn.wait_stream(sid, timeout=5)
                elapsed = time.monotonic() - start
                self.assertEqual(r.grpc_status, DEADLINE_EXCEEDED, r)
                self.assertGreater(elapsed, 0.9)
                self.assertLess(elapsed, 2.0)
            finally:
                conn.close()
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)

    # KNOWN BUG (reported, not fixed here: the fix is in proxy_call.cc,
    # ClientDeadline(): read sctx_.raw_deadline() instead of the chrono
    # deadline). Remove the marker once fixed: an unexpected success fails.
    def test_grpc_timeout_beyond_year_2262(self):
        # Valid values (at most 8 digits) whose deadline lies past what a
        # std::chrono::system_clock time_point (int64 nanoseconds) holds:
        # 3,000,000 hours is 342 years. Expected: served like any far
        # deadline. Known bug at the time of writing: ServerContext::deadline()
        # overflows, the deadline reads as long past, and Sluice answers
        # DEADLINE_EXCEEDED + sluice-reason: deadline_budget at once.
        for value in ("3000000H", "99999999H"):
            with self.subTest(timeout=value):
                conn = h2raw.H2Conn(self.sluice.data)
                try:
                    sid = conn.start_call(UNARY, simple(5), extra_headers=[("grpc-timeout", value)])
                    r = conn.wait_stream(sid, timeout=5)
                    self.assertEqual(r.grpc_status, OK, f"grpc-timeout {value!r}: {r}")
                finally:
                    conn.close()

    def test_no_cross_talk_between_streams_of_one_connection(self):
        # 40 good unary calls interleaved with hostile streams on one raw
        # connection: each good one gets exactly its own answer (its size
        # and its echoed id), the hostile ones their own errors.
        conn = h2raw.H2Conn(self.sluice.data)
        try:
            good, bad = {}, {}
            for i in range(40):
                sid = conn.start_call(UNARY, simple(100 + i), extra_headers=[
                    ("x-grpc-test-echo-initial", f"id-{i}")])
                good[sid] = i
                if i % 4 == 0:  # not a protobuf: the upstream refuses it
                    bad[conn.start_call(UNARY, b"\xff\xff\xff")] = UNIMPLEMENTED
                if i % 4 == 1:  # already expired
                    bad[conn.start_call(UNARY, simple(5), extra_headers=[
                        ("grpc-timeout", "0n")])] = DEADLINE_EXCEEDED
                if i % 4 == 2:  # no route
                    bad[conn.start_call("/nope.Svc/M", simple(5))] = UNIMPLEMENTED
                if i % 4 == 3:  # cancelled by the client after its HEADERS
                    sid = conn.new_stream()
                    conn.send(frame(HEADERS, END_HEADERS, sid, encode_headers(
                        request_headers(UNARY))) + frame(RST_STREAM, 0, sid, b"\0\0\0\x08"))
                    conn.results.pop(sid)
            conn.pump(lambda: all(conn.results[s].ended or conn.results[s].rst is not None
                                  for s in list(good) + list(bad)), timeout=15)
            for sid, i in good.items():
                r = conn.results[sid]
                self.assertEqual(r.grpc_status, OK, (i, r))
                self.assertEqual(r.get("x-grpc-test-echo-initial"), f"id-{i}", r)
                [msg] = r.messages()
                self.assertEqual(len(messages_pb2.SimpleResponse.FromString(msg).payload.body),
                                 100 + i)
            for sid, code in bad.items():
                r = conn.results[sid]
                self.assertEqual(r.grpc_status, code, r)
                self.assertEqual(r.data, b"", r)
        finally:
            conn.close()
        self.assert_alive_and_serving("cross-talk")


class HeaderValuesTest(Fixture):
    # KNOWN BUG (reported, not fixed here): Sluice copies the value to its
    # upstream call, gRPC core refuses it with an assertion and the process
    # dies (SIGABRT): any client can kill Sluice with one header. The fix is
    # one line in server/proxy/proxy_call.cc, StartUpstream(): copy a client
    # header only `if (IsForwardableRequestHeader(k, View(value)))` (and the
    # same with IsForwardableResponseHeader for upstream headers/trailers),
    # helpers now in server/proxy/metadata_filter.h. Own process (Fixture
    # per class) so the crash cannot take other cases down with it. Remove
    # the marker once fixed: an unexpected success fails the run.
    def test_header_values_grpc_cannot_send(self):
        for name, extra in BAD_VALUE_CASES:
            with self.subTest(name):
                self.run_raw_case(name, headers_then(
                    UNARY, extra=extra, data=grpc_frame(simple(10))), ("ok", None))
                self.assert_alive_and_serving(name)


class OversizedTest(Fixture):
    def big_channel(self, max_receive=64 << 20):
        return grpc.insecure_channel(self.sluice.data, options=[
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", max_receive),
            ("grpc.use_local_subchannel_pool", 1)])

    def test_request_over_max_receive_message_bytes(self):
        ch = self.big_channel()
        stub = test_pb2_grpc.TestServiceStub(ch)
        try:
            with self.assertRaises(grpc.RpcError) as e:
                stub.UnaryCall(messages_pb2.SimpleRequest(
                    response_size=1, payload=messages_pb2.Payload(body=b"\0" * (MAX_RECEIVE + 1))),
                    timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            # The same connection is unharmed; a big message under both
            # limits (Sluice's and the upstream channel's) passes.
            r = stub.UnaryCall(messages_pb2.SimpleRequest(
                response_size=7, payload=messages_pb2.Payload(body=b"\0" * (UPSTREAM_MAX - 64))),
                timeout=10)
            self.assertEqual(len(r.payload.body), 7)
        finally:
            ch.close()
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)

    def test_oversized_message_mid_stream(self):
        before = harness.metric(self.sluice, "grpc_client_handled_total",
                                {"grpc_code": "ResourceExhausted"}) or 0
        ch = self.big_channel()
        try:
            stub = test_pb2_grpc.TestServiceStub(ch)
            # Over the upstream channel's limit (1 MiB), under Sluice's own
            # (2 MiB): Sluice's write upstream fails and ends the call.
            requests = [messages_pb2.StreamingOutputCallRequest(
                response_parameters=[messages_pb2.ResponseParameters(size=5)]),
                messages_pb2.StreamingOutputCallRequest(
                    response_parameters=[messages_pb2.ResponseParameters(size=5)],
                    payload=messages_pb2.Payload(body=b"\0" * (UPSTREAM_MAX + 100)))]
            got = []
            with self.assertRaises(grpc.RpcError) as e:
                for resp in stub.FullDuplexCall(iter(requests), timeout=10):
                    got.append(len(resp.payload.body))
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertLessEqual(got, [5])
            # The upstream call of that stream ended (not left open).
            harness.wait_for_metric(self.sluice, "grpc_client_handled_total", before + 1,
                                    {"grpc_code": "ResourceExhausted"})
            self.assertEqual(len(stub.UnaryCall(messages_pb2.SimpleRequest(response_size=9),
                                                timeout=5).payload.body), 9)
        finally:
            ch.close()
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)

    # A client message over max_receive_message_bytes mid-stream: gRPC
    # refuses it inside the call, which the C++ API reports like a graceful
    # half-close. Sluice reads client messages with core's batch API
    # (server/proxy/client_read.h), which tells them apart, and cancels the
    # upstream call instead of half-closing it: the upload is never
    # committed cut (StreamingInputCall would answer OK with the sum of the
    # first messages). Before, it was, depending on the order in which the
    # failed read and the cancellation reached the worker.
    def test_oversized_message_never_half_closes_the_upload(self):
        ch = self.big_channel()
        try:
            stub = test_pb2_grpc.TestServiceStub(ch)
            for _ in range(20):  # the old race lost some of these
                ok_before = harness.metric(self.sluice, "grpc_client_handled_total",
                                           {"grpc_code": "OK"}) or 0
                requests = [messages_pb2.StreamingInputCallRequest(
                    payload=messages_pb2.Payload(body=b"\0" * n))
                    for n in (1000, 1000, MAX_RECEIVE + 1)]
                with self.assertRaises(grpc.RpcError) as e:
                    stub.StreamingInputCall(iter(requests), timeout=10)
                self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)
                self.assertEqual(harness.metric(self.sluice, "grpc_client_handled_total",
                                                {"grpc_code": "OK"}) or 0, ok_before,
                                 "the upstream finished the truncated upload OK")
        finally:
            ch.close()

    def test_response_over_the_upstream_max_message_bytes(self):
        ch = self.big_channel()
        stub = test_pb2_grpc.TestServiceStub(ch)
        try:
            with self.assertRaises(grpc.RpcError) as e:
                stub.UnaryCall(messages_pb2.SimpleRequest(response_size=UPSTREAM_MAX + 1),
                               timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED,
                             e.exception.details())
            r = stub.UnaryCall(messages_pb2.SimpleRequest(response_size=UPSTREAM_MAX - 64),
                               timeout=10)
            self.assertEqual(len(r.payload.body), UPSTREAM_MAX - 64)
        finally:
            ch.close()
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)

    def test_response_over_the_clients_own_limit(self):
        ch = self.big_channel(max_receive=1 << 20)
        stub = test_pb2_grpc.TestServiceStub(ch)
        try:
            with self.assertRaises(grpc.RpcError) as e:
                stub.UnaryCall(messages_pb2.SimpleRequest(response_size=(1 << 20) + 100),
                               timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(len(stub.UnaryCall(messages_pb2.SimpleRequest(response_size=9),
                                                timeout=5).payload.body), 9)
        finally:
            ch.close()
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)

    def test_huge_metadata_from_a_grpc_client(self):
        # gRPC's default limit on received metadata is 8 KiB (soft) /
        # 16 KiB (hard); above it the call fails and gRPC core closes that
        # connection; the channel reconnects and the next call succeeds.
        for size in (20_000, 200_000):
            with self.subTest(size=size):
                with self.assertRaises(grpc.RpcError) as e:
                    self.stub.UnaryCall(messages_pb2.SimpleRequest(response_size=1),
                                        metadata=[("x-big", "a" * size)], timeout=5)
                self.assertIn(e.exception.code(), (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                   grpc.StatusCode.UNAVAILABLE,
                                                   grpc.StatusCode.INTERNAL),
                              e.exception.details())
                # The next call may still meet the closing connection once.
                for attempt in range(5):
                    try:
                        r = self.stub.UnaryCall(messages_pb2.SimpleRequest(response_size=4),
                                                timeout=5, wait_for_ready=True)
                        break
                    except grpc.RpcError as e2:
                        self.assertEqual(e2.code(), grpc.StatusCode.UNAVAILABLE)
                self.assertEqual(len(r.payload.body), 4)
        self.assert_alive_and_serving("huge metadata")


class FloodTest(Fixture):
    def test_flood_of_distinct_rate_limit_keys(self):
        # 3,000 calls, each with its own x-key: the limiter holds at most
        # max_keys buckets; every call is answered OK or rate_limited.
        from grpc.testing import empty_pb2
        rss_before = rss_kib(self.sluice.pid)
        futures = []
        codes = {}
        for i in range(3000):
            futures.append(self.stub.EmptyCall.future(
                empty_pb2.Empty(), metadata=[("x-key", f"k{i}")], timeout=20))
            if len(futures) >= 300:
                for f in futures:
                    c = f.code()
                    codes[c] = codes.get(c, 0) + 1
                futures = []
                keys = harness.metric(self.sluice, "sluice_limit_keys", {"route": "keyed"})
                self.assertLessEqual(keys, MAX_KEYS)
        for f in futures:
            c = f.code()
            codes[c] = codes.get(c, 0) + 1
        self.assertEqual(sum(codes.values()), 3000)
        self.assertLessEqual(set(codes), {grpc.StatusCode.OK,
                                          grpc.StatusCode.RESOURCE_EXHAUSTED}, codes)
        keys = harness.metric(self.sluice, "sluice_limit_keys", {"route": "keyed"})
        self.assertLessEqual(keys, MAX_KEYS)
        growth = rss_kib(self.sluice.pid) - rss_before
        print(f"key flood: {codes}, {keys:.0f} keys held, RSS +{growth} KiB")
        # 3,000 buckets would be a few hundred KiB at most anyway; the bound
        # that matters is the key count above. Allow allocator slack.
        self.assertLess(growth, 16 * 1024)
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)

    def test_max_concurrent_streams_from_a_grpc_client(self):
        # A gRPC client queues the streams above the advertised limit: 60
        # endless streams on one channel, MAX_STREAMS (not 60) open in
        # Sluice; cancelling 20 of the 60 leaves 40, all of them open.
        ch = grpc.insecure_channel(self.sluice.data,
                                   options=[("grpc.use_local_subchannel_pool", 1)])
        from sluice.demo.v1 import ticker_pb2_grpc
        stub = ticker_pb2_grpc.TickerStub(ch)
        calls = [stub.Subscribe(ticker_pb2.SubscribeRequest(count=0, interval_ms=100), timeout=30)
                 for _ in range(MAX_STREAMS + 10)]
        try:
            harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", float(MAX_STREAMS))
            for c in calls[:20]:
                c.cancel()
            harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", float(len(calls) - 20))
        finally:
            for c in calls:
                c.cancel()
            ch.close()
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)

    def test_max_concurrent_streams_from_a_raw_client(self):
        # A raw client ignoring the advertised limit: gRPC core treats the
        # stream above it as a connection error ("Max stream count
        # exceeded"), so that client loses its connection and every stream
        # on it ends UNAVAILABLE; Sluice frees them all and serves others.
        conn = h2raw.H2Conn(self.sluice.data)
        req = ticker_pb2.SubscribeRequest(count=0, interval_ms=200).SerializeToString()
        try:
            self.assertTrue(conn.settle(timeout=5), conn.seen)
            self.assertEqual(conn.server_settings.get(3), MAX_STREAMS)  # MAX_CONCURRENT_STREAMS
            sids = [conn.start_call("/sluice.demo.v1.Ticker/Subscribe", req)
                    for _ in range(MAX_STREAMS + 10)]
            conn.pump(lambda: False, timeout=10)  # returns when the server closes
            self.assertTrue(conn.closed, [conn.results[s] for s in sids[-3:]])
            for s in sids:
                r = conn.results[s]
                self.assertIn(r.grpc_status, (None, UNAVAILABLE), r)
                self.assertEqual(r.messages(), [], r)  # ticks come after 200 ms
        finally:
            conn.close()
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)
        self.assert_alive_and_serving("too many streams")

    def test_many_connections_at_once(self):
        # 300 raw connections, each with one call in flight at once, each
        # answered with its own data; then every descriptor is given back.
        harness.wait_for_metric(self.sluice, "sluice_calls_in_flight", 0.0)
        fds_before = fd_count(self.sluice.pid)
        conns = []
        try:
            for i in range(300):
                c = h2raw.H2Conn(self.sluice.data)
                c.sid = c.start_call(UNARY, simple(i + 1))
                conns.append(c)
            # Every connection is still open here, so answering them all
            # means 300 were accepted and served at once.
            for i, c in enumerate(conns):
                r = c.wait_stream(c.sid, timeout=10)
                self.assertEqual(r.grpc_status, OK, (i, r))
                [msg] = r.messages()
                self.assertEqual(len(messages_pb2.SimpleResponse.FromString(msg).payload.body),
                                 i + 1)
        finally:
            for c in conns:
                c.close()
        harness.wait_until(lambda: fd_count(self.sluice.pid) <= fds_before + 2, timeout=10,
                           what=f"sluice's descriptors back to {fds_before}")
        self.assert_alive_and_serving("300 connections")


# Config fields tests/config/config_test.cc does not reach, through the
# real binary's --check: (name, YAML, the field path the error must name).
BASE = """
upstreams:
  - name: a
    target: 127.0.0.1:50051
{upstream_extra}
routes:
  - name: r
    match: {{prefix: /}}
    upstream: a
{route_extra}
{top}
"""

CHECK_CASES = [
    ("channels out of range", dict(upstream_extra="    channels: 65"), "upstreams[0].channels"),
    ("unknown lb_policy", dict(upstream_extra="    lb_policy: random"), "upstreams[0].lb_policy"),
    ("keepalive timeout 0", dict(upstream_extra="    keepalive: {time: 10s, timeout: 0s}"),
     "upstreams[0].keepalive"),
    ("upstream max_message_bytes over 1 GiB",
     dict(upstream_extra="    max_message_bytes: 1073741825"), "upstreams[0].max_message_bytes"),
    ("health_check interval under 100ms",
     dict(upstream_extra="    health_check: {interval: 10ms}"), "upstreams[0].health_check"),
    ("health_check timeout above interval",
     dict(upstream_extra="    health_check: {interval: 1s, timeout: 2s}"),
     "upstreams[0].health_check"),
    ("upstream tls cert without key",
     dict(upstream_extra="    tls: {enabled: true, cert_file: /etc/hostname}"), "upstreams[0].tls"),
    ("upstream target with a space", dict(upstream_extra="    channels: 1\n  - name: b\n"
                                          "    target: 'a b:1'"), "upstreams[1].target"),
    ("workers over 256", dict(top="workers: 257"), "workers"),
    ("messages per_second 0",
     dict(route_extra="    limits: [{name: m, messages: {per_second: 0}}]"),
     "routes[0].limits[0].messages"),
    ("negative min_budget", dict(route_extra="    deadline: {min_budget: -1ms}"),
     "routes[0].deadline.min_budget"),
    ("stream_idle_timeout without unit", dict(route_extra="    deadline: {stream_idle_timeout: 5}"),
     "routes[0].deadline.stream_idle_timeout"),
    ("header key part with a pseudo-header",
     dict(route_extra="    limits: [{name: k, rate: {per_second: 1}, key: ['header::path']}]"),
     "routes[0].limits[0].key"),
    ("access_log sample_rate negative", dict(top="access_log: {sample_rate: -0.5}"),
     "access_log.sample_rate"),
    ("tls cert file missing", dict(top="tls: {cert_file: /nonexistent.pem, key_file: /x.key}"),
     "tls"),
    ("descriptor set file missing", dict(top="metrics: {descriptor_sets: [/nonexistent.pb]}"),
     "metrics.descriptor_sets"),
]

# Whole files that are hostile rather than wrong: each must be refused
# (exit 2) quickly, never crash or hang.
HOSTILE_FILES = [
    ("empty file", ""),
    ("binary garbage", "\x00\x01\x02\xff\xfe" * 200),
    ("deeply nested flow", "upstreams: " + "[" * 5000 + "]" * 5000),
    ("billion laughs", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8)) + "upstreams: *i\n"),
    ("a 4 MB string", "workers: '" + "x" * 4_000_000 + "'\n"),
]


class ConfigCheckTest(unittest.TestCase):
    def check(self, text, timeout=20):
        path = harness.write_config(text)
        start = time.monotonic()
        p = subprocess.run([harness.SLUICE, f"--config={path}", "--check"],
                           capture_output=True, text=True, errors="replace", timeout=timeout)
        return p.returncode, p.stdout + p.stderr, time.monotonic() - start, path

    def test_valid_base_passes(self):
        rc, out, _, _ = self.check(BASE.format(upstream_extra="", route_extra="", top=""))
        self.assertEqual(rc, 0, out)

    def test_malformed_fields_table(self):
        for name, parts, field in CHECK_CASES:
            with self.subTest(name):
                text = BASE.format(**{"upstream_extra": "", "route_extra": "", "top": "", **parts})
                rc, out, _, path = self.check(text)
                self.assertEqual(rc, 2, f"{name}: {out}")
                self.assertIn(f"{path}: {field}", out, name)

    def test_hostile_files(self):
        for name, text in HOSTILE_FILES:
            with self.subTest(name):
                rc, out, elapsed, _ = self.check(text)
                self.assertEqual(rc, 2, f"{name}: exit {rc}: {out[-2000:]}")
                self.assertLess(elapsed, 10, name)
                self.assertLess(len(out), 64 * 1024, f"{name}: the error echoes the input")


if __name__ == "__main__":
    harness.main()
