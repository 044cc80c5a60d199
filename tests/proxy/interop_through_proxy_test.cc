// The gRPC interop test cases (grpc/grpc doc/interop-test-descriptions.md),
// run through Sluice's data plane in front of the demo TestService.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/proxy/proxy_fixture.h"

namespace sluice {
namespace {

using grpc::testing::Empty;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using grpc::testing::StreamingInputCallRequest;
using grpc::testing::StreamingInputCallResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;

// Every case runs twice: Typed (descriptor set configured) and Generic.
class InteropThroughProxyTest : public ProxyFixture,
                                public ::testing::WithParamInterface<bool> {
 protected:
  std::string ProxyYaml() override { return ShapesYaml(GetParam()); }
};

INSTANTIATE_TEST_SUITE_P(Shapes, InteropThroughProxyTest, ::testing::Bool(),
                         ShapeName);

TEST_P(InteropThroughProxyTest, EmptyUnary) {
  grpc::ClientContext ctx;
  Empty req, resp;
  grpc::Status s = test_->EmptyCall(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
}

TEST_P(InteropThroughProxyTest, LargeUnary) {
  grpc::ClientContext ctx;
  SimpleRequest req;
  req.set_response_size(314159);
  req.mutable_payload()->set_body(std::string(271828, '\0'));
  SimpleResponse resp;
  grpc::Status s = test_->UnaryCall(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.payload().body().size(), 314159u);
}

TEST_P(InteropThroughProxyTest, ClientStreaming) {
  grpc::ClientContext ctx;
  StreamingInputCallResponse resp;
  auto writer = test_->StreamingInputCall(&ctx, &resp);
  for (int size : {27182, 8, 1828, 45904}) {
    StreamingInputCallRequest req;
    req.mutable_payload()->set_body(std::string(size, '\0'));
    ASSERT_TRUE(writer->Write(req));
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.aggregated_payload_size(), 74922);
}

TEST_P(InteropThroughProxyTest, ServerStreaming) {
  grpc::ClientContext ctx;
  StreamingOutputCallRequest req;
  const std::vector<int> sizes = {31415, 9, 2653, 58979};
  for (int size : sizes) req.add_response_parameters()->set_size(size);
  auto reader = test_->StreamingOutputCall(&ctx, req);
  StreamingOutputCallResponse resp;
  std::vector<int> got;
  while (reader->Read(&resp)) got.push_back(resp.payload().body().size());
  grpc::Status s = reader->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(got, sizes);
}

TEST_P(InteropThroughProxyTest, PingPong) {
  grpc::ClientContext ctx;
  auto stream = test_->FullDuplexCall(&ctx);
  const std::vector<std::pair<int, int>> sizes = {
      {27182, 31415}, {8, 9}, {1828, 2653}, {45904, 58979}};
  for (auto [req_size, resp_size] : sizes) {
    StreamingOutputCallRequest req;
    req.add_response_parameters()->set_size(resp_size);
    req.mutable_payload()->set_body(std::string(req_size, '\0'));
    ASSERT_TRUE(stream->Write(req));
    StreamingOutputCallResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_EQ(resp.payload().body().size(), static_cast<size_t>(resp_size));
  }
  stream->WritesDone();
  StreamingOutputCallResponse extra;
  EXPECT_FALSE(stream->Read(&extra));
  grpc::Status s = stream->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
}

TEST_P(InteropThroughProxyTest, EmptyStream) {
  grpc::ClientContext ctx;
  auto stream = test_->FullDuplexCall(&ctx);
  stream->WritesDone();
  StreamingOutputCallResponse resp;
  EXPECT_FALSE(stream->Read(&resp));
  grpc::Status s = stream->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
}

TEST_P(InteropThroughProxyTest, CancelAfterBegin) {
  grpc::ClientContext ctx;
  StreamingInputCallResponse resp;
  auto writer = test_->StreamingInputCall(&ctx, &resp);
  // Wait until the upstream has the call, so the cancel must travel.
  ASSERT_TRUE(upstream_.test_service().stats().Await(
      "StreamingInputCall",
      [](const demo::MethodStats& m) { return m.started == 1; },
      absl::Seconds(10)));
  ctx.TryCancel();
  grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(upstream_.test_service().stats().Await(
      "StreamingInputCall",
      [](const demo::MethodStats& m) { return m.cancelled == 1; },
      absl::Seconds(10)));
  EXPECT_TRUE(AwaitNoCallsInFlight());
}

TEST_P(InteropThroughProxyTest, CancelAfterFirstResponse) {
  grpc::ClientContext ctx;
  auto stream = test_->FullDuplexCall(&ctx);
  StreamingOutputCallRequest req;
  req.add_response_parameters()->set_size(31415);
  req.mutable_payload()->set_body(std::string(27182, '\0'));
  ASSERT_TRUE(stream->Write(req));
  StreamingOutputCallResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ctx.TryCancel();
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(upstream_.test_service().stats().Await(
      "FullDuplexCall",
      [](const demo::MethodStats& m) { return m.cancelled == 1; },
      absl::Seconds(10)));
  EXPECT_TRUE(AwaitNoCallsInFlight());
}

TEST_P(InteropThroughProxyTest, TimeoutOnSleepingServer) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Milliseconds(5));
  auto stream = test_->FullDuplexCall(&ctx);
  StreamingOutputCallRequest req;
  req.mutable_payload()->set_body(std::string(27182, '\0'));
  stream->Write(req);
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(AwaitNoCallsInFlight());
}

TEST_P(InteropThroughProxyTest, CustomMetadataUnary) {
  const std::string trailing("\xab\xab\xab", 3);
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-grpc-test-echo-initial", "test_initial_metadata_value");
  ctx.AddMetadata("x-grpc-test-echo-trailing-bin", trailing);
  SimpleRequest req;
  req.set_response_size(314159);
  req.mutable_payload()->set_body(std::string(271828, '\0'));
  SimpleResponse resp;
  grpc::Status s = test_->UnaryCall(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto& initial = ctx.GetServerInitialMetadata();
  auto it = initial.find("x-grpc-test-echo-initial");
  ASSERT_NE(it, initial.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()),
            "test_initial_metadata_value");
  EXPECT_EQ(Trailer(ctx, "x-grpc-test-echo-trailing-bin"), trailing);
}

TEST_P(InteropThroughProxyTest, CustomMetadataFullDuplex) {
  const std::string trailing("\xab\xab\xab", 3);
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-grpc-test-echo-initial", "test_initial_metadata_value");
  ctx.AddMetadata("x-grpc-test-echo-trailing-bin", trailing);
  auto stream = test_->FullDuplexCall(&ctx);
  StreamingOutputCallRequest req;
  req.add_response_parameters()->set_size(314159);
  req.mutable_payload()->set_body(std::string(271828, '\0'));
  ASSERT_TRUE(stream->Write(req));
  StreamingOutputCallResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  stream->WritesDone();
  ASSERT_TRUE(stream->Finish().ok());
  auto& initial = ctx.GetServerInitialMetadata();
  auto it = initial.find("x-grpc-test-echo-initial");
  ASSERT_NE(it, initial.end());
  EXPECT_EQ(Trailer(ctx, "x-grpc-test-echo-trailing-bin"), trailing);
}

TEST_P(InteropThroughProxyTest, StatusCodeAndMessage) {
  grpc::ClientContext ctx;
  SimpleRequest req;
  req.mutable_response_status()->set_code(2);
  req.mutable_response_status()->set_message("test status message");
  SimpleResponse resp;
  grpc::Status s = test_->UnaryCall(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(s.error_message(), "test status message");
  EXPECT_EQ(Trailer(ctx, "sluice-reason"), "");  // the upstream said it

  grpc::ClientContext ctx2;
  auto stream = test_->FullDuplexCall(&ctx2);
  StreamingOutputCallRequest sreq;
  sreq.mutable_response_status()->set_code(2);
  sreq.mutable_response_status()->set_message("test status message");
  ASSERT_TRUE(stream->Write(sreq));
  stream->WritesDone();
  grpc::Status s2 = stream->Finish();
  EXPECT_EQ(s2.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(s2.error_message(), "test status message");
}

TEST_P(InteropThroughProxyTest, SpecialStatusMessage) {
  const std::string message =
      "\t\ntest with whitespace\r\nand Unicode BMP \xe2\x98\xba and non-BMP "
      "\xf0\x9f\x98\x88\t\n";
  grpc::ClientContext ctx;
  SimpleRequest req;
  req.mutable_response_status()->set_code(2);
  req.mutable_response_status()->set_message(message);
  SimpleResponse resp;
  grpc::Status s = test_->UnaryCall(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(s.error_message(), message);
}

TEST_P(InteropThroughProxyTest, UnimplementedMethod) {
  grpc::ClientContext ctx;
  Empty req, resp;
  grpc::Status s = test_->UnimplementedCall(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_P(InteropThroughProxyTest, UnimplementedService) {
  auto stub = grpc::testing::UnimplementedService::NewStub(channel_);
  grpc::ClientContext ctx;
  Empty req, resp;
  grpc::Status s = stub->UnimplementedCall(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(Trailer(ctx, "sluice-reason"), "");  // the upstream said it
}

}  // namespace
}  // namespace sluice
