// One call's wait in the queue of one concurrency limit.
#ifndef SLUICE_SERVER_PROXY_QUEUE_WAIT_H_
#define SLUICE_SERVER_PROXY_QUEUE_WAIT_H_

#include <string>

#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/completion_queue.h"
#include "server/limits/concurrency_limiter.h"
#include "server/proxy/cq_tag.h"

namespace sluice {

// A wait for a permit of one ConcurrencyLimiter, bounded in time. It owns
// both alarms of that wait: the grant's hand-off from the thread that frees
// the permit, and the timeout. So a grant, a timeout and the owner giving up
// race here and nowhere else, and a later wait of the same call (the next
// limit of its route) has alarms of its own: an alarm is never set again
// before its event is delivered.
//
// Outcomes, each reported to the owner at most once, on the worker thread:
// OnQueueGranted (with the permit) or OnQueueTimedOut. Abandon() (the call
// ended) reports nothing: a grant already on its way is returned to the
// limiter when it arrives.
//
// Ownership: Enqueue creates the wait when the limiter queues the caller;
// the wait then owns itself and deletes itself once neither a grant nor an
// alarm event can reach it any more. While it lives it holds its owner
// (Owner::HoldForWait/ReleaseWaitHold), so the owner outlives it.
// Threading: the owner's worker thread (the completion queue `cq`'s only
// reader), except OnGranted, which runs on the releasing thread and only
// sets the grant alarm.
class QueueWait final : public ConcurrencyLimiter::Waiter {
 public:
  class Owner {
   public:
    virtual void OnQueueGranted(ConcurrencyLimiter::Permit permit) = 0;
    virtual void OnQueueTimedOut() = 0;
    // Called once when the wait starts and once when it is gone.
    virtual void HoldForWait() = 0;
    virtual void ReleaseWaitHold() = 0;

   protected:
    ~Owner() = default;
  };

  // Takes a permit of `limiter` for `owner` (in the queue of `key`, or the
  // unkeyed flow when null) or queues it until monotonic time `until`.
  // kQueued: *wait is the new wait (owned by itself); the owner hears back
  // through Owner. Otherwise *wait is null: kAcquired puts the permit in
  // *permit, kRejectedQueueFull means nothing changed.
  static ConcurrencyLimiter::AcquireResult Enqueue(
      ConcurrencyLimiter* limiter, const std::string* key, Owner* owner,
      grpc::CompletionQueue* cq, absl::Time until, QueueWait** wait,
      ConcurrencyLimiter::Permit* permit);

  // Worker thread: the owner no longer wants the permit. Nothing more is
  // reported to it; the wait may delete itself before this returns.
  void Abandon();

  // ConcurrencyLimiter::Waiter, on the releasing thread.
  void OnGranted() override;

 private:
  enum class State { kQueued, kGranted, kTimedOut, kAbandoned };

  QueueWait(ConcurrencyLimiter* limiter, Owner* owner,
            grpc::CompletionQueue* cq);
  ~QueueWait() override = default;

  void OnGrantEvent(bool ok);
  void OnTimeoutEvent(bool ok);
  // Deletes the wait once no grant and no alarm event can reach it.
  void MaybeFinish();

  ConcurrencyLimiter* const limiter_;
  Owner* const owner_;
  grpc::CompletionQueue* const cq_;
  State state_ = State::kQueued;
  // A grant may still arrive: true until Cancel() took us out of the queue
  // or the grant's event was delivered.
  bool grant_possible_ = true;
  bool timeout_out_ = false;  // the timeout alarm's event is not delivered
  grpc::Alarm grant_alarm_;
  grpc::Alarm timeout_alarm_;
  MemberTag<QueueWait> grant_tag_{this, &QueueWait::OnGrantEvent};
  MemberTag<QueueWait> timeout_tag_{this, &QueueWait::OnTimeoutEvent};
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_QUEUE_WAIT_H_
