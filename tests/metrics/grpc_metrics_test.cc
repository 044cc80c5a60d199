// MethodTable and MethodSeries: known methods get their own series, every
// other method shares the "other" ones (per upstream on the client side);
// a table's series are exactly those its configuration makes possible, at
// 0 from the moment it is built (every code of a method that reaches an
// upstream, as go-grpc-prometheus' InitializeMetrics); rebuilding a table
// for a new config reuses the same series, and a series no live table
// holds is gone.
#include "server/metrics/grpc_metrics.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "tests/metrics/series_text.h"

namespace sluice {
namespace {

// Upstream a: an exact route and a prefix route; b: an exact route only.
constexpr char kConfig[] = R"(
upstreams:
  - {name: a, target: "127.0.0.1:1"}
  - {name: b, target: "127.0.0.1:2"}
routes:
  - name: unary
    match: {method: /p.S/Unary}
    upstream: a
  - name: stream
    match: {method: /p.S/Stream}
    upstream: b
  - name: rest
    match: {prefix: /q.S/}
    upstream: a
)";

// The series of one method on one side. `labels`: its labels after
// grpc_code, in name order.
std::vector<std::string> MethodSeriesText(const std::string& side,
                                          const std::string& labels,
                                          bool routed) {
  const std::string p = "grpc_" + side + "_";
  std::vector<std::string> s = {
      absl::StrCat(p, "started_total{", labels, "}"),
      absl::StrCat(p, "handling_seconds{", labels, "}"),
  };
  if (routed) {
    s.push_back(absl::StrCat(p, "msg_received_total{", labels, "}"));
    s.push_back(absl::StrCat(p, "msg_sent_total{", labels, "}"));
    for (const std::string& code : AllGoCodes()) {
      s.push_back(absl::StrCat(p, "handled_total{grpc_code=\"", code, "\",",
                               labels, "}"));
    }
  } else {
    s.push_back(absl::StrCat(p, "handled_total{grpc_code=\"Unimplemented\",",
                             labels, "}"));
  }
  return s;
}

std::string Labels(const std::string& service, const std::string& method,
                   const std::string& type, const std::string& upstream = "") {
  std::string s = absl::StrCat("grpc_method=\"", method, "\",grpc_service=\"",
                               service, "\",grpc_type=\"", type, "\"");
  if (!upstream.empty()) absl::StrAppend(&s, ",upstream=\"", upstream, "\"");
  return s;
}

class MethodTableTest : public ::testing::Test {
 protected:
  std::vector<std::string> Series() {
    return SeriesText(registry_->Collect(), "grpc_");
  }
  std::string Exposition() {
    return prometheus::TextSerializer().Serialize(registry_->Collect());
  }

  std::shared_ptr<prometheus::Registry> registry_ =
      std::make_shared<prometheus::Registry>();
  GrpcMetrics metrics_{registry_};
  std::shared_ptr<const Config> config_ = MustParse(kConfig);
  const std::vector<MethodTable::Known> known_ = {
      {"/p.S/Unary", {"p.S", "Unary", "unary"}, 0},
      {"/p.S/Stream", {"p.S", "Stream", "server_stream"}, 1},
      {"/p.S/Unrouted", {"p.S", "Unrouted", "unary"}, -1},
  };
};

TEST_F(MethodTableTest, ExactlyThePossibleSeriesAtZeroBeforeAnyCall) {
  EXPECT_EQ(Series(), std::vector<std::string>());
  MethodTable table(metrics_, known_, *config_);
  std::vector<std::string> expected;
  auto add = [&](std::vector<std::string> s) {
    expected.insert(expected.end(), s.begin(), s.end());
  };
  add(MethodSeriesText("server", Labels("p.S", "Unary", "unary"), true));
  add(MethodSeriesText("server", Labels("p.S", "Stream", "server_stream"),
                       true));
  // No route takes it: it ends Unimplemented and moves no message.
  add(MethodSeriesText("server", Labels("p.S", "Unrouted", "unary"), false));
  // The prefix route takes other methods, toward upstream a only.
  add(MethodSeriesText("server", Labels("other", "other", "unknown"), true));
  add(MethodSeriesText("client", Labels("p.S", "Unary", "unary", "a"), true));
  add(MethodSeriesText("client", Labels("p.S", "Stream", "server_stream", "b"),
                       true));
  add(MethodSeriesText("client", Labels("other", "other", "unknown", "a"),
                       true));
  EXPECT_EQ(Series(), AtZero(expected));
}

TEST_F(MethodTableTest, WithExactRoutesOnlyOtherMethodsNeverReachAnUpstream) {
  auto config = MustParse(R"(
upstreams:
  - {name: a, target: "127.0.0.1:1"}
routes:
  - name: unary
    match: {method: /p.S/Unary}
    upstream: a
)");
  ASSERT_NE(config, nullptr);
  MethodTable table(metrics_, {{"/p.S/Unary", {"p.S", "Unary", "unknown"}, 0}},
                    *config);
  std::vector<std::string> expected =
      MethodSeriesText("server", Labels("p.S", "Unary", "unknown"), true);
  for (auto& s :
       MethodSeriesText("client", Labels("p.S", "Unary", "unknown", "a"), true))
    expected.push_back(s);
  for (auto& s :
       MethodSeriesText("server", Labels("other", "other", "unknown"), false))
    expected.push_back(s);
  EXPECT_EQ(Series(), AtZero(expected));
  EXPECT_EQ(table.Find("/x.Y/Z", -1).client, nullptr);
}

TEST_F(MethodTableTest, KnownMethodsHaveTheirOwnSeries) {
  MethodTable table(metrics_, known_, *config_);
  CallSeries unary = table.Find("/p.S/Unary", 1);
  CallSeries stream = table.Find("/p.S/Stream", 0);
  ASSERT_NE(unary.server, nullptr);
  ASSERT_NE(unary.client, nullptr);
  EXPECT_NE(unary.server, stream.server);
  EXPECT_TRUE(unary.unary);
  EXPECT_TRUE(stream.single_request);
  EXPECT_FALSE(stream.unary);
  unary.server->started().Increment();
  unary.client->started().Increment();
  const std::string text = Exposition();
  EXPECT_NE(text.find("grpc_server_started_total{grpc_method=\"Unary\","
                      "grpc_service=\"p.S\",grpc_type=\"unary\"} 1"),
            std::string::npos)
      << text;
  // The client series follow the known method's own route's upstream, not
  // the one passed in.
  EXPECT_NE(text.find("grpc_client_started_total{grpc_method=\"Unary\","
                      "grpc_service=\"p.S\",grpc_type=\"unary\",upstream=\"a\"}"
                      " 1"),
            std::string::npos)
      << text;
  EXPECT_EQ(table.Find("/p.S/Unrouted", 0).client, nullptr);
}

TEST_F(MethodTableTest, OtherMethodsShareOneSeriesPerUpstream) {
  auto config = MustParse(R"(
upstreams:
  - {name: a, target: "127.0.0.1:1"}
  - {name: b, target: "127.0.0.1:2"}
routes:
  - {name: ra, match: {prefix: /a.}, upstream: a}
  - {name: rb, match: {prefix: /b.}, upstream: b}
)");
  ASSERT_NE(config, nullptr);
  MethodTable table(metrics_, known_, *config);
  CallSeries x = table.Find("/evil.Service/Random1", 0);
  CallSeries y = table.Find("/evil.Service/Random2", 0);
  CallSeries z = table.Find("/evil.Service/Random3", 1);
  CallSeries none = table.Find("/evil.Service/Random4", -1);
  EXPECT_EQ(x.server, y.server);
  EXPECT_EQ(x.server, z.server);
  EXPECT_EQ(x.client, y.client);
  ASSERT_NE(z.client, nullptr);
  EXPECT_NE(x.client, z.client);
  EXPECT_EQ(none.client, nullptr);
  EXPECT_EQ(none.server, x.server);
  const std::string text = Exposition();
  EXPECT_EQ(text.find("Random"), std::string::npos);
  EXPECT_NE(text.find("grpc_service=\"other\""), std::string::npos);
}

TEST_F(MethodTableTest, HandledCountsByCode) {
  MethodTable table(metrics_, known_, *config_);
  MethodSeries* s = table.Find("/p.S/Unary", 0).server;
  s->handled(0).Increment();
  s->handled(8).Increment();
  s->handled(8).Increment();
  s->handled(99).Increment();  // not a gRPC code: counted as Unknown
  const std::string text = Exposition();
  EXPECT_NE(text.find("grpc_code=\"OK\",grpc_method=\"Unary\","
                      "grpc_service=\"p.S\",grpc_type=\"unary\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("grpc_code=\"ResourceExhausted\",grpc_method=\"Unary\","
                      "grpc_service=\"p.S\",grpc_type=\"unary\"} 2"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("grpc_code=\"Unknown\",grpc_method=\"Unary\","
                      "grpc_service=\"p.S\",grpc_type=\"unary\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("grpc_code=\"NotFound\",grpc_method=\"Unary\","
                      "grpc_service=\"p.S\",grpc_type=\"unary\"} 0"),
            std::string::npos);
}

TEST_F(MethodTableTest, ACountThePlanCallsImpossibleIsStillNotLost) {
  MethodTable table(metrics_, known_, *config_);
  MethodSeries* s = table.Find("/p.S/Unrouted", -1).server;
  s->handled(0).Increment();
  s->msg_received().Increment(2);
  const std::string text = Exposition();
  EXPECT_NE(
      text.find("grpc_server_handled_total{grpc_code=\"OK\",grpc_method="
                "\"Unrouted\",grpc_service=\"p.S\",grpc_type=\"unary\"} 1"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("grpc_server_msg_received_total{grpc_method=\"Unrouted\","
                      "grpc_service=\"p.S\",grpc_type=\"unary\"} 2"),
            std::string::npos)
      << text;
}

TEST_F(MethodTableTest, ANewTableKeepsCountingAndTheLastOneTakesTheSeries) {
  auto first = std::make_unique<MethodTable>(metrics_, known_, *config_);
  first->Find("/p.S/Unary", 0).server->handled(0).Increment();
  // A reload without p.S/Stream and its route.
  auto config = MustParse(R"(
upstreams:
  - {name: a, target: "127.0.0.1:1"}
  - {name: b, target: "127.0.0.1:2"}
routes:
  - name: unary
    match: {method: /p.S/Unary}
    upstream: a
  - name: rest
    match: {prefix: /q.S/}
    upstream: a
)");
  ASSERT_NE(config, nullptr);
  auto second = std::make_unique<MethodTable>(
      metrics_,
      std::vector<MethodTable::Known>{
          {"/p.S/Unary", {"p.S", "Unary", "unary"}, 0}},
      *config);
  second->Find("/p.S/Unary", 0).server->handled(0).Increment();
  EXPECT_EQ(&first->Find("/p.S/Unary", 0).server->handled(0),
            &second->Find("/p.S/Unary", 0).server->handled(0));
  EXPECT_NE(Exposition().find("grpc_code=\"OK\",grpc_method=\"Unary\","
                              "grpc_service=\"p.S\",grpc_type=\"unary\"} 2"),
            std::string::npos);
  EXPECT_NE(Exposition().find("grpc_method=\"Stream\""), std::string::npos);
  first.reset();  // the old config's last call is freed
  EXPECT_EQ(Exposition().find("grpc_method=\"Stream\""), std::string::npos);
  EXPECT_EQ(Exposition().find("upstream=\"b\""), std::string::npos);
  EXPECT_NE(Exposition().find("grpc_code=\"OK\",grpc_method=\"Unary\","
                              "grpc_service=\"p.S\",grpc_type=\"unary\"} 2"),
            std::string::npos);
  second.reset();
  EXPECT_EQ(Series(), std::vector<std::string>());
}

}  // namespace
}  // namespace sluice
