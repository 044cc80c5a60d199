// Method shapes from the upstream's own server reflection (issue 18): the
// demo upstream serves grpc.reflection.v1alpha, so without any descriptor
// set Sluice learns that UnaryCall is unary and takes the typed path; with
// `reflection: false`, or against an upstream that serves no reflection,
// calls keep the general path; a call that breaks its declared shape makes
// the method fall back to the general path for good, counted.
//
// What shows the typed path from outside: a client that sends two requests
// on a one-request method. Typed, Sluice forwards the first only and reads
// one more message from the client to check the shape: it finds the second
// request, ignores it, and counts a fallback. General, it forwards what it
// reads and checks nothing.
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpcpp/ext/health_check_service_server_builder_option.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/server_builder.h"
#include "server/proxy/reflection_fetcher.h"
#include "tests/proxy/proxy_fixture.h"

namespace sluice {
namespace {

using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;

constexpr char kUnary[] = "/grpc.testing.TestService/UnaryCall";

grpc::ByteBuffer RawRequest(int response_size) {
  SimpleRequest req;
  req.set_response_size(response_size);
  const std::string bytes = req.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

int64_t ResponseBodySize(const grpc::ByteBuffer& raw) {
  std::vector<grpc::Slice> slices;
  if (!raw.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  SimpleResponse resp;
  if (!resp.ParseFromString(bytes)) return -1;
  return static_cast<int64_t>(resp.payload().body().size());
}

class ReflectionShapesTest : public ProxyFixture {
 protected:
  bool UpstreamReflection() override { return reflection_; }

  ShapeBoard& Board() { return *plane_->pool()->shapes(0); }

  // Waits (bounded) until the fetcher published the upstream's shapes.
  bool AwaitPublished(absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time end = absl::Now() + timeout;
    while (Board().publishes() == 0 && absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    return Board().publishes() != 0;
  }

  double Fallbacks(const std::string& method) {
    double sum = 0;
    for (const auto& f : metrics_->registry()->Collect()) {
      if (f.name != "sluice_method_shape_fallbacks_total") continue;
      for (const auto& m : f.metric) {
        for (const auto& l : m.label) {
          if (l.name == "method" && l.value == method) sum += m.counter.value;
        }
      }
    }
    return sum;
  }

  // A client breaking the unary contract: two requests on `method`.
  // Returns the response body's size (the first request's: 7).
  int64_t TwoRequests(const std::string& method) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    SetTimeout(&ctx, absl::Seconds(5));
    grpc::CompletionQueue cq;
    auto step = [&cq]() {
      void* tag;
      bool ok = false;
      EXPECT_TRUE(cq.Next(&tag, &ok));
      return ok;
    };
    auto call = stub.PrepareCall(&ctx, method, &cq);
    call->StartCall(nullptr);
    EXPECT_TRUE(step());
    // Both requests leave in one flush (the first is hinted), so the
    // second reaches Sluice before the upstream's answer can end the call:
    // one arriving after that is not seen (nor would an upstream see it).
    call->Write(RawRequest(7), grpc::WriteOptions().set_buffer_hint(), nullptr);
    step();
    call->Write(RawRequest(9), nullptr);
    step();  // may fail once the call is over
    call->WritesDone(nullptr);
    step();
    grpc::ByteBuffer response;
    call->Read(&response, nullptr);
    const bool got = step();
    grpc::Status status;
    call->Finish(&status, nullptr);
    EXPECT_TRUE(step());
    EXPECT_TRUE(status.ok()) << status.error_message();
    cq.Shutdown();
    void* tag;
    bool ok;
    while (cq.Next(&tag, &ok)) {
    }
    return got ? ResponseBodySize(response) : -1;
  }

  bool reflection_ = true;
};

TEST_F(ReflectionShapesTest, LearnsShapesFromTheUpstreamsReflection) {
  ASSERT_TRUE(AwaitPublished());
  auto shape = [this](const char* path) {
    return plane_->pool()->ShapeFor(0, 0, path, {});
  };
  EXPECT_TRUE(shape(kUnary).unary);
  EXPECT_TRUE(shape("/grpc.testing.TestService/EmptyCall").unary);
  EXPECT_FALSE(shape("/grpc.testing.TestService/StreamingOutputCall").unary);
  EXPECT_TRUE(
      shape("/grpc.testing.TestService/StreamingOutputCall").single_request);
  EXPECT_FALSE(
      shape("/grpc.testing.TestService/StreamingInputCall").single_request);
  EXPECT_FALSE(
      shape("/grpc.testing.TestService/FullDuplexCall").single_request);
  EXPECT_TRUE(shape("/sluice.demo.v1.Ticker/Subscribe").single_request);
  EXPECT_FALSE(shape("/no.Such/Method").single_request);
  EXPECT_GT(Board().learned_size(), 8u);
}

// A reconnect fetches again: the upstream restarts (on the same port), the
// next call reconnects the channel, and the fetcher asks the new process.
TEST_F(ReflectionShapesTest, ReconnectFetchesAgain) {
  ASSERT_TRUE(AwaitPublished());
  const uint64_t before = Board().publishes();
  const std::string address = upstream_.address();
  upstream_.Shutdown(absl::ZeroDuration());
  demo::DemoUpstream restarted;
  absl::StatusOr<int> port = absl::UnavailableError("not started");
  for (int i = 0; i < 50 && !port.ok(); ++i) {  // the port may linger
    port = restarted.Start(address);
    if (!port.ok()) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(port.ok()) << port.status();
  const absl::Time end = absl::Now() + absl::Seconds(20);
  bool refetched = false;
  while (!refetched && absl::Now() < end) {
    grpc::ClientContext ctx;
    SetTimeout(&ctx, absl::Seconds(2));
    SimpleRequest req;
    SimpleResponse resp;
    test_->UnaryCall(&ctx, req, &resp);  // connects the channel again
    absl::SleepFor(absl::Milliseconds(50));
    refetched = Board().publishes() > before;
  }
  EXPECT_TRUE(refetched);
  EXPECT_TRUE(plane_->pool()->ShapeFor(0, 0, kUnary, {}).unary);
  plane_->Drain(absl::ZeroDuration());
  restarted.Shutdown(absl::Seconds(1));
}

// Every kind still works through the typed paths reflection chose.
TEST_F(ReflectionShapesTest, CallsOfEveryKindWork) {
  ASSERT_TRUE(AwaitPublished());
  {
    grpc::ClientContext ctx;
    SetTimeout(&ctx, absl::Seconds(5));
    SimpleRequest req;
    req.set_response_size(11);
    SimpleResponse resp;
    ASSERT_TRUE(test_->UnaryCall(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.payload().body().size(), 11u);
  }
  {
    grpc::ClientContext ctx;
    SetTimeout(&ctx, absl::Seconds(5));
    grpc::testing::StreamingOutputCallRequest req;
    for (int size : {1, 2, 3}) req.add_response_parameters()->set_size(size);
    auto reader = test_->StreamingOutputCall(&ctx, req);
    grpc::testing::StreamingOutputCallResponse resp;
    int n = 0;
    while (reader->Read(&resp)) ++n;
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(n, 3);
  }
  {
    grpc::ClientContext ctx;
    SetTimeout(&ctx, absl::Seconds(5));
    grpc::testing::StreamingInputCallResponse resp;
    auto writer = test_->StreamingInputCall(&ctx, &resp);
    for (int size : {3, 5, 7}) {
      grpc::testing::StreamingInputCallRequest req;
      req.mutable_payload()->set_body(std::string(size, 'x'));
      ASSERT_TRUE(writer->Write(req));
    }
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_EQ(resp.aggregated_payload_size(), 15);
  }
  EXPECT_EQ(Fallbacks(kUnary), 0);
  ASSERT_TRUE(AwaitNoCallsInFlight());
}

// Learned unary: the first call with two requests is answered for the
// first (the second ignored, as a gRPC server does) and the method falls
// back, once; the next such call takes the general path.
TEST_F(ReflectionShapesTest, ShapeViolationFallsBackForGood) {
  ASSERT_TRUE(AwaitPublished());
  EXPECT_EQ(TwoRequests(kUnary), 7);
  ASSERT_TRUE(AwaitNoCallsInFlight());
  EXPECT_EQ(SumOfSamples("grpc_server_msg_received_total"), 1);
  EXPECT_EQ(Fallbacks(kUnary), 1);
  EXPECT_FALSE(plane_->pool()->ShapeFor(0, 0, kUnary, {}).single_request);
  EXPECT_FALSE(plane_->pool()->ShapeFor(0, 1, kUnary, {}).single_request);
  EXPECT_EQ(TwoRequests(kUnary), 7);
  ASSERT_TRUE(AwaitNoCallsInFlight());
  EXPECT_EQ(Fallbacks(kUnary), 1);  // counted once
  // A re-fetch (a reload, a reconnect) keeps the fallback.
  plane_->SetConfig(plane_->config());
  const uint64_t before = Board().publishes();
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (Board().publishes() == before && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_GT(Board().publishes(), before);
  EXPECT_FALSE(plane_->pool()->ShapeFor(0, 0, kUnary, {}).single_request);
  EXPECT_TRUE(plane_->pool()
                  ->ShapeFor(0, 0, "/grpc.testing.TestService/EmptyCall", {})
                  .unary);
  // A reload that rebuilds the upstream's channels (a changed setting)
  // keeps it too, without counting it again.
  const UpstreamPool* before_pool = plane_->pool().get();
  auto changed = ParseConfigYaml(
      absl::StrReplaceAll(yaml_,
                          {{"reflection: true",
                            "reflection: true\n    keepalive: {time: 6m}"}}),
      "test.yaml");
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(plane_->SetConfig(*changed).ok());
  ASSERT_NE(plane_->pool().get(), before_pool);
  EXPECT_EQ(Board().fallen_back(), std::vector<std::string>{kUnary});
  ASSERT_TRUE(AwaitPublished());  // the new pool's own fetch
  EXPECT_FALSE(plane_->pool()->ShapeFor(0, 0, kUnary, {}).single_request);
  EXPECT_FALSE(plane_->pool()->ShapeFor(0, 1, kUnary, {}).single_request);
  EXPECT_EQ(TwoRequests(kUnary), 7);
  ASSERT_TRUE(AwaitNoCallsInFlight());
  EXPECT_EQ(Fallbacks(kUnary), 1);
  // Another target is another server: it starts afresh.
  auto moved = ParseConfigYaml(
      absl::StrReplaceAll(yaml_, {{upstream_.address(), "127.0.0.1:1"}}),
      "test.yaml");
  ASSERT_TRUE(moved.ok()) << moved.status();
  ASSERT_TRUE(plane_->SetConfig(*moved).ok());
  EXPECT_TRUE(Board().fallen_back().empty());
}

class ReflectionOffTest : public ReflectionShapesTest {
 protected:
  void SetUp() override {
    reflection_ = false;
    ReflectionShapesTest::SetUp();
  }
};

TEST_F(ReflectionOffTest, KeepsTheGeneralPath) {
  EXPECT_EQ(TwoRequests(kUnary), 7);
  ASSERT_TRUE(AwaitNoCallsInFlight());
  absl::SleepFor(absl::Milliseconds(300));  // a fetcher would have run
  EXPECT_EQ(Board().publishes(), 0u);
  EXPECT_FALSE(plane_->pool()->ShapeFor(0, 0, kUnary, {}).single_request);
  EXPECT_EQ(Fallbacks(kUnary), 0);
}

// The upstream side: a descriptor set declares the demo's server-streaming
// StreamingOutputCall unary. The upstream's second response shows the
// method is not: this call goes on as a stream (the client gets every
// response) and the method falls back.
class SecondResponseTest : public ReflectionShapesTest {
 protected:
  void SetUp() override {
    reflection_ = false;
    ReflectionShapesTest::SetUp();
  }
  std::string ProxyYaml() override {
    google::protobuf::FileDescriptorSet set;
    google::protobuf::FileDescriptorProto* file = set.add_file();
    file->set_name("declared_unary_output.proto");
    file->set_package("grpc.testing");
    auto* method = file->add_service();
    method->set_name("TestService");
    auto* m = method->add_method();
    m->set_name("StreamingOutputCall");
    m->set_input_type(".grpc.testing.StreamingOutputCallRequest");
    m->set_output_type(".grpc.testing.StreamingOutputCallResponse");
    const std::string path =
        absl::StrCat(getenv("TEST_TMPDIR"), "/declared_unary_output.pb");
    std::ofstream(path, std::ios::binary) << set.SerializeAsString();
    return absl::StrCat("metrics: {descriptor_sets: [", path, "]}\n");
  }
};

TEST_F(SecondResponseTest, StreamsTheRestAndFallsBack) {
  constexpr char kMethod[] = "/grpc.testing.TestService/StreamingOutputCall";
  for (int round = 0; round < 2; ++round) {
    grpc::ClientContext ctx;
    SetTimeout(&ctx, absl::Seconds(5));
    grpc::testing::StreamingOutputCallRequest req;
    for (int size : {1, 2, 3}) req.add_response_parameters()->set_size(size);
    auto reader = test_->StreamingOutputCall(&ctx, req);
    grpc::testing::StreamingOutputCallResponse resp;
    std::vector<size_t> sizes;
    while (reader->Read(&resp)) sizes.push_back(resp.payload().body().size());
    grpc::Status status = reader->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(sizes, (std::vector<size_t>{1, 2, 3})) << "round " << round;
    ASSERT_TRUE(AwaitNoCallsInFlight());
    EXPECT_EQ(Fallbacks(kMethod), 1);
  }
}

// An upstream that serves no reflection (every builder plugin removed, as
// Sluice's data port does): the fetch finds UNIMPLEMENTED, publishes
// nothing learned, and calls keep the general path.
class NoPlugins : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->clear();
  }
};

// Answers every method no service has with UNIMPLEMENTED (as gRPC does),
// through the callback API, so the server needs no polled queue.
class Unimplemented : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext*) override {
    class Reactor : public grpc::ServerGenericBidiReactor {
     public:
      Reactor() { Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "")); }
      void OnDone() override { delete this; }
    };
    return new Reactor;
  }
};

class NoReflectionUpstreamTest : public ReflectionShapesTest {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.RegisterCallbackGenericService(&unimplemented_);
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &bare_port_);
    builder.SetOption(std::make_unique<NoPlugins>());
    bare_ = builder.BuildAndStart();
    grpc::EnableDefaultHealthCheckService(false);
    ASSERT_NE(bare_, nullptr);
    ReflectionShapesTest::SetUp();
  }
  void TearDown() override {
    ReflectionShapesTest::TearDown();
    bare_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }
  std::string RoutesYaml() override {
    return absl::StrCat(R"(
routes:
  - name: all
    match: {prefix: "/"}
    upstream: bare
)");
  }
  std::string ProxyYaml() override {
    return absl::StrCat("  - name: bare\n    target: \"127.0.0.1:", bare_port_,
                        "\"\n");
  }
  Unimplemented unimplemented_;
  std::unique_ptr<grpc::Server> bare_;
  int bare_port_ = 0;
};

TEST_F(NoReflectionUpstreamTest, KeepsTheGeneralPath) {
  ShapeBoard& bare = *plane_->pool()->shapes(1);
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (bare.publishes() == 0 && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_GT(bare.publishes(), 0u);
  EXPECT_EQ(bare.learned_size(), 0u);
  constexpr char kCheck[] = "/grpc.health.v1.Health/Check";
  EXPECT_FALSE(plane_->pool()->ShapeFor(1, 0, kCheck, {}).single_request);
  grpc::GenericStub stub(channel_);
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(5));
  grpc::CompletionQueue cq;
  grpc::Slice empty("");
  auto call =
      stub.PrepareUnaryCall(&ctx, kCheck, grpc::ByteBuffer(&empty, 1), &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, &cq);
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  EXPECT_EQ(Fallbacks(kCheck), 0);
}

// The fetch itself, straight against the demo upstream.
TEST(FetchShapesTest, DemoUpstreamServesV1alpha) {
  demo::DemoUpstream upstream;
  ASSERT_TRUE(upstream.Start("127.0.0.1:0").ok());
  auto channel = grpc::CreateChannel(upstream.address(),
                                     grpc::InsecureChannelCredentials());
  int version = 1;  // v1 first: Debian's gRPC 1.51 serves only v1alpha
  auto shapes = FetchShapes(channel.get(), absl::Seconds(5), &version);
  ASSERT_TRUE(shapes.ok()) << shapes.status();
  EXPECT_EQ(version, 0);
  ASSERT_EQ(shapes->count(kUnary), 1u);
  EXPECT_TRUE(shapes->at(kUnary).unary);
  EXPECT_EQ(shapes->count("/grpc.reflection.v1alpha.ServerReflection/"
                          "ServerReflectionInfo"),
            1u);
  upstream.Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace sluice
