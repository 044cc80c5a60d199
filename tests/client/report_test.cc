// sluice::bench report: the JSON object parses and holds every key; the
// table names what it shows; status code names.
#include "client/bench/report.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/client/json_util.h"

namespace sluice::bench {
namespace {

BenchResult Sample() {
  BenchResult r;
  r.target = "127.0.0.1:8080";
  r.method = "/grpc.testing.TestService/UnaryCall";
  r.kind = CallKind::kUnary;
  r.open_loop = true;
  r.rate = 100;
  r.threads = 2;
  r.connections = 2;
  r.concurrency = 8;
  r.elapsed = absl::Seconds(2);
  r.calls = 200;
  r.messages = 150;
  for (int i = 1; i <= 200; ++i) r.latency.Record(i * 1000);
  r.status_counts["OK"] = 150;
  r.status_counts["RESOURCE_EXHAUSTED"] = 50;
  r.reasons["rate_limited"] = 49;
  r.reasons["odd \"value\"\n\x01"] = 1;
  r.scheduled = 201;
  r.dropped = 1;
  r.late = 3;
  r.max_send_lag_ns = 2500000;
  return r;
}

TEST(ReportTest, StatusCodeNames) {
  EXPECT_EQ(StatusCodeName(0), "OK");
  EXPECT_EQ(StatusCodeName(8), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeName(14), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(99), "CODE_99");
}

TEST(ReportTest, RatesPerSecond) {
  BenchResult r = Sample();
  EXPECT_DOUBLE_EQ(r.calls_per_second(), 100.0);
  EXPECT_DOUBLE_EQ(r.messages_per_second(), 75.0);
  r.elapsed = absl::ZeroDuration();
  EXPECT_EQ(r.calls_per_second(), 0.0);
}

TEST(ReportTest, JsonParsesWithEveryKey) {
  const std::string json = FormatJson(Sample());
  EXPECT_EQ(json.find('\n'), std::string::npos) << "one line";
  google::protobuf::Struct s;
  ASSERT_TRUE(testing::ParseJsonObject(json, &s)) << json;
  const auto& f = s.fields();
  for (const char* key :
       {"target",         "method",     "kind",        "mode",
        "rate",           "threads",    "connections", "concurrency",
        "elapsed_s",      "calls",      "calls_per_s", "messages",
        "messages_per_s", "latency_us", "status",      "sluice_reason",
        "scheduled",      "dropped",    "late",        "max_send_lag_us"}) {
    EXPECT_TRUE(f.contains(key)) << key;
  }
  EXPECT_EQ(f.at("mode").string_value(), "open");
  EXPECT_EQ(f.at("kind").string_value(), "unary");
  EXPECT_EQ(f.at("calls").number_value(), 200);
  EXPECT_EQ(f.at("calls_per_s").number_value(), 100);
  EXPECT_EQ(f.at("dropped").number_value(), 1);
  const auto& latency = f.at("latency_us").struct_value().fields();
  for (const char* key : {"p50", "p90", "p99", "p99_9", "max", "min", "mean"}) {
    EXPECT_TRUE(latency.contains(key)) << key;
  }
  EXPECT_EQ(latency.at("max").number_value(), 200);
  EXPECT_NEAR(latency.at("p50").number_value(), 100, 1);
  const auto& status = f.at("status").struct_value().fields();
  EXPECT_EQ(status.at("RESOURCE_EXHAUSTED").number_value(), 50);
  const auto& reasons = f.at("sluice_reason").struct_value().fields();
  EXPECT_EQ(reasons.at("rate_limited").number_value(), 49);
  EXPECT_EQ(reasons.at("odd \"value\"\n\x01").number_value(), 1);
}

TEST(ReportTest, TableShowsCountsAndPercentiles) {
  const std::string table = FormatTable(Sample());
  for (const char* text : {"open loop", "calls", "100.0 calls/s", "p99.9",
                           "max", "RESOURCE_EXHAUSTED", "sluice-reason",
                           "rate_limited", "dropped", "late"}) {
    EXPECT_TRUE(absl::StrContains(table, text)) << text << "\n" << table;
  }
}

}  // namespace
}  // namespace sluice::bench
