"""Issue 20's scenario: adaptive concurrency and fair queuing between
tenants, measured with real processes on loopback (the demo upstream in
capacity mode, sluice, sluice-bench), all started here on free ports and
stopped by their PIDs. Prints Markdown tables (docs/limits-bench.md records
them); asserts nothing.

  bazel run -c opt //bench:limits_scenario -- fair --n=10 --service_ms=20 --n2=20
  bazel run -c opt //bench:limits_scenario -- cost --rounds=5

fair: the upstream serves N calls at once in S each (C = N / S calls/s),
slower beyond. Offered 3 C in all, open loop (one sluice-bench per tenant,
latency from each call's intended send time, so queueing in Sluice counts):
nine well-behaved tenants at 0.08 C each, one noisy tenant the rest
(2.28 C). For each configuration (no limit; a fixed limit of N; adaptive;
adaptive with one queue per tenant) a fresh sluice takes --seconds of load
from its start, then N becomes --n2 at run time (Capacity/Set) and the same
offered load runs --seconds more. Before: the load generator alone, straight
to the demo upstream (capacity mode off), to show it keeps its schedule; and
the unloaded p99 (0.1 C through sluice without limits).

cost: limits configured but not hit (an adaptive limit whose min is far
above the calls in flight, with keyed queues) against no limits, demo
upstream with no service time, closed loop; interleaved rounds, medians of
calls/s, latency and sluice's CPU time per call.
"""

import argparse
import json
import os
import statistics
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
from limits_lib import UNARY, set_capacity  # noqa: E402
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402

BENCH = os.path.join(harness.ROOT, "client", "bench", "sluice-bench")
TENANTS = [f"t{i}" for i in range(1, 10)]
NOISY = "noisy"

ADAPTIVE = "adaptive: {min: 2, max: 200}"


def limits_yaml(kind, n):
    if kind == "none":
        return ""
    if kind == "fixed":
        conc = f"{{max: {n}, queue: 4, max_wait: 50ms}}"
    elif kind == "adaptive":
        conc = f"{{queue: 4, max_wait: 50ms, {ADAPTIVE}}}"
    elif kind == "adaptive_keyed":
        conc = (f"{{queue: 40, max_wait: 50ms, key: [\"header:x-tenant\"], "
                f"max_queue_per_key: 4, {ADAPTIVE}}}")
    elif kind == "adaptive_keyed_w100":
        # A higher min (a probe drains and measures faster) and max_wait
        # above a probe's length, so calls queued during one wait it out.
        conc = (f"{{queue: 40, max_wait: 100ms, key: [\"header:x-tenant\"], "
                f"max_queue_per_key: 4, adaptive: {{min: 5, max: 200}}}}")
    elif kind == "not_hit":
        conc = ("{queue: 40, max_wait: 50ms, key: [\"header:x-tenant\"], max_queue_per_key: 4, "
                "adaptive: {min: 1000, max: 2000, initial: 1000}}")
    else:
        raise ValueError(kind)
    return f"""    limits:
      - name: l
        concurrency: {conc}
"""


def sluice_config(kind, n):
    # Every tenant is on 127.0.0.1: the rapid-reset defence (per client
    # address) would count the timed-out calls of the overloaded runs as
    # early cancels and refuse every tenant alike; off, as for clients
    # behind one NAT (configuration.md).
    return f"""drain_timeout: 1s
proxy:
  connections:
    early_cancels_per_second: 0
upstreams:
  - name: demo
    target: 127.0.0.1:1   # replaced by --upstream
routes:
  - name: api
    match: {{method: {UNARY}}}
    upstream: demo
{limits_yaml(kind, n)}  - name: default
    match: {{prefix: /}}
    upstream: demo
"""


def start_bench(target, tenant, seconds, rate=0, concurrency=0, max_inflight=4000,
                timeout="2s"):
    argv = [BENCH, f"--target={target}", "--json", "--threads=1", "--connections=1",
            f"--duration={seconds}s", f"--timeout={timeout}", "--request_bytes=10",
            "--response_bytes=10", f"--header=x-tenant:{tenant}"]
    if rate:
        argv += [f"--rate={rate}", f"--max_inflight={max_inflight}"]
    else:
        argv += [f"--concurrency={concurrency}"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(popen, seconds):
    out, err = popen.communicate(timeout=seconds + 60)
    if popen.returncode != 0:
        raise RuntimeError(f"sluice-bench exited {popen.returncode}: {err}")
    return json.loads(out)


def offer(target, c, seconds):
    """The scenario's load for `seconds`: {tenant: sluice-bench report}."""
    procs = {t: start_bench(target, t, seconds, rate=0.08 * c, max_inflight=500)
             for t in TENANTS}
    procs[NOISY] = start_bench(target, NOISY, seconds, rate=3 * c - 9 * 0.08 * c)
    return {t: finish(p, seconds) for t, p in procs.items()}


class LimitWatch:
    """Samples the adaptive limit (admin API) every 100 ms while load runs."""

    def __init__(self, sluice):
        self.ch = harness.channel(sluice.admin)
        self.admin = admin_pb2_grpc.AdminStub(self.ch)
        self.values = []
        self.stop_ = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_.wait(0.1):
            try:
                for s in self.admin.ListLimits(admin_pb2.ListLimitsRequest(), timeout=5).limits:
                    if s.route == "api" and s.HasField("adaptive"):
                        self.values.append((time.monotonic(), s.adaptive.limit,
                                            s.adaptive.probing))
            except Exception:  # noqa: BLE001 (a slow answer: skip the sample)
                pass

    def take(self):
        values, self.values = self.values, []
        return values

    def stop(self):
        self.stop_.set()
        self.thread.join(timeout=10)
        self.ch.close()


def summarize(reports, c, seconds):
    ok = {t: r["status"].get("OK", 0) for t, r in reports.items()}
    rej = {t: sum(v for k, v in r["status"].items() if k != "OK") for t, r in reports.items()}
    offered = {t: r["scheduled"] for t, r in reports.items()}
    wb_p99 = max(r["latency_ok_us"]["p99"] for t, r in reports.items() if t != NOISY)
    return {
        "goodput": sum(ok.values()) / seconds / c,
        "wb_offered": sum(offered[t] for t in TENANTS),
        "wb_ok": sum(ok[t] for t in TENANTS),
        "wb_rejected": sum(rej[t] for t in TENANTS),
        "wb_min_share": min(ok[t] / max(1, offered[t]) for t in TENANTS),
        "wb_p99_ms": wb_p99 / 1e3,
        "noisy_offered": offered[NOISY],
        "noisy_ok": ok[NOISY],
        "noisy_rejected": rej[NOISY],
        "noisy_p99_ms": reports[NOISY]["latency_ok_us"]["p99"] / 1e3,
        "noisy_reasons": reports[NOISY]["sluice_reason"],
        "wb_reasons": {k: sum(r["sluice_reason"].get(k, 0) for t, r in reports.items()
                              if t != NOISY)
                       for k in {k for r in reports.values() for k in r["sluice_reason"]}},
        "dropped": sum(r["dropped"] for r in reports.values()),
        "late": sum(r["late"] for r in reports.values()),
        "max_lag_ms": max(r["max_send_lag_us"] for r in reports.values()) / 1e3,
        "status": {k: sum(r["status"].get(k, 0) for r in reports.values())
                   for k in {k for r in reports.values() for k in r["status"]}},
    }


def limit_summary(values):
    if not values:
        return "—"
    t0 = values[0][0]
    plain = [v for _, v, probing in values if not probing]
    last = plain[-1] if plain else values[-1][1]
    at = lambda s: [v for t, v, p in values if t - t0 >= s and not p]  # noqa: E731
    first5 = at(5.0)
    probing = sum(p for _, _, p in values)
    return (f"start {values[0][1]}, at 5 s {first5[0] if first5 else '—'}, "
            f"end {last} (min {min(plain) if plain else '—'}, max {max(plain) if plain else '—'}"
            f"{f'; probing in {probing} of {len(values)} samples' if probing else ''})")


def cmd_fair(a):
    s = a.service_ms / 1000.0
    c1, c2 = a.n / s, a.n2 / s
    print(f"# fair: N={a.n} S={a.service_ms}ms C={c1:.0f}/s, then N={a.n2} C={c2:.0f}/s; "
          f"offered 3 x {c1:.0f} = {3 * c1:.0f}/s; {a.seconds}s per phase", flush=True)
    upstream = harness.start_upstream(extra=[f"--capacity={a.n}",
                                             f"--service_time={a.service_ms}ms"])
    rows = []
    try:
        # The generator alone, straight to the upstream serving at once.
        set_capacity(upstream.address, 0)
        gen = summarize(offer(upstream.address, c1, a.seconds), c1, a.seconds)
        total = sum(gen["status"].values())
        print(f"generator alone (direct, no service time): {total / a.seconds:.0f} calls/s "
              f"of {3 * c1:.0f} scheduled, late sends {gen['late']}, dropped {gen['dropped']}, "
              f"largest lag {gen['max_lag_ms']:.1f} ms, statuses {gen['status']}", flush=True)
        # Unloaded p99 through sluice without limits, at 0.1 C.
        set_capacity(upstream.address, a.n, int(a.service_ms * 1000))
        sl = harness.start_sluice(harness.write_config(sluice_config("none", a.n)),
                                  upstream=upstream.address, extra=["--log_level=warn"])
        try:
            unloaded = finish(start_bench(sl.data, "solo", a.seconds, rate=0.1 * c1), a.seconds)
        finally:
            sl.stop()
        p99_0 = unloaded["latency_ok_us"]["p99"] / 1e3
        print(f"unloaded (0.1 C through sluice, no limit): p50 "
              f"{unloaded['latency_ok_us']['p50'] / 1e3:.1f} ms, p99 {p99_0:.1f} ms, "
              f"statuses {unloaded['status']}", flush=True)
        for kind in a.configs.split(","):
            set_capacity(upstream.address, a.n, int(a.service_ms * 1000))
            sl = harness.start_sluice(harness.write_config(sluice_config(kind, a.n)),
                                      upstream=upstream.address, extra=["--log_level=warn"])
            watch = LimitWatch(sl)
            try:
                for phase, c, n in (("start", c1, a.n), ("after C changes", c2, a.n2)):
                    if phase != "start":
                        set_capacity(upstream.address, n)
                    r = summarize(offer(sl.data, c, a.seconds), c, a.seconds)
                    r.update(kind=kind, phase=phase, c=c, limit=limit_summary(watch.take()))
                    rows.append(r)
                    print(json.dumps(r), flush=True)
            finally:
                watch.stop()
                sl.stop()
    finally:
        upstream.stop()
    print(f"\nunloaded p99 {p99_0:.1f} ms (target for admitted calls: <= {2 * p99_0:.1f} ms)\n")
    print("| limit | phase | goodput (of C) | p99 admitted, well-behaved (max of 9) | "
          "p99 admitted, noisy | well-behaved admitted / offered | well-behaved rejected | "
          "noisy admitted / offered | noisy rejected (reasons) | adaptive limit |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["noisy_reasons"].items())) or "—"
        other = r["noisy_rejected"] - sum(r["noisy_reasons"].values())
        if other:
            reasons += f"; {other} other ({r['status']})"
        print(f"| {r['kind']} | {r['phase']} (C={r['c']:.0f}/s) | {100 * r['goodput']:.0f}% | "
              f"{r['wb_p99_ms']:.1f} ms | {r['noisy_p99_ms']:.1f} ms | "
              f"{r['wb_ok']} / {r['wb_offered']} (min tenant {100 * r['wb_min_share']:.0f}%) | "
              f"{r['wb_rejected']} | {r['noisy_ok']} / {r['noisy_offered']} | {reasons} | "
              f"{r['limit']} |")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cmd_cost(a):
    upstream = harness.start_upstream()
    procs = {}
    try:
        for kind in ("none", "not_hit"):
            procs[kind] = harness.start_sluice(
                harness.write_config(sluice_config(kind, 10)), upstream=upstream.address,
                extra=["--log_level=warn"])
        # Warm up both (connections, allocator).
        for p in procs.values():
            finish(start_bench(p.data, "warm", 1, concurrency=a.concurrency), 1)
        results = {k: [] for k in procs}
        for rnd in range(a.rounds):
            order = ["none", "not_hit"] if rnd % 2 == 0 else ["not_hit", "none"]
            for kind in order:
                p = procs[kind]
                cpu0 = cpu_seconds(p.pid)
                r = finish(start_bench(p.data, TENANTS[rnd % 9], a.seconds,
                                       concurrency=a.concurrency), a.seconds)
                cpu = cpu_seconds(p.pid) - cpu0
                calls = r["status"].get("OK", 0)
                results[kind].append((r["calls_per_s"], r["latency_ok_us"]["p50"],
                                      r["latency_ok_us"]["p99"], 1e6 * cpu / max(1, calls)))
                print(kind, json.dumps(results[kind][-1]), flush=True)
    finally:
        for p in procs.values():
            p.stop()
        upstream.stop()
    med = {k: [statistics.median(x[i] for x in v) for i in range(4)] for k, v in results.items()}
    print(f"\n{a.rounds} interleaved rounds of {a.seconds}s, closed loop, "
          f"{a.concurrency} calls in flight, one connection; medians\n")
    print("| limits | calls/s | p50 | p99 | sluice CPU per call |")
    print("|---|---:|---:|---:|---:|")
    for k, label in (("none", "none"), ("not_hit", "adaptive + keyed queues, not hit")):
        m = med[k]
        print(f"| {label} | {m[0]:,.0f} | {m[1]:.0f} µs | {m[2]:.0f} µs | {m[3]:.1f} µs |")
    n, h = med["none"], med["not_hit"]
    print(f"| ratio (not hit / none) | {h[0] / n[0]:.3f} | {h[1] / n[1]:.3f} | "
          f"{h[2] / n[2]:.3f} | {h[3] / n[3]:.3f} |")


def callgrind_instructions(upstream, kind, calls, concurrency):
    """Instructions (callgrind's Ir total) of one sluice process, 1 worker,
    from start to exit, that proxied `calls` unary calls."""
    import signal as _signal
    path = harness.write_config(sluice_config(kind, 10))
    ready = os.path.join(harness.TMP, f"cg-ready-{time.monotonic_ns()}.json")
    out = os.path.join(harness.TMP, f"callgrind-{kind}-{calls}-{time.monotonic_ns()}.out")
    p = harness.Proc("sluice-callgrind", [
        "/usr/bin/valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        harness.SLUICE, f"--ready_file={ready}", "--listen=127.0.0.1:0",
        "--admin=127.0.0.1:0", "--metrics=127.0.0.1:0", "--workers=1",
        f"--config={path}", f"--upstream={upstream.address}", "--log_level=warn"], ready)
    try:
        # Proc waits 20 s for the ready file; valgrind may need longer.
        r = finish(subprocess.Popen(
            [BENCH, f"--target={p.info['data']}", "--json", "--threads=1",
             "--connections=1", f"--concurrency={concurrency}", f"--calls={calls}",
             "--timeout=30s", "--connect_timeout=30s", "--request_bytes=10",
             "--response_bytes=10", "--header=x-tenant:t1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), 600)
        assert r["status"] == {"OK": calls}, r["status"]
    finally:
        p.signal(_signal.SIGTERM)
        p.wait(timeout=120)
        p.stop()
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("no callgrind totals")


def cmd_instructions(a):
    upstream = harness.start_upstream()
    try:
        ir = {}
        for kind in ("none", "not_hit"):
            for calls in (a.calls, 3 * a.calls):
                ir[kind, calls] = callgrind_instructions(upstream, kind, calls, a.concurrency)
                print(kind, calls, ir[kind, calls], flush=True)
    finally:
        upstream.stop()
    print(f"\ncallgrind, 1 worker, {a.concurrency} calls in flight; per call = "
          f"(Ir of {3 * a.calls} calls - Ir of {a.calls}) / {2 * a.calls}\n")
    print("| limits | instructions per unary call |")
    print("|---|---:|")
    per = {k: (ir[k, 3 * a.calls] - ir[k, a.calls]) / (2 * a.calls) for k in ("none", "not_hit")}
    print(f"| none | {per['none']:,.0f} |")
    print(f"| adaptive + keyed queues, not hit | {per['not_hit']:,.0f} |")
    print(f"| ratio | {per['not_hit'] / per['none']:.3f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fair")
    f.add_argument("--n", type=int, default=10)
    f.add_argument("--n2", type=int, default=20)
    f.add_argument("--service_ms", type=int, default=20)
    f.add_argument("--seconds", type=int, default=10)
    f.add_argument("--configs",
                   default="none,fixed,adaptive,adaptive_keyed,adaptive_keyed_w100")
    c = sub.add_parser("cost")
    c.add_argument("--rounds", type=int, default=5)
    c.add_argument("--seconds", type=int, default=4)
    c.add_argument("--concurrency", type=int, default=16)
    i = sub.add_parser("instructions")
    i.add_argument("--calls", type=int, default=1000)
    i.add_argument("--concurrency", type=int, default=4)
    a = p.parse_args()
    {"fair": cmd_fair, "cost": cmd_cost, "instructions": cmd_instructions}[a.cmd](a)


if __name__ == "__main__":
    main()
