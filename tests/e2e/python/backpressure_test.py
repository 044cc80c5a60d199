"""Backpressure through the real binary: slow readers must slow the upstream
down, not grow Sluice's memory. Resident memory is read from /proc."""

import os
import unittest

import harness

STREAMS = 100
READ_SECONDS = 3.0


class BackpressureTest(unittest.TestCase):
    def test_slow_readers_keep_sluice_memory_bounded(self):
        upstream = harness.start_upstream()
        sluice = harness.start_sluice(upstream=upstream.address)
        try:
            # 100 streams, each offered 100,000 x 1 KiB (100 MB), read at
            # one message every 5 ms for READ_SECONDS.
            before, peak, reads, stopped = harness.slow_streams_rss(
                sluice, STREAMS, READ_SECONDS)
            read = sum(reads)
            self.assertTrue(stopped, "a reader thread did not stop")
            growth = peak - before
            per_stream = growth / STREAMS
            print(f"sluice RSS before {before} KiB, with {STREAMS} slow streams {peak} KiB: "
                  f"+{growth} KiB, {per_stream:.0f} KiB per stream; "
                  f"read {read} messages in all, {min(reads)}..{max(reads)} per stream")
            # Backpressure slows the streams, it does not stop them: every
            # stream delivered messages to its reader (a proxy that forwards
            # nothing, or starves some streams, fails here). One message per
            # stream is the least any working proxy delivers in 3 s; the
            # readers pace themselves at one per 5 ms, i.e. at most ~600.
            self.assertGreaterEqual(min(reads), 1, reads)
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
