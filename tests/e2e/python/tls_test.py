"""TLS and admin authentication through the real sluice binary.

Data port: TLS round trip, a plaintext client refused, mTLS (no client
certificate, one from the trusted CA, one from another CA), a certificate
that is optional, and a rotated server certificate served without a restart.
Upstream: TLS toward the demo upstream with a CA file and server_name, a
wrong server_name refused, and a CA file rotated in place taking effect on
reload. Admin port: the bearer token (every Admin method, Health and
reflection open, sluicectl with --token_file and SLUICE_ADMIN_TOKEN, a new
token after SIGHUP).

Certificates are made by the test with the openssl command line.
"""

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import time
import unittest

import harness
import grpc
from grpc.health.v1 import health_pb2, health_pb2_grpc
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc
from sluice.admin.v1 import admin_pb2, admin_pb2_grpc

OPENSSL = "/usr/bin/openssl"
SLUICECTL = os.path.join(harness.ROOT, "client", "sluicectl", "sluicectl")
CERTS = os.path.join(harness.TMP, "certs")
CALL_TIMEOUT = 5


def _openssl(*args):
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def make_ca(name):
    """A self-signed CA; returns (cert path, key path)."""
    cert, key = os.path.join(CERTS, f"{name}.pem"), os.path.join(CERTS, f"{name}.key")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}")
    return cert, key


def make_leaf(name, ca, cn="localhost", san="DNS:localhost,IP:127.0.0.1", directory=CERTS):
    """A certificate for `cn`/`san` signed by `ca` (cert, key); returns
    (cert path, key path) in `directory`."""
    os.makedirs(directory, exist_ok=True)
    cert, key = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
    csr, ext = os.path.join(CERTS, f"{name}.csr"), os.path.join(CERTS, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial",
             str(time.monotonic_ns()), "-out", cert, "-days", "2", "-extfile", ext)
    return cert, key


def der_sha256(pem_path):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(_read(pem_path).decode())).hexdigest()


def served_cert_sha256(address):
    """SHA-256 of the certificate a TLS server at `address` presents now
    (a new connection, no verification)."""
    host, port = address.rsplit(":", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def tls_channel(address, ca, client=None):
    """A TLS channel trusting `ca` (a cert path), presenting `client`
    ((cert, key) paths) if given. Its own subchannels, so one channel's
    failed handshake is never another's."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(ca),
        private_key=_read(client[1]) if client else None,
        certificate_chain=_read(client[0]) if client else None)
    return grpc.secure_channel(address, credentials, options=[
        ("grpc.ssl_target_name_override", "localhost"),
        ("grpc.use_local_subchannel_pool", 1)])


def plain_channel(address):
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def empty_call(channel, timeout=CALL_TIMEOUT):
    """The status code of one TestService.EmptyCall on `channel`."""
    try:
        test_pb2_grpc.TestServiceStub(channel).EmptyCall(empty_pb2.Empty(), timeout=timeout)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def start_tls_upstream(cert, key):
    ready = os.path.join(harness.TMP, f"tls-upstream-{time.monotonic_ns()}.ready.json")
    p = harness.Proc("tls-upstream", [harness.DEMO_UPSTREAM, "--listen=127.0.0.1:0",
                                      f"--ready_file={ready}", f"--tls_cert={cert}",
                                      f"--tls_key={key}"], ready)
    p.address = p.info["address"]
    return p


def replace_file(path, data):
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def reload(sluice, result="ok"):
    before = harness.metric(sluice, "sluice_config_reloads_total", {"result": result}) or 0
    sluice.signal(signal.SIGHUP)
    harness.wait_for_metric(sluice, "sluice_config_reloads_total", before + 1,
                            {"result": result})


def config(upstream, extra="", upstream_tls=""):
    return harness.write_config(f"""
upstreams:
  - name: demo
    target: "{upstream}"
{upstream_tls}
routes: [{{name: all, match: {{prefix: /}}, upstream: demo}}]
{extra}
""")


class Certificates:
    ca = client_ca = other_ca = server = client = stranger = None


def setUpModule():
    os.makedirs(CERTS, exist_ok=True)
    Certificates.ca = make_ca("ca")
    Certificates.client_ca = make_ca("client-ca")
    Certificates.other_ca = make_ca("other-ca")
    Certificates.server = make_leaf("server", Certificates.ca)
    Certificates.client = make_leaf("client", Certificates.client_ca, cn="client",
                                    san="DNS:client")
    Certificates.stranger = make_leaf("stranger", Certificates.other_ca, cn="client",
                                      san="DNS:client")


class DataPortTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()

    @classmethod
    def tearDownClass(cls):
        cls.upstream.stop()

    def start(self, tls):
        sluice = harness.start_sluice(config(self.upstream.address, extra=tls))
        self.addCleanup(sluice.stop)
        return sluice

    def assert_call(self, channel, code):
        self.addCleanup(channel.close)
        self.assertEqual(empty_call(channel), code)

    def test_tls_round_trip_and_plaintext_refused(self):
        cert, key = Certificates.server
        sluice = self.start(f"tls: {{cert_file: {cert}, key_file: {key}}}")
        self.assert_call(tls_channel(sluice.data, Certificates.ca[0]), grpc.StatusCode.OK)
        # A streaming call through the TLS port as well.
        channel = tls_channel(sluice.data, Certificates.ca[0])
        self.addCleanup(channel.close)
        stub = test_pb2_grpc.TestServiceStub(channel)
        request = messages_pb2.StreamingOutputCallRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=10)] * 3)
        self.assertEqual(len(list(stub.StreamingOutputCall(request, timeout=CALL_TIMEOUT))), 3)
        # Plaintext against the TLS port, and a client that trusts another CA.
        self.assert_call(plain_channel(sluice.data), grpc.StatusCode.UNAVAILABLE)
        self.assert_call(tls_channel(sluice.data, Certificates.other_ca[0]),
                         grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(served_cert_sha256(sluice.data), der_sha256(cert))

    def test_mtls_requires_a_client_certificate_from_the_ca(self):
        cert, key = Certificates.server
        sluice = self.start(f"tls: {{cert_file: {cert}, key_file: {key}, "
                            f"client_ca_file: {Certificates.client_ca[0]}}}")
        ca = Certificates.ca[0]
        self.assert_call(tls_channel(sluice.data, ca, Certificates.client), grpc.StatusCode.OK)
        self.assert_call(tls_channel(sluice.data, ca), grpc.StatusCode.UNAVAILABLE)
        self.assert_call(tls_channel(sluice.data, ca, Certificates.stranger),
                         grpc.StatusCode.UNAVAILABLE)
        self.assert_call(plain_channel(sluice.data), grpc.StatusCode.UNAVAILABLE)

    def test_optional_client_certificate_is_still_verified(self):
        cert, key = Certificates.server
        sluice = self.start(f"tls: {{cert_file: {cert}, key_file: {key}, "
                            f"client_ca_file: {Certificates.client_ca[0]}, "
                            f"require_client_cert: false}}")
        ca = Certificates.ca[0]
        self.assert_call(tls_channel(sluice.data, ca), grpc.StatusCode.OK)
        self.assert_call(tls_channel(sluice.data, ca, Certificates.client), grpc.StatusCode.OK)
        self.assert_call(tls_channel(sluice.data, ca, Certificates.stranger),
                         grpc.StatusCode.UNAVAILABLE)

    def test_rotated_certificate_is_served_without_restart(self):
        # The files sit behind a directory symlink swapped atomically, as a
        # Kubernetes Secret volume does, so key and certificate change
        # together.
        base = os.path.join(harness.TMP, f"rotate-{time.monotonic_ns()}")
        first = make_leaf("server", Certificates.ca, directory=os.path.join(base, "v1"))
        live = os.path.join(base, "live")
        os.symlink("v1", live)
        sluice = self.start(f"tls: {{cert_file: {live}/server.pem, "
                            f"key_file: {live}/server.key, refresh_interval: 1s}}")
        self.assertEqual(served_cert_sha256(sluice.data), der_sha256(first[0]))

        # Signed by another CA: a client trusting only that CA gets through
        # only once the new certificate is served.
        second = make_leaf("server", Certificates.other_ca, directory=os.path.join(base, "v2"))
        os.symlink("v2", live + ".new")
        os.replace(live + ".new", live)
        harness.wait_until(lambda: served_cert_sha256(sluice.data) == der_sha256(second[0]),
                           timeout=15, what="the rotated certificate served")
        self.assert_call(tls_channel(sluice.data, Certificates.other_ca[0]), grpc.StatusCode.OK)
        self.assert_call(tls_channel(sluice.data, Certificates.ca[0]),
                         grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(sluice.popen.poll(), None)

    def test_changed_tls_paths_warn_that_a_restart_is_needed(self):
        cert, key = Certificates.server
        path = config(self.upstream.address,
                      extra=f"tls: {{cert_file: {cert}, key_file: {key}}}")
        sluice = harness.start_sluice(path)
        self.addCleanup(sluice.stop)
        with open(path, "a") as f:
            f.write("  # comment only\n")
        reload(sluice)
        self.assertNotIn("only at restart", sluice.output())
        replace_file(path, _read(path).replace(b"tls: {", b"tls: {refresh_interval: 5s, "))
        reload(sluice)
        self.assertIn("tls settings take effect only at restart", sluice.output())
        self.assert_call(tls_channel(sluice.data, Certificates.ca[0]), grpc.StatusCode.OK)


class UpstreamTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = start_tls_upstream(*Certificates.server)

    @classmethod
    def tearDownClass(cls):
        cls.upstream.stop()

    def start(self, tls):
        sluice = harness.start_sluice(config(self.upstream.address, upstream_tls=tls))
        self.addCleanup(sluice.stop)
        return sluice

    def call_through(self, sluice, timeout=CALL_TIMEOUT):
        with plain_channel(sluice.data) as channel:
            return empty_call(channel, timeout)

    def test_tls_to_the_upstream_with_ca_and_server_name(self):
        # The target is 127.0.0.1:PORT; the name checked is server_name.
        sluice = self.start(f"    tls: {{enabled: true, ca_file: {Certificates.ca[0]}, "
                            f"server_name: localhost}}")
        self.assertEqual(self.call_through(sluice), grpc.StatusCode.OK)

    def test_wrong_server_name_or_ca_is_refused(self):
        sluice = self.start(f"    tls: {{enabled: true, ca_file: {Certificates.ca[0]}, "
                            f"server_name: not-the-upstream.example}}")
        self.assertEqual(self.call_through(sluice, timeout=2), grpc.StatusCode.UNAVAILABLE)
        sluice = self.start(f"    tls: {{enabled: true, ca_file: {Certificates.other_ca[0]}, "
                            f"server_name: localhost}}")
        self.assertEqual(self.call_through(sluice, timeout=2), grpc.StatusCode.UNAVAILABLE)

    def test_plaintext_to_a_tls_upstream_fails(self):
        sluice = self.start("")
        self.assertEqual(self.call_through(sluice, timeout=2), grpc.StatusCode.UNAVAILABLE)

    def test_ca_file_rotated_in_place_takes_effect_on_reload(self):
        ca_file = os.path.join(harness.TMP, f"upstream-ca-{time.monotonic_ns()}.pem")
        replace_file(ca_file, _read(Certificates.other_ca[0]))   # the wrong CA
        sluice = self.start(f"    tls: {{enabled: true, ca_file: {ca_file}, "
                            f"server_name: localhost}}")
        self.assertEqual(self.call_through(sluice, timeout=2), grpc.StatusCode.UNAVAILABLE)
        # Same config, same path, new contents: the reload builds new
        # channels with the new CA (gRPC's own watcher would take a minute).
        replace_file(ca_file, _read(Certificates.ca[0]))
        reload(sluice)
        harness.wait_until(lambda: self.call_through(sluice, timeout=2) == grpc.StatusCode.OK,
                           timeout=5, what="calls OK with the rotated CA")

    def test_unreadable_ca_file_fails_the_reload(self):
        ca_file = os.path.join(harness.TMP, f"upstream-ca-{time.monotonic_ns()}.pem")
        replace_file(ca_file, _read(Certificates.ca[0]))
        sluice = self.start(f"    tls: {{enabled: true, ca_file: {ca_file}, "
                            f"server_name: localhost}}")
        self.assertEqual(self.call_through(sluice), grpc.StatusCode.OK)
        os.remove(ca_file)
        reload(sluice, result="failed")
        self.assertIn(f'upstreams[0].tls.ca_file: cannot read upstreams[0].tls.ca_file '
                      f'file "{ca_file}"', sluice.output())
        self.assertEqual(self.call_through(sluice), grpc.StatusCode.OK)


class AdminTokenTest(unittest.TestCase):
    TOKEN = "s3cret-token-1"

    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.token_file = os.path.join(harness.TMP, f"admin-token-{time.monotonic_ns()}")
        replace_file(cls.token_file, (cls.TOKEN + "\n").encode())
        cls.sluice = harness.start_sluice(config(
            cls.upstream.address, extra=f"admin: {{bearer_token_file: {cls.token_file}}}"))
        cls.channel = plain_channel(cls.sluice.admin)
        cls.admin = admin_pb2_grpc.AdminStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.sluice.stop()
        cls.upstream.stop()

    def code(self, rpc, request, token=None, header=None):
        metadata = []
        if token is not None:
            metadata.append(("authorization", f"Bearer {token}"))
        if header is not None:
            metadata.append(("authorization", header))
        try:
            rpc(request, metadata=metadata, timeout=CALL_TIMEOUT)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()

    def sluicectl(self, *args, env=None):
        full_env = {k: v for k, v in os.environ.items() if k != "SLUICE_ADMIN_TOKEN"}
        full_env.update(env or {})
        return subprocess.run([SLUICECTL, f"--admin={self.sluice.admin}", *args],
                              capture_output=True, text=True, timeout=60, env=full_env)

    def test_every_admin_method_needs_the_token(self):
        calls = [(self.admin.GetStatus, admin_pb2.GetStatusRequest()),
                 (self.admin.GetConfig, admin_pb2.GetConfigRequest()),
                 (self.admin.ListLimits, admin_pb2.ListLimitsRequest()),
                 (self.admin.SetLimit, admin_pb2.SetLimitRequest(route="x", name="y")),
                 (self.admin.Drain, admin_pb2.DrainRequest())]
        for rpc, request in calls:
            code, details = self.code(rpc, request)
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, rpc)
            self.assertIn("authorization: Bearer <token>", details)
            self.assertEqual(self.code(rpc, request, token="wrong")[0],
                             grpc.StatusCode.UNAUTHENTICATED, rpc)
            self.assertEqual(self.code(rpc, request, token=self.TOKEN + "x")[0],
                             grpc.StatusCode.UNAUTHENTICATED, rpc)
            same_length = self.TOKEN[:-1] + chr(ord(self.TOKEN[-1]) + 1)
            self.assertEqual(self.code(rpc, request, token=same_length)[0],
                             grpc.StatusCode.UNAUTHENTICATED, rpc)
            self.assertEqual(self.code(rpc, request, header=self.TOKEN)[0],
                             grpc.StatusCode.UNAUTHENTICATED, rpc)
        # With the token (Drain excepted: it would end the shared daemon).
        for rpc, request in calls[:3]:
            self.assertEqual(self.code(rpc, request, token=self.TOKEN)[0], grpc.StatusCode.OK)
        self.assertEqual(self.code(self.admin.SetLimit, calls[3][1], token=self.TOKEN)[0],
                         grpc.StatusCode.NOT_FOUND)
        self.assertEqual(self.code(self.admin.GetStatus, admin_pb2.GetStatusRequest(),
                                   header=f"bearer {self.TOKEN}")[0], grpc.StatusCode.OK)
        # Nothing drained: the data port still serves.
        with plain_channel(self.sluice.data) as channel:
            self.assertEqual(empty_call(channel), grpc.StatusCode.OK)

    def test_health_and_reflection_stay_open(self):
        health = health_pb2_grpc.HealthStub(self.channel)
        self.assertEqual(health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT).status,
                         health_pb2.HealthCheckResponse.SERVING)
        # grpc.reflection.v1alpha ServerReflectionRequest{list_services: ""}.
        reflect = self.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        responses = list(reflect(iter([b"\x3a\x00"]), timeout=CALL_TIMEOUT))
        self.assertEqual(len(responses), 1)
        self.assertIn(b"sluice.admin.v1.Admin", responses[0])

    def test_sluicectl_token_file_and_environment(self):
        r = self.sluicectl("status")
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAUTHENTICATED", r.stderr)
        self.assertIn("no token was sent", r.stderr)
        self.assertIn("--token_file", r.stderr)

        r = self.sluicectl(f"--token_file={self.token_file}", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("config hash", r.stdout)

        r = self.sluicectl("status", env={"SLUICE_ADMIN_TOKEN": self.TOKEN})
        self.assertEqual(r.returncode, 0, r.stderr)

        wrong = os.path.join(harness.TMP, "wrong-token")
        replace_file(wrong, b"nope\n")
        r = self.sluicectl(f"--token_file={wrong}", "status")
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAUTHENTICATED", r.stderr)
        self.assertIn(f'the token from --token_file "{wrong}" is not the daemon', r.stderr)

        r = self.sluicectl("--token_file=/nonexistent/token", "status")
        self.assertEqual(r.returncode, 2)
        self.assertIn('cannot read --token_file file "/nonexistent/token"', r.stderr)

    def test_reload_takes_the_new_token(self):
        new_token = "s3cret-token-2"
        try:
            replace_file(self.token_file, (new_token + "\n").encode())
            reload(self.sluice)
            self.assertEqual(self.code(self.admin.GetStatus, admin_pb2.GetStatusRequest(),
                                       token=self.TOKEN)[0], grpc.StatusCode.UNAUTHENTICATED)
            self.assertEqual(self.code(self.admin.GetStatus, admin_pb2.GetStatusRequest(),
                                       token=new_token)[0], grpc.StatusCode.OK)
            # An empty token file is a config error: the old token stays.
            replace_file(self.token_file, b"\n")
            reload(self.sluice, result="failed")
            self.assertEqual(self.code(self.admin.GetStatus, admin_pb2.GetStatusRequest(),
                                       token=new_token)[0], grpc.StatusCode.OK)
        finally:
            replace_file(self.token_file, (self.TOKEN + "\n").encode())
            reload(self.sluice)


if __name__ == "__main__":
    harness.main()
