"""A tiny client for `make run`: a few calls through Sluice, printed.

usage: /usr/bin/python3 tests/e2e/python/demo_client.py [HOST:PORT]
"""

import sys

import harness  # generates the Python stubs
import grpc
from grpc.testing import messages_pb2, test_pb2_grpc
from sluice.demo.v1 import ticker_pb2, ticker_pb2_grpc


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
    ch = grpc.insecure_channel(target)
    test = test_pb2_grpc.TestServiceStub(ch)
    resp, call = test.UnaryCall.with_call(
        messages_pb2.SimpleRequest(response_size=10), timeout=5,
        metadata=[("x-grpc-test-echo-initial", "hello")])
    print(f"UnaryCall: {len(resp.payload.body)} bytes, echoed initial metadata "
          f"{dict(call.initial_metadata()).get('x-grpc-test-echo-initial')!r}")
    ticker = ticker_pb2_grpc.TickerStub(ch)
    for tick in ticker.Subscribe(ticker_pb2.SubscribeRequest(count=3, interval_ms=100), timeout=5):
        print(f"Tick {tick.seq} at {tick.unix_micros}")
    try:
        ch.unary_unary("/no.such.Service/Method")(b"", timeout=5)
    except grpc.RpcError as e:
        reason = harness.trailer(e.trailing_metadata(), "sluice-reason")
        said = (f"Sluice said no (sluice-reason: {reason})" if reason else
                "the upstream answered (no sluice-reason trailer)")
        print(f"/no.such.Service/Method: {e.code().name}: {said}")


if __name__ == "__main__":
    main()
