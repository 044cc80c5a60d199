#include "server/limits/concurrency_limiter.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace sluice {
namespace {

using AcquireResult = ConcurrencyLimiter::AcquireResult;
using Permit = ConcurrencyLimiter::Permit;

// Records its grant; optionally runs a hook in OnGranted.
class TestWaiter : public ConcurrencyLimiter::Waiter {
 public:
  explicit TestWaiter(int id = 0, std::vector<int>* order = nullptr)
      : id_(id), order_(order) {}

  void OnGranted() override {
    if (order_ != nullptr) order_->push_back(id_);
    granted_.fetch_add(1, std::memory_order_acq_rel);
    if (hook_) hook_();
  }

  int granted() const { return granted_.load(std::memory_order_acquire); }
  void set_hook(std::function<void()> hook) { hook_ = std::move(hook); }

 private:
  const int id_;
  std::vector<int>* const order_;
  std::atomic<int> granted_{0};
  std::function<void()> hook_;
};

// Spins (yielding) until `done()` or the bound is hit; false on timeout.
template <typename F>
bool SpinUntil(F done) {
  for (int64_t i = 0; i < 200'000'000; ++i) {
    if (done()) return true;
    std::this_thread::yield();
  }
  return false;
}

TEST(ConcurrencyLimiterTest, TryAcquireUpToTheLimit) {
  ConcurrencyLimiter limiter(2, 0);
  EXPECT_TRUE(limiter.TryAcquire());
  EXPECT_TRUE(limiter.TryAcquire());
  EXPECT_FALSE(limiter.TryAcquire());
  EXPECT_EQ(limiter.InFlight(), 2);
  limiter.Release();
  EXPECT_EQ(limiter.InFlight(), 1);
  EXPECT_TRUE(limiter.TryAcquire());
  limiter.Release();
  limiter.Release();
  EXPECT_EQ(limiter.InFlight(), 0);
}

TEST(ConcurrencyLimiterTest, ZeroQueueRejectsAtOnce) {
  ConcurrencyLimiter limiter(1, 0);
  TestWaiter a, b;
  EXPECT_EQ(limiter.AcquireOrEnqueue(&a), AcquireResult::kAcquired);
  EXPECT_EQ(limiter.AcquireOrEnqueue(&b), AcquireResult::kRejectedQueueFull);
  EXPECT_EQ(limiter.QueueDepth(), 0);
  limiter.Release();
  EXPECT_EQ(a.granted(), 0);  // kAcquired does not call OnGranted
  EXPECT_EQ(b.granted(), 0);
}

TEST(ConcurrencyLimiterTest, WaitersAreGrantedInFifoOrder) {
  ConcurrencyLimiter limiter(1, 5);
  std::vector<int> order;
  std::vector<std::unique_ptr<TestWaiter>> waiters;
  for (int i = 0; i < 6; ++i) {
    waiters.push_back(std::make_unique<TestWaiter>(i, &order));
  }
  ASSERT_TRUE(limiter.TryAcquire());
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(limiter.AcquireOrEnqueue(waiters[i].get()),
              AcquireResult::kQueued);
  }
  EXPECT_EQ(limiter.QueueDepth(), 5);
  // The queue bound.
  EXPECT_EQ(limiter.AcquireOrEnqueue(waiters[5].get()),
            AcquireResult::kRejectedQueueFull);
  // No barging while anyone waits.
  EXPECT_FALSE(limiter.TryAcquire());
  for (int i = 0; i < 5; ++i) {
    limiter.Release();  // hands the permit to the oldest waiter
    EXPECT_EQ(limiter.InFlight(), 1);
    EXPECT_EQ(limiter.QueueDepth(), 4 - i);
  }
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(waiters[i]->granted(), 1);
  limiter.Release();
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(waiters[5]->granted(), 0);
}

TEST(ConcurrencyLimiterTest, CancelBeforeGrant) {
  ConcurrencyLimiter limiter(1, 10);
  std::vector<int> order;
  TestWaiter a(1, &order), b(2, &order), c(3, &order);
  ASSERT_TRUE(limiter.TryAcquire());
  ASSERT_EQ(limiter.AcquireOrEnqueue(&a), AcquireResult::kQueued);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&b), AcquireResult::kQueued);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&c), AcquireResult::kQueued);
  EXPECT_TRUE(limiter.Cancel(&b));   // from the middle
  EXPECT_FALSE(limiter.Cancel(&b));  // not queued any more
  EXPECT_EQ(limiter.QueueDepth(), 2);
  limiter.Release();
  limiter.Release();
  EXPECT_EQ(order, (std::vector<int>{1, 3}));
  EXPECT_EQ(b.granted(), 0);
  // Cancel after the grant: too late, the caller owns a permit.
  EXPECT_FALSE(limiter.Cancel(&c));
  EXPECT_EQ(limiter.InFlight(), 1);
  limiter.Release();
  EXPECT_EQ(limiter.InFlight(), 0);
  // A waiter never queued.
  TestWaiter d;
  EXPECT_FALSE(limiter.Cancel(&d));
  // Reuse after a cancel.
  ASSERT_TRUE(limiter.TryAcquire());
  ASSERT_EQ(limiter.AcquireOrEnqueue(&b), AcquireResult::kQueued);
  limiter.Release();
  EXPECT_EQ(b.granted(), 1);
  limiter.Release();
}

TEST(ConcurrencyLimiterTest, CancelHeadAndTail) {
  ConcurrencyLimiter limiter(1, 10);
  std::vector<int> order;
  TestWaiter a(1, &order), b(2, &order), c(3, &order);
  ASSERT_TRUE(limiter.TryAcquire());
  for (TestWaiter* w : {&a, &b, &c}) {
    ASSERT_EQ(limiter.AcquireOrEnqueue(w), AcquireResult::kQueued);
  }
  EXPECT_TRUE(limiter.Cancel(&a));
  EXPECT_TRUE(limiter.Cancel(&c));
  limiter.Release();
  EXPECT_EQ(order, (std::vector<int>{2}));
  EXPECT_TRUE(limiter.TryAcquire() == false);  // b holds the only permit
  limiter.Release();
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(limiter.QueueDepth(), 0);
}

TEST(ConcurrencyLimiterTest, SetLimitsRaisingGrantsQueuedWaiters) {
  ConcurrencyLimiter limiter(1, 10);
  std::vector<int> order;
  std::vector<std::unique_ptr<TestWaiter>> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.push_back(std::make_unique<TestWaiter>(i, &order));
  }
  ASSERT_TRUE(limiter.TryAcquire());
  for (auto& w : waiters) {
    ASSERT_EQ(limiter.AcquireOrEnqueue(w.get()), AcquireResult::kQueued);
  }
  limiter.SetLimits(3, 10);  // two more permits: the two oldest get them
  EXPECT_EQ(order, (std::vector<int>{0, 1}));
  EXPECT_EQ(limiter.InFlight(), 3);
  EXPECT_EQ(limiter.QueueDepth(), 2);
  // From another thread: OnGranted runs on the thread raising the limit.
  std::thread::id granted_on;
  waiters[2]->set_hook([&] { granted_on = std::this_thread::get_id(); });
  std::thread admin([&] { limiter.SetLimits(10, 10); });
  const std::thread::id admin_id = admin.get_id();
  admin.join();
  EXPECT_EQ(granted_on, admin_id);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(limiter.InFlight(), 5);
  EXPECT_EQ(limiter.QueueDepth(), 0);
  for (int i = 0; i < 5; ++i) limiter.Release();
  EXPECT_EQ(limiter.InFlight(), 0);
}

TEST(ConcurrencyLimiterTest, SetLimitsLoweringRevokesNothing) {
  ConcurrencyLimiter limiter(3, 2);
  TestWaiter a, b, c;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(limiter.TryAcquire());
  ASSERT_EQ(limiter.AcquireOrEnqueue(&a), AcquireResult::kQueued);
  ASSERT_EQ(limiter.AcquireOrEnqueue(&b), AcquireResult::kQueued);
  limiter.SetLimits(1, 1);
  EXPECT_EQ(limiter.InFlight(), 3);
  EXPECT_EQ(limiter.QueueDepth(), 2);  // kept
  EXPECT_EQ(limiter.AcquireOrEnqueue(&c), AcquireResult::kRejectedQueueFull);
  limiter.Release();  // 3 -> 2: still over the limit, no grant
  EXPECT_EQ(a.granted(), 0);
  limiter.Release();  // 2 -> 1: still at the limit, no grant
  EXPECT_EQ(a.granted(), 0);
  EXPECT_EQ(limiter.InFlight(), 1);
  limiter.Release();  // the permit goes to a
  EXPECT_EQ(a.granted(), 1);
  EXPECT_EQ(limiter.InFlight(), 1);
  limiter.Release();  // and then to b
  EXPECT_EQ(b.granted(), 1);
  limiter.Release();
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(limiter.max_in_flight(), 1);
  EXPECT_EQ(limiter.max_queue(), 1);
}

TEST(ConcurrencyLimiterTest, ReleaseInsideOnGrantedDoesNotRecurse) {
  // 100k waiters, each releasing its permit from OnGranted: one Release()
  // drains the whole queue iteratively, in order, on a normal stack.
  constexpr int kWaiters = 100000;
  ConcurrencyLimiter limiter(1, kWaiters);
  std::vector<int> order;
  order.reserve(kWaiters);
  std::vector<std::unique_ptr<TestWaiter>> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.push_back(std::make_unique<TestWaiter>(i, &order));
    waiters.back()->set_hook([&limiter] { limiter.Release(); });
  }
  ASSERT_TRUE(limiter.TryAcquire());
  for (auto& w : waiters) {
    ASSERT_EQ(limiter.AcquireOrEnqueue(w.get()), AcquireResult::kQueued);
  }
  limiter.Release();
  ASSERT_EQ(order.size(), static_cast<size_t>(kWaiters));
  for (int i = 0; i < kWaiters; ++i) ASSERT_EQ(order[i], i);
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(limiter.QueueDepth(), 0);
}

TEST(ConcurrencyLimiterTest, PermitReleasesExactlyOnce) {
  ConcurrencyLimiter limiter(2, 0);
  {
    Permit p = limiter.TryAcquirePermit();
    EXPECT_TRUE(p.held());
    EXPECT_EQ(limiter.InFlight(), 1);
    Permit q = std::move(p);
    EXPECT_FALSE(p.held());  // NOLINT(bugprone-use-after-move)
    EXPECT_TRUE(q);
    EXPECT_EQ(limiter.InFlight(), 1);
    q.Release();
    EXPECT_EQ(limiter.InFlight(), 0);
    q.Release();  // no-op
    EXPECT_EQ(limiter.InFlight(), 0);
  }
  EXPECT_EQ(limiter.InFlight(), 0);
  {
    Permit a = limiter.TryAcquirePermit();
    Permit b = limiter.TryAcquirePermit();
    Permit c = limiter.TryAcquirePermit();
    EXPECT_TRUE(a && b);
    EXPECT_FALSE(c);
    EXPECT_EQ(limiter.InFlight(), 2);
    a = std::move(b);  // a's old permit is released, b's moves over
    EXPECT_EQ(limiter.InFlight(), 1);
    ASSERT_TRUE(limiter.TryAcquire());
    Permit adopted = Permit::Adopt(&limiter);
    EXPECT_EQ(limiter.InFlight(), 2);
  }
  EXPECT_EQ(limiter.InFlight(), 0);
}

// Several threads compete for a small limit through every entry point; an
// atomic counter of permits actually held never exceeds the limit, and
// every permit is returned.
TEST(ConcurrencyLimiterTest, InFlightNeverExceedsTheLimitUnderContention) {
  constexpr int kThreads = 6;
  constexpr int kIterations = 20000;
  constexpr int64_t kLimit = 3;
  ConcurrencyLimiter limiter(kLimit, 4);
  std::atomic<int64_t> held{0};
  std::atomic<int64_t> max_held{0};
  std::atomic<int64_t> rejected{0};
  std::atomic<bool> failed{false};
  const auto enter = [&] {
    const int64_t now = held.fetch_add(1) + 1;
    int64_t seen = max_held.load();
    while (now > seen && !max_held.compare_exchange_weak(seen, now)) {
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      TestWaiter waiter;
      for (int i = 0; i < kIterations && !failed.load(); ++i) {
        const int grants_before = waiter.granted();
        switch (rng() % 3) {
          case 0:
            if (!limiter.TryAcquire()) continue;
            break;
          default: {
            const AcquireResult r = limiter.AcquireOrEnqueue(&waiter);
            if (r == AcquireResult::kRejectedQueueFull) {
              rejected.fetch_add(1);
              continue;
            }
            if (r == AcquireResult::kQueued &&
                !SpinUntil([&] { return waiter.granted() > grants_before; })) {
              failed.store(true);
              return;
            }
          }
        }
        enter();
        std::this_thread::yield();
        held.fetch_sub(1);
        limiter.Release();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_FALSE(failed.load());
  EXPECT_LE(max_held.load(), kLimit);
  EXPECT_GE(max_held.load(), 1);
  EXPECT_EQ(held.load(), 0);
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(limiter.QueueDepth(), 0);
}

// Hammers the Cancel/grant race: waiters enqueue and cancel at once while
// other threads release. Every waiter ends in exactly one of: acquired at
// once, cancelled (never granted), or granted (exactly once) — and every
// permit is released exactly once.
TEST(ConcurrencyLimiterTest, CancelVersusGrantRace) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  constexpr int64_t kLimit = 1;
  ConcurrencyLimiter limiter(kLimit, 1000);
  std::atomic<int64_t> held{0};
  std::atomic<int64_t> max_held{0};
  std::atomic<bool> failed{false};

  enum Outcome : int { kNone, kAcquired, kCancelled, kGrantedFirst, kRejected };
  struct Slot {
    std::unique_ptr<TestWaiter> waiter = std::make_unique<TestWaiter>();
    Outcome outcome = kNone;
  };
  std::vector<std::vector<Slot>> slots(kThreads);
  for (auto& s : slots) s.resize(kPerThread);

  const auto enter = [&] {
    const int64_t now = held.fetch_add(1) + 1;
    int64_t seen = max_held.load();
    while (now > seen && !max_held.compare_exchange_weak(seen, now)) {
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      for (int i = 0; i < kPerThread && !failed.load(); ++i) {
        Slot& slot = slots[t][i];
        TestWaiter* w = slot.waiter.get();
        switch (limiter.AcquireOrEnqueue(w)) {
          case AcquireResult::kAcquired:
            slot.outcome = kAcquired;
            break;
          case AcquireResult::kRejectedQueueFull:
            slot.outcome = kRejected;
            continue;
          case AcquireResult::kQueued: {
            // Cancel at once or after a few yields: races with Release().
            for (int spin = rng() % 4; spin > 0; --spin) {
              std::this_thread::yield();
            }
            if (limiter.Cancel(w)) {
              slot.outcome = kCancelled;
              continue;  // owns nothing
            }
            // Too late: a grant is done or in flight and we own a permit.
            slot.outcome = kGrantedFirst;
            if (!SpinUntil([&] { return w->granted() == 1; })) {
              failed.store(true);
              return;
            }
            break;
          }
        }
        enter();
        // Hold it for a moment so that others queue behind.
        for (int spin = rng() % 3; spin > 0; --spin) std::this_thread::yield();
        held.fetch_sub(1);
        limiter.Release();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_FALSE(failed.load());
  int64_t cancelled = 0;
  int64_t granted = 0;
  for (auto& per_thread : slots) {
    for (Slot& slot : per_thread) {
      const int expected_grants = slot.outcome == kGrantedFirst ? 1 : 0;
      ASSERT_EQ(slot.waiter->granted(), expected_grants) << slot.outcome;
      cancelled += slot.outcome == kCancelled;
      granted += slot.outcome == kGrantedFirst;
    }
  }
  RecordProperty("cancelled", static_cast<int>(cancelled));
  RecordProperty("granted_before_cancel", static_cast<int>(granted));
  // Both sides of the race must actually have happened.
  EXPECT_GT(cancelled, 0);
  EXPECT_GT(granted, 0);
  EXPECT_LE(max_held.load(), kLimit);
  EXPECT_EQ(held.load(), 0);
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(limiter.QueueDepth(), 0);
}

}  // namespace
}  // namespace sluice
