"""Runs the real sluice the way each deploy/k8s rendering would: the sluice
container's args verbatim (after the image's ENTRYPOINT), its ConfigMap
laid out as the kubelet mounts one (`..data` symlink), plus only
--listen/--admin/--metrics/--health=127.0.0.1:0 (the pod's fixed ports
could be taken here), --upstream (demo_upstream on port 0 stands in for
the app) and --ready_file. Health must be SERVING on the health port (the
probes') and the admin port alike, the admin API must not answer on the
health port, a call must pass the data port, a ConfigMap update (symlink
swap) must reload the config, and SIGTERM must end it with 0. Also:
`sluice --check` accepts every config in deploy/. Run by
//tests/deploy:sidecar_test."""

import glob
import os
import subprocess
import time
import unittest

import deploy_lib as lib
import grpc
import harness
from deploy_lib import ROOT, Dockerfile
from grpc.health.v1 import health_pb2, health_pb2_grpc
from grpc.testing import empty_pb2, test_pb2_grpc
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def kubelet_mount(directory, data, version):
    """Lays out a ConfigMap volume as the kubelet does: files in a
    timestamped folder, `..data` pointing at it, each key a symlink through
    `..data`. Called again, swaps `..data` atomically (a ConfigMap update)."""
    os.makedirs(directory, exist_ok=True)
    stamp = os.path.join(directory, f"..{version}")
    os.makedirs(stamp)
    for key, text in data.items():
        with open(os.path.join(stamp, key), "w") as f:
            f.write(text)
    tmp = os.path.join(directory, "..data_tmp")
    os.symlink(os.path.basename(stamp), tmp)
    os.rename(tmp, os.path.join(directory, "..data"))
    for key in data:
        link = os.path.join(directory, key)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", key), link)


def sluice_argv(objs, mount_dir):
    """The container's command line, with the image's binary and mount
    paths mapped to this machine."""
    pod, c = lib.sluice_container(objs)
    df = Dockerfile(lib.DOCKERFILE)
    command = c.get("command") or Dockerfile.exec_form(df.get(len(df.stages) - 1, "ENTRYPOINT")[0])
    args = c.get("args") or Dockerfile.exec_form(df.get(len(df.stages) - 1, "CMD")[0])
    assert command == ["/usr/local/bin/sluice"], command
    (mount,) = [m for m in c["volumeMounts"]
                if any(a.split("=", 1)[-1].startswith(m["mountPath"] + "/") for a in args)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap"
             and o["metadata"]["name"] == volume["configMap"]["name"]]
    args = [a.replace(mount["mountPath"] + "/", mount_dir + "/") for a in args]
    return [harness.SLUICE] + args, cm["data"]


class SidecarTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()

    @classmethod
    def tearDownClass(cls):
        cls.upstream.stop()

    def test_check_accepts_every_config_in_deploy(self):
        # The Sluice configs: the examples and what the ConfigMaps hold.
        files = glob.glob(os.path.join(ROOT, "deploy", "examples", "*.yaml"))
        self.assertIn(os.path.join(lib.K8S, "base"), lib.kustomizations())
        for d in lib.kustomizations():
            for o in lib.render(d):
                if o["kind"] == "ConfigMap":
                    for key, text in o["data"].items():
                        path = os.path.join(harness.TMP, f"{os.path.basename(d)}-{key}")
                        with open(path, "w") as f:
                            f.write(text)
                        files.append(path)
        self.assertGreaterEqual(len(files), 4, files)
        for f in files:
            r = subprocess.run([harness.SLUICE, f"--config={f}", "--check"],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, f"{f}:\n{r.stdout}{r.stderr}")


def _run_variant(self, directory):
    mount = os.path.join(harness.TMP, f"mount-{time.monotonic_ns()}")
    argv, data = sluice_argv(lib.render(directory), mount)
    kubelet_mount(mount, data, "v1")
    ready = os.path.join(harness.TMP, f"ready-{time.monotonic_ns()}.json")
    proc = harness.Proc("sluice", argv + [
        "--listen=127.0.0.1:0", "--admin=127.0.0.1:0", "--metrics=127.0.0.1:0",
        "--health=127.0.0.1:0",
        f"--upstream={self.upstream.address}", f"--ready_file={ready}"], ready)
    try:
        # The config sets listeners.health (manifests_test: the probes' port).
        self.assertIn("health", proc.info, "no health listener in the ready file")
        with harness.channel(proc.info["admin"]) as admin_ch, \
                harness.channel(proc.info["health"]) as health_ch, \
                harness.channel(proc.info["data"]) as data_ch:
            for ch in (health_ch, admin_ch):
                health = health_pb2_grpc.HealthStub(ch)
                for service in ("", "app", "liveness"):  # the probes' services
                    harness.wait_until(
                        lambda: health.Check(health_pb2.HealthCheckRequest(service=service),
                                             timeout=5).status == SERVING,
                        timeout=15, what=f"health {service!r} SERVING")
            # The port open to the pod network has no admin API.
            with self.assertRaises(grpc.RpcError) as e:
                admin_pb2_grpc.AdminStub(health_ch).Drain(admin_pb2.DrainRequest(), timeout=5)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
            stub = test_pb2_grpc.TestServiceStub(data_ch)
            self.assertIsInstance(stub.EmptyCall(empty_pb2.Empty(), timeout=10), empty_pb2.Empty)

        # A ConfigMap update: the kubelet swaps ..data; Sluice reloads.
        proc.metrics = proc.info["metrics"]
        before = harness.metric(proc, "sluice_config_reloads_total", {"result": "ok"}) or 0
        kubelet_mount(mount, {k: v + "\n# updated\n" for k, v in data.items()}, "v2")
        harness.wait_for_metric(proc, "sluice_config_reloads_total", before + 1,
                                {"result": "ok"}, timeout=20)
    finally:
        code = proc.stop(timeout=40)
    self.assertEqual(code, 0, proc.output()[-3000:])


for _d in lib.kustomizations():
    _name = "test_args_start_sluice_" + os.path.relpath(_d, lib.K8S).replace("/", "_").replace("-", "_")
    setattr(SidecarTest, _name, lambda self, d=_d: _run_variant(self, d))


if __name__ == "__main__":
    harness.main()
