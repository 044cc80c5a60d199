// ProxyMetrics::ForRoute: a route's series are exactly those its settings
// make possible (series_plan.h, docs/metrics.md "Which series exist"), all
// at 0 before the first call; a reload keeps counting in the series it
// keeps, creates the new ones at 0, and drops the ones no configuration in
// use makes possible any more.
#include "server/metrics/proxy_metrics.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/metrics/series_text.h"

namespace sluice {
namespace {

constexpr char kHead[] = R"(
upstreams:
  - name: demo
    target: 127.0.0.1:1
routes:
)";

// The series every route has whatever its settings.
std::vector<std::string> EveryRoute(const std::string& route) {
  const std::string r = absl::StrCat("route=\"", route, "\"");
  std::vector<std::string> s = {
      absl::StrCat("sluice_call_duration_seconds{", r, "}"),
      absl::StrCat("sluice_client_cancels_total{", r, "}"),
      absl::StrCat("sluice_msg_received_total{", r, "}"),
      absl::StrCat("sluice_msg_sent_total{", r, "}"),
      absl::StrCat(
          "sluice_rejections_total{limit=\"\",reason=\"deadline_budget\",", r,
          "}"),
      absl::StrCat("sluice_rejections_total{limit=\"\",reason=\"draining\",", r,
                   "}"),
      absl::StrCat(
          "sluice_rejections_total{limit=\"\",reason=\"early_cancels\",", r,
          "}"),
      absl::StrCat(
          "sluice_rejections_total{limit=\"\",reason=\"header_too_large\",", r,
          "}"),
      absl::StrCat("sluice_rejections_total{limit=\"\",reason=\"upstream_"
                   "unavailable\",",
                   r, "}"),
      absl::StrCat("sluice_route_open_calls{", r, "}"),
      absl::StrCat("sluice_stream_backpressure_seconds_total{direction=\"to_"
                   "client\",",
                   r, "}"),
      absl::StrCat("sluice_stream_backpressure_seconds_total{direction=\"to_"
                   "upstream\",",
                   r, "}"),
  };
  for (const std::string& code : AllGoCodes()) {
    s.push_back(absl::StrCat("sluice_calls_handled_total{grpc_code=\"", code,
                             "\",", r, "}"));
  }
  return s;
}

std::vector<std::string> Plus(std::vector<std::string> a,
                              const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class ProxyMetricsTest : public ::testing::Test {
 protected:
  // The sluice_* series except the process-wide calls_in_flight.
  std::vector<std::string> Series() {
    std::vector<std::string> out;
    for (std::string& s : SeriesText(registry_->Collect(), "sluice_")) {
      if (!s.starts_with("sluice_calls_in_flight")) out.push_back(std::move(s));
    }
    return out;
  }
  // The series of one route of `routes_yaml` (the first one), alone.
  std::vector<std::string> SeriesOfRoute(const std::string& routes_yaml) {
    auto config = MustParse(absl::StrCat(kHead, routes_yaml));
    if (config == nullptr) return {};
    RouteStats stats = metrics_.ForRoute(&config->routes()[0]);
    return Series();
  }

  std::shared_ptr<prometheus::Registry> registry_ =
      std::make_shared<prometheus::Registry>();
  ProxyMetrics metrics_{registry_};
};

TEST_F(ProxyMetricsTest, NothingButTheProcessGaugeBeforeAnySnapshot) {
  EXPECT_EQ(SeriesText(registry_->Collect(), "sluice_"),
            AtZero({"sluice_calls_in_flight{}"}));
  EXPECT_EQ(SeriesText(registry_->Collect(), "grpc_"),
            std::vector<std::string>());
}

TEST_F(ProxyMetricsTest, CallsNoRouteTookOnlyEndUnimplementedWithNoRoute) {
  RouteStats none = metrics_.ForRoute(nullptr);
  EXPECT_EQ(Series(),
            AtZero({
                "sluice_call_duration_seconds{route=\"none\"}",
                "sluice_calls_handled_total{grpc_code=\"Unimplemented\","
                "route=\"none\"}",
                "sluice_rejections_total{limit=\"\",reason=\"no_route\","
                "route=\"none\"}",
                "sluice_route_open_calls{route=\"none\"}",
            }));
  // The slots of impossible series are never null and export nothing.
  none.msg_received->Increment();
  none.client_cancels->Increment();
  none.paced_seconds[kToClient]->Increment();
  none.backpressure_seconds[kToUpstream]->Increment();
  none.handled[0]->Increment();
  EXPECT_EQ(none.rejected[static_cast<int>(Reason::kDraining)], nullptr);
  EXPECT_EQ(none.rejected[static_cast<int>(Reason::kDeadlineBudget)], nullptr);
  EXPECT_EQ(Series().size(), 4u);
}

TEST_F(ProxyMetricsTest, ARouteWithoutLimitsHasNoLimitNoIdleNoPaceSeries) {
  EXPECT_EQ(SeriesOfRoute(R"(
  - name: plain
    match: {prefix: /}
    upstream: demo
)"),
            AtZero(EveryRoute("plain")));
}

TEST_F(ProxyMetricsTest, IdleTimeoutOnlyWithAStreamIdleTimeout) {
  EXPECT_EQ(SeriesOfRoute(R"(
  - name: idle
    match: {prefix: /}
    upstream: demo
    deadline: {stream_idle_timeout: 5s}
)"),
            AtZero(Plus(EveryRoute("idle"),
                        {"sluice_rejections_total{limit=\"\",reason=\"idle_"
                         "timeout\",route=\"idle\"}"})));
}

TEST_F(ProxyMetricsTest, APaceModeMessageLimitPacesAndNeverRejects) {
  EXPECT_EQ(SeriesOfRoute(R"(
  - name: paced
    match: {prefix: /}
    upstream: demo
    limits:
      - name: tick
        messages: {per_second: 100, mode: pace}
)"),
            AtZero(Plus(EveryRoute("paced"),
                        {"sluice_stream_paced_seconds_total{direction=\"to_"
                         "client\",route=\"paced\"}"})));
}

TEST_F(ProxyMetricsTest, PacingClientMessagesToo) {
  EXPECT_EQ(SeriesOfRoute(R"(
  - name: paced
    match: {prefix: /}
    upstream: demo
    limits:
      - name: tick
        messages: {per_second: 100, client_to_upstream: true}
)"),
            AtZero(Plus(EveryRoute("paced"),
                        {"sluice_stream_paced_seconds_total{direction=\"to_"
                         "client\",route=\"paced\"}",
                         "sluice_stream_paced_seconds_total{direction=\"to_"
                         "upstream\",route=\"paced\"}"})));
}

TEST_F(ProxyMetricsTest, ARejectModeMessageLimitRejectsAndNeverPaces) {
  EXPECT_EQ(SeriesOfRoute(R"(
  - name: strict
    match: {prefix: /}
    upstream: demo
    limits:
      - name: tick
        messages: {per_second: 100, mode: reject, client_to_upstream: true}
)"),
            AtZero(Plus(EveryRoute("strict"),
                        {"sluice_rejections_total{limit=\"tick\",reason="
                         "\"stream_rate\",route=\"strict\"}"})));
}

TEST_F(ProxyMetricsTest, ARateLimitOnlyRateLimits) {
  EXPECT_EQ(SeriesOfRoute(R"(
  - name: rated
    match: {prefix: /}
    upstream: demo
    limits:
      - name: five
        rate: {per_second: 5}
        key: [peer]
)"),
            AtZero(Plus(EveryRoute("rated"),
                        {"sluice_rejections_total{limit=\"five\",reason="
                         "\"rate_limited\",route=\"rated\"}"})));
}

TEST_F(ProxyMetricsTest, AConcurrencyLimitRejectsAndQueues) {
  // queue: 0 still queues once the admin API gives it a queue.
  EXPECT_EQ(SeriesOfRoute(R"(
  - name: narrow
    match: {prefix: /}
    upstream: demo
    limits:
      - name: one
        concurrency: {max: 1, queue: 0}
)"),
            AtZero(Plus(EveryRoute("narrow"),
                        {"sluice_queue_wait_seconds{limit=\"one\",route="
                         "\"narrow\"}",
                         "sluice_rejections_total{limit=\"one\",reason="
                         "\"concurrency_limited\",route=\"narrow\"}",
                         "sluice_rejections_total{limit=\"one\",reason="
                         "\"queue_timeout\",route=\"narrow\"}"})));
}

TEST_F(ProxyMetricsTest, DryRunLimitsNeverRejectQueueOrPace) {
  EXPECT_EQ(SeriesOfRoute(R"(
  - name: shadow
    match: {prefix: /}
    upstream: demo
    limits:
      - name: all
        rate: {per_second: 5}
        concurrency: {max: 1, queue: 4}
        messages: {per_second: 10, client_to_upstream: true}
        dry_run: true
)"),
            AtZero(EveryRoute("shadow")));
}

TEST_F(ProxyMetricsTest, EveryPartOfACombinedLimit) {
  EXPECT_EQ(SeriesOfRoute(R"(
  - name: all
    match: {prefix: /}
    upstream: demo
    limits:
      - name: l
        rate: {per_second: 5}
        concurrency: {max: 1, queue: 4}
        messages: {per_second: 10, mode: reject}
)"),
            AtZero(Plus(
                EveryRoute("all"),
                {"sluice_queue_wait_seconds{limit=\"l\",route=\"all\"}",
                 "sluice_rejections_total{limit=\"l\",reason=\"rate_limited\","
                 "route=\"all\"}",
                 "sluice_rejections_total{limit=\"l\",reason=\"concurrency_"
                 "limited\",route=\"all\"}",
                 "sluice_rejections_total{limit=\"l\",reason=\"queue_timeout\","
                 "route=\"all\"}",
                 "sluice_rejections_total{limit=\"l\",reason=\"stream_rate\","
                 "route=\"all\"}"})));
}

TEST_F(ProxyMetricsTest, SlotsOfImpossibleSeriesAreNullWhereTheCallerChecks) {
  auto config = MustParse(absl::StrCat(kHead, R"(
  - name: r
    match: {prefix: /}
    upstream: demo
    limits:
      - name: rate
        rate: {per_second: 5}
      - name: pace
        messages: {per_second: 5}
)"));
  ASSERT_NE(config, nullptr);
  RouteStats s = metrics_.ForRoute(&config->routes()[0]);
  ASSERT_EQ(s.limit_rejected.size(), 2u);
  ASSERT_EQ(s.queue_wait.size(), 2u);
  const auto& rate = s.limit_rejected[0];
  EXPECT_NE(rate[static_cast<int>(Reason::kRateLimited)], nullptr);
  EXPECT_EQ(rate[static_cast<int>(Reason::kConcurrencyLimited)], nullptr);
  EXPECT_EQ(rate[static_cast<int>(Reason::kStreamRate)], nullptr);
  for (auto* c : s.limit_rejected[1]) EXPECT_EQ(c, nullptr);
  EXPECT_EQ(s.queue_wait[0], nullptr);
  EXPECT_EQ(s.rejected[static_cast<int>(Reason::kNoRoute)], nullptr);
  EXPECT_EQ(s.rejected[static_cast<int>(Reason::kIdleTimeout)], nullptr);
  EXPECT_NE(s.rejected[static_cast<int>(Reason::kDraining)], nullptr);
  // Paced time to the upstream is impossible (the limit paces responses
  // only): its slot counts into nothing exported.
  s.paced_seconds[kToUpstream]->Increment(1);
  s.paced_seconds[kToClient]->Increment(2);
  const auto series = Series();
  EXPECT_NE(std::find(series.begin(), series.end(),
                      "sluice_stream_paced_seconds_total{direction=\"to_"
                      "client\",route=\"r\"} 2"),
            series.end());
  for (const std::string& line : series) {
    EXPECT_EQ(line.find("to_upstream\",route=\"r\"} 1"), std::string::npos)
        << line;
  }
}

TEST_F(ProxyMetricsTest, AReloadKeepsCountingAddsAtZeroAndDropsTheImpossible) {
  auto before = MustParse(absl::StrCat(kHead, R"(
  - name: ticker
    match: {prefix: /t/}
    upstream: demo
    limits:
      - name: tick
        messages: {per_second: 10, mode: pace}
  - name: gone
    match: {prefix: /g/}
    upstream: demo
)"));
  auto after = MustParse(absl::StrCat(kHead, R"(
  - name: ticker
    match: {prefix: /t/}
    upstream: demo
    limits:
      - name: tick
        messages: {per_second: 10, mode: reject}
  - name: added
    match: {prefix: /a/}
    upstream: demo
    deadline: {stream_idle_timeout: 1s}
)"));
  ASSERT_NE(before, nullptr);
  ASSERT_NE(after, nullptr);
  // A snapshot's route stats, as ProxySnapshot keeps them.
  auto snapshot = [this](const Config& c) {
    std::vector<RouteStats> stats;
    for (const RouteSettings& r : c.routes()) {
      stats.push_back(metrics_.ForRoute(&r));
    }
    stats.push_back(metrics_.ForRoute(nullptr));
    return stats;
  };
  std::optional<std::vector<RouteStats>> old_snap = snapshot(*before);
  (*old_snap)[0].handled[0]->Increment(3);  // ticker: 3 calls OK
  (*old_snap)[0].paced_seconds[kToClient]->Increment(0.5);

  std::vector<RouteStats> new_snap = snapshot(*after);
  prometheus::Counter* const kept = (*old_snap)[0].handled[0];
  // While calls of the old config run, both configs' series exist.
  std::vector<std::string> both = Series();
  auto has = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  EXPECT_TRUE(has(both, "sluice_route_open_calls{route=\"gone\"} 0"));
  EXPECT_TRUE(has(both,
                  "sluice_stream_paced_seconds_total{direction=\"to_client\","
                  "route=\"ticker\"} 0.5"));
  // The new ones exist at 0 before the new config takes its first call.
  EXPECT_TRUE(has(both,
                  "sluice_rejections_total{limit=\"tick\",reason=\"stream_"
                  "rate\",route=\"ticker\"} 0"));
  EXPECT_TRUE(has(both,
                  "sluice_rejections_total{limit=\"\",reason=\"idle_timeout\","
                  "route=\"added\"} 0"));

  old_snap.reset();  // the last call of the old config is freed
  std::vector<std::string> expected = AtZero(Plus(
      Plus(EveryRoute("added"),
           {"sluice_rejections_total{limit=\"\",reason=\"idle_timeout\","
            "route=\"added\"}",
            "sluice_rejections_total{limit=\"tick\",reason=\"stream_rate\","
            "route=\"ticker\"}",
            "sluice_call_duration_seconds{route=\"none\"}",
            "sluice_calls_handled_total{grpc_code=\"Unimplemented\",route="
            "\"none\"}",
            "sluice_rejections_total{limit=\"\",reason=\"no_route\",route="
            "\"none\"}",
            "sluice_route_open_calls{route=\"none\"}"}),
      EveryRoute("ticker")));
  // The kept series kept their counts.
  for (std::string& s : expected) {
    if (s ==
        "sluice_calls_handled_total{grpc_code=\"OK\",route=\"ticker\"} 0") {
      s = "sluice_calls_handled_total{grpc_code=\"OK\",route=\"ticker\"} 3";
    }
  }
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(Series(), expected);
  EXPECT_EQ(new_snap[0].handled[0], kept);
}

TEST_F(ProxyMetricsTest, TheAccessLogCounterExistsOnceALogIsOpened) {
  EXPECT_EQ(Series(), std::vector<std::string>());
  metrics_.access_log_dropped().Increment(0);
  EXPECT_EQ(Series(), AtZero({"sluice_access_log_dropped_total{}"}));
  EXPECT_EQ(&metrics_.access_log_dropped(), &metrics_.access_log_dropped());
}

TEST_F(ProxyMetricsTest, TheFloodCounterExistsOnceAConnectionWasClosed) {
  EXPECT_EQ(Series(), std::vector<std::string>());
  metrics_.flood_connections_closed().Increment();
  EXPECT_EQ(Series(), std::vector<std::string>(
                          {"sluice_flood_connections_closed_total{} 1"}));
}

}  // namespace
}  // namespace sluice
