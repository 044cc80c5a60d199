#include "server/limits/keyed_buckets.h"

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/limits/clock.h"
#include "server/limits/token_bucket.h"

namespace sluice {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;

TEST(KeyedTokenBucketsTest, ClockOverloadReadsTheTimeUnderTheLock) {
  constexpr int64_t kUs = 1'000;
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(1e6, 10), 100);
  SimulatedClock clock(1000 * kUs);
  const int64_t stale = clock.NowNanos() - 100 * kUs;
  ASSERT_TRUE(buckets.TryTake("k", clock).admitted);
  EXPECT_FALSE(buckets.TryTake("k", stale).admitted);
  EXPECT_TRUE(buckets.TryTake("k", clock).admitted);
}

TEST(KeyedTokenBucketsTest, KeysAreIndependent) {
  SimulatedClock clock(kSecond);
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(10, 3), 1000);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(buckets.TryTake("alice", clock.NowNanos()).admitted);
  }
  const KeyedTokenBuckets::Decision denied =
      buckets.TryTake("alice", clock.NowNanos());
  EXPECT_FALSE(denied.admitted);
  EXPECT_FALSE(denied.overflow);
  EXPECT_EQ(denied.retry_after_nanos, 100 * kMs);
  // Bob is untouched by Alice.
  for (int i = 0; i < 3; ++i) {
    const KeyedTokenBuckets::Decision d =
        buckets.TryTake("bob", clock.NowNanos());
    EXPECT_TRUE(d.admitted);
    EXPECT_EQ(d.remaining, 2 - i);
  }
  EXPECT_EQ(buckets.Size(), 2u);
  EXPECT_DOUBLE_EQ(*buckets.Tokens("alice", clock.NowNanos()), 0.0);
  EXPECT_FALSE(buckets.Tokens("carol", clock.NowNanos()).has_value());
  clock.Advance(absl::Milliseconds(100));
  EXPECT_TRUE(buckets.TryTake("alice", clock.NowNanos()).admitted);
  EXPECT_FALSE(buckets.TryTake("alice", clock.NowNanos()).admitted);
}

TEST(KeyedTokenBucketsTest, RefundGivesTokensBackUpToTheBurst) {
  SimulatedClock clock(kSecond);
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(10, 3), 1000);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(buckets.TryTake("alice", clock.NowNanos()).admitted);
  }
  EXPECT_FALSE(buckets.TryTake("alice", clock.NowNanos()).admitted);
  buckets.Refund("alice");
  EXPECT_DOUBLE_EQ(*buckets.Tokens("alice", clock.NowNanos()), 1.0);
  EXPECT_TRUE(buckets.TryTake("alice", clock.NowNanos()).admitted);
  EXPECT_FALSE(buckets.TryTake("alice", clock.NowNanos()).admitted);
  // Refunds beyond what was taken never raise a bucket above its burst.
  for (int i = 0; i < 10; ++i) buckets.Refund("alice");
  EXPECT_DOUBLE_EQ(*buckets.Tokens("alice", clock.NowNanos()), 3.0);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(buckets.TryTake("alice", clock.NowNanos()).admitted);
  }
  EXPECT_FALSE(buckets.TryTake("alice", clock.NowNanos()).admitted);
  // A key without a bucket stays without one.
  buckets.Refund("nobody");
  EXPECT_FALSE(buckets.Tokens("nobody", clock.NowNanos()).has_value());
}

TEST(KeyedTokenBucketsTest, KeysThatAreNotStringsOfPrintables) {
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(1, 1), 100);
  const std::string with_nul("a\0b", 3);
  EXPECT_TRUE(buckets.TryTake(with_nul, 0).admitted);
  EXPECT_TRUE(buckets.TryTake("a", 0).admitted);
  EXPECT_TRUE(buckets.TryTake("", 0).admitted);
  EXPECT_TRUE(buckets.TryTake(std::string(1000, 'x'), 0).admitted);
  EXPECT_FALSE(buckets.TryTake(with_nul, 0).admitted);
  EXPECT_EQ(buckets.Size(), 4u);
}

TEST(KeyedTokenBucketsTest, RequestsAFreshBucketWouldIgnoreCreateNoKey) {
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(10, 3), 1000);
  const KeyedTokenBuckets::Decision probe = buckets.TryTake("k", 0, 0);
  EXPECT_TRUE(probe.admitted);
  EXPECT_EQ(probe.remaining, 3);
  const KeyedTokenBuckets::Decision too_big = buckets.TryTake("k", 0, 4);
  EXPECT_FALSE(too_big.admitted);
  EXPECT_EQ(too_big.retry_after_nanos, TokenBucket::kNever);
  EXPECT_EQ(buckets.Size(), 0u);
}

TEST(KeyedTokenBucketsTest, IdleKeysAreReplacedWithoutOverflow) {
  SimulatedClock clock(kSecond);
  // Active for 10 ms after a take.
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(100, 1), 64);
  for (int i = 0; i < 64 * 4; ++i) {
    buckets.TryTake(absl::StrCat("old", i), clock.NowNanos());
  }
  ASSERT_LE(buckets.Size(), 64u);
  clock.Advance(absl::Milliseconds(10));  // every old key is full again
  const uint64_t overflow_before = buckets.GetStats().overflow_takes;
  for (int i = 0; i < 1000; ++i) {
    const KeyedTokenBuckets::Decision d =
        buckets.TryTake(absl::StrCat("new", i), clock.NowNanos());
    EXPECT_TRUE(d.admitted);
    EXPECT_FALSE(d.overflow) << i;
    clock.Advance(absl::Milliseconds(10));  // and the previous new one too
    ASSERT_LE(buckets.Size(), 64u);
  }
  const KeyedTokenBuckets::Stats stats = buckets.GetStats();
  EXPECT_EQ(stats.overflow_takes, overflow_before);
  EXPECT_GE(stats.evictions, 1000u - 64u);
}

TEST(KeyedTokenBucketsTest, ActiveKeysAreNeverEvictedNewcomersOverflow) {
  SimulatedClock clock(kSecond);
  // One token a minute: every key stays active for a minute.
  const TokenBucket::Config per_key =
      TokenBucket::Config::PerPeriod(1, absl::Minutes(1), 2);
  const TokenBucket::Config overflow = TokenBucket::Config::PerSecond(5, 5);
  KeyedTokenBuckets buckets(per_key, 32, overflow);
  int own = 0;
  int overflowed = 0;
  for (int i = 0; i < 500; ++i) {
    const KeyedTokenBuckets::Decision d =
        buckets.TryTake(absl::StrCat("k", i), clock.NowNanos());
    (d.overflow ? overflowed : own)++;
  }
  EXPECT_EQ(own, 32);  // exactly the bound got buckets of their own
  EXPECT_EQ(overflowed, 500 - 32);
  EXPECT_EQ(buckets.Size(), 32u);
  // Overflowed keys shared one 5-burst bucket.
  EXPECT_FALSE(buckets.overflow_bucket().IsFull(clock.NowNanos()));
  EXPECT_DOUBLE_EQ(buckets.overflow_bucket().Tokens(clock.NowNanos()), 0.0);
  // Every key that got a bucket still has its state (1 token left).
  int with_state = 0;
  for (int i = 0; i < 500; ++i) {
    std::optional<double> tokens =
        buckets.Tokens(absl::StrCat("k", i), clock.NowNanos());
    if (tokens.has_value()) {
      EXPECT_DOUBLE_EQ(*tokens, 1.0);
      ++with_state;
    }
  }
  EXPECT_EQ(with_state, 32);
}

TEST(KeyedTokenBucketsTest, BoundHoldsUnderAMillionDistinctKeys) {
  SimulatedClock clock(kSecond);
  constexpr size_t kMaxKeys = 10000;
  // 60/min with a burst of 5: a drained key needs a minute per token.
  KeyedTokenBuckets buckets(
      TokenBucket::Config::PerPeriod(60, absl::Minutes(1), 5), kMaxKeys);
  // The victim is active: drained just before the flood.
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(buckets.TryTake("victim", clock.NowNanos()).admitted);
  }
  ASSERT_FALSE(buckets.TryTake("victim", clock.NowNanos()).admitted);

  // Phase 1: a million distinct keys in 1 simulated second (1 us apart).
  constexpr int kFlood = 1'000'000;
  int64_t flood_admitted = 0;
  for (int i = 0; i < kFlood; ++i) {
    clock.Advance(absl::Microseconds(1));
    if (buckets.TryTake(absl::StrCat("flood-", i), clock.NowNanos()).admitted) {
      ++flood_admitted;
    }
    if (i % 64 == 0) {
      ASSERT_LE(buckets.Size(), kMaxKeys) << i;
    }
  }
  EXPECT_LE(buckets.Size(), kMaxKeys);
  const KeyedTokenBuckets::Stats after_flood = buckets.GetStats();
  EXPECT_GT(after_flood.overflow_takes, 0u);
  // Keys that got no bucket of their own shared the overflow bucket (same
  // definition: 5 + 1/s), so the flood gained at most kMaxKeys bursts.
  EXPECT_LE(flood_admitted, static_cast<int64_t>(kMaxKeys) * 1 + 5 + 1);
  // The victim was not reset: still drained, one token a second away.
  const KeyedTokenBuckets::Decision victim =
      buckets.TryTake("victim", clock.NowNanos());
  EXPECT_FALSE(victim.overflow);
  EXPECT_TRUE(victim.admitted);  // 1 s passed: exactly one token back
  EXPECT_FALSE(buckets.TryTake("victim", clock.NowNanos()).admitted);

  // Phase 2: the flood keys go idle after 5 s; a second flood replaces
  // them, and the victim (kept busy) survives this one too.
  clock.Advance(absl::Seconds(6));
  ASSERT_TRUE(buckets.TryTake("victim", clock.NowNanos(), 5).admitted);
  for (int i = 0; i < kFlood; ++i) {
    clock.Advance(absl::Microseconds(1));
    buckets.TryTake(absl::StrCat("second-", i), clock.NowNanos());
    if (i % 64 == 0) {
      ASSERT_LE(buckets.Size(), kMaxKeys) << i;
    }
  }
  EXPECT_LE(buckets.Size(), kMaxKeys);
  EXPECT_GE(buckets.GetStats().evictions, kMaxKeys - 1);
  const KeyedTokenBuckets::Decision again =
      buckets.TryTake("victim", clock.NowNanos());
  EXPECT_FALSE(again.overflow);
  EXPECT_TRUE(again.admitted);
  EXPECT_FALSE(buckets.TryTake("victim", clock.NowNanos()).admitted);
}

TEST(KeyedTokenBucketsTest, TopKeysFewestTokensFirst) {
  SimulatedClock clock(kSecond);
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(1, 10), 1000);
  for (int i = 0; i < 10; ++i) {
    // key i takes i tokens, so it has 10 - i left.
    if (i > 0) {
      ASSERT_TRUE(buckets.TryTake(absl::StrCat("key", i), clock.NowNanos(), i)
                      .admitted);
    }
  }
  const std::vector<KeyedTokenBuckets::KeyTokens> top =
      buckets.TopKeys(3, clock.NowNanos());
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].key, "key9");
  EXPECT_DOUBLE_EQ(top[0].tokens, 1.0);
  EXPECT_EQ(top[1].key, "key8");
  EXPECT_EQ(top[2].key, "key7");
  EXPECT_EQ(buckets.TopKeys(100, clock.NowNanos()).size(), 9u);
  EXPECT_TRUE(buckets.TopKeys(0, clock.NowNanos()).empty());
  clock.Advance(absl::Milliseconds(500));
  EXPECT_DOUBLE_EQ(buckets.TopKeys(1, clock.NowNanos())[0].tokens, 1.5);
}

TEST(KeyedTokenBucketsTest, EvictIdleDropsOnlyFullBuckets) {
  SimulatedClock clock(kSecond);
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(10, 2), 1000);
  for (int i = 0; i < 100; ++i) {
    buckets.TryTake(absl::StrCat("short", i), clock.NowNanos());  // 100 ms
  }
  for (int i = 0; i < 10; ++i) {
    buckets.TryTake(absl::StrCat("long", i), clock.NowNanos(), 2);  // 200 ms
  }
  clock.Advance(absl::Milliseconds(150));
  EXPECT_EQ(buckets.EvictIdle(clock.NowNanos()), 100u);
  EXPECT_EQ(buckets.Size(), 10u);
  EXPECT_DOUBLE_EQ(*buckets.Tokens("long3", clock.NowNanos()), 1.5);
  // The map keeps working after the sweep (ring rebuilt).
  for (int i = 0; i < 2000; ++i) {
    buckets.TryTake(absl::StrCat("more", i), clock.NowNanos());
    ASSERT_LE(buckets.Size(), 1000u);
  }
}

TEST(KeyedTokenBucketsTest, ZeroMaxKeysSendsEverythingToOverflow) {
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(1, 2), 0);
  EXPECT_TRUE(buckets.TryTake("a", 0).overflow);
  EXPECT_TRUE(buckets.TryTake("b", 0).admitted);
  EXPECT_FALSE(buckets.TryTake("c", 0).admitted);
  EXPECT_EQ(buckets.Size(), 0u);
}

TEST(KeyedTokenBucketsTest, ConcurrentTakesAreExactPerKey) {
  constexpr int kThreads = 4;
  constexpr int kKeys = 200;
  constexpr int kBurst = 50;
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(1, kBurst), 10000);
  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back(absl::StrCat("key", i));
  std::vector<std::atomic<int>> admitted(kKeys);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kBurst * 2; ++round) {
        for (int k = 0; k < kKeys; ++k) {
          const int key = (k + t * 37) % kKeys;
          if (buckets.TryTake(keys[key], kSecond).admitted) {
            admitted[key].fetch_add(1);
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int k = 0; k < kKeys; ++k) EXPECT_EQ(admitted[k].load(), kBurst) << k;
  EXPECT_EQ(buckets.Size(), static_cast<size_t>(kKeys));
}

// Issue 15 point 7: a table of fewer than 16 keys gave some shards no room,
// and keys hashing there never got a bucket.
TEST(KeyedTokenBucketsTest, EveryKeyOfASmallTableGetsABucket) {
  for (size_t max_keys = 1; max_keys <= 40; ++max_keys) {
    KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(1, 1), max_keys);
    // Up to max_keys keys for tables smaller than two shards' worth.
    const size_t keys =
        max_keys < 2 * KeyedTokenBuckets::kMinKeysPerShard ? max_keys : 1;
    for (size_t k = 0; k < keys; ++k) {
      const KeyedTokenBuckets::Decision d =
          buckets.TryTake(absl::StrCat("key-", k), 0);
      EXPECT_TRUE(d.admitted) << max_keys << " " << k;
      EXPECT_FALSE(d.overflow) << max_keys << " " << k;
    }
    EXPECT_EQ(buckets.Size(), keys) << max_keys;
    // One more key than the bound: overflow, and the bound holds.
    for (size_t k = 0; k < 4 * max_keys + 8; ++k) {
      buckets.TryTake(absl::StrCat("more-", k), 0);
    }
    EXPECT_LE(buckets.Size(), max_keys);
    if (keys == max_keys) {
      EXPECT_EQ(buckets.Size(), max_keys);
    }
  }
}

TEST(KeyedTokenBucketsCarryTest, KeysAndTheirDebtSurviveANewRate) {
  const auto from = TokenBucket::Config::PerSecond(10, 5);  // 100 ms each
  const auto to = TokenBucket::Config::PerSecond(20, 5);    // 50 ms each
  KeyedTokenBuckets old(from, 1000);
  const int64_t now = 10 * kSecond;
  for (int k = 0; k < 50; ++k) {
    for (int i = 0; i <= k % 5; ++i) {
      ASSERT_TRUE(old.TryTake(absl::StrCat("k", k), now).admitted);
    }
  }
  ASSERT_TRUE(old.TryTake("idle", now - 2 * kSecond).admitted);  // full again
  KeyedTokenBuckets carried(to, 1000, to, old, now);
  EXPECT_EQ(carried.Size(), 50u);  // "idle" is full: dropped
  for (int k = 0; k < 50; ++k) {
    const std::optional<double> tokens =
        carried.Tokens(absl::StrCat("k", k), now);
    ASSERT_TRUE(tokens.has_value()) << k;
    EXPECT_DOUBLE_EQ(*tokens, 5.0 - (k % 5 + 1)) << k;
  }
  EXPECT_FALSE(carried.Tokens("idle", now).has_value());
  // A key that owed all 5 tokens is refused, and refills at 20/s.
  EXPECT_FALSE(carried.TryTake("k4", now).admitted);
  EXPECT_TRUE(carried.TryTake("k4", now + 50 * kMs).admitted);
}

TEST(KeyedTokenBucketsCarryTest, ASmallerTableKeepsTheKeysWithTheMostDebt) {
  const auto config = TokenBucket::Config::PerSecond(1, 100);
  KeyedTokenBuckets old(config, 1000);
  // Key i owes i+1 tokens.
  for (int k = 0; k < 100; ++k) {
    ASSERT_TRUE(old.TryTake(absl::StrCat("k", k), 0, k + 1).admitted);
  }
  KeyedTokenBuckets carried(config, 10, config, old, 0);  // one shard
  ASSERT_EQ(carried.Size(), 10u);
  for (int k = 90; k < 100; ++k) {
    const std::optional<double> tokens =
        carried.Tokens(absl::StrCat("k", k), 0);
    ASSERT_TRUE(tokens.has_value()) << k;
    EXPECT_DOUBLE_EQ(*tokens, 100.0 - (k + 1));
  }
}

TEST(KeyedTokenBucketsCarryTest, OverflowDebtAndCountsCarry) {
  const auto config = TokenBucket::Config::PerSecond(1, 2);
  KeyedTokenBuckets old(config, 0);  // every key overflows
  EXPECT_TRUE(old.TryTake("a", 0).admitted);
  EXPECT_TRUE(old.TryTake("b", 0).admitted);
  EXPECT_FALSE(old.TryTake("c", 0).admitted);
  EXPECT_EQ(old.GetStats().overflow_takes, 3u);
  KeyedTokenBuckets carried(config, 0, config, old, 0);
  EXPECT_EQ(carried.GetStats().overflow_takes, 3u);  // no reset
  const KeyedTokenBuckets::Decision d = carried.TryTake("d", 0);
  EXPECT_TRUE(d.overflow);
  EXPECT_FALSE(d.admitted);  // the shared bucket's debt carried
  EXPECT_EQ(carried.GetStats().overflow_takes, 4u);
}

}  // namespace
}  // namespace sluice
