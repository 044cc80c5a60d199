#include "server/limits/concurrency_limiter.h"

#include <algorithm>
#include <cassert>
#include <cstdint>

#include "absl/base/internal/raw_logging.h"
#include "absl/synchronization/mutex.h"

// How the Cancel/grant race is closed.
//
// A queued waiter leaves the queue exactly once, under mu_, in one of two
// ways: a grant (Release or SetLimits pops it AND, in the same critical
// section, keeps the freed permit counted in in_flight_ on its behalf), or
// Cancel (unlinks it, in_flight_ untouched). `queued_` is read and cleared
// only under mu_, so whichever comes first wins and the other sees
// queued_ == false:
//   - Cancel first: the waiter is gone before any grant can pop it, so no
//     OnGranted() will ever run and no permit was taken for it. Cancel
//     returns true and the caller may destroy the waiter at once.
//   - Grant first: the permit already belongs to the waiter. OnGranted()
//     runs after mu_ is dropped, so a Cancel that lands in between returns
//     false: "too late, you own a permit". The caller keeps the waiter alive
//     until OnGranted() has run and releases the permit once (typically the
//     call object sees both events on its own completion queue and releases
//     on whichever path ends the call).
// Permits are never lost (a grant moves the count rather than decrementing
// and re-incrementing, so no other acquirer can slip in between) and never
// doubled (only the single winner of the race owns the permit).
//
// OnGranted() runs without mu_, so it may call back into the limiter. A
// Release() made from inside OnGranted() would grant the next waiter and
// recurse; instead each thread keeps a list of grants to deliver and only
// the outermost DispatchGrants() call on the stack delivers them, in order.
// Stack depth stays constant however long the queue.

namespace sluice {
namespace {

thread_local ConcurrencyLimiter::Waiter* tls_pending_head = nullptr;
thread_local ConcurrencyLimiter::Waiter* tls_pending_tail = nullptr;
thread_local bool tls_dispatching = false;

}  // namespace

ConcurrencyLimiter::ConcurrencyLimiter(int64_t max_in_flight, int64_t max_queue)
    : max_in_flight_(std::max<int64_t>(0, max_in_flight)),
      max_queue_(std::max<int64_t>(0, max_queue)) {}

ConcurrencyLimiter::~ConcurrencyLimiter() {
  absl::MutexLock lock(&mu_);
  assert(head_ == nullptr && "ConcurrencyLimiter destroyed with waiters");
  if (head_ != nullptr) {
    ABSL_RAW_LOG(ERROR, "ConcurrencyLimiter destroyed with %lld waiters",
                 static_cast<long long>(queue_depth_));
  }
}

bool ConcurrencyLimiter::TryAcquire() {
  absl::MutexLock lock(&mu_);
  if (head_ != nullptr || in_flight_ >= max_in_flight_) return false;
  ++in_flight_;
  return true;
}

ConcurrencyLimiter::Permit ConcurrencyLimiter::TryAcquirePermit() {
  return TryAcquire() ? Permit::Adopt(this) : Permit();
}

ConcurrencyLimiter::AcquireResult ConcurrencyLimiter::AcquireOrEnqueue(
    Waiter* waiter) {
  absl::MutexLock lock(&mu_);
  if (head_ == nullptr && in_flight_ < max_in_flight_) {
    ++in_flight_;
    return AcquireResult::kAcquired;
  }
  if (queue_depth_ >= max_queue_) return AcquireResult::kRejectedQueueFull;
  PushBackLocked(waiter);
  return AcquireResult::kQueued;
}

bool ConcurrencyLimiter::Cancel(Waiter* waiter) {
  absl::MutexLock lock(&mu_);
  if (!waiter->queued_) return false;
  UnlinkLocked(waiter);
  return true;
}

void ConcurrencyLimiter::Release() {
  Waiter* granted = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (in_flight_ <= 0) {
      // A double release is a bug in the caller; don't let it corrupt the
      // count (which would admit more than the limit).
      assert(false && "ConcurrencyLimiter::Release without a permit");
      ABSL_RAW_LOG(ERROR, "ConcurrencyLimiter::Release without a permit");
      return;
    }
    if (head_ != nullptr && in_flight_ <= max_in_flight_) {
      // Hand the permit over: in_flight_ stays the same.
      granted = PopFrontLocked();
    } else {
      --in_flight_;
    }
  }
  if (granted != nullptr) DispatchGrants(granted, granted);
}

void ConcurrencyLimiter::SetLimits(int64_t max_in_flight, int64_t max_queue) {
  Waiter* first = nullptr;
  Waiter* last = nullptr;
  {
    absl::MutexLock lock(&mu_);
    max_in_flight_ = std::max<int64_t>(0, max_in_flight);
    max_queue_ = std::max<int64_t>(0, max_queue);
    while (head_ != nullptr && in_flight_ < max_in_flight_) {
      Waiter* waiter = PopFrontLocked();
      ++in_flight_;
      if (last == nullptr) {
        first = waiter;
      } else {
        last->grant_next_ = waiter;
      }
      last = waiter;
    }
  }
  if (first != nullptr) DispatchGrants(first, last);
}

int64_t ConcurrencyLimiter::InFlight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

int64_t ConcurrencyLimiter::QueueDepth() const {
  absl::MutexLock lock(&mu_);
  return queue_depth_;
}

int64_t ConcurrencyLimiter::max_in_flight() const {
  absl::MutexLock lock(&mu_);
  return max_in_flight_;
}

int64_t ConcurrencyLimiter::max_queue() const {
  absl::MutexLock lock(&mu_);
  return max_queue_;
}

void ConcurrencyLimiter::PushBackLocked(Waiter* waiter) {
  assert(!waiter->queued_ && "Waiter enqueued twice");
  waiter->prev_ = tail_;
  waiter->next_ = nullptr;
  waiter->grant_next_ = nullptr;
  waiter->queued_ = true;
  if (tail_ == nullptr) {
    head_ = waiter;
  } else {
    tail_->next_ = waiter;
  }
  tail_ = waiter;
  ++queue_depth_;
}

ConcurrencyLimiter::Waiter* ConcurrencyLimiter::PopFrontLocked() {
  Waiter* waiter = head_;
  UnlinkLocked(waiter);
  return waiter;
}

void ConcurrencyLimiter::UnlinkLocked(Waiter* waiter) {
  if (waiter->prev_ == nullptr) {
    head_ = waiter->next_;
  } else {
    waiter->prev_->next_ = waiter->next_;
  }
  if (waiter->next_ == nullptr) {
    tail_ = waiter->prev_;
  } else {
    waiter->next_->prev_ = waiter->prev_;
  }
  waiter->prev_ = nullptr;
  waiter->next_ = nullptr;
  waiter->queued_ = false;
  --queue_depth_;
}

void ConcurrencyLimiter::DispatchGrants(Waiter* first, Waiter* last) {
  // The chain is private to this thread now: its waiters left the queue
  // under mu_, and nobody else touches grant_next_ until OnGranted() runs.
  if (tls_pending_tail == nullptr) {
    tls_pending_head = first;
  } else {
    tls_pending_tail->grant_next_ = first;
  }
  tls_pending_tail = last;
  if (tls_dispatching) return;  // an outer frame on this thread delivers it
  tls_dispatching = true;
  while (tls_pending_head != nullptr) {
    Waiter* waiter = tls_pending_head;
    tls_pending_head = waiter->grant_next_;
    if (tls_pending_head == nullptr) tls_pending_tail = nullptr;
    waiter->grant_next_ = nullptr;
    // May release, re-enqueue, or destroy `waiter`; it is not touched after.
    waiter->OnGranted();
  }
  tls_dispatching = false;
}

}  // namespace sluice
