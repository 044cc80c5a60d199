"""Access log through the real binary: one JSON line per call, with the
fields operators need, and sensitive header values never written."""

import json
import os
import time
import unittest

import harness
import grpc
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc

SECRET = "Bearer s3cr3t-token-value"


class AccessLogTest(unittest.TestCase):
    def test_lines_for_a_good_and_a_rejected_call(self):
        upstream = harness.start_upstream()
        log_path = os.path.join(harness.TMP, "access.log")
        config = harness.write_config(f"""
access_log:
  path: "{log_path}"
  headers: [x-request-id, authorization, x-team]
  sensitive_headers: [x-team]
upstreams: [{{name: demo, target: "{upstream.address}"}}]
routes:
  - name: testing
    match: {{prefix: "/grpc.testing.TestService/"}}
    upstream: demo
""")
        sluice = harness.start_sluice(config_path=config)
        try:
            ch = harness.channel(sluice.data)
            stub = test_pb2_grpc.TestServiceStub(ch)
            md = [("authorization", SECRET), ("x-request-id", "req-1"), ("x-team", "payments")]
            stub.UnaryCall(messages_pb2.SimpleRequest(response_size=100,
                                                      payload=messages_pb2.Payload(body=b"x" * 50)),
                           metadata=md, timeout=5)
            with self.assertRaises(grpc.RpcError):
                ch.unary_unary("/no.Such/Method")(b"", metadata=md, timeout=5)
            # A call that lasts at least 100 ms (two responses 50 ms apart,
            # timed by the upstream) and at most what the client saw.
            started = time.monotonic()
            responses = list(stub.StreamingOutputCall(
                messages_pb2.StreamingOutputCallRequest(response_parameters=[
                    messages_pb2.ResponseParameters(size=1, interval_us=50000)] * 2),
                timeout=5))
            self.assertEqual(len(responses), 2)

            def lines():
                if not os.path.exists(log_path):
                    return None
                with open(log_path) as f:
                    got = [json.loads(l) for l in f if l.strip()]
                return got if len(got) >= 3 else None
            entries = harness.wait_until(lines, timeout=10, what="three access-log lines",
                                         interval=0.005)
            # Sluice logs a call when its worker sees the call end, which may
            # be after the client has its status: bound by the log line.
            logged_ms = (time.monotonic() - started) * 1000
        finally:
            sluice.stop()
            upstream.stop()
        with open(log_path) as f:
            raw = f.read()
        self.assertNotIn("s3cr3t", raw)
        self.assertNotIn("payments", raw)
        ok = next(e for e in entries if e["method"] == "/grpc.testing.TestService/UnaryCall")
        self.assertEqual(ok["grpc_status"], "OK")
        self.assertEqual(ok["route"], "testing")
        self.assertEqual(ok["upstream"], "demo")
        self.assertEqual(ok["sluice_reason"], "")
        self.assertEqual(ok["peer"], "127.0.0.1")
        self.assertEqual((ok["msgs_in"], ok["msgs_out"]), (1, 1))
        self.assertGreater(ok["bytes_in"], 50)
        self.assertGreater(ok["bytes_out"], 100)
        self.assertGreater(ok["duration_ms"], 0)
        slow = next(e for e in entries
                    if e["method"] == "/grpc.testing.TestService/StreamingOutputCall")
        self.assertEqual((slow["grpc_status"], slow["msgs_out"]), ("OK", 2))
        # Sluice saw the call start after the client sent it and end before
        # its log line was written; the upstream's two 50 ms waits are in it.
        self.assertGreaterEqual(slow["duration_ms"], 100)
        self.assertLessEqual(slow["duration_ms"], logged_ms)
        self.assertEqual(ok["headers"]["x-request-id"], "req-1")
        self.assertEqual(ok["headers"]["authorization"], "[redacted]")
        self.assertEqual(ok["headers"]["x-team"], "[redacted]")
        self.assertIn("T", ok["time"])
        bad = next(e for e in entries if e["method"] == "/no.Such/Method")
        self.assertEqual(bad["grpc_status"], "UNIMPLEMENTED")
        self.assertEqual(bad["sluice_reason"], "no_route")
        self.assertEqual(bad["route"], "")
        self.assertEqual(bad["upstream"], "")

    def test_bad_access_log_config_names_the_field(self):
        config = harness.write_config("""
access_log: {sample_rate: 2}
upstreams: [{name: demo, target: "127.0.0.1:1"}]
routes: [{name: r, match: {prefix: /}, upstream: demo}]
""")
        import subprocess
        r = subprocess.run([harness.SLUICE, f"--config={config}", "--check"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("access_log.sample_rate", r.stderr)


if __name__ == "__main__":
    harness.main()
