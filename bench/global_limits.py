"""Global limits measured with real processes on loopback: redis-server(s),
the demo upstream and N sluice replicas, all started here on free ports and
stopped by their PIDs. Prints one line per measurement (docs/limits-bench.md
records them).

  bazel run //bench:global_limits -- fairness --replicas=2 --seconds=10
  bazel run //bench:global_limits -- decisions --lease=10 --seconds=5
  bazel run //bench:global_limits -- cluster --replicas=3 --rate=300

fairness: one Redis, --replicas sluices sharing one global limit of --rate/s
(burst --burst), each offered 2 x rate / replicas calls/s open loop; prints
the admitted rate of each replica and their total.
decisions: one Redis, one sluice, a global limit far above the offered load
(every call admitted), closed loop (sluice-bench, --clients calls in
flight); prints decisions per second, Redis round trips per decision and
Redis' CPU at --lease (0: a local limit, the baseline).
cluster: a 3 masters + 3 replicas Redis Cluster, --replicas sluices at
2 x --rate; then SIGKILL of the master owning the limit's key: the time
until the replicas report the fallback and until global enforcement again.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if "TEST_SRCDIR" not in os.environ:
    # `bazel run`: the working directory is this binary's runfiles/sluice.
    cwd = os.getcwd()
    if os.path.isfile(os.path.join(cwd, "server", "sluice")):
        os.environ["TEST_SRCDIR"] = os.path.dirname(cwd)
        os.environ["TEST_WORKSPACE"] = os.path.basename(cwd)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e", "python"))
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "e2e", "python"))

import harness  # noqa: E402
import grpc  # noqa: E402
from grpc.testing import test_pb2_grpc  # noqa: E402
from limits_lib import UNARY, gcra_admits, offer_open_loop, unary_req  # noqa: E402


def sluice_config(redis_yaml, rate, burst, lease, fallback="local", replicas=1):
    return f"""drain_timeout: 1s
{redis_yaml}upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
routes:
  - name: shared
    match: {{method: {UNARY}}}
    upstream: demo
    limits:
      - name: g
        scope: global
        rate: {{per_second: {rate}, burst: {burst}}}
        global: {{lease: {lease}, fallback: {fallback}, expected_replicas: {replicas}}}
  - name: default
    match: {{prefix: /}}
    upstream: demo
"""


class _Assert:
    """offer_open_loop wants a TestCase for one assertion."""

    def assertFalse(self, value, msg=None):
        if value:
            raise AssertionError(msg)


def start_replicas(upstream, text, n):
    path = harness.write_config(text)
    procs, stubs, chans = [], [], []
    for _ in range(n):
        s = harness.start_sluice(config_path=path, upstream=upstream.address)
        procs.append(s)
        ch = harness.channel(s.data)
        chans.append(ch)
        stubs.append(test_pb2_grpc.TestServiceStub(ch))
    return procs, stubs, chans


def stop_all(procs, chans):
    for ch in chans:
        ch.close()
    for p in procs:
        p.stop()


def per_replica(outcomes, n):
    """Admitted calls per stub: offer_open_loop returns stub 0's calls
    first, then stub 1's, and so on, the same count each."""
    per = len(outcomes) // n
    return [sum(o.code == grpc.StatusCode.OK for o in outcomes[k * per:(k + 1) * per])
            for k in range(n)]


def offer(stubs, rate, seconds):
    per_stub = 2.0 * rate / len(stubs)
    outcomes, duration = offer_open_loop(_Assert(), stubs, per_stub, seconds)
    return outcomes, duration, per_stub


def report_fairness(label, outcomes, duration, n, rate, burst, per_stub):
    admitted = per_replica(outcomes, n)
    total = (sum(admitted) - burst) / duration
    rates = [a / duration for a in admitted]
    mean = sum(rates) / n
    spread = max(abs(r - mean) / mean for r in rates) if mean else 0.0
    # What one exact bucket admits of the calls at the clients' send times:
    # below rate x duration + burst when the client stalled (a busy
    # machine), which no proxy can make up.
    exact = gcra_admits([o.sent for o in outcomes], rate, burst)
    print(f"{label}: {n} replicas, limit {rate}/s burst {burst}, offered "
          f"{per_stub:.0f}/s each over {duration:.2f}s: admitted "
          + ", ".join(f"{r:.1f}/s" for r in rates)
          + f"; total {total:.1f}/s ({100 * (total - rate) / rate:+.1f}%), "
          f"{sum(admitted)} calls where an exact bucket admits {exact} of the "
          f"clients' send times; largest gap from the mean {100 * spread:.1f}%",
          flush=True)


def fairness(args):
    upstream = harness.start_upstream()
    redis = harness.RedisServer()
    procs, chans = [], []
    try:
        redis_yaml = f"redis:\n  address: 127.0.0.1:{redis.port}\n  timeout: 2s\n"
        procs, stubs, chans = start_replicas(
            upstream, sluice_config(redis_yaml, args.rate, args.burst, args.lease),
            args.replicas)
        outcomes, duration, per_stub = offer(stubs, args.rate, args.seconds)
        report_fairness(f"fairness lease {args.lease}", outcomes, duration,
                        args.replicas, args.rate, args.burst, per_stub)
    finally:
        stop_all(procs, chans)
        redis.stop()
        upstream.stop()


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (/proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def decisions(args):
    """Closed loop through one replica (sluice-bench, --clients calls in
    flight) against a global limit it never reaches: every call is one
    decision, admitted. --lease=0: the same limit with scope local, the
    baseline without Redis."""
    upstream = harness.start_upstream()
    redis = harness.RedisServer()
    procs, chans = [], []
    try:
        redis_yaml = f"redis:\n  address: 127.0.0.1:{redis.port}\n  timeout: 2s\n"
        text = sluice_config(redis_yaml, 1_000_000, 1_000_000, max(1, args.lease))
        if args.lease == 0:
            text = text.replace("scope: global", "scope: local").replace(
                "        global: {lease: 1, fallback: local, expected_replicas: 1}\n", "")
        procs, stubs, chans = start_replicas(upstream, text, 1)
        bench = os.path.join(harness.ROOT, "client", "bench", "sluice-bench")
        trips0 = harness.metric(procs[0], "sluice_redis_request_duration_seconds_count") or 0
        cpu0 = cpu_seconds(redis.popen.pid)
        out = subprocess.run(
            [bench, f"--target={procs[0].data}", f"--concurrency={args.clients}",
             "--threads=1", f"--duration={args.seconds}s", "--json"],
            capture_output=True, text=True, timeout=args.seconds + 60, check=True)
        cpu = cpu_seconds(redis.popen.pid) - cpu0
        result = json.loads(out.stdout)
        trips = (harness.metric(procs[0], "sluice_redis_request_duration_seconds_count")
                 or 0) - trips0
        elapsed = result["elapsed_s"]
        calls = result["calls"]
        label = "local limit (no Redis)" if args.lease == 0 else f"global, lease {args.lease}"
        print(f"decisions {label}: {result['calls_per_s']:.0f} decisions/s on one replica "
              f"({args.clients} calls in flight, {elapsed:.1f}s, status {result['status']}, "
              f"p50 {result['latency_us']['p50']:.0f} us, p99 {result['latency_us']['p99']:.0f} us); "
              f"Redis: {trips / elapsed:.0f} round trips/s, {trips / max(1, calls):.3f} per "
              f"decision, {100 * cpu / elapsed:.0f}% of a core"
              + (f" = {trips / cpu:.0f} round trips per Redis CPU-second" if cpu > 0.05 and trips else ""),
              flush=True)
    finally:
        stop_all(procs, chans)
        redis.stop()
        upstream.stop()


def cluster(args):
    import redis_cluster
    upstream = harness.start_upstream()
    nodes = redis_cluster.RedisCluster(masters=3, node_timeout_ms=1000)
    procs, chans = [], []
    try:
        seeds = ", ".join(f'"{s}"' for s in nodes.seeds())
        redis_yaml = f"redis:\n  cluster: [{seeds}]\n  timeout: 250ms\n"
        procs, stubs, chans = start_replicas(
            upstream, sluice_config(redis_yaml, args.rate, args.burst, args.lease,
                                    replicas=args.replicas), args.replicas)
        outcomes, duration, per_stub = offer(stubs, args.rate, args.seconds)
        report_fairness(f"cluster lease {args.lease}", outcomes, duration,
                        args.replicas, args.rate, args.burst, per_stub)

        # Failover: the same load while the master of the limit's key is
        # killed; each replica's fallback gauge polled every 20 ms.
        key = "sluice:shared:g"
        victim = nodes.master_for(key)
        done = {}
        load = threading.Thread(
            target=lambda: done.setdefault("r", offer(stubs, args.rate, 20.0)), daemon=True)
        load.start()
        time.sleep(3.0)  # steady state first
        t_kill = time.monotonic()
        nodes.kill(victim)
        entered = [None] * len(procs)
        left = [None] * len(procs)
        promoted = None
        while time.monotonic() - t_kill < 15 and not all(left):
            now = time.monotonic() - t_kill
            for i, p in enumerate(procs):
                active = harness.metric(p, "sluice_limit_fallback_active")
                if active == 1 and entered[i] is None:
                    entered[i] = now
                if active == 0 and entered[i] is not None and left[i] is None:
                    left[i] = now
            if promoted is None and nodes.master_for(key) not in (None, victim):
                promoted = now
            time.sleep(0.02)
        load.join(timeout=40)
        print(f"cluster failover: master 127.0.0.1:{victim} (serving {key!r}) killed; "
              f"replica promoted after {promoted if promoted is None else round(promoted, 2)}s; "
              f"fallback entered after " + ", ".join(
                  "never" if e is None else f"{e:.2f}s" for e in entered)
              + "; global enforcement again after " + ", ".join(
                  "never" if x is None else f"{x:.2f}s" for x in left), flush=True)
        if "r" in done:
            outcomes, duration, per_stub = done["r"]
            report_fairness("cluster, 20 s across the failover", outcomes, duration,
                            args.replicas, args.rate, args.burst, per_stub)
    finally:
        stop_all(procs, chans)
        nodes.stop()
        upstream.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["fairness", "decisions", "cluster"])
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--rate", type=int, default=100)
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("--lease", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args()
    if args.mode == "fairness":
        fairness(args)
    elif args.mode == "decisions":
        decisions(args)
    else:
        cluster(args)


if __name__ == "__main__":
    main()
