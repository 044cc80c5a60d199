// MethodTable and MethodSeries: known methods get their own series, every
// other method shares the "other" ones (per upstream on the client side),
// handled series appear only for codes seen, and rebuilding a table for a
// new config reuses the same series.
#include "server/metrics/grpc_metrics.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace sluice {
namespace {

std::string Exposition(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

class MethodTableTest : public ::testing::Test {
 protected:
  prometheus::Registry registry_;
  GrpcMetrics metrics_{registry_};
  const std::vector<std::string> upstreams_ = {"a", "b"};
  const std::vector<MethodTable::Known> known_ = {
      {"/p.S/Unary", {"p.S", "Unary", "unary"}, 0},
      {"/p.S/Stream", {"p.S", "Stream", "server_stream"}, 1},
      {"/p.S/Unrouted", {"p.S", "Unrouted", "unary"}, -1},
  };
};

TEST_F(MethodTableTest, KnownMethodsHaveTheirOwnSeries) {
  MethodTable table(metrics_, known_, upstreams_);
  CallSeries unary = table.Find("/p.S/Unary", 1);
  CallSeries stream = table.Find("/p.S/Stream", 0);
  ASSERT_NE(unary.server, nullptr);
  ASSERT_NE(unary.client, nullptr);
  EXPECT_NE(unary.server, stream.server);
  unary.server->started().Increment();
  unary.client->started().Increment();
  const std::string text = Exposition(registry_);
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
  MethodTable table(metrics_, known_, upstreams_);
  CallSeries x = table.Find("/evil.Service/Random1", 0);
  CallSeries y = table.Find("/evil.Service/Random2", 0);
  CallSeries z = table.Find("/evil.Service/Random3", 1);
  CallSeries none = table.Find("/evil.Service/Random4", -1);
  EXPECT_EQ(x.server, y.server);
  EXPECT_EQ(x.server, z.server);
  EXPECT_EQ(x.client, y.client);
  EXPECT_NE(x.client, z.client);
  EXPECT_EQ(none.client, nullptr);
  EXPECT_EQ(none.server, x.server);
  const std::string text = Exposition(registry_);
  EXPECT_EQ(text.find("Random"), std::string::npos);
  EXPECT_NE(text.find("grpc_service=\"other\""), std::string::npos);
}

TEST_F(MethodTableTest, HandledSeriesAppearPerCodeSeen) {
  MethodTable table(metrics_, known_, upstreams_);
  MethodSeries* s = table.Find("/p.S/Unary", 0).server;
  EXPECT_EQ(Exposition(registry_).find("grpc_server_handled_total{"),
            std::string::npos);
  s->handled(0).Increment();
  s->handled(8).Increment();
  s->handled(8).Increment();
  s->handled(99).Increment();  // not a gRPC code: counted as Unknown
  const std::string text = Exposition(registry_);
  EXPECT_NE(text.find("grpc_code=\"OK\""), std::string::npos);
  EXPECT_NE(text.find("grpc_code=\"ResourceExhausted\",grpc_method=\"Unary\","
                      "grpc_service=\"p.S\",grpc_type=\"unary\"} 2"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("grpc_code=\"Unknown\""), std::string::npos);
  EXPECT_EQ(text.find("grpc_code=\"NotFound\""), std::string::npos);
}

TEST_F(MethodTableTest, ANewTableForTheSameMethodsKeepsCounting) {
  MethodTable first(metrics_, known_, upstreams_);
  first.Find("/p.S/Unary", 0).server->handled(0).Increment();
  MethodTable second(metrics_, known_, upstreams_);
  second.Find("/p.S/Unary", 0).server->handled(0).Increment();
  EXPECT_EQ(&first.Find("/p.S/Unary", 0).server->handled(0),
            &second.Find("/p.S/Unary", 0).server->handled(0));
  EXPECT_NE(Exposition(registry_).find("grpc_code=\"OK\",grpc_method=\"Unary\","
                                       "grpc_service=\"p.S\",grpc_type="
                                       "\"unary\"} 2"),
            std::string::npos);
}

}  // namespace
}  // namespace sluice
