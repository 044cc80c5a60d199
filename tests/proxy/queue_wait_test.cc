// QueueWait: a grant, a timeout and an abandon racing for one queue wait,
// with a real ConcurrencyLimiter and a real completion queue that the test
// drains itself (as a worker would), so the order of events is forced.
#include "server/proxy/queue_wait.h"

#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/completion_queue.h"
#include "gtest/gtest.h"
#include "server/proxy/call_time.h"
#include "server/proxy/cq_tag.h"

namespace sluice {
namespace {

using Result = ConcurrencyLimiter::AcquireResult;

// Counts what a wait reports and whether it still holds its owner.
class FakeOwner final : public QueueWait::Owner {
 public:
  void OnQueueGranted(ConcurrencyLimiter::Permit permit) override {
    ++granted;
    permits.push_back(std::move(permit));
  }
  void OnQueueTimedOut() override { ++timed_out; }
  void HoldForWait() override { ++holds; }
  void ReleaseWaitHold() override { --holds; }

  int granted = 0;
  int timed_out = 0;
  int holds = 0;
  std::vector<ConcurrencyLimiter::Permit> permits;
};

class QueueWaitTest : public ::testing::Test {
 protected:
  ~QueueWaitTest() override {
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) static_cast<CqTag*>(tag)->Proceed(ok);
  }

  // Runs the next event of the queue (waits for it: alarms that are due or
  // cancelled are delivered at once).
  void RunOne() {
    void* tag;
    bool ok;
    ASSERT_TRUE(cq_.Next(&tag, &ok));
    static_cast<CqTag*>(tag)->Proceed(ok);
  }

  // True if an event is ready now; runs it.
  bool RunReady() {
    void* tag;
    bool ok;
    const auto r = cq_.AsyncNext(&tag, &ok, gpr_time_0(GPR_CLOCK_MONOTONIC));
    if (r != grpc::CompletionQueue::GOT_EVENT) return false;
    static_cast<CqTag*>(tag)->Proceed(ok);
    return true;
  }

  QueueWait* Enqueue(ConcurrencyLimiter& limiter, absl::Time until,
                     const std::string* key = nullptr) {
    QueueWait* wait = nullptr;
    ConcurrencyLimiter::Permit permit;
    EXPECT_EQ(
        QueueWait::Enqueue(&limiter, key, &owner_, &cq_, until, &wait, &permit),
        Result::kQueued);
    EXPECT_NE(wait, nullptr);
    return wait;
  }

  static absl::Time Never() { return MonoNow() + absl::Hours(1); }

  grpc::CompletionQueue cq_;
  FakeOwner owner_;
};

TEST_F(QueueWaitTest, AcquiresAtOnceWithoutAWait) {
  ConcurrencyLimiter limiter(1, 1);
  QueueWait* wait = nullptr;
  ConcurrencyLimiter::Permit permit;
  EXPECT_EQ(QueueWait::Enqueue(&limiter, nullptr, &owner_, &cq_, Never(), &wait,
                               &permit),
            Result::kAcquired);
  EXPECT_EQ(wait, nullptr);
  EXPECT_EQ(owner_.holds, 0);
  EXPECT_TRUE(permit.held());
  EXPECT_EQ(limiter.InFlight(), 1);
  permit.Release();
  EXPECT_EQ(limiter.InFlight(), 0);
}

TEST_F(QueueWaitTest, FullQueueRejectsWithoutAWait) {
  ConcurrencyLimiter limiter(1, 0);
  ASSERT_TRUE(limiter.TryAcquire());
  QueueWait* wait = nullptr;
  ConcurrencyLimiter::Permit permit;
  EXPECT_EQ(QueueWait::Enqueue(&limiter, nullptr, &owner_, &cq_, Never(), &wait,
                               &permit),
            Result::kRejectedQueueFull);
  EXPECT_EQ(wait, nullptr);
  EXPECT_FALSE(permit.held());
  EXPECT_EQ(owner_.holds, 0);
  limiter.Release();
}

// Fair queuing (issue 20): a keyed wait's permit goes back to its key, so
// the key's count is right after a grant and after an abandoned grant.
TEST_F(QueueWaitTest, KeyedWaitsReturnPermitsToTheirKey) {
  ConcurrencyLimiter::Limits limits;
  limits.max_in_flight = 1;
  limits.max_queue = 4;
  ConcurrencyLimiter limiter(limits);
  const std::string a = "tenant-a", b = "tenant-b";
  ConcurrencyLimiter::Permit held = limiter.TryAcquirePermit(a);
  ASSERT_TRUE(held.held());
  Enqueue(limiter, Never(), &a);
  QueueWait* wait_b = Enqueue(limiter, Never(), &b);
  held.Release();  // round robin: a's waiter is granted
  RunOne();
  ASSERT_EQ(owner_.granted, 1);
  wait_b->Abandon();
  while (owner_.holds > 0) RunOne();
  EXPECT_EQ(limiter.GetStats().keys, 1);  // only a holds state
  owner_.permits.clear();
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(limiter.GetStats().keys, 0);  // a's state dropped
}

TEST_F(QueueWaitTest, GrantIsReportedOnceAndTheWaitGoes) {
  ConcurrencyLimiter limiter(1, 1);
  ASSERT_TRUE(limiter.TryAcquire());
  Enqueue(limiter, Never());
  EXPECT_EQ(owner_.holds, 1);
  limiter.Release();  // hands the permit to the wait: its grant alarm fires
  RunOne();           // the grant
  EXPECT_EQ(owner_.granted, 1);
  EXPECT_EQ(owner_.holds, 1);  // the cancelled timeout is still out
  RunOne();                    // the timeout's cancelled event
  EXPECT_EQ(owner_.holds, 0);
  EXPECT_EQ(owner_.timed_out, 0);
  EXPECT_EQ(limiter.InFlight(), 1);
  owner_.permits.clear();
  EXPECT_EQ(limiter.InFlight(), 0);
}

TEST_F(QueueWaitTest, TimeoutLeavesTheQueue) {
  ConcurrencyLimiter limiter(1, 1);
  ASSERT_TRUE(limiter.TryAcquire());
  Enqueue(limiter, MonoNow());  // due at once
  RunOne();
  EXPECT_EQ(owner_.timed_out, 1);
  EXPECT_EQ(owner_.granted, 0);
  EXPECT_EQ(owner_.holds, 0);
  EXPECT_EQ(limiter.QueueDepth(), 0);
  limiter.Release();  // nobody waits: the permit is free
  EXPECT_EQ(limiter.InFlight(), 0);
}

TEST_F(QueueWaitTest, AGrantInFlightWinsOverTheTimeout) {
  ConcurrencyLimiter limiter(1, 1);
  ASSERT_TRUE(limiter.TryAcquire());
  Enqueue(limiter, MonoNow());  // the timeout is due at once...
  limiter.Release();            // ...but the grant was already handed over
  RunOne();
  RunOne();
  EXPECT_EQ(owner_.granted, 1);
  EXPECT_EQ(owner_.timed_out, 0);
  EXPECT_EQ(owner_.holds, 0);
  EXPECT_EQ(limiter.InFlight(), 1);
  owner_.permits.clear();
  EXPECT_EQ(limiter.InFlight(), 0);
}

TEST_F(QueueWaitTest, AbandonWhileQueuedReportsNothing) {
  ConcurrencyLimiter limiter(1, 1);
  ASSERT_TRUE(limiter.TryAcquire());
  QueueWait* wait = Enqueue(limiter, Never());
  wait->Abandon();
  EXPECT_EQ(limiter.QueueDepth(), 0);
  EXPECT_EQ(owner_.holds, 1);  // until the cancelled timeout is delivered
  RunOne();
  EXPECT_EQ(owner_.holds, 0);
  limiter.Release();
  EXPECT_EQ(limiter.InFlight(), 0);
  EXPECT_EQ(owner_.granted + owner_.timed_out, 0);
}

TEST_F(QueueWaitTest, AbandonWithAGrantInFlightReturnsThePermit) {
  ConcurrencyLimiter limiter(1, 1);
  ASSERT_TRUE(limiter.TryAcquire());
  QueueWait* wait = Enqueue(limiter, Never());
  limiter.Release();  // granted: the permit is the wait's now
  wait->Abandon();    // before the grant's event arrives
  EXPECT_EQ(limiter.InFlight(), 1);
  while (owner_.holds > 0) RunOne();
  EXPECT_EQ(owner_.granted + owner_.timed_out, 0);
  EXPECT_EQ(limiter.InFlight(), 0);  // given back, not leaked
  EXPECT_FALSE(RunReady());
}

// Issue 15, bug 2: a call granted by one limit queues on the next at once.
// The second wait has alarms of its own, so the first wait's late events
// neither end it nor are lost; a cancel then ends the second wait at once.
TEST_F(QueueWaitTest, ConsecutiveWaitsOfOneCallAreIndependent) {
  ConcurrencyLimiter wide(1, 1);
  ConcurrencyLimiter narrow(1, 1);
  ASSERT_TRUE(wide.TryAcquire());
  ASSERT_TRUE(narrow.TryAcquire());
  Enqueue(wide, Never());
  wide.Release();
  RunOne();  // granted wide; the first wait's cancelled timeout is still out
  ASSERT_EQ(owner_.granted, 1);
  QueueWait* second = Enqueue(narrow, Never());
  EXPECT_EQ(owner_.holds, 2);
  RunOne();  // the first wait's stale timeout event: only the first goes
  EXPECT_EQ(owner_.holds, 1);
  EXPECT_EQ(owner_.timed_out, 0);
  EXPECT_EQ(narrow.QueueDepth(), 1);
  second->Abandon();  // the client cancelled
  EXPECT_EQ(narrow.QueueDepth(), 0);
  RunOne();
  EXPECT_EQ(owner_.holds, 0);
  EXPECT_FALSE(RunReady());
  narrow.Release();
  owner_.permits.clear();
  EXPECT_EQ(wide.InFlight(), 0);
  EXPECT_EQ(narrow.InFlight(), 0);
}

}  // namespace
}  // namespace sluice
