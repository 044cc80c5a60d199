// Config of concurrency limits: fair queuing across keys (concurrency.key,
// max_per_key, max_queue_per_key) and the adaptive limit
// (concurrency.adaptive): defaults, and the exact text of every error.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "tests/config/parse_helpers.h"

namespace sluice {
namespace {

// One upstream and one route whose only limit is `limit` (YAML flow map
// body, e.g. "name: c, concurrency: {max: 10}").
std::string WithLimit(const std::string& limit) {
  return absl::StrCat(R"(upstreams:
  - name: a
    target: 127.0.0.1:50051
routes:
  - name: r
    match: {prefix: /}
    upstream: a
    limits:
      - {)",
                      limit, "}\n");
}

const LimitSettings& OnlyLimit(const std::shared_ptr<const Config>& config) {
  return config->routes()[0].limits[0];
}

TEST(ConcurrencyConfigTest, FixedUnkeyedLimitIsUnchanged) {
  auto config =
      MustParse(WithLimit("name: c, concurrency: {max: 8, queue: 4}"));
  ASSERT_NE(config, nullptr);
  const LimitSettings& limit = OnlyLimit(config);
  EXPECT_EQ(limit.concurrency_max, 8);
  EXPECT_EQ(limit.concurrency_queue, 4);
  EXPECT_TRUE(limit.concurrency_key.empty());
  EXPECT_EQ(limit.concurrency_max_per_key, 0);
  EXPECT_EQ(limit.concurrency_max_queue_per_key, 0);
  EXPECT_FALSE(limit.concurrency_adaptive);
}

TEST(ConcurrencyConfigTest, KeyedLimit) {
  auto config = MustParse(WithLimit(
      "name: c, max_keys: 50, default_key: anon, concurrency: {max: 100, "
      "queue: 200, key: [\"header:X-Tenant\", method], max_per_key: 20, "
      "max_queue_per_key: 30}"));
  ASSERT_NE(config, nullptr);
  const LimitSettings& limit = OnlyLimit(config);
  EXPECT_EQ(limit.concurrency_key,
            (std::vector<std::string>{"header:x-tenant", "method"}));
  EXPECT_TRUE(limit.key.empty());  // the rate's key is not the queue's
  EXPECT_EQ(limit.concurrency_max_per_key, 20);
  EXPECT_EQ(limit.concurrency_max_queue_per_key, 30);
  EXPECT_EQ(limit.max_keys, 50);
  EXPECT_EQ(limit.default_key, "anon");
}

TEST(ConcurrencyConfigTest, AdaptiveDefaults) {
  auto config = MustParse(
      WithLimit("name: c, concurrency: {queue: 10, adaptive: {max: 500}}"));
  ASSERT_NE(config, nullptr);
  const LimitSettings& limit = OnlyLimit(config);
  EXPECT_TRUE(limit.concurrency_adaptive);
  EXPECT_EQ(limit.concurrency_max, 20);  // the limiter starts at initial
  const AdaptiveConcurrencySettings& a = limit.adaptive;
  EXPECT_EQ(a.min, 1);
  EXPECT_EQ(a.max, 500);
  EXPECT_EQ(a.initial, 20);
  EXPECT_EQ(a.window, absl::Milliseconds(100));
  EXPECT_EQ(a.window_samples, 10);
  EXPECT_DOUBLE_EQ(a.smoothing, 0.2);
  EXPECT_DOUBLE_EQ(a.rtt_tolerance, 1.2);
  EXPECT_EQ(a.long_window, 600);
  EXPECT_EQ(a.probe_interval, absl::Seconds(30));
  EXPECT_EQ(a.probe_samples, 10);
  EXPECT_EQ(a.probe_timeout, absl::Seconds(2));
  EXPECT_DOUBLE_EQ(a.probe_jitter, 0.1);
}

TEST(ConcurrencyConfigTest, AdaptiveSettings) {
  auto config = MustParse(WithLimit(
      "name: c, dry_run: true, concurrency: {adaptive: {min: 4, max: 64, "
      "initial: 8, window: 250ms, window_samples: 20, smoothing: 0.5, "
      "rtt_tolerance: 1.5, long_window: 100, probe_interval: 0s, "
      "probe_samples: 5, probe_timeout: 500ms, probe_jitter: 0}}"));
  ASSERT_NE(config, nullptr);
  const LimitSettings& limit = OnlyLimit(config);
  EXPECT_TRUE(limit.dry_run);
  EXPECT_EQ(limit.concurrency_max, 8);
  const AdaptiveConcurrencySettings& a = limit.adaptive;
  EXPECT_EQ(a.min, 4);
  EXPECT_EQ(a.max, 64);
  EXPECT_EQ(a.initial, 8);
  EXPECT_EQ(a.window, absl::Milliseconds(250));
  EXPECT_EQ(a.window_samples, 20);
  EXPECT_DOUBLE_EQ(a.smoothing, 0.5);
  EXPECT_DOUBLE_EQ(a.rtt_tolerance, 1.5);
  EXPECT_EQ(a.long_window, 100);
  EXPECT_EQ(a.probe_interval, absl::ZeroDuration());
  EXPECT_EQ(a.probe_samples, 5);
  EXPECT_EQ(a.probe_timeout, absl::Milliseconds(500));
  EXPECT_DOUBLE_EQ(a.probe_jitter, 0);
}

TEST(ConcurrencyConfigTest, InitialDefaultsWithinMinMax) {
  auto small =
      MustParse(WithLimit("name: c, concurrency: {adaptive: {max: 5}}"));
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(OnlyLimit(small).adaptive.initial, 5);
  auto big = MustParse(
      WithLimit("name: c, concurrency: {adaptive: {min: 50, max: 100}}"));
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(OnlyLimit(big).adaptive.initial, 50);
}

TEST(ConcurrencyConfigTest, AdaptiveChangesTheFingerprint) {
  auto a = MustParse(WithLimit("name: c, concurrency: {adaptive: {max: 5}}"));
  auto b = MustParse(WithLimit("name: c, concurrency: {adaptive: {max: 6}}"));
  auto c =
      MustParse(WithLimit("name: c, concurrency: {max: 5, queue: 5, "
                          "key: [peer], max_queue_per_key: 2}"));
  auto d =
      MustParse(WithLimit("name: c, concurrency: {max: 5, queue: 5, "
                          "key: [peer], max_queue_per_key: 3}"));
  ASSERT_TRUE(a && b && c && d);
  EXPECT_NE(OnlyLimit(a).fingerprint, OnlyLimit(b).fingerprint);
  EXPECT_NE(OnlyLimit(c).fingerprint, OnlyLimit(d).fingerprint);
}

struct BadCase {
  const char* limit;
  const char* error;
};

class ConcurrencyConfigErrorTest : public testing::TestWithParam<BadCase> {};

TEST_P(ConcurrencyConfigErrorTest, NamesTheField) {
  const std::string error = ErrorOf(WithLimit(GetParam().limit));
  EXPECT_NE(error.find(GetParam().error), std::string::npos)
      << "error: " << error;
}

INSTANTIATE_TEST_SUITE_P(
    Errors, ConcurrencyConfigErrorTest,
    testing::Values(
        BadCase{"name: c, concurrency: {queue: 3}",
                "routes[0].limits[0].concurrency.max: required, > 0"},
        BadCase{"name: c, concurrency: {max: 5, adaptive: {max: 10}}",
                "routes[0].limits[0].concurrency.max: not with adaptive"},
        BadCase{"name: c, concurrency: {adaptive: {min: 3}}",
                "routes[0].limits[0].concurrency.adaptive.max: required, > 0"},
        BadCase{"name: c, concurrency: {adaptive: {min: 30, max: 10}}",
                "concurrency.adaptive.min: 30 is larger than max 10"},
        BadCase{"name: c, concurrency: {adaptive: {max: 2000000}}",
                "concurrency.adaptive.max:"},
        BadCase{"name: c, concurrency: {adaptive: {min: 5, max: 10, "
                "initial: 11}}",
                "concurrency.adaptive.initial: 11 is outside min..max (5..10)"},
        BadCase{"name: c, concurrency: {adaptive: {max: 10, window: 0s}}",
                "concurrency.adaptive.window: must be > 0"},
        BadCase{"name: c, concurrency: {adaptive: {max: 10, window: soon}}",
                "concurrency.adaptive.window: invalid duration"},
        BadCase{"name: c, concurrency: {adaptive: {max: 10, smoothing: 1.5}}",
                "concurrency.adaptive.smoothing: 1.5 is outside (0, 1]"},
        BadCase{"name: c, concurrency: {adaptive: {max: 10, "
                "rtt_tolerance: 0.5}}",
                "concurrency.adaptive.rtt_tolerance: 0.5 is outside [1, 100]"},
        BadCase{"name: c, concurrency: {adaptive: {max: 10, "
                "probe_timeout: 0s}}",
                "concurrency.adaptive.probe_timeout: must be > 0"},
        BadCase{"name: c, concurrency: {adaptive: {max: 10, "
                "probe_jitter: 0.7}}",
                "concurrency.adaptive.probe_jitter: 0.7 is outside [0, 0.5]"},
        BadCase{"name: c, concurrency: {max: 5, key: [\"cookie:x\"]}",
                "routes[0].limits[0].concurrency.key[0]:"},
        BadCase{"name: c, concurrency: {max: 5, key: [peer, peer]}",
                "concurrency.key[1]: duplicate key part \"peer\""},
        BadCase{"name: c, concurrency: {max: 5, max_per_key: 2}",
                "concurrency.max_per_key: set only with concurrency.key"},
        BadCase{"name: c, concurrency: {max: 5, key: [peer], max_per_key: 6}",
                "concurrency.max_per_key: 6 is larger than max 5"},
        BadCase{"name: c, concurrency: {key: [peer], max_per_key: 60, "
                "adaptive: {max: 50}}",
                "concurrency.max_per_key: 60 is larger than adaptive.max 50"},
        BadCase{"name: c, concurrency: {max: 5, queue: 4, "
                "max_queue_per_key: 2}",
                "concurrency.max_queue_per_key: set only with concurrency.key"},
        BadCase{"name: c, concurrency: {max: 5, queue: 4, key: [peer], "
                "max_queue_per_key: 5}",
                "concurrency.max_queue_per_key: 5 is larger than queue 4"},
        // The limit's own key still applies to rate only.
        BadCase{"name: c, key: [peer], concurrency: {max: 5}",
                "routes[0].limits[0].key: key applies to rate only"}));

}  // namespace
}  // namespace sluice
