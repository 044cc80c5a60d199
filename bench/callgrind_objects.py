#!/usr/bin/env python3
"""Where the instructions of a call or a message go, by shared object.

Usage: bench/callgrind_objects.py BASE.callgrind RUN.callgrind UNITS [TOP]
Takes the self cost of every function (callgrind_annotate, threshold 100%)
in RUN minus the same in BASE (bench/run.sh --callgrind --out=DIR keeps
both: cg-VARIANT-base.callgrind and cg-VARIANT-SCENARIO.callgrind), divides
by UNITS (calls or messages of the run: 2000 unary calls, 10000 or 5000
stream messages) and prints the instructions per unit by object file, then
the TOP (default 25) functions.
"""

import collections
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)\s+\[(.*?)\]\s*$")


def self_costs(path):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    by_fn = collections.Counter()
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            by_fn[(m.group(3).split("/")[-1], m.group(2))] += int(m.group(1).replace(",", ""))
    return by_fn


def main():
    base, run, units = self_costs(sys.argv[1]), self_costs(sys.argv[2]), float(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 25
    per_fn = {k: (run[k] - base[k]) / units for k in set(run) | set(base)}
    per_obj = collections.Counter()
    for (obj, _), v in per_fn.items():
        per_obj[obj] += v
    total = sum(per_obj.values())
    print(f"{total:10.0f}  total per unit")
    for obj, v in per_obj.most_common():
        if abs(v) >= 1:
            print(f"{v:10.0f}  {100 * v / total:5.1f}%  {obj}")
    print()
    for (obj, fn), v in sorted(per_fn.items(), key=lambda x: -x[1])[:top]:
        print(f"{v:10.0f}  {obj:28.28s}  {fn[:100]}")


if __name__ == "__main__":
    main()
