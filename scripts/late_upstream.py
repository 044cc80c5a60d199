#!/usr/bin/python3
"""Measures how fast Sluice follows a late app (docs/reliability.md).

Starts sluice first (upstream `app`, required, on a loopback port nothing
listens on yet), then the demo upstream DELAY seconds later, and reports the
time from the upstream listening (its ready file) to Sluice's first OK call
and to readiness SERVING (admin grpc.health.v1, service ""), and how many
calls failed after the first OK one. One client calls EmptyCall back to back
(each with a 5 s deadline); another polls readiness every 20 ms.

  /usr/bin/python3 scripts/late_upstream.py --bin=BAZEL_BIN DELAY [DELAY...]
      [--health_check]   also configure health_check (interval 5s)

BAZEL_BIN holds server/sluice and server/demo/demo_upstream, e.g.
$(bazel info bazel-bin). Loopback only; stops only the processes it started.
"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "tests", "e2e", "python"))


def measure(harness, delay, health_check):
    import grpc
    from grpc.health.v1 import health_pb2, health_pb2_grpc
    from grpc.testing import empty_pb2, test_pb2_grpc

    port = harness.closed_port()
    address = f"127.0.0.1:{port}"
    hc = "    health_check: {interval: 5s}\n" if health_check else ""
    config = harness.write_config(f"""
upstreams:
  - name: app
    target: "{address}"
    required: true
{hc}routes:
  - {{name: all, match: {{prefix: "/"}}, upstream: app}}
""")
    sluice = harness.start_sluice(config_path=config)
    procs = [sluice]
    try:
        stub = test_pb2_grpc.TestServiceStub(harness.channel(sluice.data))
        health = health_pb2_grpc.HealthStub(harness.channel(sluice.admin))
        calls, serving = [], []  # (end time, ok)
        stop = threading.Event()

        def caller():
            while not stop.is_set():
                try:
                    stub.EmptyCall(empty_pb2.Empty(), timeout=5)
                    calls.append((time.monotonic(), True))
                except grpc.RpcError:
                    calls.append((time.monotonic(), False))
                    time.sleep(0.005)

        def poller():
            while not stop.is_set():
                s = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
                serving.append((time.monotonic(), s == health_pb2.HealthCheckResponse.SERVING))
                time.sleep(0.02)

        threads = [threading.Thread(target=caller, daemon=True),
                   threading.Thread(target=poller, daemon=True)]
        for t in threads:
            t.start()
        time.sleep(delay)
        upstream = harness.start_upstream(address)
        procs.append(upstream)
        listening = time.monotonic()
        time.sleep(5.0)
        stop.set()
        for t in threads:
            t.join(10)
        first_ok = next((t for t, ok in calls if ok and t >= listening), None)
        first_serving = next((t for t, ok in serving if ok and t >= listening), None)
        failed_after = sum(1 for t, ok in calls if first_ok and t > first_ok and not ok)
        fmt = lambda t: "never" if t is None else f"{t - listening:.3f}s"
        print(f"app after {delay:>5.0f}s{' +health_check' if health_check else ''}: "
              f"first OK call {fmt(first_ok)}, SERVING {fmt(first_serving)}, "
              f"failed calls after the first OK: {failed_after} "
              f"(of {sum(1 for t, _ in calls if first_ok and t > first_ok)})", flush=True)
    finally:
        for p in reversed(procs):
            p.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--health_check", action="store_true")
    parser.add_argument("delays", type=float, nargs="+")
    args = parser.parse_args()
    import harness
    harness.SLUICE = os.path.join(args.bin, "server", "sluice")
    harness.DEMO_UPSTREAM = os.path.join(args.bin, "server", "demo", "demo_upstream")
    for delay in args.delays:
        measure(harness, delay, args.health_check)


if __name__ == "__main__":
    main()
