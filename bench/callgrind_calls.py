#!/usr/bin/env python3
"""How many times functions were called in a callgrind profile.

Usage: bench/callgrind_calls.py FILE NAME...
Prints one count per NAME (in order, tab-separated): the sum of the
`calls=` lines under every `cfn=` whose function name is exactly NAME
(callgrind's name compression, `cfn=(id) name` then `cfn=(id)`, resolved).
bench/run.sh --callgrind uses it for gRPC batches (grpc_call_start_batch)
and system calls (sendmsg, recvmsg) per call and per message.
"""

import re
import sys

path, names = sys.argv[1], sys.argv[2:]
counts = dict.fromkeys(names, 0)
ids = {}
current = None
# Function ids are shared by fn= and cfn= lines: a name may be given first
# in either.
named = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")
with open(path, errors="replace") as f:
    for line in f:
        if line.startswith(("fn=", "cfn=")):
            m = named.match(line.rstrip("\n"))
            name = line.split("=", 1)[1].rstrip("\n")
            if m:
                if m.group(2) is not None:
                    ids[m.group(1)] = m.group(2)
                name = ids.get(m.group(1))
            current = name if line.startswith("cfn=") else None
        elif line.startswith("calls=") and current in counts:
            counts[current] += int(line[6:].split()[0])
print("\t".join(str(counts[n]) for n in names))
