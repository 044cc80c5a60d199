// The pure logic of global limits: the fallback state machine, the lease
// stock and the parsing of the GCRA script's reply. Time is injected; no
// Redis (tests/e2e/python/global_limits_test.py runs a real one).
#include "server/limits/global_rate_limiter.h"

#include <algorithm>
#include <string>
#include <tuple>
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

TEST(FallbackStateTest, ProbeNowSkipsTheBackoff) {
  FallbackState f(1, 100 * kMs, 2000 * kMs);
  f.OnFailure(0);
  ASSERT_TRUE(f.active());
  EXPECT_FALSE(f.ShouldAskRedis(50 * kMs));
  f.ProbeNow();  // a cluster's slot map changed
  EXPECT_TRUE(f.ShouldAskRedis(50 * kMs));
  EXPECT_FALSE(f.ShouldAskRedis(51 * kMs));  // still one probe at a time
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

TEST(LeaseStockTest, OneReservationAskedForAtATime) {
  LeaseStock stock(10, 1000 * kMs);
  EXPECT_TRUE(stock.StartReserving("k", 0));
  EXPECT_FALSE(stock.StartReserving("k", 1));  // one request asks
  EXPECT_TRUE(stock.Reserving("k"));
  EXPECT_TRUE(stock.StartReserving("other", 1));
  stock.EndReserving("k");  // granted or refused without one
  EXPECT_FALSE(stock.Reserving("k"));
  EXPECT_TRUE(stock.StartReserving("k", 2));
}

TEST(LeaseStockTest, AReservedTokenIsSpentOnceDue) {
  LeaseStock stock(10, 1000 * kMs);
  ASSERT_TRUE(stock.StartReserving("k", 0));
  stock.Reserved("k", 20 * kMs, 0);
  // Held: no second reservation; calls before it is due wait for it.
  EXPECT_FALSE(stock.StartReserving("k", 5 * kMs));
  EXPECT_EQ(stock.BlockedFor("k", 5 * kMs), 15 * kMs);
  EXPECT_FALSE(stock.TakeOne("k", 19 * kMs));
  EXPECT_EQ(stock.Count(19 * kMs).reserved_keys, 1);
  EXPECT_TRUE(stock.TakeOne("k", 20 * kMs));
  EXPECT_FALSE(stock.TakeOne("k", 21 * kMs));  // spent
  EXPECT_EQ(stock.BlockedFor("k", 21 * kMs), 0);
  EXPECT_TRUE(stock.StartReserving("k", 21 * kMs));  // its next turn
}

TEST(LeaseStockTest, AReservationNeverSpentExpires) {
  LeaseStock stock(10, 1000 * kMs);
  ASSERT_TRUE(stock.StartReserving("k", 0));
  stock.Reserved("k", 10 * kMs, 0);
  EXPECT_FALSE(stock.TakeOne("k", 1010 * kMs));
  EXPECT_EQ(stock.Count(1010 * kMs).reserved_keys, 0);
  EXPECT_TRUE(stock.StartReserving("k", 1010 * kMs));
}

TEST(LeaseStockTest, OnlyTheAskingRequestGetsAReservation) {
  LeaseStock stock(10, 1000 * kMs);
  stock.Reserved("k", 10 * kMs, 0);  // nobody asked: ignored
  EXPECT_FALSE(stock.TakeOne("k", 10 * kMs));
  EXPECT_FALSE(stock.Reserving("k"));
}

TEST(LeaseStockTest, ReservationsBoundedByMaxKeys) {
  LeaseStock stock(2, 1000 * kMs);
  EXPECT_TRUE(stock.StartReserving("a", 0));
  EXPECT_TRUE(stock.StartReserving("b", 0));
  EXPECT_FALSE(stock.StartReserving("c", 0));  // full: ask without one
  stock.Reserved("a", 10 * kMs, 0);
  EXPECT_TRUE(stock.StartReserving("c", 1011 * kMs));  // a's expired
}

// Two replicas with equal, steady arrivals (every 5 ms each, offset by
// 2.5 ms) against one bucket of 100/s: with reservations the replicas take
// turns, where the first to ask after each refusal used to win every race
// (97/s against 4/s measured before reservations). The bucket is a model of
// kGcraScript; the replicas are two LeaseStocks deciding as
// GlobalRateLimiter::Take does, with Redis answering at once.
TEST(LeaseStockTest, ReservationsShareASaturatedBucketFairly) {
  constexpr int64_t kInterval = 10 * kMs;
  constexpr int64_t kTolerance = 10 * kInterval;  // burst 10
  int64_t tat = 0;
  // kGcraScript with want 1 and a 1 s horizon: {granted, wait, reserved}.
  auto gcra = [&](int64_t now, bool reserve) -> std::tuple<int, int64_t, bool> {
    tat = std::max(tat, now);
    if (now + kTolerance - tat >= kInterval) {
      tat += kInterval;
      return {1, 0, false};
    }
    const int64_t wait = tat - kTolerance + kInterval - now;
    if (!reserve || wait > 1000 * kMs) return {0, wait, false};
    tat += kInterval;
    return {0, wait, true};
  };
  LeaseStock a(10, 1000 * kMs), b(10, 1000 * kMs);
  LeaseStock* replicas[] = {&a, &b};
  int admitted[2] = {0, 0};
  for (int64_t i = 0; i < 2000; ++i) {  // 10 s
    for (int k = 0; k < 2; ++k) {
      LeaseStock& s = *replicas[k];
      const int64_t now = i * 5 * kMs + k * 2500 * 1000;
      if (s.TakeOne("k", now)) {
        ++admitted[k];
        continue;
      }
      if (s.BlockedFor("k", now) > 0) continue;
      const bool reserve = s.StartReserving("k", now);
      auto [granted, wait, reserved] = gcra(now, reserve);
      if (reserved) {
        s.Reserved("k", now + wait, now);
      } else if (reserve) {
        s.EndReserving("k");
      }
      if (granted > 0) {
        ++admitted[k];
      } else if (!reserved && (reserve || !s.Reserving("k"))) {
        s.Block("k", now + wait, now);
      }
    }
  }
  // 10 s at 100/s plus the burst, in turns.
  EXPECT_NEAR(admitted[0] + admitted[1], 1010, 3);
  EXPECT_NEAR(admitted[0], admitted[1], 2);
}

TEST(GcraReplyTest, ParsesTheScriptsArray) {
  GcraReply r;
  ASSERT_TRUE(ParseGcraReply({3, 0, 7, 250000, 0}, &r));
  EXPECT_EQ(r.granted, 3);
  EXPECT_EQ(r.retry_after_nanos, 0);
  EXPECT_EQ(r.remaining, 7);
  EXPECT_EQ(r.reset_after_nanos, 250000 * 1000);
  EXPECT_FALSE(r.reserved);
  ASSERT_TRUE(ParseGcraReply({0, 10000, 0, 1000000, 0}, &r));
  EXPECT_EQ(r.granted, 0);
  EXPECT_EQ(r.retry_after_nanos, 10 * kMs);
  EXPECT_FALSE(r.reserved);
  ASSERT_TRUE(ParseGcraReply({0, 10000, 0, 1010000, 1}, &r));
  EXPECT_TRUE(r.reserved);
  EXPECT_EQ(r.retry_after_nanos, 10 * kMs);
}

TEST(GcraReplyTest, RejectsOtherShapes) {
  GcraReply r;
  EXPECT_FALSE(ParseGcraReply({}, &r));
  EXPECT_FALSE(ParseGcraReply({1, 0, 0}, &r));
  EXPECT_FALSE(ParseGcraReply({1, 0, 0, 0}, &r));  // before reservations
  EXPECT_FALSE(ParseGcraReply({-1, 0, 0, 0, 0}, &r));
  EXPECT_FALSE(ParseGcraReply({1, 0, 0, 0, 1}, &r));  // granted and reserved
  EXPECT_FALSE(ParseGcraReply({0, 0, 0, 0, 2}, &r));
}

TEST(GcraScriptTest, UsesRedisTimeAndOneKey) {
  const std::string script = kGcraScript;
  EXPECT_NE(script.find("redis.call('TIME')"), std::string::npos);
  EXPECT_NE(script.find("KEYS[1]"), std::string::npos);
  EXPECT_EQ(script.find("KEYS[2]"), std::string::npos);
}

}  // namespace
}  // namespace sluice
