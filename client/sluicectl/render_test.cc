#include "client/sluicectl/render.h"

#include "client/sluicectl/table.h"
#include "gtest/gtest.h"

namespace sluice::sluicectl {
namespace {

using sluice::admin::v1::ListLimitsResponse;

TEST(TextTableTest, AlignsColumnsAndTrimsTrailingSpaces) {
  TextTable t({"A", "LONGER", "C"});
  t.AddRow({"xxxx", "y", ""});
  t.AddRow({"z"});
  EXPECT_EQ(t.Render(),
            "A     LONGER  C\n"
            "xxxx  y\n"
            "z\n");
}

TEST(TextTableTest, WithoutHeader) {
  TextTable t;
  EXPECT_TRUE(t.empty());
  t.AddRow({"version", "0.1.0"});
  t.AddRow({"calls in flight", "3"});
  EXPECT_EQ(t.Render(),
            "version          0.1.0\n"
            "calls in flight  3\n");
}

TEST(RenderTest, FormatUptime) {
  EXPECT_EQ(FormatUptime(0.42), "0.4s");
  EXPECT_EQ(FormatUptime(59.9), "59s");
  EXPECT_EQ(FormatUptime(3723.5), "1h2m3s");
}

TEST(RenderTest, LimitsTable) {
  ListLimitsResponse list;
  auto* rate = list.add_limits();
  rate->set_route("api");
  rate->set_name("per-sec");
  rate->set_rate_per_second(100);
  rate->set_burst(20);
  rate->set_tokens(12.34);
  rate->set_admitted(8);
  rate->set_rejected(2);
  auto* keyed = list.add_limits();
  keyed->set_route("api");
  keyed->set_name("per-key");
  keyed->set_dry_run(true);
  keyed->set_rate_per_second(0.5);
  keyed->set_burst(1);
  keyed->add_key("header:x-api-key");
  keyed->set_keys(2);
  keyed->set_dry_run_rejected(4);
  auto* k = keyed->add_top_keys();
  k->set_key("alice");
  k->set_tokens(0);
  auto* conc = list.add_limits();
  conc->set_route("feed");
  conc->set_name("in-flight");
  conc->set_concurrency_max(64);
  conc->set_in_flight(3);
  conc->set_queue_max(128);
  conc->set_queue_depth(1);
  conc->set_messages_per_second(10);
  conc->set_queued(5);
  conc->set_overridden(true);
  EXPECT_EQ(
      RenderLimits(list),
      "ROUTE  LIMIT              RATE/BURST/TOKENS  KEYS                  "
      "IN USE/MAX  QUEUE/MAX  MSG/S  ADMITTED  REJECTED  DRY-RUN  QUEUED  "
      "OVERRIDDEN\n"
      "api    per-sec            100/20/12.3        -                     "
      "-           -          -      8         2         0        0       "
      "no\n"
      "api    per-key (dry run)  0.5/1/-            2 (header:x-api-key)  "
      "-           -          -      0         0         4        0       "
      "no\n"
      "feed   in-flight          -                  -                     "
      "3/64        1/128      10     0         0         0        5       "
      "yes\n"
      "\n"
      "top keys (fewest tokens left first):\n"
      "ROUTE  LIMIT    KEY    TOKENS\n"
      "api    per-key  alice  0.0\n");
}

TEST(RenderTest, GlobalLimitsGetTheirRedisTable) {
  ListLimitsResponse list;
  auto* g = list.add_limits();
  g->set_route("api");
  g->set_name("shared");
  g->set_rate_per_second(100);
  g->set_burst(20);
  auto* gs = g->mutable_global();
  gs->set_redis("10.0.0.7:6379");
  gs->set_link("auth_failed");
  gs->set_redis_state("auth");
  gs->set_redis_error("WRONGPASS invalid username-password pair");
  gs->set_fallback("fail_open");
  gs->set_fallback_active(true);
  gs->set_lease(1);
  const std::string out = RenderLimits(list);
  const std::string table = out.substr(out.find("\nglobal limits (Redis):\n"));
  EXPECT_EQ(
      table,
      "\nglobal limits (Redis):\n"
      "ROUTE  LIMIT   REDIS          LINK         STATE  FALLBACK              "
      "LEASE  LEASED  ERROR\n"
      "api    shared  10.0.0.7:6379  auth_failed  auth   fail_open (in force)  "
      "1      0       WRONGPASS invalid username-password pair\n")
      << out;
}

TEST(RenderTest, FairQueuesAndAdaptiveLimitsGetTheirTables) {
  ListLimitsResponse list;
  auto* l = list.add_limits();
  l->set_route("api");
  l->set_name("tenants");
  l->set_concurrency_max(37);
  l->set_in_flight(30);
  l->set_queue_max(100);
  auto* f = l->mutable_fair_queue();
  f->add_key("header:x-tenant");
  f->set_keys(3);
  f->set_max_keys(10000);
  f->set_max_queue_per_key(10);
  f->set_rejected_key_queue_full(42);
  auto* k = f->add_top_keys();
  k->set_key("noisy");
  k->set_in_flight(20);
  k->set_queued(10);
  auto* a = l->mutable_adaptive();
  a->set_limit(37);
  a->set_min(1);
  a->set_max(200);
  a->set_gradient(0.87);
  a->set_long_rtt_seconds(0.010);
  a->set_short_rtt_seconds(0.0125);
  a->set_samples(1000);
  a->set_probes(2);
  a->set_calls_in_flight(30);
  const std::string out = RenderLimits(list);
  const std::string tables =
      out.substr(out.find("\nconcurrency queued per key"));
  EXPECT_EQ(
      tables,
      "\nconcurrency queued per key (round robin between keys):\n"
      "ROUTE  LIMIT    KEY              KEYS/MAX  PER KEY  QUEUE/KEY  FULL  "
      "KEY FULL  OVERFLOW\n"
      "api    tenants  header:x-tenant  3/10000   -        10         0     "
      "42        0\n"
      "\nbusiest keys (most calls in use + queued first):\n"
      "ROUTE  LIMIT    KEY    IN USE  QUEUED\n"
      "api    tenants  noisy  20      10\n"
      "\nadaptive concurrency:\n"
      "ROUTE  LIMIT    LIMIT/MIN/MAX  GRADIENT  RTT LONG/SHORT  SAMPLES  "
      "DROPPED  PROBES  CALLS\n"
      "api    tenants  37/1/200       0.87      10.0ms/12.5ms   1000     "
      "0        2       30\n")
      << out;
}

TEST(RenderTest, NoLimits) {
  EXPECT_EQ(RenderLimits(ListLimitsResponse()), "no limits configured\n");
}

TEST(RenderTest, JsonKeepsProtoNamesAndDefaults) {
  sluice::admin::v1::DrainResponse drain;
  EXPECT_EQ(ToJson(drain), "{\n \"started\": false\n}\n");
  sluice::admin::v1::GetStatusResponse status;
  status.set_config_hash("abc");
  const std::string json = ToJson(status);
  EXPECT_NE(json.find("\"config_hash\": \"abc\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"calls_in_flight\": \"0\""), std::string::npos) << json;
}

}  // namespace
}  // namespace sluice::sluicectl
