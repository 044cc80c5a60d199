// DemoUpstream in-process, checked with real generated stubs over loopback.
#include "server/demo/demo_upstream.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/descriptor_database.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/message.h"
#include "google/protobuf/text_format.h"
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

using ::google::protobuf::Descriptor;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::Message;
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

// --- Server reflection, from a client's side (what grpcurl does) ---

// A file in this test's runfiles.
std::string Runfile(absl::string_view path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return absl::StrCat(srcdir != nullptr ? srcdir : ".", "/",
                      workspace != nullptr ? workspace : "sluice", "/", path);
}

// The field `name` of `message`; fails the test if there is none.
const FieldDescriptor* Field(const Message& message, absl::string_view name) {
  const FieldDescriptor* field =
      message.GetDescriptor()->FindFieldByName(std::string(name));
  EXPECT_NE(field, nullptr) << message.GetTypeName() << "." << name;
  return field;
}

const Message& SubMessage(const Message& message, absl::string_view name) {
  return message.GetReflection()->GetMessage(message, Field(message, name));
}

// The elements of the repeated string/bytes field `name`.
std::vector<std::string> Strings(const Message& message,
                                 absl::string_view name) {
  const FieldDescriptor* field = Field(message, name);
  const google::protobuf::Reflection* reflection = message.GetReflection();
  std::vector<std::string> values;
  for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
    values.push_back(reflection->GetRepeatedString(message, field, i));
  }
  return values;
}

// A new `type` from `factory`, set from text format.
std::unique_ptr<Message> NewMessage(google::protobuf::MessageFactory* factory,
                                    const Descriptor* type,
                                    const std::string& text = "") {
  std::unique_ptr<Message> message(factory->GetPrototype(type)->New());
  EXPECT_TRUE(
      google::protobuf::TextFormat::ParseFromString(text, message.get()))
      << type->full_name() << ": " << text;
  return message;
}

// One call of `method` as a generic stream, any RPC kind: writes
// `requests`, half-closes, reads every response (into a New() of
// `response_prototype`) and returns the call's status.
grpc::Status Exchange(const std::shared_ptr<grpc::Channel>& channel,
                      const std::string& method,
                      const std::vector<const Message*>& requests,
                      const Message& response_prototype,
                      std::vector<std::unique_ptr<Message>>* responses) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kWait));
  // Waits for the operation tagged `tag`; returns its `ok`.
  auto step = [&cq](intptr_t tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(got, reinterpret_cast<void*>(tag));
    return ok;
  };
  auto tag = [](intptr_t n) { return reinterpret_cast<void*>(n); };
  auto call = stub.PrepareCall(&context, method, &cq);
  call->StartCall(tag(1));
  bool open = step(1);
  for (const Message* request : requests) {
    if (!open) break;
    grpc::ByteBuffer bytes;
    bool own_buffer = false;
    EXPECT_TRUE(grpc::SerializationTraits<Message>::Serialize(*request, &bytes,
                                                              &own_buffer)
                    .ok());
    call->Write(bytes, tag(2));
    open = step(2);
  }
  if (open) {
    call->WritesDone(tag(3));
    step(3);
  }
  while (true) {
    grpc::ByteBuffer bytes;
    call->Read(&bytes, tag(4));
    if (!step(4)) break;
    responses->emplace_back(response_prototype.New());
    EXPECT_TRUE(grpc::SerializationTraits<Message>::Deserialize(
                    &bytes, responses->back().get())
                    .ok());
  }
  grpc::Status status;
  call->Finish(&status, tag(5));
  step(5);
  cq.Shutdown();
  void* ignored_tag;
  bool ignored_ok;
  while (cq.Next(&ignored_tag, &ignored_ok)) {
  }
  return status;
}

// The types a reflection client brings along: grpc.reflection.v1alpha's
// messages from Debian's grpc-proto, as the FileDescriptorSet
// //tests/demo:reflection_descriptors, in a pool of their own. (Generated
// C++ for that .proto cannot be linked here: libgrpc++_reflection registers
// the same symbols under another file name,
// src/proto/grpc/reflection/v1alpha/reflection.proto, and protobuf
// CHECK-fails at startup on the clash.)
class ReflectionClient {
 public:
  explicit ReflectionClient(std::shared_ptr<grpc::Channel> channel)
      : channel_(std::move(channel)) {
    std::ifstream in(Runfile("tests/demo/reflection_descriptors.pb"),
                     std::ios::binary);
    google::protobuf::FileDescriptorSet set;
    EXPECT_TRUE(set.ParseFromIstream(&in)) << "reflection_descriptors.pb";
    for (const google::protobuf::FileDescriptorProto& file : set.file()) {
      EXPECT_NE(pool_.BuildFile(file), nullptr) << file.name();
    }
    request_type_ = pool_.FindMessageTypeByName(
        "grpc.reflection.v1alpha.ServerReflectionRequest");
    response_type_ = pool_.FindMessageTypeByName(
        "grpc.reflection.v1alpha.ServerReflectionResponse");
  }

  bool ok() const {
    return request_type_ != nullptr && response_type_ != nullptr;
  }

  // One ServerReflectionInfo stream: a request per text-format string
  // (e.g. `list_services: ""`), a response for each.
  std::vector<std::unique_ptr<Message>> Ask(
      const std::vector<std::string>& texts) {
    std::vector<std::unique_ptr<Message>> requests;
    std::vector<const Message*> request_pointers;
    for (const std::string& text : texts) {
      requests.push_back(NewMessage(&factory_, request_type_, text));
      request_pointers.push_back(requests.back().get());
    }
    std::vector<std::unique_ptr<Message>> responses;
    grpc::Status status = Exchange(
        channel_,
        "/grpc.reflection.v1alpha.ServerReflection/"
        "ServerReflectionInfo",
        request_pointers, *factory_.GetPrototype(response_type_), &responses);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(responses.size(), texts.size());
    return responses;
  }

  std::vector<std::string> ListServices() {
    std::vector<std::string> names;
    for (const auto& response : Ask({"list_services: \"\""})) {
      const Message& list = SubMessage(*response, "list_services_response");
      const FieldDescriptor* service = Field(list, "service");
      const google::protobuf::Reflection* reflection = list.GetReflection();
      for (int i = 0; i < reflection->FieldSize(list, service); ++i) {
        const Message& entry = reflection->GetRepeatedMessage(list, service, i);
        names.push_back(
            entry.GetReflection()->GetString(entry, Field(entry, "name")));
      }
    }
    return names;
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  google::protobuf::DescriptorPool pool_;
  google::protobuf::DynamicMessageFactory factory_{&pool_};
  const Descriptor* request_type_ = nullptr;
  const Descriptor* response_type_ = nullptr;
};

// The files of one file_descriptor_response (the file asked for and all it
// imports) as a pool of their own: what a client knows of a service from
// reflection. gRPC 1.51's reflection reuses one response message for a
// stream, so a file_descriptor_response also repeats the files of the
// file_descriptor_responses before it on the stream (grpc/grpc#18009);
// like grpcurl's client, take each file name once and look the symbol up.
struct Described {
  explicit Described(const Message& response) {
    for (const std::string& bytes :
         Strings(SubMessage(response, "file_descriptor_response"),
                 "file_descriptor_proto")) {
      google::protobuf::FileDescriptorProto file;
      EXPECT_TRUE(file.ParseFromString(bytes));
      if (std::find(files.begin(), files.end(), file.name()) != files.end()) {
        continue;
      }
      files.push_back(file.name());
      EXPECT_TRUE(database.Add(file)) << file.name();
    }
  }
  google::protobuf::SimpleDescriptorDatabase database;
  // Builds files on demand from `database`, imports first.
  google::protobuf::DescriptorPool pool{&database};
  google::protobuf::DynamicMessageFactory factory{&pool};
  std::vector<std::string> files;
};

// The case of the response's message_response oneof that is set.
std::string ResponseCase(const Message& response) {
  const FieldDescriptor* set =
      response.GetReflection()->GetOneofFieldDescriptor(
          response,
          response.GetDescriptor()->FindOneofByName("message_response"));
  return set == nullptr ? "" : set->name();
}

TEST_F(DemoUpstreamTest, ReflectionListsServices) {
  ReflectionClient reflection(channel_);
  ASSERT_TRUE(reflection.ok());
  EXPECT_THAT(reflection.ListServices(),
              ::testing::UnorderedElementsAre(
                  "grpc.testing.TestService", "sluice.demo.v1.Ticker",
                  "sluice.demo.v1.Capacity", "grpc.health.v1.Health",
                  "grpc.reflection.v1alpha.ServerReflection"));
}

// grpcurl's `describe`: every listed service resolves by
// file_containing_symbol, in files that build without the server's help.
TEST_F(DemoUpstreamTest, ReflectionDescribesEveryListedService) {
  ReflectionClient reflection(channel_);
  ASSERT_TRUE(reflection.ok());
  const std::vector<std::string> services = reflection.ListServices();
  ASSERT_EQ(services.size(), 5u);
  std::vector<std::string> asks;
  for (const std::string& service : services) {
    asks.push_back(absl::StrCat("file_containing_symbol: \"", service, "\""));
  }
  std::vector<std::unique_ptr<Message>> responses = reflection.Ask(asks);
  ASSERT_EQ(responses.size(), services.size());
  for (size_t i = 0; i < services.size(); ++i) {
    SCOPED_TRACE(services[i]);
    ASSERT_EQ(ResponseCase(*responses[i]), "file_descriptor_response")
        << responses[i]->ShortDebugString();
    Described described(*responses[i]);
    const google::protobuf::ServiceDescriptor* service =
        described.pool.FindServiceByName(services[i]);
    ASSERT_NE(service, nullptr);
    EXPECT_GT(service->method_count(), 0);
  }
}

TEST_F(DemoUpstreamTest, ReflectionDescribesTheDemoServices) {
  ReflectionClient reflection(channel_);
  ASSERT_TRUE(reflection.ok());
  std::vector<std::unique_ptr<Message>> responses =
      reflection.Ask({"file_containing_symbol: \"grpc.testing.TestService\"",
                      "file_containing_symbol: \"sluice.demo.v1.Ticker\""});
  ASSERT_EQ(responses.size(), 2u);

  Described test(*responses[0]);
  EXPECT_THAT(test.files,
              ::testing::IsSupersetOf({"grpc/testing/test.proto",
                                       "grpc/testing/empty.proto",
                                       "grpc/testing/messages.proto"}));
  const google::protobuf::ServiceDescriptor* test_service =
      test.pool.FindServiceByName("grpc.testing.TestService");
  ASSERT_NE(test_service, nullptr);
  const google::protobuf::MethodDescriptor* unary =
      test_service->FindMethodByName("UnaryCall");
  ASSERT_NE(unary, nullptr);
  EXPECT_EQ(unary->input_type()->full_name(), "grpc.testing.SimpleRequest");
  EXPECT_EQ(unary->output_type()->full_name(), "grpc.testing.SimpleResponse");
  EXPECT_FALSE(unary->client_streaming() || unary->server_streaming());
  const google::protobuf::MethodDescriptor* duplex =
      test_service->FindMethodByName("FullDuplexCall");
  ASSERT_NE(duplex, nullptr);
  EXPECT_TRUE(duplex->client_streaming() && duplex->server_streaming());

  Described ticker(*responses[1]);
  EXPECT_THAT(ticker.files, ::testing::Contains("sluice/demo/v1/ticker.proto"));
  const google::protobuf::ServiceDescriptor* ticker_service =
      ticker.pool.FindServiceByName("sluice.demo.v1.Ticker");
  ASSERT_NE(ticker_service, nullptr);
  const google::protobuf::MethodDescriptor* subscribe =
      ticker_service->FindMethodByName("Subscribe");
  ASSERT_NE(subscribe, nullptr);
  EXPECT_EQ(subscribe->input_type()->full_name(),
            "sluice.demo.v1.SubscribeRequest");
  EXPECT_EQ(subscribe->output_type()->full_name(), "sluice.demo.v1.Tick");
  EXPECT_TRUE(subscribe->server_streaming());
  EXPECT_FALSE(subscribe->client_streaming());
}

// The described types are enough to call: UnaryCall and a Ticker stream
// with messages built only from what reflection returned.
TEST_F(DemoUpstreamTest, ReflectedTypesCallTheServices) {
  ReflectionClient reflection(channel_);
  ASSERT_TRUE(reflection.ok());
  std::vector<std::unique_ptr<Message>> responses =
      reflection.Ask({"file_containing_symbol: \"grpc.testing.TestService\"",
                      "file_containing_symbol: \"sluice.demo.v1.Ticker\""});
  ASSERT_EQ(responses.size(), 2u);
  // Before the messages: each must die before the pool of its type.
  Described test(*responses[0]);
  Described ticker(*responses[1]);

  const google::protobuf::MethodDescriptor* unary =
      test.pool.FindMethodByName("grpc.testing.TestService.UnaryCall");
  ASSERT_NE(unary, nullptr);
  std::unique_ptr<Message> request =
      NewMessage(&test.factory, unary->input_type(),
                 "response_size: 10 payload { body: \"abc\" }");
  std::vector<std::unique_ptr<Message>> replies;
  grpc::Status status =
      Exchange(channel_, "/grpc.testing.TestService/UnaryCall", {request.get()},
               *test.factory.GetPrototype(unary->output_type()), &replies);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(replies.size(), 1u);
  const Message& payload = SubMessage(*replies[0], "payload");
  EXPECT_EQ(payload.GetReflection()->GetString(payload, Field(payload, "body")),
            Zeros(10));
  EXPECT_EQ(service().CallsStarted("UnaryCall"), 1);

  const google::protobuf::MethodDescriptor* subscribe =
      ticker.pool.FindMethodByName("sluice.demo.v1.Ticker.Subscribe");
  ASSERT_NE(subscribe, nullptr);
  request = NewMessage(&ticker.factory, subscribe->input_type(),
                       "count: 3 payload_bytes: 4");
  replies.clear();
  status = Exchange(
      channel_, "/sluice.demo.v1.Ticker/Subscribe", {request.get()},
      *ticker.factory.GetPrototype(subscribe->output_type()), &replies);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<uint64_t> seqs;
  for (const auto& tick : replies) {
    seqs.push_back(
        tick->GetReflection()->GetUInt64(*tick, Field(*tick, "seq")));
    EXPECT_EQ(tick->GetReflection()->GetString(*tick, Field(*tick, "payload")),
              Zeros(4));
  }
  EXPECT_THAT(seqs, ElementsAre(1, 2, 3));
}

TEST_F(DemoUpstreamTest, ReflectionUnknownSymbolIsNotFound) {
  ReflectionClient reflection(channel_);
  ASSERT_TRUE(reflection.ok());
  std::vector<std::unique_ptr<Message>> responses = reflection.Ask(
      {"file_containing_symbol: \"sluice.demo.v1.NoSuchService\""});
  ASSERT_EQ(responses.size(), 1u);
  ASSERT_EQ(ResponseCase(*responses[0]), "error_response");
  const Message& error = SubMessage(*responses[0], "error_response");
  EXPECT_EQ(error.GetReflection()->GetInt32(error, Field(error, "error_code")),
            static_cast<int>(grpc::StatusCode::NOT_FOUND));
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
