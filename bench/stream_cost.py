#!/usr/bin/env python3
"""What one streamed message costs Sluice, in counts that noise cannot move.

Runs a fixed server-streaming workload through Sluice in front of the demo
upstream (h2load: STREAMS calls of /sluice.demo.v1.Ticker/Subscribe, each
1000 messages of BYTES bytes, -c 8 -m 16) and reports, per message
delivered: Sluice's sendmsg and recvmsg system calls (perf tracepoints,
exact), its CPU microseconds (/proc utime+stime, noisy), and the messages
per second (noisy). The syscall counts show write coalescing directly: one
sendmsg per message means none.

Usage: bench/stream_cost.py [--streams=N] [--bytes=B] [--window=W]
                            [--interval-ms=MS] [-- extra sluice flags]
Binaries: $SLUICE_BIN, $UPSTREAM_BIN (default bazel-bin/...). Every process
is started here on 127.0.0.1, port 0, and stopped by its PID.
"""

import os
import re
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e", "python"))
import harness  # noqa: E402

harness.SLUICE = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "bazel-bin/server/sluice"))
harness.DEMO_UPSTREAM = os.environ.get(
    "UPSTREAM_BIN", os.path.join(ROOT, "bazel-bin/server/demo/demo_upstream"))


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    opts = {"streams": 160, "bytes": 100, "window": 0, "interval-ms": 0}
    extra = []
    args = sys.argv[1:]
    if "--" in args:
        extra = args[args.index("--") + 1:]
        args = args[:args.index("--")]
    for a in args:
        m = re.fullmatch(r"--([a-z-]+)=(\d+)", a)
        if not m or m.group(1) not in opts:
            sys.exit(f"stream_cost.py: unknown argument {a}")
        opts[m.group(1)] = int(m.group(2))
    count = 1000
    body = b"\x08" + varint(count) + b"\x10" + varint(opts["interval-ms"]) + \
        b"\x18" + varint(opts["bytes"])
    work = tempfile.mkdtemp(prefix="stream-cost-")
    req = os.path.join(work, "stream.bin")
    with open(req, "wb") as f:
        f.write(b"\x00" + struct.pack(">I", len(body)) + body)
    config = None
    upstream = harness.start_upstream()
    if opts["window"]:
        config = harness.write_config(
            f"proxy:\n  stream_window: {opts['window']}\n"
            f"upstreams:\n  - name: demo\n    target: {upstream.address}\n"
            "routes:\n  - name: all\n    match: {prefix: /}\n    upstream: demo\n")
    try:
        sluice = harness.start_sluice(config, upstream=None if config else upstream.address,
                                      extra=extra)
    except Exception:
        upstream.stop()
        raise
    try:
        perf = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-e",
             "syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmsg",
             "-p", str(sluice.pid)],
            stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # perf attaches to a running process; not logic time
        cpu0 = cpu_seconds(sluice.pid)
        t0 = time.monotonic()
        h2 = subprocess.run(
            ["h2load", "-n", str(opts["streams"]), "-c", "8", "-m", "16",
             "-d", req, "-H", "content-type: application/grpc", "-H", "te: trailers",
             f"http://{sluice.data}/sluice.demo.v1.Ticker/Subscribe"],
            capture_output=True, text=True, timeout=600)
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(sluice.pid) - cpu0
        perf.send_signal(2)
        _, err = perf.communicate(timeout=30)
        counts = {}
        for line in err.splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:"):
                counts[parts[2].split("_")[-1]] = int(parts[0])
        m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", h2.stdout)
        ok = int(m.group(1)) if m else 0
        if ok != opts["streams"]:
            sys.exit(f"h2load: {ok} of {opts['streams']} succeeded\n{h2.stdout}\n{h2.stderr}")
        msgs = ok * count
        print(f"streams={ok} messages={msgs} bytes={opts['bytes']} window={opts['window'] or 'default'} "
              f"interval_ms={opts['interval-ms']} {' '.join(extra)}")
        print(f"  sendmsg/msg  {counts.get('sendmsg', 0) / msgs:.3f}")
        print(f"  recvmsg/msg  {counts.get('recvmsg', 0) / msgs:.3f}")
        print(f"  cpu us/msg   {cpu * 1e6 / msgs:.2f}")
        print(f"  msgs/s       {msgs / elapsed:,.0f}")
    finally:
        sluice.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
