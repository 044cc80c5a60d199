#!/usr/bin/env python3
"""The request bodies the benchmarks send, as gRPC frames (flag byte,
4-byte big-endian length, message), written into DIR:

  unary.bin      grpc.testing.SimpleRequest{response_size: 100,
                 payload: {body: 100 zero bytes}}
  stream100.bin  sluice.demo.v1.SubscribeRequest{count: 1000,
                 interval_ms: 0, payload_bytes: 100}
  stream4k.bin   the same with payload_bytes: 4096

Usage: bench/request_bodies.py DIR (bench/run.sh, bench/stream_window.sh)
"""

import struct
import sys


def frame(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def main():
    work = sys.argv[1]
    # SimpleRequest: response_size (field 2), payload (3) = Payload{body (2)}
    payload = b"\x12\x64" + b"\x00" * 100
    unary = b"\x10\x64" + b"\x1a" + bytes([len(payload)]) + payload
    with open(f"{work}/unary.bin", "wb") as f:
        f.write(frame(unary))
    # SubscribeRequest: count (1), interval_ms (2) left 0, payload_bytes (3)
    for name, size in (("stream100", 100), ("stream4k", 4096)):
        with open(f"{work}/{name}.bin", "wb") as f:
            f.write(frame(b"\x08" + varint(1000) + b"\x18" + varint(size)))


if __name__ == "__main__":
    main()
