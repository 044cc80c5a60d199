// Config of global limits (scope: global) and the top-level redis section:
// defaults, and the exact text of every error.
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "tests/config/parse_helpers.h"

namespace sluice {
namespace {

constexpr char kRedis[] = R"(redis:
  address: 127.0.0.1:6379
)";

// One upstream and one route whose only limit is `limit` (YAML flow map
// body, e.g. "name: g, scope: global, rate: {per_second: 10}").
std::string WithLimit(const std::string& limit,
                      const std::string& top = kRedis) {
  return absl::StrCat(top, R"(upstreams:
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

TEST(GlobalLimitsConfigTest, DefaultsApply) {
  auto config = ParseConfigYaml(
      WithLimit("name: g, scope: global, rate: {per_second: 100}"), kSource);
  ASSERT_TRUE(config.ok()) << config.status();
  const RedisSettings& redis = (*config)->redis();
  EXPECT_TRUE(redis.enabled);
  EXPECT_EQ(redis.host, "127.0.0.1");
  EXPECT_EQ(redis.port, 6379);
  EXPECT_EQ(redis.pool_size, 2);
  EXPECT_EQ(redis.timeout, absl::Milliseconds(50));
  EXPECT_EQ(redis.connect_timeout, absl::Seconds(1));
  EXPECT_EQ(redis.key_prefix, "sluice:");
  const LimitSettings& limit = (*config)->routes()[0].limits[0];
  EXPECT_TRUE(limit.global);
  EXPECT_EQ(limit.global_fallback, "local");
  EXPECT_EQ(limit.expected_replicas, 1);
  EXPECT_EQ(limit.lease, 1);
  EXPECT_EQ((*config)->proto().redis().timeout(), "50ms");
}

TEST(GlobalLimitsConfigTest, AllFieldsParsed) {
  auto config = ParseConfigYaml(
      WithLimit("name: g, scope: global, rate: {per_second: 100, burst: 50}, "
                "global: {fallback: fail_closed, expected_replicas: 4, "
                "lease: 10}",
                "redis: {address: \"redis.ns:7000\", pool_size: 4, timeout: "
                "20ms, connect_timeout: 2s, key_prefix: \"x:\"}\n"),
      kSource);
  ASSERT_TRUE(config.ok()) << config.status();
  const RedisSettings& redis = (*config)->redis();
  EXPECT_EQ(redis.host, "redis.ns");
  EXPECT_EQ(redis.port, 7000);
  EXPECT_EQ(redis.pool_size, 4);
  EXPECT_EQ(redis.timeout, absl::Milliseconds(20));
  EXPECT_EQ(redis.connect_timeout, absl::Seconds(2));
  EXPECT_EQ(redis.key_prefix, "x:");
  const LimitSettings& limit = (*config)->routes()[0].limits[0];
  EXPECT_EQ(limit.global_fallback, "fail_closed");
  EXPECT_EQ(limit.expected_replicas, 4);
  EXPECT_EQ(limit.lease, 10);
}

TEST(GlobalLimitsConfigTest, LocalIsTheDefaultScope) {
  auto config = ParseConfigYaml(
      WithLimit("name: g, rate: {per_second: 100}", ""), kSource);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE((*config)->routes()[0].limits[0].global);
  EXPECT_FALSE((*config)->redis().enabled);
}

TEST(GlobalLimitsConfigTest, GlobalWithoutRedisNamesTheField) {
  EXPECT_EQ(
      ErrorOf(WithLimit("name: g, scope: global, rate: {per_second: 1}", "")),
      "test.yaml: routes[0].limits[0].scope: scope: global needs the "
      "top-level redis section (redis.address)");
}

TEST(GlobalLimitsConfigTest, UnknownScope) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, scope: world, rate: {per_second: 1}")),
            "test.yaml: routes[0].limits[0].scope: unknown scope \"world\" "
            "(use \"local\" or \"global\")");
}

TEST(GlobalLimitsConfigTest, GlobalNeedsARate) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, scope: global, concurrency: {max: 1}")),
            "test.yaml: routes[0].limits[0].scope: scope: global needs a rate\n"
            "test.yaml: routes[0].limits[0].scope: scope: global applies to "
            "rate only (concurrency and messages stay per replica: put them "
            "in a limit of their own)");
}

TEST(GlobalLimitsConfigTest, GlobalRejectsMessages) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, scope: global, rate: {per_second: 1}, "
                              "messages: {per_second: 5}")),
            "test.yaml: routes[0].limits[0].scope: scope: global applies to "
            "rate only (concurrency and messages stay per replica: put them "
            "in a limit of their own)");
}

TEST(GlobalLimitsConfigTest, GlobalSectionNeedsGlobalScope) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, rate: {per_second: 1}, global: "
                              "{lease: 1}")),
            "test.yaml: routes[0].limits[0].global: set only with scope: "
            "global");
}

TEST(GlobalLimitsConfigTest, UnknownFallback) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, scope: global, rate: {per_second: 1}, "
                              "global: {fallback: maybe}")),
            "test.yaml: routes[0].limits[0].global.fallback: unknown fallback "
            "\"maybe\" (use \"fail_open\", \"fail_closed\" or \"local\")");
}

TEST(GlobalLimitsConfigTest, ExpectedReplicasBounded) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, scope: global, rate: {per_second: 1}, "
                              "global: {expected_replicas: 10001}")),
            "test.yaml: routes[0].limits[0].global.expected_replicas: 10001 "
            "is out of range (1..10000)");
}

TEST(GlobalLimitsConfigTest, LeaseAtMostTheBurst) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, scope: global, rate: {per_second: 10, "
                              "burst: 5}, global: {lease: 6}")),
            "test.yaml: routes[0].limits[0].global.lease: 6 is larger than "
            "the burst 5");
}

TEST(GlobalLimitsConfigTest, RedisAddressRequired) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, rate: {per_second: 1}",
                              "redis: {pool_size: 2}\n")),
            "test.yaml: redis.address: required (host:port)");
}

TEST(GlobalLimitsConfigTest, RedisAddressInvalid) {
  const std::string error = ErrorOf(WithLimit(
      "name: g, rate: {per_second: 1}", "redis: {address: \"nohost\"}\n"));
  EXPECT_EQ(
      error.rfind("test.yaml: redis.address: invalid address \"nohost\"", 0),
      0u)
      << error;
}

TEST(GlobalLimitsConfigTest, RedisPortZero) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, rate: {per_second: 1}",
                              "redis: {address: \"127.0.0.1:0\"}\n")),
            "test.yaml: redis.address: port 0 is not a Redis port");
}

TEST(GlobalLimitsConfigTest, RedisPoolSizeBounded) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, rate: {per_second: 1}",
                              "redis: {address: \"h:1\", pool_size: 65}\n")),
            "test.yaml: redis.pool_size: 65 is out of range (1..64)");
}

TEST(GlobalLimitsConfigTest, RedisTimeoutsPositive) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, rate: {per_second: 1}",
                              "redis: {address: \"h:1\", timeout: 0s, "
                              "connect_timeout: 0s}\n")),
            "test.yaml: redis.timeout: must be > 0\n"
            "test.yaml: redis.connect_timeout: must be > 0");
}

TEST(GlobalLimitsConfigTest, RedisTimeoutInvalid) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, rate: {per_second: 1}",
                              "redis: {address: \"h:1\", timeout: soon}\n")),
            "test.yaml: redis.timeout: invalid duration \"soon\" (use e.g. "
            "\"250ms\", \"1.5s\", \"2m\")");
}

}  // namespace
}  // namespace sluice
