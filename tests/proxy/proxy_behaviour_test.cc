// Sluice's own behaviour on the data path: routing, deadline budgets, idle
// timeouts, metadata forwarding, backpressure, cancellation and drain.
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "gtest/gtest.h"
#include "tests/proxy/proxy_fixture.h"

namespace sluice {
namespace {

using grpc::testing::Empty;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using sluice::demo::v1::SubscribeRequest;
using sluice::demo::v1::Tick;

// A SimpleRequest asking for `response_size` bytes, as raw bytes.
grpc::ByteBuffer RawRequest(int response_size) {
  SimpleRequest req;
  req.set_response_size(response_size);
  const std::string bytes = req.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// The body size of the SimpleResponse in raw bytes, or -1.
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

// Routes: TestService calls with a deadline policy; Ticker with an idle
// timeout; nothing else.
// Every case runs twice: Typed (descriptor set configured) and Generic.
class ProxyBehaviourTest : public ProxyFixture,
                           public ::testing::WithParamInterface<bool> {
 protected:
  std::string RoutesYaml() override {
    return R"(
routes:
  - name: budget
    match: {method: "/grpc.testing.TestService/CacheableUnaryCall"}
    upstream: demo
    deadline: {min_budget: 200ms}
  - name: clamp
    match: {method: "/grpc.testing.TestService/EmptyCall"}
    upstream: demo
    deadline: {default_timeout: 2s, max_timeout: 3s}
  - name: testing
    match: {prefix: "/grpc.testing.TestService/"}
    upstream: demo
    deadline: {offset: 100ms}
  - name: ticker
    match: {prefix: "/sluice.demo.v1.Ticker/"}
    upstream: demo
    # Long enough that 1,000 streams on a loaded CI machine never idle.
    deadline: {stream_idle_timeout: 1s}
  - name: health
    match: {prefix: "/grpc.health.v1.Health/"}
    upstream: demo
  - name: reflection
    match: {prefix: "/grpc.reflection."}
    upstream: demo
)";
  }
  std::string ProxyYaml() override {
    return "proxy: {forwarded_for_header: x-forwarded-for}\n" +
           ShapesYaml(GetParam());
  }
};

INSTANTIATE_TEST_SUITE_P(Shapes, ProxyBehaviourTest, ::testing::Bool(),
                         ShapeName);

TEST_P(ProxyBehaviourTest, NoRouteIsUnimplementedWithReason) {
  auto stub = grpc::testing::UnimplementedService::NewStub(channel_);
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(10));
  Empty req, resp;
  grpc::Status s = stub->UnimplementedCall(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(Trailer(ctx, "sluice-reason"), "no_route");
  EXPECT_EQ(upstream_.test_service().stats().Total().started, 0);
}

TEST_P(ProxyBehaviourTest, DeadlineOffsetIsSubtracted) {
  grpc::ClientContext ctx;
  const absl::Time client_deadline = absl::Now() + absl::Seconds(5);
  ctx.set_deadline(absl::ToChronoTime(client_deadline));
  SimpleRequest req;
  SimpleResponse resp;
  const absl::Time sent = absl::Now();
  ASSERT_TRUE(test_->UnaryCall(&ctx, req, &resp).ok());
  auto rec = upstream_.test_service().stats().LastCall("UnaryCall");
  ASSERT_TRUE(rec.has_value());
  // gRPC carries deadlines as timeouts rounded up to a coarse unit, and
  // each hop re-bases them on its own receive time: the time in transit
  // (client -> Sluice -> upstream, however long a busy machine makes it)
  // moves the upstream's deadline later, never earlier. Without the offset
  // it would be 100 ms later than this bound plus that transit.
  const absl::Duration transit = rec->received - sent;
  EXPECT_LE(rec->deadline, client_deadline - absl::Milliseconds(100) + transit +
                               absl::Milliseconds(30))
      << "transit " << transit;
  EXPECT_GE(rec->deadline, client_deadline - absl::Milliseconds(100) -
                               absl::Milliseconds(250));
}

TEST_P(ProxyBehaviourTest, DefaultTimeoutWhenClientSendsNone) {
  grpc::ClientContext ctx;
  Empty req, resp;
  const absl::Time before = absl::Now();
  ASSERT_TRUE(test_->EmptyCall(&ctx, req, &resp).ok());
  auto rec = upstream_.test_service().stats().LastCall("EmptyCall");
  ASSERT_TRUE(rec.has_value());
  EXPECT_GE(rec->deadline, before + absl::Seconds(2) - absl::Milliseconds(50));
  EXPECT_LE(rec->deadline,
            absl::Now() + absl::Seconds(2) + absl::Milliseconds(50));
}

TEST_P(ProxyBehaviourTest, MaxTimeoutClampsTheClientsDeadline) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(60));
  Empty req, resp;
  ASSERT_TRUE(test_->EmptyCall(&ctx, req, &resp).ok());
  auto rec = upstream_.test_service().stats().LastCall("EmptyCall");
  ASSERT_TRUE(rec.has_value());
  EXPECT_LE(rec->deadline,
            absl::Now() + absl::Seconds(3) + absl::Milliseconds(50));
}

TEST_P(ProxyBehaviourTest, TooSmallBudgetIsRejectedWithoutCallingUpstream) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Milliseconds(150));
  SimpleRequest req;
  SimpleResponse resp;
  grpc::Status s = test_->CacheableUnaryCall(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Trailer(ctx, "sluice-reason"), "deadline_budget");
  EXPECT_EQ(upstream_.test_service().stats().Get("CacheableUnaryCall").started,
            0);
  // With enough budget the same route works.
  grpc::ClientContext ok_ctx;
  SetTimeout(&ok_ctx, absl::Seconds(5));
  EXPECT_TRUE(test_->CacheableUnaryCall(&ok_ctx, req, &resp).ok());
}

TEST_P(ProxyBehaviourTest, IdleStreamTimesOut) {
  grpc::ClientContext ctx;
  // Far beyond the 1 s idle timeout: a regression ends as DEADLINE_EXCEEDED
  // without the idle_timeout reason, in 20 s.
  SetTimeout(&ctx, absl::Seconds(20));
  SubscribeRequest req;
  req.set_count(0);
  req.set_interval_ms(60000);  // the first tick is a minute away
  auto reader = ticker_->Subscribe(&ctx, req);
  Tick tick;
  // No tick comes before the idle timeout.
  while (reader->Read(&tick)) {
  }
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Trailer(ctx, "sluice-reason"), "idle_timeout");
  EXPECT_TRUE(upstream_.ticker_service().stats().Await(
      "Subscribe", [](const demo::MethodStats& m) { return m.cancelled == 1; },
      absl::Seconds(10)));
  EXPECT_TRUE(AwaitNoCallsInFlight());
}

// A client that stops reading: the idle timeout ends the stream although
// Sluice's write to the client is stuck behind flow control (issue 15, bug
// 1: the call, its permits and sluice_calls_in_flight stayed until the
// client read again).
TEST_P(ProxyBehaviourTest, IdleTimeoutEndsAStreamWhoseClientStoppedReading) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(60));
  SubscribeRequest req;
  req.set_count(100000);
  req.set_interval_ms(0);
  req.set_payload_bytes(1024);
  auto reader = ticker_->Subscribe(&ctx, req);
  Tick tick;
  ASSERT_TRUE(reader->Read(&tick));  // running; then it never reads again
  EXPECT_TRUE(upstream_.ticker_service().stats().Await(
      "Subscribe", [](const demo::MethodStats& m) { return m.cancelled == 1; },
      absl::Seconds(20)))
      << "the upstream call was not cancelled";
  EXPECT_TRUE(AwaitNoCallsInFlight(absl::Seconds(20)))
      << "the call outlived its idle timeout with a write stuck";
  ctx.TryCancel();
  reader->Finish();
}

TEST_P(ProxyBehaviourTest, ActiveStreamDoesNotTimeOut) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(20));
  SubscribeRequest req;
  req.set_count(30);
  req.set_interval_ms(50);  // 1.5 s in all, never 1 s idle
  auto reader = ticker_->Subscribe(&ctx, req);
  Tick tick;
  int n = 0;
  while (reader->Read(&tick)) ++n;
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(n, 30);
}

// Write coalescing (pump.h) holds the last message in hand while a read
// is in flight, until the worker's queue runs dry: a message must never
// wait for the next one. The second response is half an hour behind the
// first, and the call has no deadline (whose end would release a held
// message): a first response held for the second would not arrive before
// the 30 s bound cancels the call.
TEST_P(ProxyBehaviourTest, AMessageIsNotHeldForTheNextOne) {
  grpc::ClientContext ctx;
  grpc::testing::StreamingOutputCallRequest req;
  req.add_response_parameters()->set_size(10);
  auto* later = req.add_response_parameters();
  later->set_size(20);
  later->set_interval_us(2000 * 1000 * 1000);  // ~33 minutes
  absl::Notification read;
  std::thread bound([&] {
    if (!read.WaitForNotificationWithTimeout(absl::Seconds(30))) {
      ctx.TryCancel();
    }
  });
  auto reader = test_->StreamingOutputCall(&ctx, req);
  grpc::testing::StreamingOutputCallResponse resp;
  const bool got = reader->Read(&resp);
  read.Notify();
  bound.join();
  ASSERT_TRUE(got) << "the first response never came";
  EXPECT_EQ(resp.payload().body().size(), 10u);
  ctx.TryCancel();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// The same in the other direction, and both ways at once: a ping-pong on a
// bidi stream where each side sends only after the other's message came.
TEST_P(ProxyBehaviourTest, PingPongIsNeverHeld) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(60));
  auto stream = test_->FullDuplexCall(&ctx);
  for (int i = 0; i < 50; ++i) {
    grpc::testing::StreamingOutputCallRequest req;
    req.add_response_parameters()->set_size(10 + i);
    req.mutable_payload()->set_body(std::string(5, 'x'));
    ASSERT_TRUE(stream->Write(req));
    grpc::testing::StreamingOutputCallResponse resp;
    ASSERT_TRUE(stream->Read(&resp)) << "round " << i;
    EXPECT_EQ(resp.payload().body().size(), static_cast<size_t>(10 + i));
  }
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_P(ProxyBehaviourTest, MetadataIsForwardedByteExact) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(10));
  const std::string binary("\x00\x01\xfe\xff", 4);
  ctx.AddMetadata("x-custom", "value one");
  ctx.AddMetadata("x-custom", "value two");
  ctx.AddMetadata("x-blob-bin", binary);
  ctx.AddMetadata("x-forwarded-for", "10.1.2.3");
  Empty req, resp;
  ASSERT_TRUE(test_->EmptyCall(&ctx, req, &resp).ok());
  auto rec = upstream_.test_service().stats().LastCall("EmptyCall");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->Values("x-custom"),
            (std::vector<std::string>{"value one", "value two"}));
  EXPECT_EQ(rec->Value("x-blob-bin"), binary);
  EXPECT_EQ(rec->Value("x-forwarded-for"), "10.1.2.3, 127.0.0.1");
  EXPECT_NE(rec->Value("user-agent").value_or("").find("sluice"),
            std::string::npos);
}

// The slow reader below takes 400 ms of reads at 2 ms each. Under TSan on
// a loaded machine its stream once ended after 2 s (its status was not
// recorded; it is now): the ticker route's 1 s idle timeout, right for the
// idle tests above, ends a stream whose reader stalls that long. Here the
// idle timeout is 30 s, so only flow control is under test.
class SlowReaderTest : public ProxyBehaviourTest {
 protected:
  std::string RoutesYaml() override {
    return R"(
routes:
  - name: ticker
    match: {prefix: "/sluice.demo.v1.Ticker/"}
    upstream: demo
    deadline: {stream_idle_timeout: 30s}
)";
  }
};

INSTANTIATE_TEST_SUITE_P(Shapes, SlowReaderTest, ::testing::Bool(), ShapeName);

TEST_P(SlowReaderTest, HoldsTheUpstreamBack) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(30));
  SubscribeRequest req;
  req.set_count(100000);
  req.set_interval_ms(0);
  req.set_payload_bytes(1024);
  auto reader = ticker_->Subscribe(&ctx, req);
  Tick tick;
  constexpr int kRead = 200;
  for (int i = 0; i < kRead; ++i) {
    if (!reader->Read(&tick)) {
      const grpc::Status status = reader->Finish();
      FAIL() << "the stream ended after " << i
             << " messages: " << status.error_code() << " "
             << status.error_message() << " (" << Trailer(ctx, "sluice-reason")
             << ")";
    }
    // The client is slow: 2 ms per message, for 400 ms in all.
    absl::SleepFor(absl::Milliseconds(2));
  }
  const int64_t written =
      upstream_.ticker_service().stats().Get("Subscribe").messages_written;
  // What may be in flight is bounded by the HTTP/2 flow-control windows of
  // the two hops (64 KiB each with bdp_probe off) plus Sluice's window of 2
  // messages, not by how much the upstream could produce (100 MB).
  // Measured: about 100 messages of 1 KiB.
  RecordProperty("upstream_messages_written", static_cast<int>(written));
  std::cout << "slow reader: read " << kRead << ", upstream wrote " << written
            << "\n";
  EXPECT_LT(written, kRead + 300) << "upstream wrote " << written;
  ctx.TryCancel();
  reader->Finish();
  EXPECT_TRUE(AwaitNoCallsInFlight());
}

TEST_P(ProxyBehaviourTest, ThousandCancelledStreamsAreAllCancelledUpstream) {
  constexpr int kStreams = 1000;
  grpc::CompletionQueue cq;
  struct Stream {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientAsyncReader<Tick>> reader;
    Tick tick;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Stream>> streams;
  SubscribeRequest req;
  req.set_count(0);
  req.set_interval_ms(100);
  for (int i = 0; i < kStreams; ++i) {
    auto s = std::make_unique<Stream>();
    SetTimeout(&s->ctx, absl::Seconds(60));
    s->reader = ticker_->AsyncSubscribe(&s->ctx, req, &cq, s.get());
    streams.push_back(std::move(s));
  }
  // Each stream: started, then its first tick read.
  int events = 0;
  void* tag;
  bool ok;
  std::vector<int> phase(kStreams, 0);
  auto index_of = [&](void* t) {
    for (int i = 0; i < kStreams; ++i) {
      if (streams[i].get() == t) return i;
    }
    return -1;
  };
  while (events < 2 * kStreams &&
         cq.AsyncNext(&tag, &ok,
                      absl::ToChronoTime(absl::Now() + absl::Seconds(20))) ==
             grpc::CompletionQueue::GOT_EVENT) {
    int i = index_of(tag);
    ASSERT_GE(i, 0);
    if (!ok) {
      // Report why this stream failed before it was cancelled.
      grpc::Status status;
      streams[i]->reader->Finish(&status, tag);
      void* t;
      bool o;
      while (cq.Next(&t, &o) && t != tag) {
      }
      FAIL() << "stream " << i << " phase " << phase[i] << ": "
             << status.error_code() << " " << status.error_message();
    }
    ++events;
    if (phase[i]++ == 0) streams[i]->reader->Read(&streams[i]->tick, tag);
  }
  ASSERT_EQ(events, 2 * kStreams);
  ASSERT_EQ(upstream_.ticker_service().stats().Get("Subscribe").in_flight(),
            kStreams);
  for (auto& s : streams) s->ctx.TryCancel();
  for (auto& s : streams) s->reader->Finish(&s->status, s.get());
  int finished = 0;
  while (finished < kStreams &&
         cq.AsyncNext(&tag, &ok,
                      absl::ToChronoTime(absl::Now() + absl::Seconds(20))) ==
             grpc::CompletionQueue::GOT_EVENT) {
    ++finished;
  }
  ASSERT_EQ(finished, kStreams);
  for (auto& s : streams) {
    EXPECT_EQ(s->status.error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(upstream_.ticker_service().stats().Await(
      "Subscribe",
      [](const demo::MethodStats& m) {
        return m.cancelled == kStreams && m.in_flight() == 0;
      },
      // A liveness bound (a lost cancel never arrives): 1,000 upstream
      // cancels take ~1 s here, up to a minute under TSan on a busy machine.
      std::getenv("SLUICE_SANITIZER") != nullptr ? absl::Seconds(240)
                                                 : absl::Seconds(60)));
  EXPECT_TRUE(AwaitNoCallsInFlight());
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_P(ProxyBehaviourTest, GenericMethodsOfAnyServiceAreForwarded) {
  // A raw generic call, as a client without the .proto would make it.
  grpc::GenericStub stub(channel_);
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(5));
  grpc::ByteBuffer request = RawRequest(7);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&ctx, "/grpc.testing.TestService/UnaryCall",
                                    request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, &cq);
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(ResponseBodySize(response), 7);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

// A client that breaks the unary contract by sending two requests gets the
// answer to the first, as from a gRPC server. Typed, Sluice knows the
// method is unary: it sends the first request with its half-close in one
// batch and never reads the second. Generic, it forwards what it reads
// until the upstream has answered (the upstream ignores a second request).
TEST_P(ProxyBehaviourTest, TwoRequestsOnAUnaryMethod) {
  grpc::GenericStub stub(channel_);
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(5));
  grpc::CompletionQueue cq;
  auto await = [&cq](intptr_t want) {
    void* tag;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  auto call =
      stub.PrepareCall(&ctx, "/grpc.testing.TestService/UnaryCall", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(await(1));
  for (int size : {7, 9}) {
    call->Write(RawRequest(size), reinterpret_cast<void*>(2));
    await(2);  // may fail once the call is over: the outcome is the status
  }
  call->WritesDone(reinterpret_cast<void*>(3));
  await(3);
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  const bool got_response = await(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  ASSERT_TRUE(await(5));
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(got_response);
  EXPECT_EQ(ResponseBodySize(response), 7);  // the first request's
  ASSERT_TRUE(AwaitNoCallsInFlight());  // message counts are flushed by then
  if (GetParam()) {
    EXPECT_EQ(SumOfSamples("grpc_server_msg_received_total"), 1);
    EXPECT_EQ(SumOfSamples("grpc_client_msg_sent_total"), 1);
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

// grpcurl's view: health and reflection on the data port are the
// upstream's, proxied like any method (Sluice's own live on the admin port).
TEST_P(ProxyBehaviourTest, HealthOnTheDataPortIsTheUpstreams) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  req.set_service("grpc.testing.TestService");  // the upstream's own name
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(10));
  ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_P(ProxyBehaviourTest, ReflectionOnTheDataPortListsTheUpstreamsServices) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  const auto* request_type = pool->FindMessageTypeByName(
      "grpc.reflection.v1alpha.ServerReflectionRequest");
  const auto* response_type = pool->FindMessageTypeByName(
      "grpc.reflection.v1alpha.ServerReflectionResponse");
  // libgrpc++_reflection (linked through the demo upstream) registers them.
  ASSERT_NE(request_type, nullptr);
  ASSERT_NE(response_type, nullptr);
  auto* factory = google::protobuf::MessageFactory::generated_factory();
  std::unique_ptr<google::protobuf::Message> request(
      factory->GetPrototype(request_type)->New());
  std::unique_ptr<google::protobuf::Message> response(
      factory->GetPrototype(response_type)->New());
  request->GetReflection()->SetString(
      request.get(), request_type->FindFieldByName("list_services"), "");
  grpc::ByteBuffer request_bytes;
  bool own = false;
  ASSERT_TRUE(grpc::SerializationTraits<google::protobuf::Message>::Serialize(
                  *request, &request_bytes, &own)
                  .ok());
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(5));
  auto step = [&cq]() {
    void* tag;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    return ok;
  };
  auto call = stub.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      &cq);
  call->StartCall(nullptr);
  ASSERT_TRUE(step());
  call->Write(request_bytes, nullptr);
  ASSERT_TRUE(step());
  call->WritesDone(nullptr);
  ASSERT_TRUE(step());
  grpc::ByteBuffer response_bytes;
  call->Read(&response_bytes, nullptr);
  ASSERT_TRUE(step());
  grpc::Status status;
  call->Finish(&status, nullptr);
  ASSERT_TRUE(step());
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(grpc::SerializationTraits<google::protobuf::Message>::Deserialize(
                  &response_bytes, response.get())
                  .ok());
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  const std::string listed = response->ShortDebugString();
  EXPECT_NE(listed.find("\"grpc.testing.TestService\""), std::string::npos);
  EXPECT_NE(listed.find("\"sluice.demo.v1.Ticker\""), std::string::npos);
  // Sluice's admin service is not on the data port.
  EXPECT_EQ(listed.find("sluice.admin"), std::string::npos);
}

// Drain, in process: a live stream finishes with UNAVAILABLE + draining at
// the drain deadline, and the data plane stops.
TEST_P(ProxyBehaviourTest, DrainFinishesLiveStreamsWithDraining) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(20));
  SubscribeRequest req;
  req.set_count(0);
  req.set_interval_ms(100);
  auto reader = ticker_->Subscribe(&ctx, req);
  Tick tick;
  ASSERT_TRUE(reader->Read(&tick));
  plane_->Drain(absl::Milliseconds(200));
  while (reader->Read(&tick)) {
  }
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Trailer(ctx, "sluice-reason"), "draining");
  EXPECT_EQ(plane_->calls_in_flight(), 0);
  EXPECT_TRUE(upstream_.ticker_service().stats().Await(
      "Subscribe", [](const demo::MethodStats& m) { return m.cancelled == 1; },
      absl::Seconds(10)));
}

// The data path trusts the descriptor set: here one declares the demo's
// client-streaming StreamingInputCall unary. The demo's handler sums the
// payloads of every request until the half-close, so the sum shows what
// Sluice forwarded: Typed, only the first request with its half-close;
// Generic, all of them. (Deterministic either way: the upstream answers
// only after the half-close.)
class DeclaredShapeTest : public ProxyFixture,
                          public ::testing::WithParamInterface<bool> {
 protected:
  std::string ProxyYaml() override {
    if (!GetParam()) return "";
    google::protobuf::FileDescriptorSet set;
    google::protobuf::FileDescriptorProto* file = set.add_file();
    file->set_name("declared_unary.proto");
    file->set_package("grpc.testing");
    google::protobuf::ServiceDescriptorProto* service = file->add_service();
    service->set_name("TestService");
    google::protobuf::MethodDescriptorProto* method = service->add_method();
    method->set_name("StreamingInputCall");
    method->set_input_type(".grpc.testing.StreamingInputCallRequest");
    method->set_output_type(".grpc.testing.StreamingInputCallResponse");
    const std::string path =
        absl::StrCat(getenv("TEST_TMPDIR"), "/declared_unary.pb");
    std::ofstream(path, std::ios::binary) << set.SerializeAsString();
    return absl::StrCat("metrics: {descriptor_sets: [", path, "]}\n");
  }
};

INSTANTIATE_TEST_SUITE_P(Shapes, DeclaredShapeTest, ::testing::Bool(),
                         ShapeName);

TEST_P(DeclaredShapeTest, OneRequestMethodsGetOnlyTheFirstRequest) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(5));
  grpc::testing::StreamingInputCallResponse resp;
  auto writer = test_->StreamingInputCall(&ctx, &resp);
  for (int size : {3, 5, 7}) {
    grpc::testing::StreamingInputCallRequest req;
    req.mutable_payload()->set_body(std::string(size, 'x'));
    writer->Write(req);  // Typed: a later write may find the call over
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(resp.aggregated_payload_size(), GetParam() ? 3 : 15);
}

}  // namespace
}  // namespace sluice
