"""A local Redis Cluster for tests and benchmarks: `masters` masters with one
replica each, every node a /usr/bin/redis-server started here on a free
127.0.0.1 port (its cluster bus on port + 10000, also free), joined with
`redis-cli --cluster create --cluster-replicas 1`, a low
cluster-node-timeout so a failover takes seconds. Nodes are stopped by
their PIDs only (kill() sends SIGKILL to one)."""

import os
import signal
import socket
import subprocess
import time

import harness

REDIS_CLI = "/usr/bin/redis-cli"


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _node_port():
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = harness.closed_port()
        if port + 10000 < 65536 and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    def __init__(self, masters=3, node_timeout_ms=1000, password=None):
        self.password = password
        self.ports = []
        self.procs = {}
        self.logs = []
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        try:
            for _ in range(2 * masters):
                port = _node_port()
                log = open(os.path.join(harness.TMP, f"redis-cluster-{port}.log"), "wb")
                self.logs.append(log)
                self.procs[port] = subprocess.Popen(
                    ["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", harness.TMP,
                     "--cluster-enabled", "yes",
                     "--cluster-config-file", f"nodes-{port}-{time.monotonic_ns()}.conf",
                     "--cluster-node-timeout", str(node_timeout_ms)] + auth,
                    stdout=log, stderr=subprocess.STDOUT)
                self.ports.append(port)
            for port in self.ports:
                harness.wait_until(lambda p=port: self._answers(p), timeout=10,
                                   what=f"cluster node {port}")
            out = subprocess.run(
                [REDIS_CLI] + self._auth() + ["--cluster", "create"]
                + [f"127.0.0.1:{p}" for p in self.ports]
                + ["--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create: {out.stdout}{out.stderr}")
            harness.wait_until(self.healthy, timeout=30, interval=0.1,
                               what="cluster_state:ok and replicas in sync")
        except BaseException:
            self.stop()
            raise

    def _auth(self):
        return ["-a", self.password, "--no-auth-warning"] if self.password else []

    def _answers(self, port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64)[:1] in (b"+", b"-")
        except OSError:
            return False

    def cli(self, port, *args):
        out = subprocess.run([REDIS_CLI, "-p", str(port)] + self._auth() + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def alive(self):
        return [p for p in self.ports if self.procs[p].poll() is None]

    def healthy(self):
        """cluster_state:ok on every live node, each slot range's master
        alive, and every replica in sync with its master (a replica that
        never synced cannot be promoted)."""
        for port in self.alive():
            if "cluster_state:ok" not in self.cli(port, "CLUSTER", "INFO"):
                return False
            info = self.cli(port, "INFO", "replication")
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        masters = set(self.masters())
        return bool(masters) and masters <= set(self.alive())

    def masters(self):
        """Ports of the masters that serve slots, as a live node sees them."""
        ports = set()
        for line in self.cli(self.alive()[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) >= 9 and "master" in fields[2] and "fail" not in fields[2]:
                ports.add(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(ports)

    def master_for(self, key):
        """Port of the master serving `key` now."""
        slot = int(self.cli(self.alive()[0], "CLUSTER", "KEYSLOT", key))
        for line in self.cli(self.alive()[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) < 9 or "master" not in fields[2]:
                continue
            for r in fields[8:]:
                if r.startswith("["):
                    continue
                lo, _, hi = r.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        return None

    def seeds(self):
        return [f"127.0.0.1:{p}" for p in self.ports]

    def kill(self, port):
        """SIGKILL the node on `port` (a process this object started)."""
        proc = self.procs[port]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self):
        for port, proc in self.procs.items():
            if proc.poll() is None:
                self.kill(port)
        for log in self.logs:
            log.close()
