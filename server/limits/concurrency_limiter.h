// A concurrency limit with a bounded queue of waiters, fair across keys.
#ifndef SLUICE_SERVER_LIMITS_CONCURRENCY_LIMITER_H_
#define SLUICE_SERVER_LIMITS_CONCURRENCY_LIMITER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace sluice {

// A counting semaphore of `max_in_flight` permits shared by every caller,
// with a bounded queue of waiters. Nothing blocks: a caller that cannot get
// a permit at once either is rejected or leaves a Waiter, whose OnGranted()
// runs later on whichever thread frees a permit. The waiter bounds its own
// wait (its alarm fires, its call is cancelled) by calling Cancel().
//
// Keys (fair queuing). Each acquisition names a key (a tenant: a header's
// value, the peer...); calls without one share the unkeyed flow. Waiters
// queue per key, FIFO within a key, and free permits are handed to the
// keys round-robin, one waiter per key per turn (Nagle's fair queuing with
// unit cost, as in Kubernetes API Priority and Fairness without the
// shuffle sharding). So a key that offers far more than its share waits
// behind itself, not in front of the others. Optional per-key bounds:
// `max_per_key` permits held by one key at once (its waiters wait while it
// holds that many, even if permits are free) and `max_queue_per_key`
// waiters of one key; `max_queue` still bounds all waiters together.
//
// Memory: a key has state (a Flow) only while it holds a permit or has a
// waiter; it is dropped when both are zero. At most `max_keys` keys have
// state at once; past that, new keys share one overflow flow (with the
// per-key bounds of a single key) until some key's state is dropped.
//
// No barging: a newcomer gets a permit at once only if no waiter could
// take it, i.e. a permit is free, its key has no waiter and is below
// max_per_key. Invariant (under mu_): a permit is free => no flow is ready
// (has a waiter and is below max_per_key).
//
// Ownership: owned by a route's limiter state. It must outlive every
// Permit and every queued Waiter; destroy it only with an empty queue and
// no permits out. Thread-safety: every method may be called from any
// thread (completion-queue workers, the admin service, the adaptive limit).
class ConcurrencyLimiter {
 public:
  class Permit;

 private:
  struct Flow;

 public:
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
    // owns it and must release it exactly once (AdoptPermit helps). Runs
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
    Flow* flow_ = nullptr;  // the flow it is queued in
    bool queued_ = false;
    // Links granted waiters awaiting their OnGranted() on this thread.
    Waiter* grant_next_ = nullptr;
    // The flow whose permit the waiter holds and has not adopted yet: set
    // by AcquireOrEnqueue's kAcquired (same thread) or by a grant (before
    // OnGranted, which hands over to the waiter's thread); read and cleared
    // by AdoptPermit on the waiter's thread.
    Flow* granted_flow_ = nullptr;
  };

  // The limits. Negative values act as 0.
  struct Limits {
    // Permits shared by all keys. 0 admits nobody (drain).
    int64_t max_in_flight = 0;
    // Waiters of all keys together; 0: reject at once when no permit is
    // free.
    int64_t max_queue = 0;
    // Permits one key may hold at once; 0: no per-key maximum.
    int64_t max_per_key = 0;
    // Waiters of one key; 0: only max_queue bounds them.
    int64_t max_queue_per_key = 0;
    // Keys with state at once; past it new keys share the overflow flow.
    int64_t max_keys = 10000;

    bool operator==(const Limits&) const = default;
  };

  enum class AcquireResult { kAcquired, kQueued, kRejectedQueueFull };

  // Why acquisitions were rejected (kRejectedQueueFull) and other
  // cumulative counts, for metrics and the admin view.
  struct Stats {
    int64_t in_flight = 0;
    int64_t queue_depth = 0;
    int64_t keys = 0;  // keys with state now (overflow and unkeyed excluded)
    int64_t rejected_queue_full = 0;      // max_queue reached
    int64_t rejected_key_queue_full = 0;  // a key's max_queue_per_key
    int64_t overflow_acquisitions = 0;    // keys past max_keys (cumulative)
  };

  // One key's load, for the admin view.
  struct KeyLoad {
    std::string key;
    int64_t in_flight = 0;
    int64_t queued = 0;
  };

  ConcurrencyLimiter(int64_t max_in_flight, int64_t max_queue);
  explicit ConcurrencyLimiter(const Limits& limits);
  ~ConcurrencyLimiter();

  ConcurrencyLimiter(const ConcurrencyLimiter&) = delete;
  ConcurrencyLimiter& operator=(const ConcurrencyLimiter&) = delete;

  // Unkeyed: takes a permit of the unkeyed flow if one is free and nobody
  // could take it first. Return it with Release() or Permit::Adopt(this).
  bool TryAcquire();
  // As TryAcquire, for `key`, wrapped in an RAII handle (empty if none was
  // free). TryAcquirePermit() is the unkeyed flow's.
  Permit TryAcquirePermit();
  Permit TryAcquirePermit(absl::string_view key);

  // Unkeyed: the caller may take the permit of kAcquired, or of a grant,
  // with Permit::Adopt(this) or AdoptPermit(waiter).
  AcquireResult AcquireOrEnqueue(Waiter* waiter);
  // For `key`. kAcquired: the caller owns a permit now (OnGranted is NOT
  // called); take it with AdoptPermit(waiter). kQueued: `waiter` is queued;
  // OnGranted() (then AdoptPermit(waiter)) or a successful Cancel() ends
  // that. kRejectedQueueFull: the queue or the key's queue is full, nothing
  // changed.
  AcquireResult AcquireOrEnqueue(Waiter* waiter, absl::string_view key);

  // The permit `waiter` was given (kAcquired, or once OnGranted() has run),
  // as an RAII handle that returns it to its key. Call once per permit, on
  // the waiter's own thread (the one that saw kAcquired or OnGranted's
  // hand-off). Empty if the waiter holds none.
  Permit AdoptPermit(Waiter* waiter);

  // Takes `waiter` out of the queue. True: it was still queued, is removed,
  // and will never be granted; the limiter no longer references it. False:
  // it is not queued (a grant already happened or is in flight, or it was
  // never queued); OnGranted() has run or will run, and the caller owns a
  // permit that it must release exactly once.
  bool Cancel(Waiter* waiter);

  // Returns one permit of the unkeyed flow (TryAcquire, or unkeyed
  // AcquireOrEnqueue): hands it on to the next waiter in turn if the limit
  // allows, otherwise frees it.
  void Release();

  // Run-time change. Raising a maximum grants queued waiters at once (in
  // turn). Lowering one revokes nothing: calls in flight finish, and
  // permits held count against the new maximum, so permits are not handed
  // on until in-flight drops below it. Lowering a queue bound keeps those
  // already queued (their own timeouts bound them) and rejects newcomers
  // until the queue is shorter. max_keys applies to keys seen from now on.
  void SetLimits(const Limits& limits);
  // The same, for the two shared bounds; the per-key ones are unchanged.
  void SetLimits(int64_t max_in_flight, int64_t max_queue);
  // Only max_in_flight (the adaptive limit's path): no walk over keys.
  void SetMaxInFlight(int64_t max_in_flight);

  int64_t InFlight() const;
  int64_t QueueDepth() const;
  int64_t max_in_flight() const;
  int64_t max_queue() const;
  Limits limits() const;
  Stats GetStats() const;
  // The `k` keys with the most permits held plus waiters (most first;
  // ties by key). O(keys).
  std::vector<KeyLoad> TopKeys(size_t k) const;

 private:
  // One key's state: its FIFO of waiters and the permits it holds. Lives
  // in flows_ while it holds a permit or has a waiter (unkeyed_ and
  // overflow_ always live). Guarded by mu_.
  struct Flow {
    std::string key;
    bool keyed = false;   // false: the unkeyed flow (per-key bounds off)
    bool mapped = false;  // in flows_ (dropped when idle)
    int64_t in_flight = 0;
    int64_t depth = 0;
    Waiter* head = nullptr;  // oldest
    Waiter* tail = nullptr;  // newest
    // The ready ring: flows with a waiter and below max_per_key, in turn.
    Flow* ready_prev = nullptr;
    Flow* ready_next = nullptr;
    bool ready = false;
  };

  // Grants collected under mu_, dispatched after it is dropped.
  struct GrantChain {
    Waiter* first = nullptr;
    Waiter* last = nullptr;
  };

  AcquireResult AcquireOrEnqueueLocked(Waiter* waiter, Flow* flow)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The flow of `key`, made if needed (overflow_ past max_keys). Null only
  // if `create` is false and the key has no state.
  Flow* FlowForKeyLocked(absl::string_view key, bool create)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool CanAcquireNowLocked(const Flow& flow) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool KeyQueueFullLocked(const Flow& flow) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool EligibleLocked(const Flow& flow) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateReadyLocked(Flow* flow) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PushReadyLocked(Flow* flow) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveReadyLocked(Flow* flow) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PushBackLocked(Flow* flow, Waiter* waiter)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnlinkLocked(Waiter* waiter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops `flow`'s state if it is idle and mapped.
  void MaybeDropLocked(Flow* flow) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands free permits to ready flows, in turn, until none is free or no
  // flow is ready.
  void GrantLocked(GrantChain* chain) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyLimitsLocked(const Limits& limits)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseFlow(Flow* flow);
  // Calls OnGranted() on the chain (linked by grant_next_), in order,
  // without any lock; see the .cc for the trampoline.
  static void DispatchGrants(const GrantChain& chain);

  mutable absl::Mutex mu_;
  Limits limits_ ABSL_GUARDED_BY(mu_);
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queue_depth_ ABSL_GUARDED_BY(mu_) = 0;
  Flow unkeyed_ ABSL_GUARDED_BY(mu_);
  Flow overflow_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Flow>> flows_
      ABSL_GUARDED_BY(mu_);
  Flow* ready_head_ ABSL_GUARDED_BY(mu_) = nullptr;  // served next
  Flow* ready_tail_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t rejected_queue_full_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t rejected_key_queue_full_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t overflow_acquisitions_ ABSL_GUARDED_BY(mu_) = 0;
};

// Owns one permit of a ConcurrencyLimiter (and of the key it was taken
// for) and returns it exactly once: on Release() or in the destructor,
// whichever comes first. Movable, not copyable; a moved-from or empty
// Permit holds nothing.
//
// Ownership: held by the call object for the call's lifetime. Not
// thread-safe (one owner at a time); the limiter must outlive it.
class ConcurrencyLimiter::Permit {
 public:
  Permit() = default;
  // Takes over a permit of the unkeyed flow already acquired from
  // `limiter` (TryAcquire, unkeyed AcquireOrEnqueue's kAcquired or grant,
  // Cancel() == false). Keyed permits: ConcurrencyLimiter::AdoptPermit.
  static Permit Adopt(ConcurrencyLimiter* limiter) {
    return Permit(limiter, nullptr);
  }

  Permit(Permit&& other) noexcept
      : limiter_(std::exchange(other.limiter_, nullptr)),
        flow_(std::exchange(other.flow_, nullptr)) {}
  Permit& operator=(Permit&& other) noexcept {
    if (this != &other) {
      Release();
      limiter_ = std::exchange(other.limiter_, nullptr);
      flow_ = std::exchange(other.flow_, nullptr);
    }
    return *this;
  }
  Permit(const Permit&) = delete;
  Permit& operator=(const Permit&) = delete;

  ~Permit() { Release(); }

  // Returns the permit now; later calls (and the destructor) do nothing.
  void Release() {
    if (limiter_ != nullptr) {
      std::exchange(limiter_, nullptr)
          ->ReleaseFlow(std::exchange(flow_, nullptr));
    }
  }

  bool held() const { return limiter_ != nullptr; }
  explicit operator bool() const { return held(); }

 private:
  friend class ConcurrencyLimiter;
  // `flow` null: the unkeyed flow.
  Permit(ConcurrencyLimiter* limiter, Flow* flow)
      : limiter_(limiter), flow_(flow) {}

  ConcurrencyLimiter* limiter_ = nullptr;
  Flow* flow_ = nullptr;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_CONCURRENCY_LIMITER_H_
