#!/usr/bin/python3
"""Measures Sluice under hostile clients with a bystander beside them
(issue 16's targets, docs/reliability.md): Sluice's RSS before, at its peak
and after, and the bystander's errors and latency.

Attacks (each against a fresh Sluice and demo upstream, loopback only):
  header      ATTACKERS clients, each call carrying one 1 MiB header, for
              SECONDS (gRPC's own transport limit refuses them)
  never_read  100 clients, each on its own connection, open a server stream
              of 1 KiB messages and never read it, for SECONDS
  upload      ATTACKERS clients upload two messages and then one over
              proxy.max_receive_message_bytes, over and over, for SECONDS

The bystander calls UnaryCall back to back on its own connection meanwhile.
RSS is sampled every 50 ms; "after" is 3 s after the attackers stop.

  /usr/bin/python3 scripts/hostile_probe.py --bin=BAZEL_BIN [header never_read upload]

BAZEL_BIN holds server/sluice and server/demo/demo_upstream (e.g. the opt
build's bazel-bin). Every loop is bounded in time; stops only the processes
it started.
"""

import argparse
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "tests", "e2e", "python"))

SECONDS = 10.0
BIN = ""
ATTACKERS = 8
MAX_RECEIVE = 1 << 20


def run(harness, attack):
    import grpc
    from grpc.testing import messages_pb2, test_pb2_grpc

    upstream = harness.start_upstream()
    config = harness.write_config(f"""
proxy: {{max_receive_message_bytes: {MAX_RECEIVE}}}
upstreams:
  - name: app
    target: "{upstream.address}"
routes:
  - {{name: all, match: {{prefix: "/"}}, upstream: app}}
""")
    sluice = harness.start_sluice(config_path=config)
    procs = [upstream, sluice]
    try:
        by_ch = harness.channel(sluice.data)
        by_stub = test_pb2_grpc.TestServiceStub(by_ch)
        by_stub.UnaryCall(messages_pb2.SimpleRequest(response_size=10), timeout=5)
        time.sleep(1.0)  # settle: threads, arenas
        baseline = harness.rss_kib(sluice.pid)
        stop = threading.Event()
        latencies, errors, rss = [], [], []
        attacks_done = [0]

        def bystander():
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    by_stub.UnaryCall(messages_pb2.SimpleRequest(response_size=10), timeout=5)
                    latencies.append(time.monotonic() - t0)
                except grpc.RpcError as e:
                    errors.append(e.code().name)

        def sampler():
            while not stop.wait(0.05):
                rss.append(harness.rss_kib(sluice.pid))

        threads = [threading.Thread(target=bystander, daemon=True),
                   threading.Thread(target=sampler, daemon=True)]
        for t in threads:
            t.start()
        # The attackers in a process of their own: a Python client's own
        # work (its GIL, its pollers) must not count as Sluice's latency.
        attacker = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), f"--bin={BIN}",
             f"--attack_only={attack}", f"--target={sluice.data}"],
            stdout=subprocess.PIPE, text=True)
        out, _ = attacker.communicate(timeout=SECONDS + 60)
        attacks_done[0] = int(out.strip().splitlines()[-1]) if out.strip() else 0
        stop.set()
        for t in threads:
            t.join(15)
        time.sleep(3.0)
        after = harness.rss_kib(sluice.pid)
        alive = sluice.popen.poll() is None
        lat = sorted(latencies)
        p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: float("nan"))
        print(f"{attack}: {attacks_done[0]} attack calls; Sluice alive: {alive}; RSS "
              f"{baseline / 1024:.1f} MiB before, peak {max(rss) / 1024:.1f} MiB, "
              f"{after / 1024:.1f} MiB 3 s after (+{(after - baseline) / 1024:.1f}); bystander "
              f"{len(lat)} OK, {len(errors)} errors{' ' + str(sorted(set(errors))) if errors else ''}, "
              f"p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {p(1.0):.2f} ms", flush=True)
        by_ch.close()
    finally:
        for proc in reversed(procs):
            proc.stop()


def attack_only(kind, target):
    """The child process: runs one attack on `target` for SECONDS and
    prints how many attack calls it made."""
    import grpc
    from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc
    from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc
    stop = threading.Event()
    done = [0]
    big = [("grpc.max_send_message_length", 8 << 20),
           ("grpc.max_receive_message_length", 8 << 20)]

    def header_attacker():
        ch = grpc.insecure_channel(target)
        stub = test_pb2_grpc.TestServiceStub(ch)
        while not stop.is_set():
            try:
                stub.EmptyCall(empty_pb2.Empty(), timeout=5,
                               metadata=[("x-big", "a" * (1 << 20))])
            except grpc.RpcError:
                pass
            done[0] += 1
        ch.close()

    def upload_attacker():
        ch = grpc.insecure_channel(target, options=big)
        stub = test_pb2_grpc.TestServiceStub(ch)
        while not stop.is_set():
            reqs = [messages_pb2.StreamingInputCallRequest(
                payload=messages_pb2.Payload(body=b"\0" * n))
                for n in (1000, 1000, MAX_RECEIVE + 1)]
            try:
                stub.StreamingInputCall(iter(reqs), timeout=5)
            except grpc.RpcError:
                pass
            done[0] += 1
        ch.close()

    calls = []
    if kind == "never_read":
        for i in range(100):
            # Its own connection each (distinct channel arguments).
            ch = grpc.insecure_channel(target, options=[("sluice.probe", i),
                                                        ("grpc.http2.bdp_probe", 0)])
            stub = ticker_pb2_grpc.TickerStub(ch)
            calls.append((ch, stub.Subscribe(
                ticker_pb2.SubscribeRequest(count=1000000, payload_bytes=1024),
                timeout=SECONDS + 30)))
            done[0] += 1
        threads = []
    else:
        fn = header_attacker if kind == "header" else upload_attacker
        threads = [threading.Thread(target=fn, daemon=True) for _ in range(ATTACKERS)]
    for t in threads:
        t.start()
    time.sleep(SECONDS)  # the attack runs: outside time, not Sluice's logic
    stop.set()
    for ch, call in calls:
        call.cancel()
        ch.close()
    for t in threads:
        t.join(15)
    print(done[0], flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--attack_only", default="")
    parser.add_argument("--target", default="")
    parser.add_argument("attacks", nargs="*", default=["header", "never_read", "upload"])
    args = parser.parse_args()
    global BIN
    BIN = args.bin
    import harness
    if args.attack_only:
        attack_only(args.attack_only, args.target)
        return
    harness.SLUICE = os.path.join(args.bin, "server", "sluice")
    harness.DEMO_UPSTREAM = os.path.join(args.bin, "server", "demo", "demo_upstream")
    for attack in args.attacks:
        run(harness, attack)


if __name__ == "__main__":
    main()
