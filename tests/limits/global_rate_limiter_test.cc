// The pure logic of global limits: the fallback state machine, the lease
// stock and the parsing of the GCRA script's reply. Time is injected; no
// Redis (tests/e2e/python/global_limits_test.py runs a real one).
#include "server/limits/global_rate_limiter.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace sluice {
namespace {

constexpr int64_t kMs = 1'000'000;
using Change = FallbackState::Change;

TEST(FallbackStateTest, EntersAfterConsecutiveFailures) {
  FallbackState f(3, 100 * kMs, 2000 * kMs);
  EXPECT_TRUE(f.ShouldAskRedis(0));
  EXPECT_EQ(f.OnFailure(0), Change::kNone);
  EXPECT_EQ(f.OnFailure(0), Change::kNone);
  EXPECT_FALSE(f.active());
  EXPECT_EQ(f.OnFailure(0), Change::kEntered);
  EXPECT_TRUE(f.active());
  EXPECT_FALSE(f.ShouldAskRedis(50 * kMs));  // before the first probe
}

TEST(FallbackStateTest, SuccessResetsTheFailureCount) {
  FallbackState f(3, 100 * kMs, 2000 * kMs);
  f.OnFailure(0);
  f.OnFailure(0);
  EXPECT_EQ(f.OnSuccess(), Change::kNone);
  f.OnFailure(0);
  f.OnFailure(0);
  EXPECT_FALSE(f.active());
}

TEST(FallbackStateTest, OneProbeAtATimeWithBoundedBackoff) {
  FallbackState f(1, 100 * kMs, 400 * kMs);
  EXPECT_EQ(f.OnFailure(0), Change::kEntered);
  EXPECT_FALSE(f.ShouldAskRedis(99 * kMs));
  EXPECT_TRUE(f.ShouldAskRedis(100 * kMs));   // the probe
  EXPECT_FALSE(f.ShouldAskRedis(100 * kMs));  // only one in flight
  EXPECT_EQ(f.OnFailure(150 * kMs), Change::kNone);
  // Backoff doubles: next probe 200 ms after the failure, then 400 (cap).
  EXPECT_FALSE(f.ShouldAskRedis(349 * kMs));
  EXPECT_TRUE(f.ShouldAskRedis(350 * kMs));
  f.OnFailure(350 * kMs);
  EXPECT_FALSE(f.ShouldAskRedis(749 * kMs));
  EXPECT_TRUE(f.ShouldAskRedis(750 * kMs));
  f.OnFailure(750 * kMs);
  EXPECT_FALSE(f.ShouldAskRedis(1149 * kMs));
  EXPECT_TRUE(f.ShouldAskRedis(1150 * kMs));  // still 400 ms: capped
  EXPECT_EQ(f.OnSuccess(), Change::kLeft);
  EXPECT_FALSE(f.active());
  EXPECT_TRUE(f.ShouldAskRedis(1150 * kMs));
}

TEST(LeaseStockTest, SpendsWhatWasAdded) {
  LeaseStock stock(10, 1000 * kMs);
  EXPECT_FALSE(stock.TakeOne("k", 0));
  stock.Add("k", 3, 0);
  EXPECT_EQ(stock.Tokens("k", 0), 3);
  EXPECT_TRUE(stock.TakeOne("k", 1));
  EXPECT_TRUE(stock.TakeOne("k", 2));
  EXPECT_TRUE(stock.TakeOne("k", 3));
  EXPECT_FALSE(stock.TakeOne("k", 4));
  EXPECT_FALSE(stock.TakeOne("other", 4));
}

TEST(LeaseStockTest, TokensExpire) {
  LeaseStock stock(10, 1000 * kMs);
  stock.Add("k", 5, 0);
  EXPECT_TRUE(stock.TakeOne("k", 999 * kMs));
  EXPECT_FALSE(stock.TakeOne("k", 1000 * kMs));
  EXPECT_EQ(stock.Tokens("k", 1000 * kMs), 0);
}

TEST(LeaseStockTest, BoundedByMaxKeys) {
  LeaseStock stock(2, 1000 * kMs);
  stock.Add("a", 1, 0);
  stock.Add("b", 1, 0);
  stock.Add("c", 1, 0);  // full: dropped
  EXPECT_FALSE(stock.TakeOne("c", 1));
  stock.Add("d", 1, 2000 * kMs);  // a and b expired: evicted
  EXPECT_TRUE(stock.TakeOne("d", 2000 * kMs));
}

TEST(LeaseStockTest, BlockedUntilTheRetryTime) {
  LeaseStock stock(10, 1000 * kMs);
  EXPECT_EQ(stock.BlockedFor("k", 0), 0);
  stock.Block("k", 30 * kMs, 0);
  EXPECT_EQ(stock.BlockedFor("k", 10 * kMs), 20 * kMs);
  stock.Block("k", 20 * kMs, 10 * kMs);  // never moves earlier
  EXPECT_EQ(stock.BlockedFor("k", 25 * kMs), 5 * kMs);
  EXPECT_EQ(stock.BlockedFor("k", 30 * kMs), 0);
  EXPECT_EQ(stock.BlockedFor("other", 10 * kMs), 0);
}

TEST(GcraReplyTest, ParsesTheScriptsArray) {
  GcraReply r;
  ASSERT_TRUE(ParseGcraReply({3, 0, 7, 250000}, &r));
  EXPECT_EQ(r.granted, 3);
  EXPECT_EQ(r.retry_after_nanos, 0);
  EXPECT_EQ(r.remaining, 7);
  EXPECT_EQ(r.reset_after_nanos, 250000 * 1000);
  ASSERT_TRUE(ParseGcraReply({0, 10000, 0, 1000000}, &r));
  EXPECT_EQ(r.granted, 0);
  EXPECT_EQ(r.retry_after_nanos, 10 * kMs);
}

TEST(GcraReplyTest, RejectsOtherShapes) {
  GcraReply r;
  EXPECT_FALSE(ParseGcraReply({}, &r));
  EXPECT_FALSE(ParseGcraReply({1, 0, 0}, &r));
  EXPECT_FALSE(ParseGcraReply({-1, 0, 0, 0}, &r));
}

TEST(GcraScriptTest, UsesRedisTimeAndOneKey) {
  const std::string script = kGcraScript;
  EXPECT_NE(script.find("redis.call('TIME')"), std::string::npos);
  EXPECT_NE(script.find("KEYS[1]"), std::string::npos);
  EXPECT_EQ(script.find("KEYS[2]"), std::string::npos);
}

}  // namespace
}  // namespace sluice
