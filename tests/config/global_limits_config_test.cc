// Config of global limits (scope: global) and the top-level redis section:
// defaults, and the exact text of every error.
#include <cstdio>
#include <cstdlib>
#include <fstream>
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
            "test.yaml: redis.address: required (host:port), or "
            "redis.cluster (the seed nodes of a Redis Cluster)");
}

TEST(GlobalLimitsConfigTest, RedisClusterSeeds) {
  auto config = ParseConfigYaml(
      WithLimit("name: g, scope: global, rate: {per_second: 100}",
                "redis:\n  cluster: [\"127.0.0.1:7000\", \"[::1]:7001\", "
                "\"redis-0.redis:6379\"]\n"),
      kSource);
  ASSERT_TRUE(config.ok()) << config.status();
  const RedisSettings& redis = (*config)->redis();
  ASSERT_EQ(redis.cluster.size(), 3u);
  EXPECT_EQ(redis.cluster[0].host, "127.0.0.1");
  EXPECT_EQ(redis.cluster[0].port, 7000);
  EXPECT_EQ(redis.cluster[1].host, "::1");
  EXPECT_EQ(redis.cluster[1].port, 7001);
  EXPECT_EQ(redis.cluster[2].host, "redis-0.redis");
  EXPECT_EQ(redis.cluster[2].port, 6379);
  EXPECT_TRUE(redis.host.empty());
}

TEST(GlobalLimitsConfigTest, RedisClusterErrorsNameTheEntry) {
  EXPECT_EQ(ErrorOf(WithLimit("name: g, rate: {per_second: 1}",
                              "redis: {address: \"h:1\", cluster: "
                              "[\"h:2\"]}\n")),
            "test.yaml: redis.cluster: set either redis.address (one Redis) "
            "or redis.cluster (the seed nodes of a Redis Cluster), not both");
  EXPECT_EQ(ErrorOf(WithLimit("name: g, rate: {per_second: 1}",
                              "redis: {cluster: [\"h:2\", \"h:0\", "
                              "\"h:2\", \"\"]}\n")),
            "test.yaml: redis.cluster[1]: port 0 is not a Redis port\n"
            "test.yaml: redis.cluster[2]: \"h:2\" is listed twice\n"
            "test.yaml: redis.cluster[3]: empty (host:port of a cluster "
            "node)");
  const std::string error =
      ErrorOf(WithLimit("name: g, rate: {per_second: 1}",
                        "redis: {cluster: [\"redis://:pw@h:1\"]}\n"));
  EXPECT_EQ(error.rfind("test.yaml: redis.cluster[0]: must be host:port, "
                        "not a URL",
                        0),
            0u)
      << error;
  EXPECT_EQ(error.find("pw@"), std::string::npos) << error;
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

TEST(GlobalLimitsConfigTest, RedisAddressWithCredentialsPointsAtTheFile) {
  // The message must not echo the address (it holds the password).
  for (const char* address :
       {"redis://:s3cret@h:6379", "redis://user:s3cret@h:6379",
        "user:s3cret@h:6379"}) {
    const std::string error = ErrorOf(
        WithLimit("name: g, rate: {per_second: 1}",
                  absl::StrCat("redis: {address: \"", address, "\"}\n")));
    EXPECT_EQ(error,
              "test.yaml: redis.address: must be host:port, not a URL, and "
              "must not hold credentials: put the password in a file named "
              "by redis.password_file (and an ACL user in "
              "redis.username_file)")
        << address;
    EXPECT_EQ(error.find("s3cret"), std::string::npos);
  }
}

class RedisSecretsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/");
  }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string Redis(const std::string& fields) {
    return absl::StrCat("redis: {address: \"127.0.0.1:6379\"", fields, "}\n");
  }
  absl::StatusOr<std::shared_ptr<const Config>> Parse(const std::string& top) {
    return ParseConfigYaml(
        WithLimit("name: g, scope: global, rate: {per_second: 1}", top),
        kSource, dir_);
  }
  std::string dir_;
};

TEST_F(RedisSecretsTest, ReadTrimmedRelativeToTheConfigAndNotShown) {
  Write("pw", "  s3cret-pw\n");
  Write("user", "sluice\n");
  auto config =
      Parse(Redis(", password_file: pw, username_file: user, "
                  "not_ready_in_fallback: true"));
  ASSERT_TRUE(config.ok()) << config.status();
  const RedisSettings& redis = (*config)->redis();
  EXPECT_EQ(redis.password, "s3cret-pw");
  EXPECT_EQ(redis.username, "sluice");
  EXPECT_TRUE(redis.not_ready_in_fallback);
  EXPECT_EQ(redis.fingerprint.find("s3cret"), std::string::npos);
  // The proto (GetConfig's view) holds the resolved paths, not the secret.
  EXPECT_EQ((*config)->proto().redis().password_file(), dir_ + "pw");
  EXPECT_EQ((*config)->proto().DebugString().find("s3cret"), std::string::npos);
}

TEST_F(RedisSecretsTest, ARotatedFileChangesTheFingerprint) {
  Write("pw2", "one\n");
  auto first = Parse(Redis(", password_file: pw2"));
  ASSERT_TRUE(first.ok()) << first.status();
  auto same = Parse(Redis(", password_file: pw2"));
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ((*first)->redis().fingerprint, (*same)->redis().fingerprint);
  Write("pw2", "two\n");
  auto rotated = Parse(Redis(", password_file: pw2"));
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_NE((*first)->redis().fingerprint, (*rotated)->redis().fingerprint);
  EXPECT_EQ((*first)->hash(), (*rotated)->hash());  // the YAML is the same
}

TEST_F(RedisSecretsTest, MissingEmptyOrUsernameAlone) {
  std::remove((dir_ + "absent").c_str());
  auto missing = Parse(Redis(", password_file: absent"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(std::string(missing.status().message())
                .rfind("test.yaml: redis.password_file: ", 0),
            0u)
      << missing.status();
  Write("empty", " \n");
  auto empty = Parse(Redis(", password_file: empty"));
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(std::string(empty.status().message()),
            absl::StrCat("test.yaml: redis.password_file: \"", dir_,
                         "empty\" is empty"));
  Write("user2", "u\n");
  auto alone = Parse(Redis(", username_file: user2"));
  ASSERT_FALSE(alone.ok());
  EXPECT_EQ(std::string(alone.status().message()),
            "test.yaml: redis.username_file: needs redis.password_file "
            "(AUTH <user> <password>)");
  Write("spaced", "two words\n");
  auto spaced = Parse(Redis(", password_file: spaced"));
  ASSERT_FALSE(spaced.ok());
  EXPECT_EQ(std::string(spaced.status().message()).find("two words"),
            std::string::npos);
}

}  // namespace
}  // namespace sluice
