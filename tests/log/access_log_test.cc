#include "server/log/access_log.h"

#include <map>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

google::protobuf::Struct Parse(const std::string& line) {
  google::protobuf::Struct s;
  auto status = google::protobuf::util::JsonStringToMessage(line, &s);
  EXPECT_TRUE(status.ok()) << status << "\n" << line;
  return s;
}

TEST(AccessLogFormatTest, EveryFieldAndValidJsonForHostileValues) {
  std::multimap<grpc::string_ref, grpc::string_ref> md;
  const std::string quote_value = "a\"b\\c\nd\x01\xff";
  md.emplace("x-request-id", quote_value);
  md.emplace("authorization", "Bearer secret");
  AccessLogSettings settings;
  settings.enabled = true;
  settings.headers = {"x-request-id", "authorization", "x-missing"};
  settings.sensitive_headers = {"authorization"};
  AccessRecord r;
  r.start = absl::FromUnixMicros(1795535462269214);
  r.peer = "127.0.0.1";
  r.method = "/pkg.Svc/M\"ethod";
  r.route = "api";
  r.upstream = "demo";
  r.grpc_code = 8;
  r.reason = "rate_limited";
  r.duration = absl::Microseconds(1500);
  r.queue_wait = absl::Microseconds(250);
  r.msgs_in = 1;
  r.msgs_out = 2;
  r.bytes_in = 10;
  r.bytes_out = 20;
  r.metadata = &md;
  const std::string line = AccessLog::Format(r, settings);
  EXPECT_EQ(line.find("secret"), std::string::npos);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto s = Parse(line);
  const auto& f = s.fields();
  EXPECT_EQ(f.at("time").string_value(), "2026-11-24T15:51:02.269214Z");
  EXPECT_EQ(f.at("method").string_value(), "/pkg.Svc/M\"ethod");
  EXPECT_EQ(f.at("grpc_status").string_value(), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(f.at("grpc_code").number_value(), 8);
  EXPECT_EQ(f.at("sluice_reason").string_value(), "rate_limited");
  EXPECT_DOUBLE_EQ(f.at("duration_ms").number_value(), 1.5);
  EXPECT_DOUBLE_EQ(f.at("queue_wait_ms").number_value(), 0.25);
  EXPECT_EQ(f.at("msgs_out").number_value(), 2);
  EXPECT_EQ(f.at("bytes_out").number_value(), 20);
  const auto& h = f.at("headers").struct_value().fields();
  EXPECT_EQ(h.at("authorization").string_value(), "[redacted]");
  EXPECT_EQ(h.count("x-missing"), 0u);
  // Control and non-ASCII bytes are escaped one by one.
  EXPECT_EQ(h.at("x-request-id").string_value(),
            std::string("a\"b\\c\nd\x01") + "\xc3\xbf");
}

TEST(AccessLogFormatTest, UnknownCodeAndNoHeaders) {
  AccessRecord r;
  r.grpc_code = 99;
  auto s = Parse(AccessLog::Format(r, AccessLogSettings{}));
  EXPECT_EQ(s.fields().at("grpc_status").string_value(), "UNKNOWN");
  EXPECT_EQ(s.fields().count("headers"), 0u);
}

TEST(AccessLogSampleTest, Bounds) {
  EXPECT_TRUE(AccessLog::Sample(1.0));
  EXPECT_FALSE(AccessLog::Sample(0.0));
  int hits = 0;
  for (int i = 0; i < 10000; ++i) hits += AccessLog::Sample(0.25) ? 1 : 0;
  EXPECT_GT(hits, 2000);
  EXPECT_LT(hits, 3000);
}

TEST(AccessLogOpenTest, UnwritablePathIsAClearError) {
  auto log = AccessLog::Open("/nonexistent-dir/sub/access.log", nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("access_log.path"), std::string::npos);
}

}  // namespace
}  // namespace sluice
