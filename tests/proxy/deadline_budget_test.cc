#include "server/proxy/deadline_budget.h"

#include "gtest/gtest.h"

namespace sluice {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

TEST(DeadlineBudgetTest, NoDeadlineAnywhereMeansNone) {
  Budget b = ComputeBudget(kNow, absl::InfiniteFuture(), DeadlineSettings{});
  EXPECT_TRUE(b.ok);
  EXPECT_EQ(b.upstream_deadline, absl::InfiniteFuture());
}

TEST(DeadlineBudgetTest, ClientDeadlineMinusOffset) {
  DeadlineSettings p;
  p.offset = absl::Milliseconds(50);
  Budget b = ComputeBudget(kNow, kNow + absl::Seconds(2), p);
  EXPECT_TRUE(b.ok);
  EXPECT_EQ(b.upstream_deadline, kNow + absl::Milliseconds(1950));
}

TEST(DeadlineBudgetTest, DefaultWhenClientSendsNone) {
  DeadlineSettings p;
  p.default_timeout = absl::Seconds(3);
  p.offset = absl::Milliseconds(50);  // only applies to the client's deadline
  Budget b = ComputeBudget(kNow, absl::InfiniteFuture(), p);
  EXPECT_EQ(b.upstream_deadline, kNow + absl::Seconds(3));
}

TEST(DeadlineBudgetTest, MaxClampsBothClientAndDefault) {
  DeadlineSettings p;
  p.max_timeout = absl::Seconds(1);
  EXPECT_EQ(ComputeBudget(kNow, kNow + absl::Seconds(30), p).upstream_deadline,
            kNow + absl::Seconds(1));
  EXPECT_EQ(ComputeBudget(kNow, absl::InfiniteFuture(), p).upstream_deadline,
            kNow + absl::Seconds(1));
  p.default_timeout = absl::Seconds(5);
  EXPECT_EQ(ComputeBudget(kNow, absl::InfiniteFuture(), p).upstream_deadline,
            kNow + absl::Seconds(1));
}

TEST(DeadlineBudgetTest, TooLittleLeftIsRejected) {
  DeadlineSettings p;
  p.min_budget = absl::Milliseconds(10);
  p.offset = absl::Milliseconds(5);
  EXPECT_FALSE(ComputeBudget(kNow, kNow + absl::Milliseconds(14), p).ok);
  EXPECT_TRUE(ComputeBudget(kNow, kNow + absl::Milliseconds(15), p).ok);
  // Already expired.
  EXPECT_FALSE(ComputeBudget(kNow, kNow - absl::Seconds(1), p).ok);
}

TEST(DeadlineBudgetTest, ZeroMinBudgetStillRejectsExpired) {
  DeadlineSettings p;
  p.min_budget = absl::ZeroDuration();
  EXPECT_FALSE(ComputeBudget(kNow, kNow, p).ok);
}

}  // namespace
}  // namespace sluice
