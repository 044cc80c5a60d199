#!/usr/bin/env python3
"""Summary of a bench/run.sh run, in Markdown (pasted into docs/BENCHMARKS.md).

Usage: bench/summarize.py RUN-INFO.tsv RESULTS.tsv

Per path and scenario: the median over the rounds and the range (min-max).
Ratios and added latency are computed within each round (a proxy against
direct or another proxy measured minutes apart, in the same round) and then
summarized the same way. Rows whose check failed are left out (shown as
FAIL when no round passed).
"""

import statistics
import sys

info = dict(l.rstrip("\n").split("\t", 1) for l in open(sys.argv[1]) if "\t" in l)
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])]
head, rows = rows[0], rows[1:]
col = {name: i for i, name in enumerate(head)}

ORDER = ["direct", "nginx", "haproxy", "caddy", "sluice-w1", "sluice-w2", "sluice-w2-typed",
         "sluice-w2-limits", "sluice-w2-typed-relay"]
LABEL = {
    "direct": "direct (the upstream alone)",
    "nginx": "nginx 1.22 grpc_pass, 1 worker",
    "haproxy": "HAProxy 2.6, h2 both sides, 1 thread",
    "caddy": "Caddy 2.6 reverse_proxy h2c",
    "sluice-w1": "Sluice, 1 worker, flags only",
    "sluice-w2": "Sluice, flags only",
    "sluice-w2-typed": "Sluice, typed (descriptor set)",
    "sluice-w2-limits": "Sluice, flags only, limits not hit",
    "sluice-w2-typed-relay": "Sluice typed behind a HAProxy TCP relay",
}
FLAGS, TYPED, LIMITS = "sluice-w2", "sluice-w2-typed", "sluice-w2-limits"

# value[(path, scenario, column)][round] = float, for rows that passed.
value = {}
failed = set()
instr = {}
for r in rows:
    path, scen, rnd = r[col["path"]], r[col["scenario"]], r[col["round"]]
    if scen.startswith("callgrind-"):
        # callgrind-KIND-WHAT (WHAT: ir, batches, sendmsg, recvmsg), or
        # callgrind-KIND (Ir) from earlier versions of run.sh.
        parts = scen.split("-")
        kind, what = parts[1], (parts[2] if len(parts) > 2 else "ir")
        try:
            instr[(path, kind, what)] = float(r[col["instr"]])
        except ValueError:
            pass
        continue
    if r[col["ok"]] != "ok":
        failed.add((path, scen))
        continue
    for c in ("req_s", "msg_s", "bytes_s", "mean_us", "p50_us", "p99_us", "cpu_us"):
        try:
            value.setdefault((path, scen, c), {})[rnd] = float(r[col[c]])
        except ValueError:
            pass

paths = [p for p in ORDER if any(k[0] == p for k in value) or any(k[0] == p for k in failed)]
paths += sorted({k[0] for k in value} - set(paths))


def per_round(path, scen, c):
    return value.get((path, scen, c), {})


def combine(a, b, op):
    """Per-round op(a, b) over the rounds where both exist."""
    out = {k: op(a[k], b[k]) for k in a if k in b}
    return {k: v for k, v in out.items() if v is not None}


def num(v):
    if v >= 100000:
        return f"{v / 1000:.0f}k"
    if v >= 10000:
        return f"{v / 1000:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(d, fmt=num, missing="FAIL"):
    vals = sorted(d.values())
    if not vals:
        return missing
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(vals[0])}–{fmt(vals[-1])})"


def med(d):
    return statistics.median(d.values()) if d else None


def ratio_fmt(v):
    return f"{v:.2f}×"


def added(path):
    return combine(per_round(path, "latency", "mean_us"), per_round("direct", "latency", "mean_us"),
                   lambda a, b: a - b)


out = []
p = out.append
p(f"Run: {info.get('date', '?')}, `{info.get('command', 'bench/run.sh')}` at commit "
  f"{info.get('commit', '?')}; pinning {info.get('pin', '?')}; {info.get('rounds', '?')} "
  f"interleaved round(s), {info.get('duration', '?')}.")
p("")
p(f"Machine: {info.get('nproc', '?')} CPUs ({info.get('cpu', '?')}); "
  f"{info.get('versions', '?')}. Load average (1/5/15 min): "
  + "; ".join(info.get("load", "").split(";")) + ".")
if info.get("skipped"):
    p("")
    p(f"**SKIPPED (not installed): {info['skipped']}.**")
if paths:
    p("")
    p("Each cell: median over the rounds (range min–max). CPU: utime+stime of the path's server "
      "process and its children (for direct, the upstream) over the h2load run, per call or per "
      "message. Added latency: the path's mean one at a time minus direct's, same round.")
    p("")
    p("| path | unary req/s (c8 m16) | CPU µs/call | 1 at a time: mean µs | added latency µs | "
      "stream 100 B msg/s | CPU µs/msg | stream 4 KiB msg/s | CPU µs/msg |")
    p("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        lat_add = "—" if path == "direct" else cell(added(path), lambda v: f"{v:.0f}")
        p(f"| {LABEL.get(path, path)} | {cell(per_round(path, 'unary', 'req_s'))} | "
          f"{cell(per_round(path, 'unary', 'cpu_us'))} | "
          f"{cell(per_round(path, 'latency', 'mean_us'), lambda v: f'{v:.0f}')} | {lat_add} | "
          f"{cell(per_round(path, 'stream100', 'msg_s'))} | "
          f"{cell(per_round(path, 'stream100', 'cpu_us'))} | "
          f"{cell(per_round(path, 'stream4k', 'msg_s'))} | "
          f"{cell(per_round(path, 'stream4k', 'cpu_us'))} |")
    p("")
    p("Latency details (medians over the rounds): unary at saturation (128 in flight) and one at "
      "a time; CPU per call one at a time.")
    p("")
    p("| path | unary c8 m16 mean / p99 µs | 1 at a time mean / p50 / p99 µs | CPU µs/call, 1 at a time | "
      "stream 100 B MB/s | stream 4 KiB MB/s |")
    p("|---|---|---|---|---|---|")


    def m0(path, scen, c, scale=1.0, f="{:.0f}"):
        v = med(per_round(path, scen, c))
        return f.format(v / scale) if v is not None else "FAIL"


    for path in paths:
        p(f"| {LABEL.get(path, path)} | {m0(path, 'unary', 'mean_us')} / {m0(path, 'unary', 'p99_us')} | "
          f"{m0(path, 'latency', 'mean_us')} / {m0(path, 'latency', 'p50_us')} / "
          f"{m0(path, 'latency', 'p99_us')} | {m0(path, 'latency', 'cpu_us')} | "
          f"{m0(path, 'stream100', 'bytes_s', 1e6, '{:.1f}')} | "
          f"{m0(path, 'stream4k', 'bytes_s', 1e6, '{:.0f}')} |")

    # --- targets (issue 18), per-round ratios
    TARGETS = []


    def target(what, d, goal, ok, fmt=ratio_fmt):
        m = med(d)
        if m is None:  # a path of the ratio was not run (--paths)
            return
        verdict = "**met**" if ok(m) else "not met"
        TARGETS.append(f"| {what} | {goal} | {cell(d, fmt, 'n/a')} | {verdict} |")


    def rr(a, b, scen, c):
        return combine(per_round(a, scen, c), per_round(b, scen, c), lambda x, y: x / y if y else None)


    us = lambda v: f"{v:.2f} µs" if v < 10 else f"{v:.0f} µs"
    for sl in (TYPED, FLAGS):
        if "haproxy" in paths:
            target(f"stream 100 B msg/s, {LABEL[sl]} / HAProxy", rr(sl, "haproxy", "stream100", "msg_s"),
                   "≥ 1.0×", lambda v: v >= 1.0)
    for sl in (TYPED, FLAGS):
        target(f"stream 100 B, {LABEL[sl]} CPU per message", per_round(sl, "stream100", "cpu_us"),
               "≤ 3 µs", lambda v: v <= 3, us)
    for sl in (TYPED, FLAGS):
        target(f"stream 4 KiB msg/s, {LABEL[sl]} / nginx", rr(sl, "nginx", "stream4k", "msg_s"),
               "≥ 1.0×", lambda v: v >= 1.0)
    target(f"unary req/s, {LABEL[TYPED]} / nginx", rr(TYPED, "nginx", "unary", "req_s"), "≥ 1.5×",
           lambda v: v >= 1.5)
    target(f"unary, {LABEL[TYPED]} CPU per call", per_round(TYPED, "unary", "cpu_us"), "≤ 35 µs",
           lambda v: v <= 35, us)
    target("unary req/s, flags only / typed", rr(FLAGS, TYPED, "unary", "req_s"), "≥ 0.9×",
           lambda v: v >= 0.9)
    for sl in (TYPED, FLAGS):
        target(f"added mean latency one at a time, {LABEL[sl]}", added(sl), "≤ 100 µs",
               lambda v: v <= 100, lambda v: f"{v:.0f} µs")
    target("limits not hit / none: unary req/s", rr(LIMITS, FLAGS, "unary", "req_s"), "≥ 0.95×",
           lambda v: v >= 0.95)
    target("limits not hit / none: unary CPU per call", rr(LIMITS, FLAGS, "unary", "cpu_us"),
           "≤ 1.05×", lambda v: v <= 1.05)
    target("limits not hit / none: stream 100 B msg/s", rr(LIMITS, FLAGS, "stream100", "msg_s"),
           "≥ 0.95×", lambda v: v >= 0.95)
    target("limits not hit / none: added latency one at a time",
           combine(added(LIMITS), added(FLAGS), lambda a, b: a / b if b > 0 else None), "≤ 1.05×",
           lambda v: v <= 1.05)
    p("")
    p("Targets of issue 18 (ratios computed within each round; median (range) over the rounds; "
      "the verdict is on the median):")
    p("")
    p("| target | goal | measured | |")
    p("|---|---|---|---|")
    out.extend(TARGETS)

    others = [x for x in ("nginx", "haproxy", "caddy") if x in paths]
    p("")
    p("Sluice against each alternative (per-round ratio, median; > 1 is better for Sluice except "
      "CPU and latency, where < 1 is):")
    p("")
    p("| ratio | unary req/s | CPU/call | added latency | stream 100 B msg/s | CPU/msg | "
      "stream 4 KiB msg/s | CPU/msg |")
    p("|---|---|---|---|---|---|---|---|")
    for sl in (TYPED, FLAGS):
        for o in others:
            def r2(scen, c):
                v = med(rr(sl, o, scen, c))
                return f"{v:.2f}" if v is not None else "n/a"
            al = med(combine(added(sl), added(o), lambda a, b: a / b if b > 0 else None))
            p(f"| {LABEL[sl]} / {o} | {r2('unary', 'req_s')} | {r2('unary', 'cpu_us')} | "
              f"{'%.2f' % al if al is not None else 'n/a'} | {r2('stream100', 'msg_s')} | "
              f"{r2('stream100', 'cpu_us')} | {r2('stream4k', 'msg_s')} | {r2('stream4k', 'cpu_us')} |")

RELAY = "sluice-w2-typed-relay"
if rows and RELAY in paths and TYPED in paths:
    p("")
    p("A TCP relay in front of Sluice typed (the floor of a frame guard: one more copy of every "
      "byte; CPU is Sluice's plus the relay's), relay / without, per-round ratio, median (range):")
    p("")
    p("| unary req/s | CPU/call | 1 at a time mean | stream 100 B msg/s | CPU/msg | "
      "stream 4 KiB msg/s | CPU/msg |")
    p("|---|---|---|---|---|---|---|")
    cells = [cell(rr(RELAY, TYPED, scen, c), ratio_fmt, "n/a")
             for scen, c in (("unary", "req_s"), ("unary", "cpu_us"), ("latency", "mean_us"),
                             ("stream100", "msg_s"), ("stream100", "cpu_us"),
                             ("stream4k", "msg_s"), ("stream4k", "cpu_us"))]
    p("| " + " | ".join(cells) + " |")

if instr:
    p("")
    p(f"Instructions and calls counted under callgrind ({info.get('callgrind', '')}): the run's "
      "count minus a base run's (start-up, warm-up, shutdown) over its calls or messages; "
      "batches are calls of grpc_call_start_batch (both of Sluice's sides), sendmsg and recvmsg "
      "the socket system calls:")
    p("")
    p("| Sluice | scenario | Ir | gRPC batches | sendmsg | recvmsg |")
    p("|---|---|---|---|---|---|")
    per = {"unary": "per unary call", "stream100": "per 100 B stream message",
           "stream4k": "per 4 KiB stream message"}
    cg_paths = {k[0] for k in instr}
    for path in [x for x in ORDER if x in cg_paths] + sorted(cg_paths - set(ORDER)):
        for kind in ("unary", "stream100", "stream4k"):
            if (path, kind, "ir") not in instr:
                continue
            def f(what, fmt):
                v = instr.get((path, kind, what))
                return fmt.format(v) if v is not None else "n/a"
            p(f"| {LABEL.get(path, path)} | {per[kind]} | {f('ir', '{:,.0f}')} | "
              f"{f('batches', '{:.2f}')} | {f('sendmsg', '{:.2f}')} | {f('recvmsg', '{:.2f}')} |")

    # The cost of limits configured but not hit, without the noise.
    if (LIMITS, "unary", "ir") in instr and (FLAGS, "unary", "ir") in instr:
        parts = []
        for kind, what in (("unary", "call"), ("stream100", "100 B message")):
            a, b = instr.get((LIMITS, kind, "ir")), instr.get((FLAGS, kind, "ir"))
            if a and b:
                parts.append(f"{a / b:.3f}× per {what} ({a - b:+,.0f} Ir)")
        p("")
        p("Limits not hit / none, instructions (target ≤ 1.05×): " + ", ".join(parts) + ".")

if failed:
    p("")
    p("Failed checks (left out above): "
      + ", ".join(f"{a}/{b}" for a, b in sorted(failed)) + ".")
print("\n".join(out))
