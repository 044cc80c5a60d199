"""Reloading the real daemon (SIGHUP):
- restart-only settings (listeners, workers, tls...) changed in the file
  are named in the warning and stay as they run; `GetStatus`, `GetConfig`
  and `sluice_config_info` report the config in effect, whose hash is the
  one `--check` gives a file holding exactly that;
- `--check` and a reload report schema errors and semantic errors
  together (exit 2 for `--check`; the old config kept on reload)."""

import json
import os
import signal
import socket
import subprocess
import time
import unittest

import harness
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc


def config_text(upstream, admin, workers, drain="30s", extra_route=""):
    return f"""
listeners: {{data: "127.0.0.1:0", admin: "{admin}", metrics: "127.0.0.1:0"}}
workers: {workers}
drain_timeout: {drain}
upstreams: [{{name: demo, target: "{upstream}"}}]
routes:
{extra_route}
  - {{name: all, match: {{prefix: /}}, upstream: demo}}
"""


EXTRA_ROUTE = "  - {name: extra, match: {prefix: /extra.v1.Service/}, upstream: demo}"


def start_from_file(path):
    """sluice with the listeners of the file (no override flags), reloaded
    only by SIGHUP."""
    ready = os.path.join(harness.TMP, f"reload-{time.monotonic_ns()}.ready.json")
    p = harness.Proc("sluice", [harness.SLUICE, f"--config={path}", f"--ready_file={ready}",
                                "--watch_config=false"], ready)
    p.data, p.admin, p.metrics = p.info["data"], p.info["admin"], p.info["metrics"]
    return p


def rewrite(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def reload(sluice, result):
    before = harness.metric(sluice, "sluice_config_reloads_total", {"result": result}) or 0
    sluice.signal(signal.SIGHUP)
    harness.wait_for_metric(sluice, "sluice_config_reloads_total", before + 1,
                            {"result": result})


def check(path):
    return subprocess.run([harness.SLUICE, f"--config={path}", "--check"],
                          capture_output=True, text=True, timeout=30)


def accepts(address):
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, int(port))) == 0


class RestartOnlySettingsTest(unittest.TestCase):
    def test_changed_listener_and_workers_stay_as_they_run(self):
        upstream = harness.start_upstream()
        self.addCleanup(upstream.stop)
        old_admin = f"127.0.0.1:{harness.closed_port()}"
        new_admin = f"127.0.0.1:{harness.closed_port()}"
        path = harness.write_config(config_text(upstream.address, old_admin, 2))
        sluice = start_from_file(path)
        self.addCleanup(sluice.stop)
        self.assertEqual(sluice.admin, old_admin)
        ch = harness.channel(old_admin)
        self.addCleanup(ch.close)
        admin = admin_pb2_grpc.AdminStub(ch)
        before = admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
        self.assertEqual(before.workers, 2)

        # The new admin address and workers need a restart; the new route and
        # drain_timeout do not.
        rewrite(path, config_text(upstream.address, new_admin, 3, drain="5s",
                                  extra_route=EXTRA_ROUTE))
        reload(sluice, "ok")

        warnings = [line for line in sluice.output().splitlines()
                    if "config reload:" in line and "only at restart" in line]
        self.assertEqual(len(warnings), 1, sluice.output())
        self.assertIn(f'listeners.admin ("{old_admin}" -> "{new_admin}")', warnings[0])
        self.assertIn("workers (2 -> 3)", warnings[0])

        # Still answering on the old address, nothing on the new one.
        status = admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
        self.assertEqual(status.admin_address, old_admin)
        self.assertEqual(status.workers, 2)
        self.assertFalse(accepts(new_admin))
        self.assertNotEqual(status.config_hash, before.config_hash)  # new route

        config = admin.GetConfig(admin_pb2.GetConfigRequest(), timeout=5)
        effective = json.loads(config.config_json)
        self.assertEqual(effective["listeners"]["admin"], old_admin)
        self.assertEqual(effective["workers"], 2)
        self.assertEqual(effective["drain_timeout"], "5s")
        self.assertEqual([r["name"] for r in effective["routes"]], ["extra", "all"])
        self.assertEqual(config.config_hash, status.config_hash)

        self.assertEqual(harness.metric(sluice, "sluice_config_info",
                                        {"hash": status.config_hash}), 1)
        self.assertIsNone(harness.metric(sluice, "sluice_config_info",
                                         {"hash": before.config_hash}))

        # The hash is that of the config in effect: a file holding exactly
        # it checks to the same hash.
        in_effect = harness.write_config(config_text(upstream.address, old_admin, 2,
                                                     drain="5s", extra_route=EXTRA_ROUTE))
        r = check(in_effect)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"(hash {status.config_hash})", r.stdout)


SCHEMA_AND_SEMANTIC = """
wokers: 2
upstreams: [{name: demo, target: "UPSTREAM"}]
routes:
  - {name: all, match: {prefix: /}, upstream: nowhere}
"""


def both_errors(path):
    return [f'{path}: wokers (line 2): unknown field "wokers" (did you mean "workers"?)',
            f'{path}: routes[0].upstream: unknown upstream "nowhere"']


class ErrorsTogetherTest(unittest.TestCase):
    def test_check_reports_schema_and_semantic_errors_together(self):
        path = harness.write_config(SCHEMA_AND_SEMANTIC.replace("UPSTREAM", "127.0.0.1:1"))
        r = check(path)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.splitlines(), both_errors(path))

    def test_reload_reports_schema_and_semantic_errors_together(self):
        upstream = harness.start_upstream()
        self.addCleanup(upstream.stop)
        admin_address = f"127.0.0.1:{harness.closed_port()}"
        path = harness.write_config(config_text(upstream.address, admin_address, 1))
        sluice = start_from_file(path)
        self.addCleanup(sluice.stop)
        ch = harness.channel(sluice.admin)
        self.addCleanup(ch.close)
        admin = admin_pb2_grpc.AdminStub(ch)
        before = admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5).config_hash

        rewrite(path, SCHEMA_AND_SEMANTIC.replace("UPSTREAM", upstream.address))
        reload(sluice, "failed")
        log = sluice.output()
        for line in both_errors(path):
            self.assertIn(line, log)
        self.assertEqual(admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5).config_hash,
                         before)


if __name__ == "__main__":
    harness.main()
