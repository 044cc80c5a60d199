// Fair queuing across keys in the ConcurrencyLimiter: round robin between
// keys, FIFO within a key, per-key bounds, the key table's bound,
// cancellation, run-time changes and a multi-threaded stress run (TSan:
// bazel test --config=tsan //tests/limits:fair_queue_test).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/limits/concurrency_limiter.h"

namespace sluice {
namespace {

using AcquireResult = ConcurrencyLimiter::AcquireResult;
using Limits = ConcurrencyLimiter::Limits;
using Permit = ConcurrencyLimiter::Permit;

// Records its grant in a shared order (single-threaded tests).
class OrderWaiter : public ConcurrencyLimiter::Waiter {
 public:
  OrderWaiter(std::string name, std::vector<std::string>* order)
      : name_(std::move(name)), order_(order) {}
  void OnGranted() override {
    order_->push_back(name_);
    ++granted_;
  }
  int granted() const { return granted_; }
  const std::string& name() const { return name_; }

 private:
  const std::string name_;
  std::vector<std::string>* const order_;
  int granted_ = 0;
};

Limits MakeLimits(int64_t max, int64_t queue, int64_t per_key = 0,
                  int64_t queue_per_key = 0, int64_t max_keys = 10000) {
  return Limits{.max_in_flight = max,
                .max_queue = queue,
                .max_per_key = per_key,
                .max_queue_per_key = queue_per_key,
                .max_keys = max_keys};
}

TEST(FairQueueTest, KeysAreServedRoundRobinFifoWithinAKey) {
  ConcurrencyLimiter limiter(MakeLimits(1, 100));
  std::vector<std::string> order;
  Permit held = limiter.TryAcquirePermit("x");
  ASSERT_TRUE(held);
  OrderWaiter a1("a1", &order), a2("a2", &order), a3("a3", &order);
  OrderWaiter b1("b1", &order), b2("b2", &order), c1("c1", &order);
  for (OrderWaiter* w : {&a1, &a2, &a3, &b1, &b2, &c1}) {
    ASSERT_EQ(limiter.AcquireOrEnqueue(w, w->name().substr(0, 1)),
              AcquireResult::kQueued);
  }
  EXPECT_EQ(limiter.QueueDepth(), 6);
  EXPECT_EQ(limiter.GetStats().keys, 4);  // x, a, b, c
  std::vector<OrderWaiter*> all = {&a1, &a2, &a3, &b1, &b2, &c1};
  held.Release();
  // Each grant's holder releases in turn: one permit goes round.
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(order.size(), i + 1);
    OrderWaiter* granted = *std::find_if(all.begin(), all.end(), [&](auto* w) {
      return w->name() == order.back();
    });
    Permit p = limiter.AdoptPermit(granted);
    ASSERT_TRUE(p);
    EXPECT_EQ(limiter.InFlight(), 1);
  }
  EXPECT_EQ(order,
            (std::vector<std::string>{"a1", "b1", "c1", "a2", "b2", "a3"}));
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(limiter.QueueDepth(), 0);
  EXPECT_EQ(limiter.GetStats().keys, 0);  // every key's state dropped
}

TEST(FairQueueTest, AKeyThatJoinsLateWaitsOneTurnNotTheWholeBacklog) {
  ConcurrencyLimiter limiter(MakeLimits(1, 100));
  std::vector<std::string> order;
  Permit held = limiter.TryAcquirePermit("noisy");
  std::vector<std::unique_ptr<OrderWaiter>> noisy;
  for (int i = 0; i < 10; ++i) {
    noisy.push_back(
        std::make_unique<OrderWaiter>("n" + std::to_string(i), &order));
    ASSERT_EQ(limiter.AcquireOrEnqueue(noisy.back().get(), "noisy"),
              AcquireResult::kQueued);
  }
  OrderWaiter quiet("q", &order);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&quiet, "quiet"), AcquireResult::kQueued);
  held.Release();  // -> n0
  Permit p0 = limiter.AdoptPermit(noisy[0].get());
  p0.Release();  // -> q, ahead of n1..n9
  EXPECT_EQ(order, (std::vector<std::string>{"n0", "q"}));
  Permit pq = limiter.AdoptPermit(&quiet);
  pq.Release();
  EXPECT_EQ(order.back(), "n1");
  // Drain the rest.
  for (int i = 1; i < 10; ++i) limiter.AdoptPermit(noisy[i].get()).Release();
  EXPECT_EQ(order.size(), 11u);
  EXPECT_EQ(limiter.InFlight(), 0);
}

TEST(FairQueueTest, UnkeyedCallsAreOneFlow) {
  ConcurrencyLimiter limiter(MakeLimits(1, 10));
  std::vector<std::string> order;
  ASSERT_TRUE(limiter.TryAcquire());
  OrderWaiter u1("u1", &order), u2("u2", &order), k1("k1", &order);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&u1), AcquireResult::kQueued);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&u2), AcquireResult::kQueued);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&k1, "k"), AcquireResult::kQueued);
  limiter.Release();
  Permit::Adopt(&limiter).Release();  // u1's, the unkeyed way
  limiter.AdoptPermit(&k1).Release();
  limiter.AdoptPermit(&u2).Release();
  EXPECT_EQ(order, (std::vector<std::string>{"u1", "k1", "u2"}));
  EXPECT_EQ(limiter.InFlight(), 0);
}

TEST(FairQueueTest, PerKeyQueueBound) {
  ConcurrencyLimiter limiter(MakeLimits(1, 10, 0, 2));
  std::vector<std::string> order;
  Permit held = limiter.TryAcquirePermit("b");
  OrderWaiter a1("a1", &order), a2("a2", &order), a3("a3", &order);
  OrderWaiter b1("b1", &order);
  EXPECT_EQ(limiter.AcquireOrEnqueue(&a1, "a"), AcquireResult::kQueued);
  EXPECT_EQ(limiter.AcquireOrEnqueue(&a2, "a"), AcquireResult::kQueued);
  EXPECT_EQ(limiter.AcquireOrEnqueue(&a3, "a"),
            AcquireResult::kRejectedQueueFull);
  EXPECT_EQ(limiter.AcquireOrEnqueue(&b1, "b"), AcquireResult::kQueued);
  ConcurrencyLimiter::Stats stats = limiter.GetStats();
  EXPECT_EQ(stats.rejected_key_queue_full, 1);
  EXPECT_EQ(stats.rejected_queue_full, 0);
  EXPECT_EQ(stats.queue_depth, 3);
  EXPECT_TRUE(limiter.Cancel(&a1));
  EXPECT_TRUE(limiter.Cancel(&a2));
  EXPECT_TRUE(limiter.Cancel(&b1));
}

TEST(FairQueueTest, GlobalQueueBoundStillApplies) {
  ConcurrencyLimiter limiter(MakeLimits(1, 2, 0, 5));
  std::vector<std::string> order;
  Permit held = limiter.TryAcquirePermit("a");
  OrderWaiter a1("a1", &order), b1("b1", &order), c1("c1", &order);
  EXPECT_EQ(limiter.AcquireOrEnqueue(&a1, "a"), AcquireResult::kQueued);
  EXPECT_EQ(limiter.AcquireOrEnqueue(&b1, "b"), AcquireResult::kQueued);
  EXPECT_EQ(limiter.AcquireOrEnqueue(&c1, "c"),
            AcquireResult::kRejectedQueueFull);
  EXPECT_EQ(limiter.GetStats().rejected_queue_full, 1);
  EXPECT_EQ(limiter.GetStats().keys, 2);  // the rejected key left nothing
  EXPECT_TRUE(limiter.Cancel(&a1));
  EXPECT_TRUE(limiter.Cancel(&b1));
}

TEST(FairQueueTest, PerKeyMaximum) {
  ConcurrencyLimiter limiter(MakeLimits(4, 10, 2));
  std::vector<std::string> order;
  Permit a_p1 = limiter.TryAcquirePermit("a");
  Permit a_p2 = limiter.TryAcquirePermit("a");
  ASSERT_TRUE(a_p1 && a_p2);
  EXPECT_FALSE(limiter.TryAcquirePermit("a"));  // a is at its maximum
  OrderWaiter a3("a3", &order), b1("b1", &order), b2("b2", &order);
  // Two permits are free, but not for a: it waits behind itself...
  EXPECT_EQ(limiter.AcquireOrEnqueue(&a3, "a"), AcquireResult::kQueued);
  // ...and does not hold back b.
  EXPECT_EQ(limiter.AcquireOrEnqueue(&b1, "b"), AcquireResult::kAcquired);
  EXPECT_EQ(limiter.AcquireOrEnqueue(&b2, "b"), AcquireResult::kAcquired);
  Permit b_p1 = limiter.AdoptPermit(&b1);
  Permit b_p2 = limiter.AdoptPermit(&b2);
  EXPECT_EQ(limiter.InFlight(), 4);
  b_p1.Release();  // a free permit, but a is still at its maximum
  EXPECT_TRUE(order.empty());
  EXPECT_EQ(limiter.InFlight(), 3);
  a_p1.Release();  // a below its maximum: its waiter gets a permit
  EXPECT_EQ(order, (std::vector<std::string>{"a3"}));
  Permit a_p3 = limiter.AdoptPermit(&a3);
  EXPECT_EQ(limiter.InFlight(), 3);
  EXPECT_EQ(limiter.TopKeys(1)[0].key, "a");
  EXPECT_EQ(limiter.TopKeys(1)[0].in_flight, 2);
}

TEST(FairQueueTest, CancelRemovesAWaiterAndDropsItsKey) {
  ConcurrencyLimiter limiter(MakeLimits(1, 10));
  std::vector<std::string> order;
  Permit held = limiter.TryAcquirePermit("a");
  OrderWaiter b1("b1", &order), b2("b2", &order), c1("c1", &order);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&b1, "b"), AcquireResult::kQueued);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&b2, "b"), AcquireResult::kQueued);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&c1, "c"), AcquireResult::kQueued);
  EXPECT_EQ(limiter.GetStats().keys, 3);
  EXPECT_TRUE(limiter.Cancel(&c1));
  EXPECT_EQ(limiter.GetStats().keys, 2);  // c had nothing else
  EXPECT_TRUE(limiter.Cancel(&b1));       // the head of b
  EXPECT_FALSE(limiter.Cancel(&b1));      // not queued any more
  held.Release();
  EXPECT_EQ(order, (std::vector<std::string>{"b2"}));
  EXPECT_FALSE(limiter.Cancel(&b2));  // too late: b2 owns a permit
  Permit p = limiter.AdoptPermit(&b2);
  ASSERT_TRUE(p);
  EXPECT_FALSE(limiter.AdoptPermit(&b2));  // adopted once
  p.Release();
  EXPECT_EQ(limiter.GetStats().keys, 0);
  EXPECT_EQ(limiter.InFlight(), 0);
}

TEST(FairQueueTest, KeysPastMaxKeysShareTheOverflowFlow) {
  ConcurrencyLimiter limiter(MakeLimits(10, 10, 1, 0, 2));
  Permit a = limiter.TryAcquirePermit("a");
  Permit b = limiter.TryAcquirePermit("b");
  Permit c = limiter.TryAcquirePermit("c");  // overflow
  ASSERT_TRUE(a && b && c);
  // The overflow flow has one key's bounds: d shares c's maximum.
  EXPECT_FALSE(limiter.TryAcquirePermit("d"));
  ConcurrencyLimiter::Stats stats = limiter.GetStats();
  EXPECT_EQ(stats.keys, 2);
  EXPECT_EQ(stats.overflow_acquisitions, 2);
  a.Release();  // a's state is dropped: room for a new key
  EXPECT_TRUE(limiter.TryAcquirePermit("d"));
  EXPECT_EQ(limiter.GetStats().keys, 1);  // d's permit went back at once
}

TEST(FairQueueTest, SetLimitsCountsHeldPermitsAgainstTheNewMaximum) {
  ConcurrencyLimiter limiter(MakeLimits(4, 10));
  std::vector<std::string> order;
  std::vector<Permit> held;
  for (const char* key : {"a", "a", "b", "c"}) {
    held.push_back(limiter.TryAcquirePermit(key));
    ASSERT_TRUE(held.back());
  }
  OrderWaiter a1("a1", &order), b1("b1", &order), c1("c1", &order);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&a1, "a"), AcquireResult::kQueued);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&b1, "b"), AcquireResult::kQueued);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&c1, "c"), AcquireResult::kQueued);
  limiter.SetLimits(MakeLimits(2, 10));  // nothing revoked
  EXPECT_EQ(limiter.InFlight(), 4);
  held[0].Release();
  held[1].Release();
  EXPECT_TRUE(order.empty());  // 2 held: at the new maximum
  EXPECT_EQ(limiter.InFlight(), 2);
  held[2].Release();
  EXPECT_EQ(order, (std::vector<std::string>{"a1"}));
  EXPECT_EQ(limiter.InFlight(), 2);
  // Raising the maximum grants in turn.
  limiter.SetMaxInFlight(4);
  EXPECT_EQ(order, (std::vector<std::string>{"a1", "b1", "c1"}));
  EXPECT_EQ(limiter.InFlight(), 4);
  limiter.AdoptPermit(&a1).Release();
  limiter.AdoptPermit(&b1).Release();
  limiter.AdoptPermit(&c1).Release();
  held.clear();
  EXPECT_EQ(limiter.InFlight(), 0);
}

TEST(FairQueueTest, RaisingThePerKeyMaximumGrantsHeldBackWaiters) {
  ConcurrencyLimiter limiter(MakeLimits(4, 10, 1));
  std::vector<std::string> order;
  Permit a = limiter.TryAcquirePermit("a");
  OrderWaiter a2("a2", &order), a3("a3", &order);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&a2, "a"), AcquireResult::kQueued);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&a3, "a"), AcquireResult::kQueued);
  limiter.SetLimits(MakeLimits(4, 10, 2));
  EXPECT_EQ(order, (std::vector<std::string>{"a2"}));
  limiter.SetLimits(MakeLimits(4, 10, 0));  // no per-key maximum
  EXPECT_EQ(order, (std::vector<std::string>{"a2", "a3"}));
  // Lowering it again holds a's next waiter until a is below it.
  limiter.SetLimits(MakeLimits(4, 10, 1));
  OrderWaiter a4("a4", &order);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&a4, "a"), AcquireResult::kQueued);
  a.Release();
  limiter.AdoptPermit(&a2).Release();
  EXPECT_EQ(order.size(), 2u);  // a still holds a3's: at its maximum
  limiter.AdoptPermit(&a3).Release();
  EXPECT_EQ(order.back(), "a4");
  limiter.AdoptPermit(&a4).Release();
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(limiter.GetStats().keys, 0);
}

// Many threads acquire, queue, cancel and release on random keys; the
// limiter never lets more than max in flight, nor more than max_per_key
// for one key, and ends empty.
class StressWaiter : public ConcurrencyLimiter::Waiter {
 public:
  void OnGranted() override {
    absl::MutexLock lock(&mu_);
    granted_ = true;
  }
  bool TakeGranted() {
    absl::MutexLock lock(&mu_);
    return std::exchange(granted_, false);
  }

 private:
  absl::Mutex mu_;
  bool granted_ ABSL_GUARDED_BY(mu_) = false;
};

// max_keys: 10 (every key has a flow of its own) or 2 (keys share the
// overflow flow, where the per-key maximum binds the flow, not each key).
class FairQueueStressTest : public testing::TestWithParam<int64_t> {};

TEST_P(FairQueueStressTest, NeverExceedsTheLimits) {
  constexpr int kThreads = 4;
  constexpr int kKeys = 5;
  constexpr int64_t kMax = 6;
  constexpr int64_t kPerKey = 2;
  constexpr int kRounds = 4000;
  const bool check_per_key = GetParam() >= kKeys;
  ConcurrencyLimiter limiter(MakeLimits(kMax, 8, kPerKey, 3, GetParam()));
  std::atomic<int64_t> in_use{0};
  std::atomic<int64_t> per_key[kKeys] = {};
  std::atomic<bool> over{false};
  auto hold = [&](int key) {
    if (in_use.fetch_add(1) + 1 > kMax) over = true;
    if (per_key[key].fetch_add(1) + 1 > kPerKey && check_per_key) {
      over = true;
    }
  };
  auto unhold = [&](int key) {
    per_key[key].fetch_sub(1);
    in_use.fetch_sub(1);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      StressWaiter waiter;
      for (int i = 0; i < kRounds; ++i) {
        const int key = static_cast<int>(rng() % kKeys);
        const std::string name = "k" + std::to_string(key);
        Permit permit;
        if (rng() % 4 == 0) {
          permit = limiter.TryAcquirePermit(name);
        } else {
          switch (limiter.AcquireOrEnqueue(&waiter, name)) {
            case AcquireResult::kAcquired:
              permit = limiter.AdoptPermit(&waiter);
              break;
            case AcquireResult::kRejectedQueueFull:
              break;
            case AcquireResult::kQueued:
              if (rng() % 3 == 0 && limiter.Cancel(&waiter)) break;
              // Wait for the grant (others release without waiting on us).
              while (!waiter.TakeGranted()) std::this_thread::yield();
              permit = limiter.AdoptPermit(&waiter);
              break;
          }
        }
        if (permit) {
          hold(key);
          std::this_thread::yield();
          unhold(key);
          permit.Release();
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_FALSE(over.load());
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(limiter.QueueDepth(), 0);
  EXPECT_EQ(limiter.GetStats().keys, 0);
}

INSTANTIATE_TEST_SUITE_P(MaxKeys, FairQueueStressTest,
                         testing::Values(int64_t{10}, int64_t{2}));

}  // namespace
}  // namespace sluice
