"""Backpressure through the real binary: slow readers must slow the upstream
down, not grow Sluice's memory. Resident memory is read from /proc."""

import os
import threading
import time
import unittest

import harness
import grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc

STREAMS = 100
READ_SECONDS = 3.0


rss_kib = harness.rss_kib


class BackpressureTest(unittest.TestCase):
    def test_slow_readers_keep_sluice_memory_bounded(self):
        upstream = harness.start_upstream()
        sluice = harness.start_sluice(upstream=upstream.address)
        try:
            # Warm up: connections, threads and allocator arenas exist.
            ch = grpc.insecure_channel(sluice.data, options=[("grpc.http2.bdp_probe", 0)])
            stub = ticker_pb2_grpc.TickerStub(ch)
            list(stub.Subscribe(ticker_pb2.SubscribeRequest(count=100, payload_bytes=1024),
                                timeout=10))
            before = rss_kib(sluice.pid)

            # 100 streams, each offered 100,000 x 1 KiB (100 MB), read at
            # one message every 5 ms for READ_SECONDS.
            read_counts = [0] * STREAMS
            calls = []
            stop = threading.Event()

            def reader(i, call):
                try:
                    for _ in call:
                        read_counts[i] += 1
                        if stop.wait(0.005):
                            break
                except grpc.RpcError:
                    pass

            threads = []
            for i in range(STREAMS):
                call = stub.Subscribe(ticker_pb2.SubscribeRequest(
                    count=100000, payload_bytes=1024), timeout=60)
                calls.append(call)
                t = threading.Thread(target=reader, args=(i, call))
                t.start()
                threads.append(t)
            time.sleep(READ_SECONDS)  # the client's slow reading, not logic time
            peak = rss_kib(sluice.pid)
            stop.set()
            for c in calls:
                c.cancel()
            for t in threads:
                t.join(timeout=10)
                self.assertFalse(t.is_alive())
            growth = peak - before
            per_stream = growth / STREAMS
            print(f"sluice RSS before {before} KiB, with {STREAMS} slow streams {peak} KiB: "
                  f"+{growth} KiB, {per_stream:.0f} KiB per stream; "
                  f"read {sum(read_counts)} messages in all")
            # Each stream may hold its two 64 KiB flow-control windows plus the
            # proxy's window of 2 messages: ~130 KiB. Allow 4x for allocator
            # slack; without backpressure it would be ~100 MB per stream.
            # Sanitizer builds (redzones, quarantine) cannot keep this bound.
            if not os.environ.get("SLUICE_SANITIZER"):
                self.assertLess(per_stream, 512, f"+{growth} KiB for {STREAMS} streams")
            self.assertTrue(harness.wait_until(
                lambda: harness.metric_value(harness.scrape(sluice.metrics),
                                             "sluice_calls_in_flight") == 0, timeout=20))
        finally:
            sluice.stop()
            upstream.stop()


if __name__ == "__main__":
    harness.main()
