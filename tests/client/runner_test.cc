// sluice::bench::RunBench in-process against the demo upstream (and a tiny
// generic server that rejects with a sluice-reason trailer): exact counts,
// status and reason counting, open-loop rate, stream messages, headers.
#include "client/bench/runner.h"

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "client/bench/report.h"
#include "grpc/testing/messages.pb.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "server/demo/demo_upstream.h"
#include "tests/client/json_util.h"

namespace sluice::bench {
namespace {

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> port = upstream_.Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok()) << port.status();
  }
  void TearDown() override { upstream_.Shutdown(absl::Seconds(5)); }

  BenchOptions Options() const {
    BenchOptions options;
    options.target = upstream_.address();
    options.timeout = absl::Seconds(10);
    return options;
  }

  demo::DemoUpstream upstream_;
};

uint64_t Count(const std::map<std::string, uint64_t>& counts,
               const std::string& key) {
  auto it = counts.find(key);
  return it == counts.end() ? 0 : it->second;
}

TEST_F(RunnerTest, ClosedLoopCallsAreExact) {
  BenchOptions options = Options();
  options.calls = 537;
  options.connections = 3;
  options.concurrency = 7;
  options.threads = 2;
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->calls, 537u);
  EXPECT_EQ(r->messages, 537u);
  EXPECT_EQ(Count(r->status_counts, "OK"), 537u);
  EXPECT_EQ(r->status_counts.size(), 1u);
  EXPECT_EQ(r->latency.count(), 537u);
  EXPECT_EQ(r->latency_ok.count(), 537u);
  EXPECT_GT(r->latency.Percentile(50), 0);
  EXPECT_GT(r->calls_per_second(), 0);
  EXPECT_EQ(upstream_.test_service().stats().Get("UnaryCall").started, 537);
  EXPECT_FALSE(r->open_loop);
}

TEST_F(RunnerTest, FewerCallsThanSlots) {
  BenchOptions options = Options();
  options.calls = 3;
  options.connections = 2;
  options.concurrency = 16;
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->calls, 3u);
}

TEST_F(RunnerTest, CountsStatusCodesFromPayload) {
  grpc::testing::SimpleRequest request;
  request.mutable_response_status()->set_code(8);
  request.mutable_response_status()->set_message("slow down");
  BenchOptions options = Options();
  options.payload = request.SerializeAsString();
  options.payload_set = true;
  options.calls = 50;
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->calls, 50u);
  EXPECT_EQ(Count(r->status_counts, "RESOURCE_EXHAUSTED"), 50u);
  EXPECT_EQ(Count(r->status_counts, "OK"), 0u);
  EXPECT_EQ(r->messages, 0u);
  // Failed calls are in the latency of all calls, not in that of OK ones.
  EXPECT_EQ(r->latency.count(), 50u);
  EXPECT_EQ(r->latency_ok.count(), 0u);
}

TEST_F(RunnerTest, DurationBoundsClosedLoop) {
  BenchOptions options = Options();
  options.duration = absl::Milliseconds(300);
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->calls, 0u);
  EXPECT_GE(r->elapsed, absl::Milliseconds(290));
  EXPECT_LT(r->elapsed, absl::Seconds(5));
}

TEST_F(RunnerTest, OpenLoopRateIsAccurate) {
  BenchOptions options = Options();
  options.rate = 200;
  options.duration = absl::Seconds(1);
  options.connections = 2;
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->open_loop);
  EXPECT_GE(r->calls, 180u);
  EXPECT_LE(r->calls, 220u);
  EXPECT_EQ(r->scheduled, r->calls + r->dropped);
  EXPECT_EQ(r->dropped, 0u);
  EXPECT_NEAR(r->calls_per_second(), 200, 20);
  EXPECT_GE(r->elapsed, absl::Milliseconds(900));
}

TEST_F(RunnerTest, OpenLoopCallsBoundAndInflightCap) {
  BenchOptions options = Options();
  options.rate = 1000;
  options.calls = 40;
  options.max_inflight = 1;
  // Each call holds its slot for ~20 ms: most sends find the cap reached.
  grpc::testing::StreamingOutputCallRequest request;
  for (int i = 0; i < 2; ++i) {
    request.add_response_parameters()->set_interval_us(10000);
  }
  options.payload = request.SerializeAsString();
  options.payload_set = true;
  options.method = "/grpc.testing.TestService/StreamingOutputCall";
  options.kind = "server_stream";
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->scheduled, 40u);
  EXPECT_EQ(r->calls + r->dropped, 40u);
  EXPECT_GT(r->dropped, 0u);
  EXPECT_GT(r->calls, 0u);
  EXPECT_EQ(r->messages, r->calls * 2);
}

TEST_F(RunnerTest, ServerStreamCountsMessages) {
  BenchOptions options = Options();
  options.scenario = "ticker";
  options.stream_messages = 25;
  options.response_bytes = 10;
  options.calls = 40;
  options.connections = 2;
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, CallKind::kServerStream);
  EXPECT_EQ(r->calls, 40u);
  EXPECT_EQ(Count(r->status_counts, "OK"), 40u);
  EXPECT_EQ(r->messages, 40u * 25u);
}

TEST_F(RunnerTest, PingPongCountsRounds) {
  BenchOptions options = Options();
  options.scenario = "pingpong";
  options.pingpong_rounds = 6;
  options.calls = 30;
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, CallKind::kBidi);
  EXPECT_EQ(Count(r->status_counts, "OK"), 30u);
  EXPECT_EQ(r->messages, 30u * 6u);
}

TEST_F(RunnerTest, DeadlineCountsAsDeadlineExceeded) {
  grpc::testing::StreamingOutputCallRequest request;
  request.add_response_parameters()->set_interval_us(2000000);  // 2 s
  BenchOptions options = Options();
  options.payload = request.SerializeAsString();
  options.payload_set = true;
  options.method = "/grpc.testing.TestService/StreamingOutputCall";
  options.kind = "server_stream";
  options.calls = 4;
  options.timeout = absl::Milliseconds(100);
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Count(r->status_counts, "DEADLINE_EXCEEDED"), 4u);
  EXPECT_LT(r->elapsed, absl::Seconds(1));
}

TEST_F(RunnerTest, SendsHeaders) {
  BenchOptions options = Options();
  options.calls = 2;
  options.headers = {"x-tenant:acme", "X-Trace: abc"};
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  std::optional<demo::CallRecord> call =
      upstream_.test_service().stats().LastCall("UnaryCall");
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->Value("x-tenant"), "acme");
  EXPECT_EQ(call->Value("x-trace"), "abc");
  // The deadline is the per-call timeout (grpc-timeout rounds it up a
  // little on the wire).
  EXPECT_LE(call->budget(), absl::Seconds(10.5));
  EXPECT_GT(call->budget(), absl::Seconds(9));
}

TEST_F(RunnerTest, JsonOfARealRunParses) {
  BenchOptions options = Options();
  options.calls = 20;
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_TRUE(r.ok()) << r.status();
  google::protobuf::Struct s;
  const std::string json = FormatJson(*r);
  ASSERT_TRUE(testing::ParseJsonObject(json, &s)) << json;
  EXPECT_EQ(s.fields().at("calls").number_value(), 20);
  EXPECT_EQ(s.fields().at("mode").string_value(), "closed");
  EXPECT_EQ(
      s.fields().at("status").struct_value().fields().at("OK").number_value(),
      20);
  EXPECT_GT(s.fields()
                .at("latency_us")
                .struct_value()
                .fields()
                .at("p99")
                .number_value(),
            0);
}

TEST(RunnerNoServerTest, UnreachableTargetFails) {
  BenchOptions options;
  options.target = "127.0.0.1:1";
  options.calls = 1;
  options.connect_timeout = absl::Milliseconds(300);
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

TEST(RunnerNoServerTest, BadOptionsFail) {
  BenchOptions options;
  options.target = "127.0.0.1:1";
  options.concurrency = 0;
  absl::StatusOr<BenchResult> r = RunBench(options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

// Rejects every call with RESOURCE_EXHAUSTED and a sluice-reason trailer,
// as Sluice does.
class RejectingService final : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    class Reactor final : public grpc::ServerGenericBidiReactor {
     public:
      explicit Reactor(grpc::GenericCallbackServerContext* context) {
        context->AddTrailingMetadata("sluice-reason", "rate_limited");
        Finish(
            grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "rate limited"));
      }
      void OnDone() override { delete this; }
    };
    return new Reactor(context);
  }
};

TEST(RunnerReasonTest, CountsSluiceReasonTrailers) {
  RejectingService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  for (const char* scenario : {"unary", "ticker"}) {
    BenchOptions options;
    options.target = "127.0.0.1:" + std::to_string(port);
    options.scenario = scenario;
    options.calls = 30;
    absl::StatusOr<BenchResult> r = RunBench(options);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(Count(r->status_counts, "RESOURCE_EXHAUSTED"), 30u) << scenario;
    EXPECT_EQ(Count(r->reasons, "rate_limited"), 30u) << scenario;
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace
}  // namespace sluice::bench
