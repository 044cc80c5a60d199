// A concurrency limit with a bounded FIFO queue of waiters.
#ifndef SLUICE_SERVER_LIMITS_CONCURRENCY_LIMITER_H_
#define SLUICE_SERVER_LIMITS_CONCURRENCY_LIMITER_H_

#include <cstdint>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace sluice {

// A counting semaphore of `max_in_flight` permits with a FIFO queue of at
// most `max_queue` waiters. Nothing blocks: a caller that cannot get a
// permit at once either is rejected or leaves a Waiter, whose OnGranted()
// runs later on whichever thread frees a permit. The waiter bounds its own
// wait (its alarm fires, its call is cancelled) by calling Cancel().
//
// Fairness: no barging. While anyone is queued, TryAcquire() fails and
// AcquireOrEnqueue() queues, so permits go to waiters in arrival order.
// Invariant (under mu_): queue non-empty => in_flight_ >= max_in_flight_.
//
// Ownership: owned by a route's (or key's) limiter state. It must outlive
// every Permit and every queued Waiter; destroy it only with an empty queue
// and no permits out. Thread-safety: every method may be called from any
// thread (completion-queue workers, the admin service for SetLimits).
class ConcurrencyLimiter {
 public:
  class Permit;

  // Someone waiting for a permit. Implemented by the call object; the
  // limiter only links it into its queue (no allocation).
  //
  // Ownership: owned by the caller, which keeps it alive while it is
  // queued and, if Cancel() returned false, until OnGranted() has returned.
  // A Waiter waits in at most one limiter at a time and may be reused after
  // OnGranted() has run or Cancel() returned true.
  class Waiter {
   public:
    Waiter(const Waiter&) = delete;
    Waiter& operator=(const Waiter&) = delete;

    // The permit has been taken on this waiter's behalf; the waiter now
    // owns it and must release it exactly once (Permit::Adopt helps). Runs
    // on the thread that freed the permit (Release/SetLimits), never with
    // the limiter's lock held, so it may call back into the limiter. Keep it
    // short and non-blocking: post to the waiter's own completion queue.
    // Grants triggered from inside OnGranted on the same thread are run
    // after it returns (no recursion).
    virtual void OnGranted() = 0;

   protected:
    Waiter() = default;
    virtual ~Waiter() = default;

   private:
    friend class ConcurrencyLimiter;
    // Guarded by the mu_ of the limiter the waiter is queued in.
    Waiter* prev_ = nullptr;
    Waiter* next_ = nullptr;
    bool queued_ = false;
    // Links granted waiters awaiting their OnGranted() on this thread.
    Waiter* grant_next_ = nullptr;
  };

  enum class AcquireResult { kAcquired, kQueued, kRejectedQueueFull };

  // Negative arguments act as 0. max_in_flight 0 admits nobody (drain);
  // max_queue 0 means reject at once when no permit is free.
  ConcurrencyLimiter(int64_t max_in_flight, int64_t max_queue);
  ~ConcurrencyLimiter();

  ConcurrencyLimiter(const ConcurrencyLimiter&) = delete;
  ConcurrencyLimiter& operator=(const ConcurrencyLimiter&) = delete;

  // Takes a permit if one is free and nobody is queued.
  bool TryAcquire();
  // As TryAcquire, wrapped in an RAII handle (empty if none was free).
  Permit TryAcquirePermit();

  // kAcquired: the caller owns a permit now (OnGranted is NOT called).
  // kQueued: `waiter` is queued; OnGranted() or a successful Cancel() ends
  // that. kRejectedQueueFull: nothing changed.
  AcquireResult AcquireOrEnqueue(Waiter* waiter);

  // Takes `waiter` out of the queue. True: it was still queued, is removed,
  // and will never be granted; the limiter no longer references it. False:
  // it is not queued (a grant already happened or is in flight, or it was
  // never queued); OnGranted() has run or will run, and the caller owns a
  // permit that it must release exactly once.
  bool Cancel(Waiter* waiter);

  // Returns one permit: hands it to the oldest waiter if the limit allows,
  // otherwise frees it.
  void Release();

  // Run-time override. Raising max_in_flight grants queued waiters at once
  // (FIFO). Lowering it revokes nothing: calls in flight finish and permits
  // are not handed on until in-flight drops below the new limit. Lowering
  // max_queue keeps those already queued (their own timeouts bound them)
  // and rejects newcomers until the queue is shorter.
  void SetLimits(int64_t max_in_flight, int64_t max_queue);

  int64_t InFlight() const;
  int64_t QueueDepth() const;
  int64_t max_in_flight() const;
  int64_t max_queue() const;

 private:
  void PushBackLocked(Waiter* waiter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Waiter* PopFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnlinkLocked(Waiter* waiter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Calls OnGranted() on the chain first..last (linked by grant_next_),
  // in order, without any lock; see the .cc for the trampoline.
  static void DispatchGrants(Waiter* first, Waiter* last);

  mutable absl::Mutex mu_;
  int64_t max_in_flight_ ABSL_GUARDED_BY(mu_);
  int64_t max_queue_ ABSL_GUARDED_BY(mu_);
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queue_depth_ ABSL_GUARDED_BY(mu_) = 0;
  Waiter* head_ ABSL_GUARDED_BY(mu_) = nullptr;  // oldest
  Waiter* tail_ ABSL_GUARDED_BY(mu_) = nullptr;  // newest
};

// Owns one permit of a ConcurrencyLimiter and returns it exactly once: on
// Release() or in the destructor, whichever comes first. Movable, not
// copyable; a moved-from or empty Permit holds nothing.
//
// Ownership: held by the call object for the call's lifetime. Not
// thread-safe (one owner at a time); the limiter must outlive it.
class ConcurrencyLimiter::Permit {
 public:
  Permit() = default;
  // Takes over a permit already acquired from `limiter` (TryAcquire,
  // AcquireOrEnqueue's kAcquired, OnGranted, or Cancel() == false).
  static Permit Adopt(ConcurrencyLimiter* limiter) { return Permit(limiter); }

  Permit(Permit&& other) noexcept
      : limiter_(std::exchange(other.limiter_, nullptr)) {}
  Permit& operator=(Permit&& other) noexcept {
    if (this != &other) {
      Release();
      limiter_ = std::exchange(other.limiter_, nullptr);
    }
    return *this;
  }
  Permit(const Permit&) = delete;
  Permit& operator=(const Permit&) = delete;

  ~Permit() { Release(); }

  // Returns the permit now; later calls (and the destructor) do nothing.
  void Release() {
    if (limiter_ != nullptr) std::exchange(limiter_, nullptr)->Release();
  }

  bool held() const { return limiter_ != nullptr; }
  explicit operator bool() const { return held(); }

 private:
  explicit Permit(ConcurrencyLimiter* limiter) : limiter_(limiter) {}

  ConcurrencyLimiter* limiter_ = nullptr;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_CONCURRENCY_LIMITER_H_
