// LimitCollector: each limit exports exactly the decision and limiter
// series its settings make possible, at 0 once bound (and after a reload
// that adds it); Redis series only while a limit is global.
#include "server/metrics/limit_collector.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/limits/clock.h"
#include "server/limits/limit_registry.h"
#include "tests/metrics/series_text.h"

namespace sluice {
namespace {

std::string Route(const std::string& limits) {
  return absl::StrCat(R"(
upstreams:
  - {name: demo, target: "127.0.0.1:1"}
routes:
  - name: r
    match: {prefix: /}
    upstream: demo
    limits:
)",
                      limits);
}

// `decision` lines of limit `limit` of route r.
std::vector<std::string> Decisions(const std::string& limit,
                                   const std::vector<std::string>& decisions) {
  std::vector<std::string> out;
  for (const std::string& d : decisions) {
    out.push_back(absl::StrCat("sluice_limit_decisions_total{decision=\"", d,
                               "\",limit=\"", limit, "\",route=\"r\"}"));
  }
  return out;
}

std::string Gauge(const std::string& name, const std::string& limit) {
  return absl::StrCat(name, "{limit=\"", limit, "\",route=\"r\"}");
}

class LimitCollectorTest : public ::testing::Test {
 protected:
  std::vector<std::string> Bind(const std::string& limits) {
    auto config = MustParse(Route(limits));
    if (config == nullptr) return {"<bad config>"};
    registry_.Bind(*config);
    return SeriesText(collector_.Collect());
  }

  LimitRegistry registry_;
  LimitCollector collector_{&registry_};
};

TEST_F(LimitCollectorTest, NoLimitsNoSeries) {
  EXPECT_EQ(SeriesText(collector_.Collect()), std::vector<std::string>());
}

TEST_F(LimitCollectorTest, ARateLimitAdmitsAndRejects) {
  EXPECT_EQ(Bind("      - {name: five, rate: {per_second: 5}}\n"),
            AtZero(Decisions("five", {"admitted", "rejected"})));
}

TEST_F(LimitCollectorTest, AKeyedRateLimitCountsItsKeys) {
  auto expected = Decisions("k", {"admitted", "rejected"});
  expected.push_back(Gauge("sluice_limit_keys", "k"));
  expected.push_back(Gauge("sluice_limit_key_overflow_total", "k"));
  EXPECT_EQ(Bind("      - {name: k, rate: {per_second: 5}, key: [peer]}\n"),
            AtZero(expected));
}

TEST_F(LimitCollectorTest, AConcurrencyLimitQueuesEvenWithQueueZero) {
  // The admin API may give it a queue at run time.
  auto expected = Decisions("c", {"admitted", "queued", "rejected"});
  expected.push_back(Gauge("sluice_limit_permits_in_use", "c"));
  expected.push_back(Gauge("sluice_limit_queue_depth", "c"));
  EXPECT_EQ(Bind("      - {name: c, concurrency: {max: 2, queue: 0}}\n"),
            AtZero(expected));
}

TEST_F(LimitCollectorTest, AKeyedAdaptiveConcurrencyLimit) {
  const std::vector<std::string> series = Bind(
      "      - {name: a, concurrency: {queue: 10, key: [peer], "
      "max_queue_per_key: 2, adaptive: {min: 2, max: 50, initial: 7}}}\n");
  for (const std::string& line : std::vector<std::string>{
           Gauge("sluice_limit_queue_keys", "a") + " 0",
           Gauge("sluice_limit_key_queue_full_total", "a") + " 0",
           Gauge("sluice_adaptive_limit", "a") + " 7",
           Gauge("sluice_adaptive_limit_gradient", "a") + " 1",
           Gauge("sluice_adaptive_limit_probes_total", "a") + " 0",
           "sluice_adaptive_limit_rtt_seconds{limit=\"a\",route=\"r\","
           "window=\"long\"} 0",
           "sluice_adaptive_limit_rtt_seconds{limit=\"a\",route=\"r\","
           "window=\"short\"} 0",
           "sluice_adaptive_limit_samples_total{dropped=\"false\",limit=\"a\","
           "route=\"r\"} 0",
           "sluice_adaptive_limit_samples_total{dropped=\"true\",limit=\"a\","
           "route=\"r\"} 0",
       }) {
    EXPECT_NE(std::find(series.begin(), series.end(), line), series.end())
        << line;
  }
  // An unkeyed, fixed limit has none of them.
  for (const std::string& line :
       Bind("      - {name: c, concurrency: {max: 2}}\n")) {
    EXPECT_EQ(line.find("adaptive"), std::string::npos) << line;
    EXPECT_EQ(line.find("queue_keys"), std::string::npos) << line;
  }
}

TEST_F(LimitCollectorTest, APaceModeMessageLimitDecidesNothing) {
  EXPECT_EQ(Bind("      - {name: p, messages: {per_second: 10}}\n"),
            std::vector<std::string>());
}

TEST_F(LimitCollectorTest, ARejectModeMessageLimitOnlyRejects) {
  EXPECT_EQ(
      Bind("      - {name: m, messages: {per_second: 10, mode: reject}}\n"),
      AtZero(Decisions("m", {"rejected"})));
}

TEST_F(LimitCollectorTest, DryRunLimitsNeverRejectNorQueue) {
  auto expected = Decisions("d", {"admitted", "dry_run_rejected"});
  expected.push_back(Gauge("sluice_limit_permits_in_use", "d"));
  for (auto& s : Decisions("dm", {"dry_run_rejected"})) expected.push_back(s);
  EXPECT_EQ(Bind(R"(      - name: d
        rate: {per_second: 5}
        concurrency: {max: 1, queue: 3}
        dry_run: true
      - name: dm
        messages: {per_second: 5, mode: pace}
        dry_run: true
)"),
            AtZero(expected));
}

TEST_F(LimitCollectorTest, CountsAreTheLimitStates) {
  Bind("      - {name: five, rate: {per_second: 5}}\n");
  registry_.Find("r", "five")->admitted.fetch_add(4);
  registry_.Find("r", "five")->rejected.fetch_add(1);
  EXPECT_EQ(SeriesText(collector_.Collect()),
            std::vector<std::string>(
                {"sluice_limit_decisions_total{decision=\"admitted\",limit="
                 "\"five\",route=\"r\"} 4",
                 "sluice_limit_decisions_total{decision=\"rejected\",limit="
                 "\"five\",route=\"r\"} 1"}));
}

TEST_F(LimitCollectorTest, KeyOverflowIsCountedAndSurvivesAReload) {
  Bind("      - {name: k, rate: {per_second: 5}, key: [peer], max_keys: 1}\n");
  const std::shared_ptr<LimitState> state = registry_.Find("r", "k");
  ASSERT_NE(state, nullptr);
  for (const char* key : {"a", "b", "c"}) {
    state->TakeRate(key, RealClock::Get());
  }
  const std::string overflow =
      "sluice_limit_key_overflow_total{limit=\"k\",route=\"r\"} 2";
  auto has = [](const std::vector<std::string>& series,
                const std::string& line) {
    return std::find(series.begin(), series.end(), line) != series.end();
  };
  EXPECT_TRUE(has(SeriesText(collector_.Collect()), overflow));
  // A changed rate carries the table, its keys and its counts.
  EXPECT_TRUE(has(
      Bind("      - {name: k, rate: {per_second: 6}, key: [peer], max_keys: "
           "1}\n"),
      overflow));
}

TEST_F(LimitCollectorTest, AReloadAddsAtZeroAndDropsWhatItRemoves) {
  Bind("      - {name: m, messages: {per_second: 10, mode: reject}}\n");
  registry_.Find("r", "m")->rejected.fetch_add(2);
  // The limit becomes a pacing one (no decision), a rate limit is added.
  EXPECT_EQ(Bind(R"(      - {name: m, messages: {per_second: 10}}
      - {name: five, rate: {per_second: 5}}
)"),
            AtZero(Decisions("five", {"admitted", "rejected"})));
}

TEST_F(LimitCollectorTest, RedisSeriesOnlyWithAGlobalLimit) {
  // A redis section alone sends nothing to Redis.
  auto config = MustParse(
      absl::StrCat("redis: {address: \"127.0.0.1:1\"}\n",
                   Route("      - {name: five, rate: {per_second: 5}}\n")));
  ASSERT_NE(config, nullptr);
  registry_.Bind(*config);
  for (const std::string& s : SeriesText(collector_.Collect())) {
    EXPECT_FALSE(s.starts_with("sluice_redis")) << s;
    EXPECT_FALSE(s.starts_with("sluice_limit_fallback")) << s;
  }
  config = MustParse(absl::StrCat(
      "redis: {address: \"127.0.0.1:1\"}\n",
      Route("      - {name: g, scope: global, rate: {per_second: 5}, key: "
            "[peer]}\n")));
  ASSERT_NE(config, nullptr);
  registry_.Bind(*config);
  // The global limit's buckets are in Redis: no sluice_limit_keys.
  auto expected = Decisions("g", {"admitted", "rejected"});
  expected.push_back(Gauge("sluice_limit_fallback_active", "g"));
  for (const char* kind : {"auth", "connection", "reply", "timeout"}) {
    expected.push_back(
        absl::StrCat("sluice_redis_errors_total{kind=\"", kind, "\"}"));
  }
  for (const char* kind : {"ask", "moved"}) {
    expected.push_back(absl::StrCat(
        "sluice_redis_cluster_redirects_total{kind=\"", kind, "\"}"));
  }
  expected.push_back("sluice_redis_request_duration_seconds{}");
  // The link state: one series per state, exactly one of them 1 (which one
  // depends on how far the connect to port 1 got).
  std::vector<std::string> rest;
  int states = 0;
  int current = 0;
  for (const std::string& line : SeriesText(collector_.Collect())) {
    if (line.starts_with("sluice_limit_redis_state{limit=\"g\",route=\"r\","
                         "state=\"")) {
      ++states;
      if (line.ends_with(" 1")) ++current;
    } else {
      rest.push_back(line);
    }
  }
  EXPECT_EQ(states, 6);
  EXPECT_EQ(current, 1);
  EXPECT_EQ(rest, AtZero(expected));
  // A lease adds the gauge of tokens held.
  registry_.Bind(*MustParse(absl::StrCat(
      "redis: {address: \"127.0.0.1:1\"}\n",
      Route("      - {name: g, scope: global, rate: {per_second: 5, burst: "
            "5}, global: {lease: 2}}\n"))));
  EXPECT_EQ(SeriesText(collector_.Collect(), "sluice_limit_lease_tokens"),
            AtZero({Gauge("sluice_limit_lease_tokens", "g")}));
  // Back to no global limit: the Redis series go.
  registry_.Bind(
      *MustParse(Route("      - {name: five, rate: {per_second: 5}}\n")));
  EXPECT_EQ(SeriesText(collector_.Collect()),
            AtZero(Decisions("five", {"admitted", "rejected"})));
}

}  // namespace
}  // namespace sluice
