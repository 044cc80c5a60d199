#include "server/limits/token_bucket.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/limits/clock.h"

namespace sluice {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;

// A time read before a delay (preemption, a lock) can be older than the
// state another thread wrote since: GCRA then rejects although the bucket
// has room. TryTake(const Clock&) reads the clock after the state.
TEST(TokenBucketTest, ClockOverloadNeverJudgesByAStaleTime) {
  constexpr int64_t kUs = 1'000;
  // 1,000,000/s with a burst of 10: 10 us of tolerance.
  TokenBucket bucket(TokenBucket::Config::PerSecond(1e6, 10));
  SimulatedClock clock(1000 * kUs);
  const int64_t stale = clock.NowNanos() - 100 * kUs;  // read, then delayed
  ASSERT_TRUE(bucket.TryTake(clock).admitted);  // another thread, on time
  // The delayed caller with its old reading is refused a full bucket...
  EXPECT_FALSE(bucket.TryTake(stale).admitted);
  // ...and admitted when the time is read after the state.
  EXPECT_TRUE(bucket.TryTake(clock).admitted);
  // The clock overload still enforces the burst.
  int admitted = 0;
  for (int i = 0; i < 20; ++i) admitted += bucket.TryTake(clock).admitted;
  EXPECT_EQ(admitted, 8);
}

TEST(TokenBucketConfigTest, Intervals) {
  EXPECT_EQ(TokenBucket::Config::PerSecond(50, 1).interval_nanos(), 20 * kMs);
  EXPECT_EQ(TokenBucket::Config::PerSecond(3, 1).interval_nanos(), 333333333);
  EXPECT_EQ(
      TokenBucket::Config::PerPeriod(100, absl::Minutes(1), 1).interval_nanos(),
      600 * kMs);
  EXPECT_EQ(
      TokenBucket::Config::PerPeriod(1, absl::Hours(1), 1).interval_nanos(),
      3600 * kSecond);
  EXPECT_DOUBLE_EQ(TokenBucket::Config::PerSecond(50, 1).tokens_per_second(),
                   50.0);
  // Out-of-range inputs are clamped, never UB.
  EXPECT_EQ(TokenBucket::Config::PerSecond(1e12, 0).interval_nanos(), 1);
  EXPECT_EQ(TokenBucket::Config::PerSecond(1e12, 0).burst(), 1);
  EXPECT_EQ(TokenBucket::Config::PerSecond(0, 5).interval_nanos(),
            int64_t{1} << 62);
  EXPECT_EQ(TokenBucket::Config::PerSecond(0, 5).burst(), 1);
  EXPECT_EQ(TokenBucket::Config::PerSecond(-1, 5).interval_nanos(),
            int64_t{1} << 62);
  EXPECT_EQ(
      TokenBucket::Config::PerPeriod(0, absl::Seconds(1), 5).interval_nanos(),
      int64_t{1} << 62);
  EXPECT_EQ(TokenBucket::Config::PerPeriod(1, absl::InfiniteDuration(), 5)
                .interval_nanos(),
            int64_t{1} << 62);
}

TEST(TokenBucketConfigTest, Equality) {
  EXPECT_EQ(TokenBucket::Config::PerSecond(10, 5),
            TokenBucket::Config::PerPeriod(600, absl::Minutes(1), 5));
  EXPECT_NE(TokenBucket::Config::PerSecond(10, 5),
            TokenBucket::Config::PerSecond(10, 6));
}

TEST(TokenBucketTest, StartsFull) {
  SimulatedClock clock(123 * kSecond);
  TokenBucket bucket(10.0, 5);
  EXPECT_TRUE(bucket.IsFull(clock.NowNanos()));
  EXPECT_DOUBLE_EQ(bucket.Tokens(clock.NowNanos()), 5.0);
  EXPECT_EQ(bucket.TimeUntilAvailable(clock.NowNanos(), 5), 0);
}

TEST(TokenBucketTest, StartsFullAtTimeZero) {
  TokenBucket bucket(10.0, 5);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(bucket.TryTake(0).admitted) << i;
  EXPECT_FALSE(bucket.TryTake(0).admitted);
}

TEST(TokenBucketTest, BurstThenRejectWithExactRetryAfter) {
  SimulatedClock clock(kSecond);
  TokenBucket bucket(10.0, 5);  // T = 100 ms
  for (int i = 0; i < 5; ++i) {
    const TokenBucket::Decision d = bucket.TryTake(clock.NowNanos());
    EXPECT_TRUE(d.admitted);
    EXPECT_EQ(d.remaining, 4 - i);
    EXPECT_EQ(d.retry_after_nanos, 0);
    EXPECT_EQ(d.reset_after_nanos, (i + 1) * 100 * kMs);
  }
  const TokenBucket::Decision d = bucket.TryTake(clock.NowNanos());
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.retry_after_nanos, 100 * kMs);
  EXPECT_EQ(d.remaining, 0);
  EXPECT_EQ(d.reset_after_nanos, 500 * kMs);
  EXPECT_FALSE(bucket.IsFull(clock.NowNanos()));
}

TEST(TokenBucketTest, RetryAfterIsExact) {
  SimulatedClock clock(kSecond);
  TokenBucket bucket(7.0, 3);  // T = 142857143 ns
  const int64_t t = bucket.config().interval_nanos();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(bucket.TryTake(clock.NowNanos()).admitted);
  }
  clock.Advance(absl::Milliseconds(30));
  for (int64_t n : {1, 2, 3}) {
    const TokenBucket::Decision d = bucket.TryTake(clock.NowNanos(), n);
    ASSERT_FALSE(d.admitted);
    EXPECT_EQ(d.retry_after_nanos, n * t - 30 * kMs) << n;
    EXPECT_EQ(bucket.TimeUntilAvailable(clock.NowNanos(), n),
              d.retry_after_nanos);
  }
  const int64_t wait = bucket.TimeUntilAvailable(clock.NowNanos(), 2);
  clock.AdvanceNanos(wait - 1);
  EXPECT_FALSE(bucket.TryTake(clock.NowNanos(), 2).admitted);
  clock.AdvanceNanos(1);
  const TokenBucket::Decision d = bucket.TryTake(clock.NowNanos(), 2);
  EXPECT_TRUE(d.admitted);
  EXPECT_EQ(d.remaining, 0);
}

TEST(TokenBucketTest, MoreThanBurstIsNeverAdmitted) {
  TokenBucket bucket(10.0, 5);
  const TokenBucket::Decision d = bucket.TryTake(0, 6);
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.retry_after_nanos, TokenBucket::kNever);
  EXPECT_EQ(d.remaining, 5);
  EXPECT_EQ(bucket.TimeUntilAvailable(0, 6), TokenBucket::kNever);
  EXPECT_TRUE(bucket.IsFull(0));  // nothing taken
}

TEST(TokenBucketTest, ProbeTakesNothing) {
  TokenBucket bucket(10.0, 5);
  ASSERT_TRUE(bucket.TryTake(0, 2).admitted);
  const TokenBucket::Decision d = bucket.TryTake(0, 0);
  EXPECT_TRUE(d.admitted);
  EXPECT_EQ(d.remaining, 3);
  EXPECT_EQ(d.reset_after_nanos, 200 * kMs);
  EXPECT_DOUBLE_EQ(bucket.Tokens(0), 3.0);
}

TEST(TokenBucketTest, Refill) {
  SimulatedClock clock(kSecond);
  TokenBucket bucket(10.0, 5);
  ASSERT_TRUE(bucket.TryTake(clock.NowNanos(), 5).admitted);
  EXPECT_DOUBLE_EQ(bucket.Tokens(clock.NowNanos()), 0.0);
  clock.Advance(absl::Milliseconds(250));
  EXPECT_DOUBLE_EQ(bucket.Tokens(clock.NowNanos()), 2.5);
  EXPECT_TRUE(bucket.TryTake(clock.NowNanos(), 2).admitted);
  EXPECT_FALSE(bucket.TryTake(clock.NowNanos(), 1).admitted);
  clock.Advance(absl::Seconds(10));  // refills to the burst, not beyond
  EXPECT_TRUE(bucket.IsFull(clock.NowNanos()));
  EXPECT_DOUBLE_EQ(bucket.Tokens(clock.NowNanos()), 5.0);
  EXPECT_TRUE(bucket.TryTake(clock.NowNanos(), 5).admitted);
  EXPECT_FALSE(bucket.TryTake(clock.NowNanos(), 1).admitted);
}

// Offers `offered` requests per second for `seconds` simulated seconds,
// evenly spaced, and returns how many were admitted.
int64_t Offer(TokenBucket& bucket, SimulatedClock& clock, double offered,
              int seconds) {
  const int64_t total = static_cast<int64_t>(offered * seconds);
  const int64_t start = clock.NowNanos();
  int64_t admitted = 0;
  for (int64_t i = 0; i < total; ++i) {
    clock.Set(start + static_cast<int64_t>(i * (1e9 / offered)));
    if (bucket.TryTake(clock.NowNanos()).admitted) ++admitted;
  }
  return admitted;
}

// The reference: a token bucket counted in integer nanoseconds of credit,
// independent of GCRA's arithmetic. Capacity burst x interval, one token
// costs one interval, credit accrues one nanosecond per nanosecond; starts
// full. The same offers as Offer(), so the two must agree exactly.
int64_t ReferenceAdmits(int64_t interval, int64_t burst, double offered,
                        int seconds) {
  const int64_t total = static_cast<int64_t>(offered * seconds);
  const int64_t capacity = burst * interval;
  int64_t credit = capacity;
  int64_t last = 0;
  int64_t admitted = 0;
  for (int64_t i = 0; i < total; ++i) {
    const int64_t t = static_cast<int64_t>(i * (1e9 / offered));
    credit = std::min(capacity, credit + (t - last));
    last = t;
    if (credit >= interval) {
      credit -= interval;
      ++admitted;
    }
  }
  return admitted;
}

TEST(TokenBucketTest, TwiceTheRateAdmitsRateTimesTimePlusBurst) {
  struct Case {
    double rate;
    int64_t burst;
  };
  for (const Case& c :
       {Case{100, 20}, Case{1000, 1}, Case{33.3, 7}, Case{5000, 500}}) {
    SimulatedClock clock(kSecond);
    TokenBucket bucket(c.rate, c.burst);
    const int64_t admitted = Offer(bucket, clock, 2 * c.rate, 10);
    const int64_t expected = ReferenceAdmits(bucket.config().interval_nanos(),
                                             c.burst, 2 * c.rate, 10);
    EXPECT_EQ(admitted, expected) << "rate " << c.rate << " burst " << c.burst;
    // and that is rate x time + burst, within the one token at the end of
    // the run that is due but not yet offered.
    EXPECT_NEAR(admitted, c.rate * 10 + c.burst, 1)
        << "rate " << c.rate << " burst " << c.burst;
  }
}

TEST(TokenBucketTest, PerMinuteRate) {
  SimulatedClock clock(kSecond);
  TokenBucket bucket(100, absl::Minutes(1), 10);  // T = 600 ms
  EXPECT_EQ(bucket.config().interval_nanos(), 600 * kMs);
  // Offered every 100 ms for one minute: 100/min plus the burst get in.
  int64_t admitted = 0;
  for (int i = 0; i < 600; ++i) {
    if (bucket.TryTake(clock.NowNanos()).admitted) ++admitted;
    clock.Advance(absl::Milliseconds(100));
  }
  EXPECT_NEAR(admitted, 110, 1);
  // Drained: the next token is due exactly 600 ms after the last one.
  const TokenBucket::Decision d = bucket.TryTake(clock.NowNanos());
  if (!d.admitted) {
    EXPECT_GT(d.retry_after_nanos, 0);
    EXPECT_LE(d.retry_after_nanos, 600 * kMs);
  }
}

TEST(TokenBucketTest, PerHourRateWithSmallBurst) {
  SimulatedClock clock(kSecond);
  TokenBucket bucket(3, absl::Hours(1), 1);  // one every 20 minutes
  EXPECT_TRUE(bucket.TryTake(clock.NowNanos()).admitted);
  const TokenBucket::Decision d = bucket.TryTake(clock.NowNanos());
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.retry_after_nanos, absl::ToInt64Nanoseconds(absl::Minutes(20)));
  clock.Advance(absl::Minutes(20));
  EXPECT_TRUE(bucket.TryTake(clock.NowNanos()).admitted);
}

TEST(TokenBucketTest, ReservePacesAtTheRateAfterTheBurst) {
  SimulatedClock clock(kSecond);
  TokenBucket bucket(50.0, 5);  // 20 ms apart after 5 at once
  std::vector<int64_t> delays;
  // A paced stream: reserve, wait as told, use the token, repeat.
  for (int i = 0; i < 20; ++i) {
    const int64_t delay = bucket.Reserve(clock.NowNanos());
    delays.push_back(delay);
    clock.AdvanceNanos(delay);
  }
  for (int i = 0; i < 5; ++i) EXPECT_EQ(delays[i], 0) << i;
  for (int i = 5; i < 20; ++i) EXPECT_EQ(delays[i], 20 * kMs) << i;
}

TEST(TokenBucketTest, ReserveLongRunRateIsExact) {
  SimulatedClock clock(kSecond);
  const int64_t start = clock.NowNanos();
  TokenBucket bucket(50.0, 10);
  // A stream that always has a message ready: 100 simulated seconds.
  int64_t messages = 0;
  while (true) {
    const int64_t delay = bucket.Reserve(clock.NowNanos());
    if (clock.NowNanos() + delay - start > 100 * kSecond) break;
    clock.AdvanceNanos(delay);
    ++messages;
    ASSERT_LT(messages, 100000);  // bounded
  }
  EXPECT_EQ(messages, 50 * 100 + 10);  // rate * T + burst
}

TEST(TokenBucketTest, ReserveAfterIdleStartsWithAFreshBurst) {
  SimulatedClock clock(kSecond);
  TokenBucket bucket(50.0, 2);
  EXPECT_EQ(bucket.Reserve(clock.NowNanos()), 0);
  EXPECT_EQ(bucket.Reserve(clock.NowNanos()), 0);
  EXPECT_EQ(bucket.Reserve(clock.NowNanos()), 20 * kMs);
  // Reserving without waiting puts the bucket into debt, shown as negative
  // tokens, and the next delay grows by one interval each time.
  EXPECT_EQ(bucket.Reserve(clock.NowNanos()), 40 * kMs);
  EXPECT_DOUBLE_EQ(bucket.Tokens(clock.NowNanos()), -2.0);
  EXPECT_FALSE(bucket.TryTake(clock.NowNanos()).admitted);
  EXPECT_EQ(bucket.TryTake(clock.NowNanos()).retry_after_nanos, 60 * kMs);
  clock.Advance(absl::Seconds(1));
  EXPECT_TRUE(bucket.IsFull(clock.NowNanos()));
  EXPECT_EQ(bucket.Reserve(clock.NowNanos()), 0);
}

TEST(TokenBucketTest, ReserveWeighted) {
  TokenBucket bucket(1000.0, 100);  // e.g. bytes: 1000/s, 100 at once
  EXPECT_EQ(bucket.Reserve(0, 100), 0);
  EXPECT_EQ(bucket.Reserve(0, 50), 50 * kMs);
  EXPECT_EQ(bucket.Reserve(0, 0), 0);  // no-op
  // Larger than the burst: allowed, waits for the excess.
  TokenBucket fresh(1000.0, 100);
  EXPECT_EQ(fresh.Reserve(0, 300), 200 * kMs);
}

TEST(TokenBucketTest, IsFullOnlyWhenRefilled) {
  SimulatedClock clock(kSecond);
  TokenBucket bucket(10.0, 3);
  ASSERT_TRUE(bucket.TryTake(clock.NowNanos()).admitted);
  EXPECT_FALSE(bucket.IsFull(clock.NowNanos()));
  clock.Advance(absl::Milliseconds(99));
  EXPECT_FALSE(bucket.IsFull(clock.NowNanos()));
  clock.Advance(absl::Milliseconds(1));
  EXPECT_TRUE(bucket.IsFull(clock.NowNanos()));
}

TEST(TokenBucketTest, NoOverflowAtExtremes) {
  const int64_t late = (int64_t{1} << 62) - 1;
  // Slowest rate, huge burst request clamp, late clock.
  TokenBucket slow(0.0, 1000);
  EXPECT_TRUE(slow.TryTake(late).admitted);
  const TokenBucket::Decision d = slow.TryTake(late);
  EXPECT_FALSE(d.admitted);
  // The slowest rate: one token per 2^62 ns, exactly.
  EXPECT_EQ(d.retry_after_nanos, int64_t{1} << 62);
  // Fastest rate, largest burst.
  TokenBucket fast(1e9, int64_t{1} << 62);
  EXPECT_TRUE(fast.TryTake(late, int64_t{1} << 61).admitted);
  EXPECT_GE(fast.Tokens(late), 0.0);
  // Unbounded Reserve debt saturates instead of wrapping.
  TokenBucket paced(1.0, 1);
  for (int i = 0; i < 10; ++i) {
    EXPECT_GE(paced.Reserve(late, std::numeric_limits<int64_t>::max()), 0);
  }
  EXPECT_FALSE(paced.TryTake(late).admitted);
  EXPECT_GE(paced.TryTake(late).retry_after_nanos, 0);
}

TEST(TokenBucketTest, ConcurrentTakesAdmitExactlyTheBurst) {
  // Time stands still: exactly `burst` takes can succeed, however many
  // threads race for them.
  constexpr int kThreads = 4;
  constexpr int kAttempts = 20000;
  TokenBucket bucket(1.0, 10000);
  std::atomic<int64_t> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      int64_t mine = 0;
      for (int i = 0; i < kAttempts; ++i) {
        if (bucket.TryTake(kSecond).admitted) ++mine;
      }
      admitted.fetch_add(mine);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(admitted.load(), 10000);
  EXPECT_FALSE(bucket.TryTake(kSecond).admitted);
}

TEST(TokenBucketTest, ConcurrentTakesWithMovingTimeStayWithinTheRate) {
  constexpr int kThreads = 4;
  constexpr int kAttempts = 50000;
  SimulatedClock clock(kSecond);
  TokenBucket bucket(1000.0, 50);
  std::atomic<int64_t> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      int64_t mine = 0;
      for (int i = 0; i < kAttempts; ++i) {
        // Thread 0 drives time: 1 us per attempt, 50 ms in all.
        if (t == 0) clock.Advance(absl::Microseconds(1));
        if (bucket.TryTake(clock.NowNanos()).admitted) ++mine;
      }
      admitted.fetch_add(mine);
    });
  }
  for (std::thread& t : threads) t.join();
  const double elapsed = (clock.NowNanos() - kSecond) / 1e9;
  // Never more than rate * elapsed + burst (+1 for the boundary)...
  EXPECT_LE(admitted.load(), static_cast<int64_t>(1000 * elapsed) + 50 + 1);
  // ...and never less: thread 0 tries at every simulated microsecond, so
  // every token that falls due is taken by someone (a lost refill, or a
  // lost compare-and-swap that admits nobody, shows here; the burst alone
  // is 50 of the ~100).
  EXPECT_GE(admitted.load(), static_cast<int64_t>(1000 * elapsed) + 50 - 1);
}

TEST(TokenBucketTest, AFullBucketHoldsExactlyItsBurst) {
  // B*T above 2^53: dividing them as doubles gave 12.000000000000002.
  const auto config = TokenBucket::Config::PerPeriod(
      1, absl::Nanoseconds(43363063658112739), 12);
  ASSERT_EQ(config.interval_nanos(), 43363063658112739);
  TokenBucket bucket(config);
  EXPECT_EQ(bucket.Tokens(0), 12.0);
  EXPECT_LE(config.Tokens(TokenBucket::Config::kFreshTat, 5), 12.0);
}

// --- Carrying a bucket's debt into a new definition (reload, set-limit) ---

TEST(TokenBucketCarryTest, AFullBucketCarriesNothing) {
  const auto from = TokenBucket::Config::PerSecond(20, 5);
  const auto to = TokenBucket::Config::PerSecond(21, 5);
  EXPECT_EQ(to.CarryTat(from, TokenBucket::Config::kFreshTat, kSecond),
            TokenBucket::Config::kFreshTat);
  EXPECT_EQ(to.CarryTat(from, kSecond, kSecond),
            TokenBucket::Config::kFreshTat);
}

TEST(TokenBucketCarryTest, DebtInTokensIsKeptAndRefillsAtTheNewRate) {
  const auto from = TokenBucket::Config::PerSecond(10, 5);  // 100 ms each
  TokenBucket old(from);
  const int64_t now = 10 * kSecond;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(old.TryTake(now).admitted);
  // 3 tokens owed; at 20/s (50 ms each) that is 150 ms of TAT.
  const auto to = TokenBucket::Config::PerSecond(20, 5);
  const int64_t tat = to.CarryTat(from, old.Tat(), now);
  EXPECT_EQ(tat, now + 150 * kMs);
  TokenBucket carried(to, tat);
  EXPECT_DOUBLE_EQ(carried.Tokens(now), 2.0);  // burst 5 minus the 3 owed
  // The same debt whatever the burst: a smaller burst leaves the bucket
  // empty (debt 3 of burst 2, in debt by one token).
  const auto small = TokenBucket::Config::PerSecond(20, 2);
  TokenBucket tight(small, small.CarryTat(from, old.Tat(), now));
  EXPECT_DOUBLE_EQ(tight.Tokens(now), -1.0);
  EXPECT_FALSE(tight.TryTake(now).admitted);
  EXPECT_EQ(tight.TimeUntilAvailable(now), 100 * kMs);  // 2 tokens at 20/s
}

TEST(TokenBucketCarryTest, ReserveDebtBeyondTheBurstCarries) {
  const auto from = TokenBucket::Config::PerSecond(10, 2);
  TokenBucket old(from);
  for (int i = 0; i < 6; ++i) old.Reserve(0);  // 6 taken, 4 beyond the burst
  EXPECT_DOUBLE_EQ(old.Tokens(0), -4.0);
  const auto to = TokenBucket::Config::PerSecond(5, 2);
  TokenBucket carried(to, to.CarryTat(from, old.Tat(), 0));
  EXPECT_DOUBLE_EQ(carried.Tokens(0), -4.0);
  EXPECT_EQ(carried.TimeUntilAvailable(0), kSecond);  // 5 tokens at 5/s
}

TEST(TokenBucketCarryTest, NeverOverflows) {
  const auto slow = TokenBucket::Config::PerPeriod(1, absl::Hours(1e6), 1000);
  const auto fast = TokenBucket::Config::PerSecond(1e9, 1);
  TokenBucket old(slow);
  old.Reserve(0, 1000);
  // From a fast definition to a very slow one: capped, no wrap-around.
  const int64_t tat = slow.CarryTat(fast, int64_t{1} << 61, 0);
  EXPECT_GT(tat, 0);
  EXPECT_LE(tat, int64_t{1} << 62);
  EXPECT_GT(fast.CarryTat(slow, old.Tat(), 0), 0);
}

// The target of issue 15 point 6, in simulated time: a rate alternating
// between 20/s and 21/s on every change, 10 changes a second, under a load
// far above it, never admits more than the larger rate allows.
TEST(TokenBucketCarryTest, AlternatingRateAdmitsNoMoreThanTheLargerRate) {
  constexpr int64_t kBurst = 5;
  const TokenBucket::Config rates[] = {
      TokenBucket::Config::PerSecond(20, kBurst),
      TokenBucket::Config::PerSecond(21, kBurst)};
  auto bucket = std::make_unique<TokenBucket>(rates[0]);
  std::vector<int64_t> admitted_at;
  int which = 0;
  // 10 s; a call every millisecond; a change every 100 ms.
  for (int64_t now = 0; now < 10 * kSecond; now += kMs) {
    if (now % (100 * kMs) == 0 && now > 0) {
      which ^= 1;
      bucket = std::make_unique<TokenBucket>(
          rates[which],
          rates[which].CarryTat(bucket->config(), bucket->Tat(), now));
    }
    if (bucket->TryTake(now).admitted) admitted_at.push_back(now);
  }
  // Any 1 s window: at most 21 + burst.
  size_t lo = 0;
  for (size_t hi = 0; hi < admitted_at.size(); ++hi) {
    while (admitted_at[hi] - admitted_at[lo] >= kSecond) ++lo;
    ASSERT_LE(hi - lo + 1, static_cast<size_t>(21 + kBurst))
        << "at " << admitted_at[hi];
  }
  // Overall, what 10 s at <= 21/s allow (and not starved: >= 20/s).
  EXPECT_LE(admitted_at.size(), static_cast<size_t>(21 * 10 + kBurst));
  EXPECT_GE(admitted_at.size(), static_cast<size_t>(20 * 10));
}

}  // namespace
}  // namespace sluice
