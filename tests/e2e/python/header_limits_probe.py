"""Measures the figures of docs/security.md ("Header limits at the edge")
with the real binaries; not a test (header_limits_test.py is), it prints.

  B=$(bazel --output_base=$HOME/.cache/sluice-h5 info --symlink_prefix=/ bazel-bin)
  bazel --output_base=$HOME/.cache/sluice-h5 build --symlink_prefix=/ \\
      //server:sluice //server/demo:demo_upstream
  /usr/bin/python3 tests/e2e/python/header_limits_probe.py --bin=$B

1. What a default gRPC server (the demo upstream, C++ gRPC 1.51) accepts:
   the largest header list, counted name + value + 32 over every header
   (pseudo-headers included), before and after the client acknowledges
   the server's SETTINGS.
2. 50 bystander streams on one upstream connection and one 9,000-byte
   header from a gRPC client: with Sluice's check effectively off
   (max_header_list_bytes 1 MiB) and with the default.
3. What Sluice adds when it forwards: the largest request (Sluice's count)
   a default upstream still accepts through Sluice, its check off.
4. The second tier: on a client connection carrying 10 other streams, one
   header block over gRPC's transport limit on the data port (64 KiB),
   HPACK never-indexed and with incremental indexing; and, for contrast,
   one between the tiers.
5. Sluice's RSS through 50 requests with a 1 MiB header.
"""

import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
BIN = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--bin=")), None)
if BIN is None:
    sys.exit(__doc__)

import harness  # noqa: E402

harness.SLUICE = os.path.join(BIN, "server", "sluice")
harness.DEMO_UPSTREAM = os.path.join(BIN, "server", "demo", "demo_upstream")

import grpc  # noqa: E402
from grpc.testing import messages_pb2, test_pb2_grpc  # noqa: E402
from h2raw import (DATA, END_HEADERS, END_STREAM, HEADERS, H2Conn, encode_headers,  # noqa: E402
                   encode_str, frame, grpc_frame, request_headers)
from sluice.demo.v1 import ticker_pb2  # noqa: E402

import header_limits_test as t  # noqa: E402


def encode_incremental(headers):
    """Literal header fields with incremental indexing (what gRPC's own
    encoder mostly does): each one enters the HPACK dynamic table."""
    out = bytearray()
    for name, value in headers:
        out += b"\x40" + encode_str(name.encode()) + encode_str(value.encode())
    return bytes(out)


def raw_unary(address, extra, settle):
    c = H2Conn(address, timeout=15)
    if settle:
        c.settle(timeout=5)
    sid = c.new_stream()
    c.send(t.split_headers(sid, encode_headers(request_headers(t.UNARY, extra=extra)),
                           grpc_frame(t.simple(1))))
    r = c.wait_stream(sid, timeout=10)
    c.close()
    return r


def largest(accepts, lo, hi):
    """Largest n in [lo, hi) with accepts(n), accepts monotone."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if accepts(mid) else (lo, mid)
    return lo


def upstream_limit():
    up = harness.start_upstream()
    base = sum(t.entry(k, v) for k, v in request_headers(t.UNARY))
    try:
        for settle in (True, False):
            def ok(total):
                pad = total - base - t.entry("x-pad", "")
                return raw_unary(up.address, [("x-pad", "p" * pad)], settle).grpc_status == 0
            n = largest(ok, 1000, 16000)
            print(f"1. default gRPC server, SETTINGS {'acknowledged' if settle else 'not yet acknowledged'}: "
                  f"largest header list accepted {n} bytes"
                  + ("" if settle else " (or more: the search stops at 16000)"))
    finally:
        up.stop()


def with_sluice(config, fn):
    up = harness.start_upstream()
    sl = harness.start_sluice(config_path=harness.write_config(config), upstream=up.address)
    try:
        return fn(sl)
    finally:
        print(f"   sluice alive: {sl.popen.poll() is None}")
        sl.stop()
        up.stop()


def config_with(limit):
    return t.CONFIG.replace("proxy:\n", f"proxy:\n  max_header_list_bytes: {limit}\n")


def bystanders_vs_9000(sl):
    ch = harness.channel(sl.data)
    b = t.Bystanders(sl.data)
    b.wait_open()
    try:
        test_pb2_grpc.TestServiceStub(ch).UnaryCall(
            messages_pb2.SimpleRequest(response_size=1), metadata=[("x-big", "a" * 9000)],
            timeout=5)
        offender = "OK"
    except grpc.RpcError as e:
        offender = (f"{e.code().name} {e.details()[:60]!r} "
                    f"sluice-reason={harness.trailer(e.trailing_metadata(), 'sluice-reason')}")
    results = b.finish()
    ch.close()
    counts = collections.Counter(f"{r[0].name}{'' if r[1] == t.TICKS else f' after {r[1]} ticks'}"
                                 for r in results)
    print(f"   offender: {offender}\n   bystanders: {dict(counts)}")


def forwarding_overhead(sl):
    fixed = [("x-forwarded-for", "10.1.2.3")]

    def ok(total):
        n = t.pad_for(total, t.UNARY, fixed)
        extra = fixed + [("grpc-timeout", "99999999S"), ("x-pad", "p" * n)]
        return raw_unary(sl.data, extra, False).grpc_status == 0
    n = largest(ok, 1000, 8192)
    print(f"3. largest request (Sluice's count) a default upstream accepts through Sluice: {n}; "
          f"Sluice added {8192 - n} bytes (upstream :authority 127.0.0.1:PORT, "
          "x-forwarded-for appended, grpc-timeout of 8 digits)")


def same_connection(sl):
    sub = "/sluice.demo.v1.Ticker/Subscribe"
    req = grpc_frame(ticker_pb2.SubscribeRequest(count=30, interval_ms=100).SerializeToString())
    for size, encoding in ((9000, "never-indexed"), (60 * 1024, "never-indexed"),
                           (70_000, "never-indexed"), (70_000, "incremental"),
                           (1 << 20, "never-indexed"), (1 << 20, "incremental")):
        enc = encode_headers if encoding == "never-indexed" else encode_incremental
        c = H2Conn(sl.data, timeout=20)
        c.settle(timeout=5)
        others = []
        for i in range(10):
            sid = c.new_stream()
            c.send(frame(HEADERS, END_HEADERS, sid, enc(request_headers(sub, extra=[("x-n", str(i))])))
                   + frame(DATA, END_STREAM, sid, req))
            others.append(sid)
        c.pump(lambda: all(c.results[s].data for s in others), timeout=5)
        off = c.new_stream()
        c.send(t.split_headers(off, enc(request_headers(t.UNARY, extra=[("x-big", "a" * size)])),
                               grpc_frame(t.simple(7))))
        ro = c.wait_stream(off, timeout=10)
        after = c.new_stream()
        c.send(frame(HEADERS, END_HEADERS, after, enc(request_headers(t.UNARY, extra=[("x-n", "after")])))
               + frame(DATA, END_STREAM, after, grpc_frame(t.simple(9))))
        c.pump(lambda: c.closed or all(c.results[s].ended or c.results[s].rst is not None
                                       for s in others + [after]), timeout=15)
        ok = sum(1 for s in others
                 if c.results[s].grpc_status == 0 and len(c.results[s].messages()) == 30)
        failed = collections.Counter(f"{c.results[s].grpc_status} {c.results[s].get('grpc-message')!r}"
                                     for s in others if c.results[s].grpc_status != 0)
        ra = c.results[after]
        print(f"   {size} B ({encoding}): offender status {ro.grpc_status} "
              f"reason={ro.get('sluice-reason')} {ro.get('grpc-message')!r}; "
              f"other streams OK {ok}/10 {dict(failed) or ''}; stream opened after: "
              f"{'OK' if ra.grpc_status == 0 else ('no answer' if ra.grpc_status is None else ra.grpc_status)}; "
              f"GOAWAY {c.goaway}, connection closed {c.closed}")
        c.close()


def memory(sl):
    def one(settle):
        return raw_unary(sl.data, [("x-big", "a" * (1 << 20))], settle)
    one(False)  # warm-up: the first call's allocations are not the header's
    base = peak = harness.rss_kib(sl.pid)
    for i in range(50):
        one(i % 2 == 1)
        peak = max(peak, harness.rss_kib(sl.pid))
    time.sleep(1)  # a probe, not a test: let freed memory settle
    print(f"5. RSS with 50 x 1 MiB headers (alternately before and after the SETTINGS ACK): "
          f"baseline {base // 1024} MiB, peak {peak // 1024} MiB, "
          f"afterwards {harness.rss_kib(sl.pid) // 1024} MiB")


def main():
    upstream_limit()
    print("2. 50 bystanders on one upstream connection, a 9,000-byte header "
          "(gRPC client), Sluice's check off (max_header_list_bytes 1048576):")
    with_sluice(config_with(1 << 20), bystanders_vs_9000)
    print("   the same with the default (7168):")
    with_sluice(t.CONFIG, bystanders_vs_9000)
    with_sluice(config_with(1 << 20), forwarding_overhead)
    print("4. one header block on a client connection with 10 open streams "
          "(SETTINGS acknowledged; transport limit 65536):")
    with_sluice(t.CONFIG, same_connection)
    with_sluice(t.CONFIG, memory)


if __name__ == "__main__":
    main()
