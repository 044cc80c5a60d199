// sluice::bench::Resolve and ParseHeader: flag validation and the built-in
// scenario payloads.
#include "client/bench/options.h"

#include <string>

#include "absl/time/time.h"
#include "grpc/testing/messages.pb.h"
#include "gtest/gtest.h"
#include "sluice/demo/v1/ticker.pb.h"

namespace sluice::bench {
namespace {

BenchOptions Base() {
  BenchOptions options;
  options.target = "127.0.0.1:1";
  return options;
}

TEST(OptionsTest, DefaultsToUnaryScenarioForTenSeconds) {
  absl::StatusOr<ResolvedOptions> r = Resolve(Base());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, CallKind::kUnary);
  EXPECT_EQ(r->method, "/grpc.testing.TestService/UnaryCall");
  EXPECT_EQ(r->duration, absl::Seconds(10));
  EXPECT_FALSE(r->open_loop());
  grpc::testing::SimpleRequest request;
  ASSERT_TRUE(request.ParseFromString(r->payload));
  EXPECT_EQ(request.response_size(), 100);
  EXPECT_EQ(request.payload().body().size(), 100u);
}

TEST(OptionsTest, CallsAloneMeansNoTimeBound) {
  BenchOptions options = Base();
  options.calls = 5;
  absl::StatusOr<ResolvedOptions> r = Resolve(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->duration, absl::ZeroDuration());
}

TEST(OptionsTest, TickerScenario) {
  BenchOptions options = Base();
  options.scenario = "ticker";
  options.stream_messages = 7;
  options.response_bytes = 33;
  absl::StatusOr<ResolvedOptions> r = Resolve(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, CallKind::kServerStream);
  EXPECT_EQ(r->method, "/sluice.demo.v1.Ticker/Subscribe");
  sluice::demo::v1::SubscribeRequest request;
  ASSERT_TRUE(request.ParseFromString(r->payload));
  EXPECT_EQ(request.count(), 7u);
  EXPECT_EQ(request.payload_bytes(), 33u);
  EXPECT_EQ(request.interval_ms(), 0u);
}

TEST(OptionsTest, PingPongScenario) {
  BenchOptions options = Base();
  options.scenario = "pingpong";
  options.response_bytes = 12;
  options.request_bytes = 0;
  absl::StatusOr<ResolvedOptions> r = Resolve(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, CallKind::kBidi);
  EXPECT_EQ(r->method, "/grpc.testing.TestService/FullDuplexCall");
  grpc::testing::StreamingOutputCallRequest request;
  ASSERT_TRUE(request.ParseFromString(r->payload));
  ASSERT_EQ(request.response_parameters_size(), 1);
  EXPECT_EQ(request.response_parameters(0).size(), 12);
  EXPECT_FALSE(request.has_payload());
}

TEST(OptionsTest, PayloadTakesMethodAndKindFromFlags) {
  BenchOptions options = Base();
  options.payload = "raw";
  options.payload_set = true;
  options.method = "/pkg.Svc/Stream";
  options.kind = "server_stream";
  absl::StatusOr<ResolvedOptions> r = Resolve(options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->payload, "raw");
  EXPECT_EQ(r->method, "/pkg.Svc/Stream");
  EXPECT_EQ(r->kind, CallKind::kServerStream);
}

TEST(OptionsTest, RejectsBadSettingsNamingTheFlag) {
  struct Case {
    void (*mutate)(BenchOptions*);
    const char* flag;
  };
  const Case cases[] = {
      {[](BenchOptions* o) { o->target = ""; }, "--target"},
      {[](BenchOptions* o) { o->target = "localhost"; }, "--target"},
      {[](BenchOptions* o) { o->threads = 0; }, "--threads"},
      {[](BenchOptions* o) { o->connections = 0; }, "--connections"},
      {[](BenchOptions* o) { o->concurrency = -1; }, "--concurrency"},
      {[](BenchOptions* o) { o->rate = -1; }, "--rate"},
      {[](BenchOptions* o) { o->calls = -1; }, "--calls"},
      {[](BenchOptions* o) { o->duration = absl::Seconds(-1); }, "--duration"},
      {[](BenchOptions* o) { o->timeout = absl::ZeroDuration(); }, "--timeout"},
      {[](BenchOptions* o) { o->scenario = "nope"; }, "--scenario"},
      {[](BenchOptions* o) { o->kind = "bidi"; }, "--kind"},
      {[](BenchOptions* o) { o->method = "NoSlash"; }, "--method"},
      {[](BenchOptions* o) { o->method = "/a/b/c"; }, "--method"},
      {[](BenchOptions* o) { o->payload_file = "/nonexistent/file"; },
       "--payload_file"},
      {[](BenchOptions* o) { o->stream_messages = 0; }, "--stream_messages"},
      {[](BenchOptions* o) { o->pingpong_rounds = 0; }, "--pingpong_rounds"},
      {[](BenchOptions* o) { o->response_bytes = int64_t{1} << 40; },
       "--response_bytes"},
      {[](BenchOptions* o) { o->max_inflight = 0; }, "--max_inflight"},
      {[](BenchOptions* o) { o->headers = {"novalue"}; }, "--header"},
  };
  for (const Case& c : cases) {
    BenchOptions options = Base();
    c.mutate(&options);
    absl::StatusOr<ResolvedOptions> r = Resolve(options);
    ASSERT_FALSE(r.ok()) << c.flag;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.flag), std::string::npos)
        << r.status().message();
  }
}

TEST(OptionsTest, PayloadFileAndScenarioExcludeEachOther) {
  BenchOptions options = Base();
  options.payload_file = "/dev/null";
  options.scenario = "unary";
  EXPECT_FALSE(Resolve(options).ok());
}

TEST(OptionsTest, ParseHeader) {
  auto kv = ParseHeader("X-User: alice");
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(kv->first, "x-user");
  EXPECT_EQ(kv->second, "alice");
  kv = ParseHeader("k:a:b");
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->second, "a:b");
  EXPECT_FALSE(ParseHeader(":v").ok());
  EXPECT_FALSE(ParseHeader("bad key:v").ok());
  EXPECT_FALSE(ParseHeader("grpc-timeout:1S").ok());
  EXPECT_FALSE(ParseHeader("k:\x01").ok());
  EXPECT_TRUE(ParseHeader("k-bin:\x01").ok());
}

}  // namespace
}  // namespace sluice::bench
