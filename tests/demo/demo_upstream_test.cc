// DemoUpstream in-process, checked with real generated stubs over loopback.
#include "server/demo/demo_upstream.h"

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/testing/test.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "gtest/gtest.h"
#include "sluice/demo/v1/ticker.grpc.pb.h"

namespace sluice::demo {
namespace {

using ::grpc::testing::Empty;
using ::grpc::testing::SimpleRequest;
using ::grpc::testing::SimpleResponse;
using ::grpc::testing::StreamingInputCallRequest;
using ::grpc::testing::StreamingInputCallResponse;
using ::grpc::testing::StreamingOutputCallRequest;
using ::grpc::testing::StreamingOutputCallResponse;
using ::sluice::demo::v1::SubscribeRequest;
using ::sluice::demo::v1::Tick;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Bounds every wait on the server's counters; tests pass far sooner.
constexpr absl::Duration kWait = absl::Seconds(10);

std::string Zeros(int n) { return std::string(static_cast<size_t>(n), '\0'); }

StreamingOutputCallRequest OutputRequest(std::vector<int> sizes,
                                         int interval_us = 0) {
  StreamingOutputCallRequest request;
  for (int size : sizes) {
    auto* p = request.add_response_parameters();
    p->set_size(size);
    p->set_interval_us(interval_us);
  }
  return request;
}

class DemoUpstreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> port = upstream_.Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok()) << port.status();
    ASSERT_GT(*port, 0);
    EXPECT_EQ(upstream_.address(), absl::StrCat("127.0.0.1:", *port));
    channel_ = grpc::CreateChannel(upstream_.address(),
                                   grpc::InsecureChannelCredentials());
    test_ = grpc::testing::TestService::NewStub(channel_);
    ticker_ = sluice::demo::v1::Ticker::NewStub(channel_);
  }

  void TearDown() override { upstream_.Shutdown(absl::Seconds(5)); }

  // A context with a deadline, so no test call can hang.
  static std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + kWait));
    return context;
  }

  TestService& service() { return upstream_.test_service(); }
  TickerService& ticker() { return upstream_.ticker_service(); }

  DemoUpstream upstream_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::testing::TestService::Stub> test_;
  std::unique_ptr<sluice::demo::v1::Ticker::Stub> ticker_;
};

TEST_F(DemoUpstreamTest, EmptyUnary) {
  Empty response;
  grpc::Status status = test_->EmptyCall(Context().get(), Empty(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.ByteSizeLong(), 0u);
  EXPECT_EQ(service().CallsStarted("EmptyCall"), 1);
  EXPECT_TRUE(service().WaitForCallsFinished("EmptyCall", 1, kWait));
  EXPECT_EQ(service().CallsCancelled("EmptyCall"), 0);
  EXPECT_EQ(service().CallsStarted("/grpc.testing.TestService/EmptyCall"), 1);
}

TEST_F(DemoUpstreamTest, LargeUnary) {
  SimpleRequest request;
  request.set_response_size(314159);
  request.mutable_payload()->set_body(Zeros(271828));
  SimpleResponse response;
  grpc::Status status = test_->UnaryCall(Context().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.payload().body(), Zeros(314159));
}

TEST_F(DemoUpstreamTest, CompressedUnary) {
  SimpleRequest request;
  request.set_response_size(314159);
  request.mutable_response_compressed()->set_value(true);
  SimpleResponse response;
  grpc::Status status = test_->UnaryCall(Context().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.payload().body().size(), 314159u);
}

TEST_F(DemoUpstreamTest, CacheableUnarySetsCacheControl) {
  SimpleRequest request;
  request.set_response_size(10);
  SimpleResponse response;
  auto context = Context();
  grpc::Status status =
      test_->CacheableUnaryCall(context.get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.payload().body().size(), 10u);
  auto it = context->GetServerInitialMetadata().find("cache-control");
  ASSERT_NE(it, context->GetServerInitialMetadata().end());
  EXPECT_THAT(std::string(it->second.data(), it->second.size()),
              HasSubstr("max-age=60"));
}

TEST_F(DemoUpstreamTest, UnaryStatusEcho) {
  SimpleRequest request;
  request.mutable_response_status()->set_code(2);
  request.mutable_response_status()->set_message("test status message");
  SimpleResponse response;
  grpc::Status status = test_->UnaryCall(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(status.error_message(), "test status message");
  // A status we chose to send is not a cancellation.
  EXPECT_TRUE(service().WaitForCallsFinished("UnaryCall", 1, kWait));
  EXPECT_EQ(service().CallsCancelled("UnaryCall"), 0);
}

TEST_F(DemoUpstreamTest, FullDuplexStatusEcho) {
  auto context = Context();
  auto stream = test_->FullDuplexCall(context.get());
  StreamingOutputCallRequest request;
  request.mutable_response_status()->set_code(2);
  request.mutable_response_status()->set_message("test status message");
  ASSERT_TRUE(stream->Write(request));
  stream->WritesDone();
  StreamingOutputCallResponse response;
  EXPECT_FALSE(stream->Read(&response));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(status.error_message(), "test status message");
}

TEST_F(DemoUpstreamTest, InvalidSizeIsRejected) {
  SimpleRequest request;
  request.set_response_size(-1);
  SimpleResponse response;
  grpc::Status status = test_->UnaryCall(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(DemoUpstreamTest, UnaryMetadataEcho) {
  auto context = Context();
  context->AddMetadata("x-grpc-test-echo-initial",
                       "test_initial_metadata_value");
  context->AddMetadata("x-grpc-test-echo-trailing-bin", "\xab\xab\xab");
  SimpleRequest request;
  request.set_response_size(314159);
  request.mutable_payload()->set_body(Zeros(271828));
  SimpleResponse response;
  grpc::Status status = test_->UnaryCall(context.get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();

  const auto& initial = context->GetServerInitialMetadata();
  auto it = initial.find("x-grpc-test-echo-initial");
  ASSERT_NE(it, initial.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()),
            "test_initial_metadata_value");
  const auto& trailing = context->GetServerTrailingMetadata();
  it = trailing.find("x-grpc-test-echo-trailing-bin");
  ASSERT_NE(it, trailing.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "\xab\xab\xab");
}

TEST_F(DemoUpstreamTest, FullDuplexMetadataEcho) {
  auto context = Context();
  context->AddMetadata("x-grpc-test-echo-initial",
                       "test_initial_metadata_value");
  context->AddMetadata("x-grpc-test-echo-trailing-bin", "\xab\xab\xab");
  auto stream = test_->FullDuplexCall(context.get());
  StreamingOutputCallRequest request = OutputRequest({314159});
  request.mutable_payload()->set_body(Zeros(271828));
  ASSERT_TRUE(stream->Write(request));
  stream->WritesDone();
  StreamingOutputCallResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.payload().body().size(), 314159u);
  EXPECT_FALSE(stream->Read(&response));
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();

  auto it =
      context->GetServerInitialMetadata().find("x-grpc-test-echo-initial");
  ASSERT_NE(it, context->GetServerInitialMetadata().end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()),
            "test_initial_metadata_value");
  it = context->GetServerTrailingMetadata().find(
      "x-grpc-test-echo-trailing-bin");
  ASSERT_NE(it, context->GetServerTrailingMetadata().end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "\xab\xab\xab");
}

TEST_F(DemoUpstreamTest, ServerStreamingSizes) {
  auto context = Context();
  auto reader = test_->StreamingOutputCall(
      context.get(), OutputRequest({31415, 9, 2653, 58979}));
  std::vector<size_t> sizes;
  StreamingOutputCallResponse response;
  while (reader->Read(&response)) {
    sizes.push_back(response.payload().body().size());
  }
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(sizes, ElementsAre(31415, 9, 2653, 58979));
  EXPECT_TRUE(service().WaitForCallsFinished("StreamingOutputCall", 1, kWait));
  EXPECT_EQ(service().MessagesWritten("StreamingOutputCall"), 4);
  EXPECT_EQ(service().MessagesWritten(), 4);
}

TEST_F(DemoUpstreamTest, ServerStreamingHonoursIntervalAndStatus) {
  StreamingOutputCallRequest request = OutputRequest({1, 2, 3}, 2000);
  request.mutable_response_status()->set_code(
      static_cast<int>(grpc::StatusCode::ABORTED));
  request.mutable_response_status()->set_message("after three");
  auto context = Context();
  const absl::Time start = absl::Now();
  auto reader = test_->StreamingOutputCall(context.get(), request);
  std::vector<size_t> sizes;
  StreamingOutputCallResponse response;
  while (reader->Read(&response)) {
    sizes.push_back(response.payload().body().size());
  }
  grpc::Status status = reader->Finish();
  EXPECT_THAT(sizes, ElementsAre(1, 2, 3));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(status.error_message(), "after three");
  // Three waits of 2 ms each, one after another.
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(6));
}

TEST_F(DemoUpstreamTest, ClientStreamingAggregate) {
  StreamingInputCallResponse response;
  auto context = Context();
  auto writer = test_->StreamingInputCall(context.get(), &response);
  for (int size : {27182, 8, 1828, 45904}) {
    StreamingInputCallRequest request;
    request.mutable_payload()->set_body(Zeros(size));
    ASSERT_TRUE(writer->Write(request));
  }
  ASSERT_TRUE(writer->WritesDone());
  grpc::Status status = writer->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.aggregated_payload_size(), 74922);
}

TEST_F(DemoUpstreamTest, PingPong) {
  auto context = Context();
  auto stream = test_->FullDuplexCall(context.get());
  const std::vector<std::pair<int, int>> steps = {
      {31415, 27182}, {9, 8}, {2653, 1828}, {58979, 45904}};
  for (const auto& [response_size, request_size] : steps) {
    StreamingOutputCallRequest request = OutputRequest({response_size});
    request.mutable_payload()->set_body(Zeros(request_size));
    ASSERT_TRUE(stream->Write(request));
    StreamingOutputCallResponse response;
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_EQ(response.payload().body().size(),
              static_cast<size_t>(response_size));
  }
  stream->WritesDone();
  StreamingOutputCallResponse response;
  EXPECT_FALSE(stream->Read(&response));
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(service().WaitForCallsFinished("FullDuplexCall", 1, kWait));
  EXPECT_EQ(service().MessagesWritten("FullDuplexCall"), 4);
}

TEST_F(DemoUpstreamTest, EmptyStream) {
  auto context = Context();
  auto stream = test_->FullDuplexCall(context.get());
  stream->WritesDone();
  StreamingOutputCallResponse response;
  EXPECT_FALSE(stream->Read(&response));
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
}

TEST_F(DemoUpstreamTest, HalfDuplexRespondsAfterHalfClose) {
  auto context = Context();
  auto stream = test_->HalfDuplexCall(context.get());
  ASSERT_TRUE(stream->Write(OutputRequest({5, 6})));
  ASSERT_TRUE(stream->Write(OutputRequest({7})));
  ASSERT_TRUE(stream->WritesDone());
  std::vector<size_t> sizes;
  StreamingOutputCallResponse response;
  while (stream->Read(&response)) {
    sizes.push_back(response.payload().body().size());
  }
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(sizes, ElementsAre(5, 6, 7));
}

TEST_F(DemoUpstreamTest, UnimplementedCall) {
  Empty response;
  grpc::Status status =
      test_->UnimplementedCall(Context().get(), Empty(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(service().CallsStarted("UnimplementedCall"), 1);

  auto other = grpc::testing::UnimplementedService::NewStub(channel_);
  status = other->UnimplementedCall(Context().get(), Empty(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

// A stream waiting on a long interval is cancelled by the client: the
// server counts the cancellation and frees the call at once, without
// waiting for the interval.
TEST_F(DemoUpstreamTest, CancelWaitingServerStreamIsCounted) {
  auto context = Context();
  auto reader = test_->StreamingOutputCall(
      context.get(), OutputRequest({10}, /*interval_us=*/60 * 1000 * 1000));
  reader->WaitForInitialMetadata();  // the server sends it at once
  ASSERT_TRUE(service().WaitForCallsStarted("StreamingOutputCall", 1, kWait));
  context->TryCancel();
  StreamingOutputCallResponse response;
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(service().WaitForCallsCancelled("StreamingOutputCall", 1, kWait));
  EXPECT_TRUE(service().WaitForCallsFinished("StreamingOutputCall", 1, kWait));
  EXPECT_EQ(service().MessagesWritten("StreamingOutputCall"), 0);
  EXPECT_EQ(service().CallsInFlight(), 0);
}

// cancel_after_first_response: the server is waiting for the next read.
TEST_F(DemoUpstreamTest, CancelAfterFirstResponseIsCounted) {
  auto context = Context();
  auto stream = test_->FullDuplexCall(context.get());
  StreamingOutputCallRequest request = OutputRequest({31415});
  request.mutable_payload()->set_body(Zeros(27182));
  ASSERT_TRUE(stream->Write(request));
  StreamingOutputCallResponse response;
  ASSERT_TRUE(stream->Read(&response));
  context->TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(service().WaitForCallsCancelled("FullDuplexCall", 1, kWait));
  EXPECT_TRUE(service().WaitForCallsFinished("FullDuplexCall", 1, kWait));
}

// cancel_after_begin: cancelled once the call has reached the handler.
TEST_F(DemoUpstreamTest, CancelAfterBeginIsCounted) {
  StreamingInputCallResponse response;
  grpc::ClientContext context;
  auto writer = test_->StreamingInputCall(&context, &response);
  ASSERT_TRUE(service().WaitForCallsStarted("StreamingInputCall", 1, kWait));
  context.TryCancel();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(service().WaitForCallsCancelled("StreamingInputCall", 1, kWait));
  EXPECT_TRUE(service().WaitForCallsFinished("StreamingInputCall", 1, kWait));
}

// timeout_on_sleeping_server, with a deadline long enough for the call to
// reach the handler first: the server sees the deadline as a cancellation.
TEST_F(DemoUpstreamTest, TimeoutOnSleepingServer) {
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Milliseconds(500)));
  auto stream = test_->FullDuplexCall(&context);
  StreamingOutputCallRequest request;
  request.mutable_payload()->set_body(Zeros(27182));
  stream->Write(request);
  stream->WaitForInitialMetadata();  // the handler sends it at once
  ASSERT_TRUE(service().WaitForCallsStarted("FullDuplexCall", 1, kWait));
  StreamingOutputCallResponse response;
  while (stream->Read(&response)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(service().WaitForCallsCancelled("FullDuplexCall", 1, kWait));
  EXPECT_TRUE(service().WaitForCallsFinished("FullDuplexCall", 1, kWait));
}

TEST_F(DemoUpstreamTest, DeadlineAndMetadataAreRecorded) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  context.AddMetadata("x-forwarded-for", "10.1.2.3");
  context.AddMetadata("x-custom", "one");
  context.AddMetadata("x-custom", "two");
  SimpleResponse response;
  ASSERT_TRUE(test_->UnaryCall(&context, SimpleRequest(), &response).ok());

  std::optional<absl::Time> seen = service().LastDeadline("UnaryCall");
  ASSERT_TRUE(seen.has_value());
  EXPECT_LT(absl::AbsDuration(*seen - deadline), absl::Seconds(1));

  std::optional<CallRecord> call = service().LastCall("UnaryCall");
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->method, "UnaryCall");
  EXPECT_EQ(call->Value("x-forwarded-for"), "10.1.2.3");
  EXPECT_THAT(call->Values("x-custom"), ElementsAre("one", "two"));
  EXPECT_FALSE(call->Value("x-absent").has_value());
  EXPECT_THAT(call->peer, HasSubstr("127.0.0.1"));
  EXPECT_GT(call->budget(), absl::Seconds(25));
  EXPECT_EQ(service().LastCall()->method, "UnaryCall");

  // No deadline: InfiniteFuture.
  grpc::ClientContext no_deadline;
  Empty empty;
  ASSERT_TRUE(test_->EmptyCall(&no_deadline, Empty(), &empty).ok());
  EXPECT_EQ(service().LastDeadline("EmptyCall"), absl::InfiniteFuture());
  EXPECT_EQ(service().LastCall()->method, "EmptyCall");
  EXPECT_FALSE(service().LastDeadline("FullDuplexCall").has_value());
}

TEST_F(DemoUpstreamTest, TickerCountAndPayload) {
  SubscribeRequest request;
  request.set_count(5);
  request.set_payload_bytes(100);
  auto context = Context();
  const int64_t before = absl::ToUnixMicros(absl::Now());
  auto reader = ticker_->Subscribe(context.get(), request);
  std::vector<uint64_t> seqs;
  Tick tick;
  while (reader->Read(&tick)) {
    seqs.push_back(tick.seq());
    EXPECT_EQ(tick.payload(), Zeros(100));
    EXPECT_GE(tick.unix_micros(), before);
  }
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(seqs, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_TRUE(ticker().WaitForStreamsFinished(1, kWait));
  EXPECT_EQ(ticker().MessagesWritten(), 5);
  EXPECT_EQ(ticker().StreamsStarted(), 1);
  EXPECT_EQ(ticker().StreamsOpen(), 0);
  EXPECT_EQ(ticker().StreamsCancelled(), 0);
}

TEST_F(DemoUpstreamTest, TickerInterval) {
  SubscribeRequest request;
  request.set_count(3);
  request.set_interval_ms(2);
  auto context = Context();
  const absl::Time start = absl::Now();
  auto reader = ticker_->Subscribe(context.get(), request);
  int ticks = 0;
  Tick tick;
  while (reader->Read(&tick)) ++ticks;
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(ticks, 3);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(6));
}

TEST_F(DemoUpstreamTest, TickerCancelIsCounted) {
  SubscribeRequest request;  // count 0: until cancelled
  request.set_interval_ms(3600 * 1000);
  auto context = Context();
  context->AddMetadata("x-tenant", "acme");
  auto reader = ticker_->Subscribe(context.get(), request);
  reader->WaitForInitialMetadata();
  ASSERT_TRUE(ticker().WaitForStreamsOpen(1, kWait));
  context->TryCancel();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(ticker().WaitForStreamsCancelled(1, kWait));
  EXPECT_TRUE(ticker().WaitForStreamsFinished(1, kWait));
  EXPECT_EQ(ticker().StreamsOpen(), 0);
  EXPECT_EQ(ticker().MessagesWritten(), 0);
  ASSERT_TRUE(ticker().LastCall().has_value());
  EXPECT_EQ(ticker().LastCall()->Value("x-tenant"), "acme");
}

int ThreadCount() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "Threads:")) {
      return std::stoi(line.substr(sizeof("Threads:") - 1));
    }
  }
  return -1;
}

// Many idle streams hold no thread each; they all end when cancelled.
TEST_F(DemoUpstreamTest, ManyIdleTickerStreams) {
  constexpr int kStreams = 500;
  SubscribeRequest request;
  request.set_interval_ms(3600 * 1000);
  const int threads_before = ThreadCount();
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<Tick>>> readers;
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(Context());
    readers.push_back(ticker_->Subscribe(contexts.back().get(), request));
  }
  ASSERT_TRUE(ticker().WaitForStreamsOpen(kStreams, kWait));
  // gRPC's pools may grow a little; a thread per stream would add 500.
  EXPECT_LT(ThreadCount() - threads_before, 100);
  for (auto& context : contexts) context->TryCancel();
  for (auto& reader : readers) {
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(ticker().WaitForStreamsFinished(kStreams, kWait));
  EXPECT_EQ(ticker().StreamsCancelled(), kStreams);
  EXPECT_EQ(ticker().MessagesWritten(), 0);
}

TEST_F(DemoUpstreamTest, HealthServing) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const std::string& name :
       {std::string(""), std::string("grpc.testing.TestService"),
        std::string("sluice.demo.v1.Ticker")}) {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(name);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(Context().get(), request, &response);
    ASSERT_TRUE(status.ok()) << name << ": " << status.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING)
        << name;
  }
}

// One ServerReflectionInfo exchange with list_services, using the message
// types libgrpc++_reflection registers (Debian ships no headers for them).
TEST_F(DemoUpstreamTest, ReflectionListsServices) {
  const google::protobuf::DescriptorPool* pool =
      google::protobuf::DescriptorPool::generated_pool();
  const google::protobuf::Descriptor* request_type =
      pool->FindMessageTypeByName(
          "grpc.reflection.v1alpha.ServerReflectionRequest");
  const google::protobuf::Descriptor* response_type =
      pool->FindMessageTypeByName(
          "grpc.reflection.v1alpha.ServerReflectionResponse");
  if (request_type == nullptr || response_type == nullptr) {
    GTEST_SKIP() << "reflection message types are not linked in";
  }
  google::protobuf::MessageFactory* factory =
      google::protobuf::MessageFactory::generated_factory();
  std::unique_ptr<google::protobuf::Message> request(
      factory->GetPrototype(request_type)->New());
  std::unique_ptr<google::protobuf::Message> response(
      factory->GetPrototype(response_type)->New());
  request->GetReflection()->SetString(
      request.get(), request_type->FindFieldByName("list_services"), "");

  grpc::ByteBuffer request_bytes;
  bool own_buffer = false;
  ASSERT_TRUE(grpc::SerializationTraits<google::protobuf::Message>::Serialize(
                  *request, &request_bytes, &own_buffer)
                  .ok());

  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  auto context = Context();
  // Runs one operation to completion on `cq`; returns its `ok`.
  auto step = [&cq](int tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(got, reinterpret_cast<void*>(static_cast<intptr_t>(tag)));
    return ok;
  };
  auto tag = [](int n) {
    return reinterpret_cast<void*>(static_cast<intptr_t>(n));
  };
  auto call = stub.PrepareCall(
      context.get(),
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(tag(1));
  ASSERT_TRUE(step(1));
  call->Write(request_bytes, tag(2));
  ASSERT_TRUE(step(2));
  call->WritesDone(tag(3));
  ASSERT_TRUE(step(3));
  grpc::ByteBuffer response_bytes;
  call->Read(&response_bytes, tag(4));
  ASSERT_TRUE(step(4));
  grpc::Status status;
  call->Finish(&status, tag(5));
  ASSERT_TRUE(step(5));
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(grpc::SerializationTraits<google::protobuf::Message>::Deserialize(
                  &response_bytes, response.get())
                  .ok());
  cq.Shutdown();
  void* ignored_tag;
  bool ignored_ok;
  while (cq.Next(&ignored_tag, &ignored_ok)) {
  }

  const std::string listed = response->ShortDebugString();
  EXPECT_THAT(listed, HasSubstr("\"grpc.testing.TestService\""));
  EXPECT_THAT(listed, HasSubstr("\"sluice.demo.v1.Ticker\""));
  EXPECT_THAT(listed, HasSubstr("\"grpc.health.v1.Health\""));
}

// Shutdown with a stream still open cancels it at the deadline and returns.
TEST(DemoUpstreamShutdownTest, ShutdownEndsOpenStreams) {
  DemoUpstream upstream;
  ASSERT_TRUE(upstream.Start("127.0.0.1:0").ok());
  auto channel = grpc::CreateChannel(upstream.address(),
                                     grpc::InsecureChannelCredentials());
  auto ticker = sluice::demo::v1::Ticker::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kWait));
  SubscribeRequest request;
  request.set_interval_ms(3600 * 1000);
  auto reader = ticker->Subscribe(&context, request);
  reader->WaitForInitialMetadata();
  ASSERT_TRUE(upstream.ticker_service().WaitForStreamsOpen(1, kWait));

  upstream.Shutdown(absl::Milliseconds(100));
  EXPECT_EQ(upstream.ticker_service().StreamsOpen(), 0);
  EXPECT_EQ(upstream.ticker_service().StreamsFinished(), 1);
  Tick tick;
  EXPECT_FALSE(reader->Read(&tick));
  EXPECT_FALSE(reader->Finish().ok());
  upstream.Shutdown(absl::ZeroDuration());  // idempotent
}

TEST(DemoUpstreamStartTest, RejectsBadAddress) {
  DemoUpstream upstream;
  EXPECT_FALSE(upstream.Start("no-port-here").ok());
  EXPECT_EQ(upstream.port(), 0);
}

}  // namespace
}  // namespace sluice::demo
