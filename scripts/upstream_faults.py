#!/usr/bin/python3
"""Measures how Sluice rides out an upstream restart and a frozen upstream
(docs/reliability.md), with the real binaries on loopback.

restart: the demo upstream serves under load (4 clients calling EmptyCall
  back to back, 20 server streams open) and is SIGKILLed, then started again
  on the same port DOWN seconds later. Reports when the open streams ended
  (after the kill), the time from the new upstream listening to the first
  OK call, and the calls that failed after that first OK one.
endpoints: one upstream `ipv4:A,B` over two demo upstreams, LB policy
  round_robin or pick_first (`--lb`); sequential EmptyCalls for 2 s, one
  endpoint SIGKILLed, 3 s more. Reports failed calls before and after.
freeze: 20 server streams (no client deadline) are open when the upstream
  is SIGSTOPped. Reports when each stream ended, with Sluice's default
  keepalive (time 5m30s, timeout 20s) or `--keepalive=TIME` (the upstream
  then permits pings at half that interval), then SIGCONTs it.

  /usr/bin/python3 scripts/upstream_faults.py --bin=BAZEL_BIN restart [DOWN...]
  /usr/bin/python3 scripts/upstream_faults.py --bin=BAZEL_BIN freeze [--keepalive=5]
  /usr/bin/python3 scripts/upstream_faults.py --bin=BAZEL_BIN endpoints [--lb=pick_first]

BAZEL_BIN holds server/sluice and server/demo/demo_upstream, e.g.
$(bazel info bazel-bin). Every loop is bounded; stops only the processes it
started.
"""

import argparse
import os
import signal
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "tests", "e2e", "python"))

STREAMS = 20
CALLERS = 4


def start_pair(harness, keepalive=None):
    port = harness.closed_port()
    address = f"127.0.0.1:{port}"
    extra, ka = [], ""
    if keepalive is not None:
        extra = [f"--min_ping_interval={int(keepalive * 500)}ms"]
        ka = f"    keepalive: {{time: {keepalive}s, timeout: {keepalive}s}}\n"
    upstream = harness.start_upstream(address, extra=extra)
    config = harness.write_config(f"""
upstreams:
  - name: app
    target: "{address}"
    required: true
{ka}routes:
  - {{name: all, match: {{prefix: "/"}}, upstream: app}}
""")
    return address, extra, upstream, harness.start_sluice(config_path=config)


def open_streams(harness, sluice, ends, deadline=None):
    """STREAMS ticker streams on threads; each appends its end time."""
    import grpc
    from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc
    stub = ticker_pb2_grpc.TickerStub(harness.channel(sluice.data))
    started = threading.Barrier(STREAMS + 1)

    def run():
        stream = stub.Subscribe(ticker_pb2.SubscribeRequest(count=0, interval_ms=100),
                                timeout=deadline)
        next(stream)
        started.wait()
        try:
            for _ in stream:
                pass
        except grpc.RpcError as e:
            ends.append((time.monotonic(), e.code().name))

    threads = [threading.Thread(target=run, daemon=True) for _ in range(STREAMS)]
    for t in threads:
        t.start()
    started.wait(timeout=30)
    return threads


def restart(harness, down):
    import grpc
    from grpc.testing import empty_pb2, test_pb2_grpc
    address, extra, upstream, sluice = start_pair(harness)
    procs = [upstream, sluice]
    try:
        stub = test_pb2_grpc.TestServiceStub(harness.channel(sluice.data))
        calls, ends = [], []
        stop = threading.Event()

        def caller():
            while not stop.is_set():
                try:
                    stub.EmptyCall(empty_pb2.Empty(), timeout=5)
                    calls.append((time.monotonic(), True))
                except grpc.RpcError:
                    calls.append((time.monotonic(), False))

        open_streams(harness, sluice, ends)
        callers = [threading.Thread(target=caller, daemon=True) for _ in range(CALLERS)]
        for t in callers:
            t.start()
        time.sleep(2.0)
        killed = time.monotonic()
        upstream.signal(signal.SIGKILL)
        upstream.wait(timeout=10)
        time.sleep(down)
        upstream = harness.start_upstream(address, extra=extra)
        procs.append(upstream)
        listening = time.monotonic()
        time.sleep(4.0)
        stop.set()
        for t in callers:
            t.join(10)
        first_ok = next((t for t, ok in calls if ok and t >= listening), None)
        after = [ok for t, ok in calls if first_ok and t > first_ok]
        stream_ms = sorted((t - killed) * 1000 for t, _ in ends)
        print(f"down {down:>4.1f}s: streams ended {len(ends)}/{STREAMS} "
              f"{stream_ms[0]:.0f}-{stream_ms[-1]:.0f} ms after the kill "
              f"({sorted(set(c for _, c in ends))}); first OK call "
              f"{'never' if first_ok is None else f'{first_ok - listening:.3f}s'} "
              f"after it listens again; failed after it: {after.count(False)} of {len(after)}",
              flush=True)
    finally:
        for p in reversed(procs):
            p.stop()


def freeze(harness, keepalive, bound):
    address, _, upstream, sluice = start_pair(harness, keepalive)
    procs = [upstream, sluice]
    try:
        ends = []
        open_streams(harness, sluice, ends)
        frozen = time.monotonic()
        upstream.signal(signal.SIGSTOP)
        try:
            while len(ends) < STREAMS and time.monotonic() - frozen < bound:
                time.sleep(0.1)
        finally:
            upstream.signal(signal.SIGCONT)
        took = sorted(t - frozen for t, _ in ends)
        label = f"keepalive {keepalive}s" if keepalive else "default keepalive"
        if not took:
            print(f"{label}: no stream ended within {bound:.0f}s", flush=True)
            return
        print(f"{label}: {len(took)}/{STREAMS} streams ended, after "
              f"{took[0]:.1f}-{took[-1]:.1f}s (median {statistics.median(took):.1f}s) "
              f"with {sorted(set(c for _, c in ends))}", flush=True)
    finally:
        for p in reversed(procs):
            p.stop()


def endpoints(harness, lb):
    import grpc
    from grpc.testing import empty_pb2, test_pb2_grpc
    addresses = [f"127.0.0.1:{harness.closed_port()}" for _ in range(2)]
    upstreams = [harness.start_upstream(a) for a in addresses]
    config = harness.write_config(f"""
upstreams:
  - name: app
    target: "ipv4:{','.join(addresses)}"
    lb_policy: {lb}
routes:
  - {{name: all, match: {{prefix: "/"}}, upstream: app}}
""")
    sluice = harness.start_sluice(config_path=config)
    procs = upstreams + [sluice]
    try:
        stub = test_pb2_grpc.TestServiceStub(harness.channel(sluice.data))
        results = []  # (phase, ok, code)

        def run(phase, seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    stub.EmptyCall(empty_pb2.Empty(), timeout=5)
                    results.append((phase, True, "OK"))
                except grpc.RpcError as e:
                    results.append((phase, False, e.code().name))

        run("before", 2.0)
        # pick_first uses the first address: kill that one (the interesting
        # case for it); round_robin uses both.
        upstreams[0].signal(signal.SIGKILL)
        upstreams[0].wait(timeout=10)
        run("after", 3.0)
        for phase in ("before", "after"):
            r = [x for x in results if x[0] == phase]
            failed = [c for _, ok, c in r if not ok]
            print(f"{lb}: {phase} the kill {len(failed)} of {len(r)} calls failed"
                  f"{' ' + str(sorted(set(failed))) if failed else ''}", flush=True)
    finally:
        for p in reversed(procs):
            p.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--keepalive", type=float, default=None,
                        help="freeze: Sluice's keepalive time and timeout, seconds")
    parser.add_argument("--lb", default="round_robin")
    parser.add_argument("mode", choices=["restart", "freeze", "endpoints"])
    parser.add_argument("down", type=float, nargs="*", default=[0.5])
    args = parser.parse_args()
    import harness
    harness.SLUICE = os.path.join(args.bin, "server", "sluice")
    harness.DEMO_UPSTREAM = os.path.join(args.bin, "server", "demo", "demo_upstream")
    if args.mode == "endpoints":
        endpoints(harness, args.lb)
    elif args.mode == "restart":
        for down in args.down or [0.5]:
            restart(harness, down)
    else:
        # The stated bound: keepalive time + timeout, plus slack.
        ka = args.keepalive
        bound = (2 * ka + 10) if ka else 330 + 20 + 30
        freeze(harness, ka, bound)


if __name__ == "__main__":
    main()
