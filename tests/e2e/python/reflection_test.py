"""Server reflection through Sluice's data port, as grpcurl uses it: the
real sluice binary in front of the real demo_upstream, and a reflection
client of our own that knows no demo .proto.

Like grpcurl, the client brings only the reflection protocol's messages
(compiled here from Debian's grpc-proto with protoc --descriptor_set_out).
On one ServerReflectionInfo stream it lists the services, asks
file_containing_symbol for each, builds message types from the returned
FileDescriptorProtos (and their imports), and calls
grpc.testing.TestService/UnaryCall and the sluice.demo.v1.Ticker stream with
those types alone. Every call has a deadline.
"""

import os
import queue
import subprocess
import unittest

import harness
import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

TIMEOUT = 10  # seconds: the deadline of every call
REFLECTION_PROTO = "grpc/reflection/v1alpha/reflection.proto"
REFLECTION_INFO = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# grpcurl tries v1 first and takes UNIMPLEMENTED as "use v1alpha".
REFLECTION_INFO_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
DEMO_SERVICES = ("grpc.testing.TestService", "sluice.demo.v1.Ticker")


def message_class(descriptor):
    """The Python class of a message descriptor from any pool."""
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


def reflection_types():
    """(ServerReflectionRequest, ServerReflectionResponse) classes, in a
    pool of their own, from Debian's grpc-proto."""
    out = os.path.join(harness.TMP, "reflection-descriptors.pb")
    subprocess.run(["/usr/bin/protoc", "-I/usr/share/grpc-proto", "--include_imports",
                    f"--descriptor_set_out={out}", REFLECTION_PROTO],
                   check=True, timeout=60)
    with open(out, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return (message_class(pool.FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionRequest")),
            message_class(pool.FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionResponse")))


Request, Response = reflection_types()


class ReflectionSession:
    """One ServerReflectionInfo stream, one request answered at a time, as
    grpcurl's client does. Keeps every FileDescriptorProto it receives: a
    server need not resend files it sent earlier on the stream."""

    def __init__(self, channel):
        self._requests = queue.Queue()

        def requests():
            while True:
                request = self._requests.get()
                if request is None:
                    return
                yield request

        self._call = channel.stream_stream(
            REFLECTION_INFO, request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString)(requests(), timeout=TIMEOUT)
        self.files = {}  # name -> FileDescriptorProto

    def ask(self, **request):
        self._requests.put(Request(**request))
        response = next(self._call)
        if response.WhichOneof("message_response") == "file_descriptor_response":
            for raw in response.file_descriptor_response.file_descriptor_proto:
                file = descriptor_pb2.FileDescriptorProto.FromString(raw)
                self.files.setdefault(file.name, file)
        return response

    def list_services(self):
        response = self.ask(list_services="")
        assert response.WhichOneof("message_response") == "list_services_response", response
        return [s.name for s in response.list_services_response.service]

    def describe(self, symbol):
        """A DescriptorPool holding the file of `symbol` and its imports,
        built only from what reflection returned."""
        response = self.ask(file_containing_symbol=symbol)
        which = response.WhichOneof("message_response")
        if which != "file_descriptor_response":
            raise AssertionError(f"{symbol}: {which}: {response}")
        names = [descriptor_pb2.FileDescriptorProto.FromString(raw).name
                 for raw in response.file_descriptor_response.file_descriptor_proto]
        pool, added = descriptor_pool.DescriptorPool(), set()

        def add(name):  # imports first
            if name in added:
                return
            if name not in self.files:
                raise AssertionError(f"{symbol}: reflection never sent {name}")
            for dependency in self.files[name].dependency:
                add(dependency)
            pool.Add(self.files[name])
            added.add(name)
        for name in names:
            add(name)
        return pool

    def close(self):
        """Half-closes; the stream must end with OK and no more answers."""
        self._requests.put(None)
        rest = list(self._call)
        assert not rest, rest
        assert self._call.code() == grpc.StatusCode.OK, self._call.details()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self._call.cancel()


class ReflectionThroughSluiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = harness.start_upstream()
        cls.sluice = harness.start_sluice(upstream=cls.upstream.address)
        cls.channel = harness.channel(cls.sluice.data)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.sluice.stop()
        cls.upstream.stop()

    def test_v1_is_unimplemented_so_clients_fall_back_to_v1alpha(self):
        call = self.channel.stream_stream(REFLECTION_INFO_V1)(iter([b""]), timeout=TIMEOUT)
        with self.assertRaises(grpc.RpcError) as e:
            list(call)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_every_listed_service_is_describable(self):
        # grpcurl's `list`, then `describe` of each service, on one stream.
        with ReflectionSession(self.channel) as session:
            services = session.list_services()
            for name in DEMO_SERVICES + ("grpc.health.v1.Health",
                                         "grpc.reflection.v1alpha.ServerReflection"):
                self.assertIn(name, services)
            for name in services:
                with self.subTest(service=name):
                    service = session.describe(name).FindServiceByName(name)
                    self.assertTrue(service.methods, name)

    def test_demo_services_describe_their_methods(self):
        with ReflectionSession(self.channel) as session:
            test = session.describe("grpc.testing.TestService")
            ticker = session.describe("sluice.demo.v1.Ticker")
        self.assertIn("grpc/testing/messages.proto", session.files)
        self.assertIn("grpc/testing/empty.proto", session.files)
        unary = test.FindServiceByName("grpc.testing.TestService").methods_by_name["UnaryCall"]
        self.assertEqual(unary.input_type.full_name, "grpc.testing.SimpleRequest")
        self.assertEqual(unary.output_type.full_name, "grpc.testing.SimpleResponse")
        self.assertEqual(unary.input_type.file.name, "grpc/testing/messages.proto")
        subscribe = ticker.FindServiceByName("sluice.demo.v1.Ticker").methods_by_name["Subscribe"]
        self.assertEqual(subscribe.input_type.full_name, "sluice.demo.v1.SubscribeRequest")
        self.assertEqual(subscribe.output_type.full_name, "sluice.demo.v1.Tick")
        self.assertEqual(subscribe.containing_service.file.name, "sluice/demo/v1/ticker.proto")

    def test_calls_with_types_built_from_reflection(self):
        with ReflectionSession(self.channel) as session:
            test = session.describe("grpc.testing.TestService")
            ticker = session.describe("sluice.demo.v1.Ticker")

        unary = test.FindMethodByName("grpc.testing.TestService.UnaryCall")
        SimpleRequest, SimpleResponse = message_class(unary.input_type), message_class(unary.output_type)
        # Not the generated stubs harness.py imports: types of our own pool.
        self.assertIs(SimpleRequest.DESCRIPTOR.file.pool, test)
        response = self.channel.unary_unary(
            f"/{unary.containing_service.full_name}/{unary.name}",
            request_serializer=SimpleRequest.SerializeToString,
            response_deserializer=SimpleResponse.FromString)(
                SimpleRequest(response_size=10, payload={"body": b"abc"}), timeout=TIMEOUT)
        self.assertEqual(response.payload.body, b"\0" * 10)

        subscribe = ticker.FindMethodByName("sluice.demo.v1.Ticker.Subscribe")
        self.assertTrue(subscribe.server_streaming)
        SubscribeRequest, Tick = message_class(subscribe.input_type), message_class(subscribe.output_type)
        ticks = list(self.channel.unary_stream(
            f"/{subscribe.containing_service.full_name}/{subscribe.name}",
            request_serializer=SubscribeRequest.SerializeToString,
            response_deserializer=Tick.FromString)(
                SubscribeRequest(count=3, payload_bytes=4), timeout=TIMEOUT))
        self.assertEqual([t.seq for t in ticks], [1, 2, 3])
        self.assertEqual([t.payload for t in ticks], [b"\0" * 4] * 3)

    def test_unknown_symbol_is_not_found_and_the_stream_goes_on(self):
        with ReflectionSession(self.channel) as session:
            response = session.ask(file_containing_symbol="sluice.demo.v1.NoSuchService")
            self.assertEqual(response.WhichOneof("message_response"), "error_response")
            self.assertEqual(response.error_response.error_code,
                             grpc.StatusCode.NOT_FOUND.value[0])
            self.assertEqual(response.original_request.file_containing_symbol,
                             "sluice.demo.v1.NoSuchService")
            pool = session.describe("sluice.demo.v1.Ticker")
            self.assertIsNotNone(pool.FindServiceByName("sluice.demo.v1.Ticker"))


if __name__ == "__main__":
    harness.main()
