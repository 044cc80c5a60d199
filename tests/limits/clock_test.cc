#include "server/limits/clock.h"

#include <cstdint>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

TEST(SimulatedClockTest, StartsWhereTold) {
  SimulatedClock clock(42);
  EXPECT_EQ(clock.NowNanos(), 42);
  SimulatedClock zero;
  EXPECT_EQ(zero.NowNanos(), 0);
}

TEST(SimulatedClockTest, AdvanceAndSet) {
  SimulatedClock clock;
  clock.Advance(absl::Milliseconds(20));
  EXPECT_EQ(clock.NowNanos(), 20'000'000);
  clock.AdvanceNanos(5);
  EXPECT_EQ(clock.NowNanos(), 20'000'005);
  clock.Set(int64_t{7} * 1'000'000'000);
  EXPECT_EQ(clock.NowNanos(), 7'000'000'000);
}

TEST(SimulatedClockTest, UsableThroughTheInterface) {
  SimulatedClock sim(100);
  const Clock& clock = sim;
  sim.Advance(absl::Nanoseconds(1));
  EXPECT_EQ(clock.NowNanos(), 101);
}

TEST(RealClockTest, MonotonicAndSingleton) {
  const Clock& clock = RealClock::Get();
  EXPECT_EQ(&RealClock::Get(), &RealClock::Get());
  int64_t last = clock.NowNanos();
  EXPECT_GT(last, 0);
  for (int i = 0; i < 1000; ++i) {
    const int64_t now = clock.NowNanos();
    ASSERT_GE(now, last);
    last = now;
  }
}

}  // namespace
}  // namespace sluice
