#include "server/limits/concurrency_limiter.h"

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <tuple>

#include "absl/base/internal/raw_logging.h"
#include "absl/synchronization/mutex.h"

// How the Cancel/grant race is closed.
//
// A queued waiter leaves the queue exactly once, under mu_, in one of two
// ways: a grant (GrantLocked pops it AND, in the same critical section,
// counts the permit in in_flight_ and in its flow on its behalf), or Cancel
// (unlinks it, in_flight_ untouched). `queued_` is read and cleared only
// under mu_, so whichever comes first wins and the other sees
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
// Permits are never lost (a release frees the permit and hands it to the
// next waiter in the same critical section, so no other acquirer can slip
// in between) and never doubled (only the single winner of the race owns
// the permit).
//
// Fair queuing. Each flow (key) has its own FIFO. The flows that could take
// a permit now (a waiter, and below max_per_key) are linked in the ready
// ring in turn order; a grant serves the head flow's oldest waiter and
// moves that flow to the back if it is still ready. A flow that becomes
// ready (a first waiter, or a permit of a flow at max_per_key returned)
// joins at the back. Every operation is O(1) but SetLimits(Limits), which
// walks the flows when max_per_key changes.
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

ConcurrencyLimiter::Limits Sanitized(ConcurrencyLimiter::Limits limits) {
  limits.max_in_flight = std::max<int64_t>(0, limits.max_in_flight);
  limits.max_queue = std::max<int64_t>(0, limits.max_queue);
  limits.max_per_key = std::max<int64_t>(0, limits.max_per_key);
  limits.max_queue_per_key = std::max<int64_t>(0, limits.max_queue_per_key);
  limits.max_keys = std::max<int64_t>(0, limits.max_keys);
  return limits;
}

}  // namespace

ConcurrencyLimiter::ConcurrencyLimiter(int64_t max_in_flight, int64_t max_queue)
    : ConcurrencyLimiter(
          Limits{.max_in_flight = max_in_flight, .max_queue = max_queue}) {}

ConcurrencyLimiter::ConcurrencyLimiter(const Limits& limits)
    : limits_(Sanitized(limits)) {
  overflow_.keyed = true;
}

ConcurrencyLimiter::~ConcurrencyLimiter() {
  absl::MutexLock lock(&mu_);
  assert(queue_depth_ == 0 && "ConcurrencyLimiter destroyed with waiters");
  if (queue_depth_ != 0) {
    ABSL_RAW_LOG(ERROR, "ConcurrencyLimiter destroyed with %lld waiters",
                 static_cast<long long>(queue_depth_));
  }
}

bool ConcurrencyLimiter::EligibleLocked(const Flow& flow) const {
  return flow.depth > 0 && (!flow.keyed || limits_.max_per_key == 0 ||
                            flow.in_flight < limits_.max_per_key);
}

bool ConcurrencyLimiter::CanAcquireNowLocked(const Flow& flow) const {
  // By the invariant, a free permit means no flow is ready; the newcomer
  // still waits behind its own key's waiters and its key's maximum.
  return in_flight_ < limits_.max_in_flight && flow.depth == 0 &&
         (!flow.keyed || limits_.max_per_key == 0 ||
          flow.in_flight < limits_.max_per_key);
}

bool ConcurrencyLimiter::KeyQueueFullLocked(const Flow& flow) const {
  return flow.keyed && limits_.max_queue_per_key > 0 &&
         flow.depth >= limits_.max_queue_per_key;
}

ConcurrencyLimiter::Flow* ConcurrencyLimiter::FlowForKeyLocked(
    absl::string_view key, bool create) {
  auto it = flows_.find(key);
  if (it != flows_.end()) return it->second.get();
  if (!create) return nullptr;
  if (static_cast<int64_t>(flows_.size()) >= limits_.max_keys) {
    ++overflow_acquisitions_;
    return &overflow_;
  }
  auto flow = std::make_unique<Flow>();
  flow->key = std::string(key);
  flow->keyed = true;
  flow->mapped = true;
  Flow* raw = flow.get();
  flows_.emplace(raw->key, std::move(flow));
  return raw;
}

void ConcurrencyLimiter::MaybeDropLocked(Flow* flow) {
  if (flow->mapped && flow->in_flight == 0 && flow->depth == 0) {
    assert(!flow->ready);
    flows_.erase(flow->key);  // frees `flow`
  }
}

bool ConcurrencyLimiter::TryAcquire() {
  absl::MutexLock lock(&mu_);
  if (!CanAcquireNowLocked(unkeyed_)) return false;
  ++in_flight_;
  ++unkeyed_.in_flight;
  return true;
}

ConcurrencyLimiter::Permit ConcurrencyLimiter::TryAcquirePermit() {
  return TryAcquire() ? Permit::Adopt(this) : Permit();
}

ConcurrencyLimiter::Permit ConcurrencyLimiter::TryAcquirePermit(
    absl::string_view key) {
  absl::MutexLock lock(&mu_);
  if (in_flight_ >= limits_.max_in_flight) return Permit();
  Flow* flow = FlowForKeyLocked(key, /*create=*/false);
  if (flow != nullptr && !CanAcquireNowLocked(*flow)) return Permit();
  if (flow == nullptr) flow = FlowForKeyLocked(key, /*create=*/true);
  if (!CanAcquireNowLocked(*flow)) return Permit();  // the overflow flow's
  ++in_flight_;
  ++flow->in_flight;
  return Permit(this, flow);
}

ConcurrencyLimiter::AcquireResult ConcurrencyLimiter::AcquireOrEnqueue(
    Waiter* waiter) {
  absl::MutexLock lock(&mu_);
  return AcquireOrEnqueueLocked(waiter, &unkeyed_);
}

ConcurrencyLimiter::AcquireResult ConcurrencyLimiter::AcquireOrEnqueue(
    Waiter* waiter, absl::string_view key) {
  absl::MutexLock lock(&mu_);
  Flow* flow = FlowForKeyLocked(key, /*create=*/false);
  if (flow == nullptr) {
    // A key without state: judge it as an empty flow before making one, so
    // a rejection leaves nothing behind.
    if (in_flight_ >= limits_.max_in_flight &&
        queue_depth_ >= limits_.max_queue) {
      ++rejected_queue_full_;
      return AcquireResult::kRejectedQueueFull;
    }
    flow = FlowForKeyLocked(key, /*create=*/true);
  }
  const AcquireResult result = AcquireOrEnqueueLocked(waiter, flow);
  if (result == AcquireResult::kRejectedQueueFull) MaybeDropLocked(flow);
  return result;
}

ConcurrencyLimiter::AcquireResult ConcurrencyLimiter::AcquireOrEnqueueLocked(
    Waiter* waiter, Flow* flow) {
  if (CanAcquireNowLocked(*flow)) {
    ++in_flight_;
    ++flow->in_flight;
    waiter->granted_flow_ = flow;
    return AcquireResult::kAcquired;
  }
  if (queue_depth_ >= limits_.max_queue) {
    ++rejected_queue_full_;
    return AcquireResult::kRejectedQueueFull;
  }
  if (KeyQueueFullLocked(*flow)) {
    ++rejected_key_queue_full_;
    return AcquireResult::kRejectedQueueFull;
  }
  PushBackLocked(flow, waiter);
  UpdateReadyLocked(flow);
  // A free permit here means `flow` is at its max_per_key (not ready), so
  // the invariant still holds and there is nothing to grant.
  return AcquireResult::kQueued;
}

ConcurrencyLimiter::Permit ConcurrencyLimiter::AdoptPermit(Waiter* waiter) {
  Flow* flow = std::exchange(waiter->granted_flow_, nullptr);
  if (flow == nullptr) return Permit();
  return Permit(this, flow == &unkeyed_ ? nullptr : flow);
}

bool ConcurrencyLimiter::Cancel(Waiter* waiter) {
  absl::MutexLock lock(&mu_);
  if (!waiter->queued_) return false;
  Flow* flow = waiter->flow_;
  UnlinkLocked(waiter);
  UpdateReadyLocked(flow);
  MaybeDropLocked(flow);
  return true;
}

void ConcurrencyLimiter::Release() { ReleaseFlow(nullptr); }

void ConcurrencyLimiter::ReleaseFlow(Flow* flow) {
  GrantChain chain;
  {
    absl::MutexLock lock(&mu_);
    if (flow == nullptr) flow = &unkeyed_;
    if (in_flight_ <= 0 || flow->in_flight <= 0) {
      // A double release (or a keyed permit returned as unkeyed) is a bug
      // in the caller; don't let it corrupt the count (which would admit
      // more than the limit).
      assert(false && "ConcurrencyLimiter::Release without a permit");
      ABSL_RAW_LOG(ERROR, "ConcurrencyLimiter::Release without a permit");
      return;
    }
    --in_flight_;
    --flow->in_flight;
    UpdateReadyLocked(flow);  // it may have been held at max_per_key
    GrantLocked(&chain);
    MaybeDropLocked(flow);
  }
  if (chain.first != nullptr) DispatchGrants(chain);
}

void ConcurrencyLimiter::ApplyLimitsLocked(const Limits& limits) {
  const bool per_key_changed = limits.max_per_key != limits_.max_per_key;
  limits_ = limits;
  if (per_key_changed) {
    // Flows held at the old max_per_key may be ready now, and ready ones
    // may be held by the new one.
    for (auto& [key, flow] : flows_) UpdateReadyLocked(flow.get());
    UpdateReadyLocked(&overflow_);
  }
}

void ConcurrencyLimiter::SetLimits(const Limits& limits) {
  GrantChain chain;
  {
    absl::MutexLock lock(&mu_);
    ApplyLimitsLocked(Sanitized(limits));
    GrantLocked(&chain);
  }
  if (chain.first != nullptr) DispatchGrants(chain);
}

void ConcurrencyLimiter::SetLimits(int64_t max_in_flight, int64_t max_queue) {
  GrantChain chain;
  {
    absl::MutexLock lock(&mu_);
    Limits limits = limits_;
    limits.max_in_flight = max_in_flight;
    limits.max_queue = max_queue;
    ApplyLimitsLocked(Sanitized(limits));
    GrantLocked(&chain);
  }
  if (chain.first != nullptr) DispatchGrants(chain);
}

void ConcurrencyLimiter::SetMaxInFlight(int64_t max_in_flight) {
  GrantChain chain;
  {
    absl::MutexLock lock(&mu_);
    limits_.max_in_flight = std::max<int64_t>(0, max_in_flight);
    GrantLocked(&chain);
  }
  if (chain.first != nullptr) DispatchGrants(chain);
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
  return limits_.max_in_flight;
}

int64_t ConcurrencyLimiter::max_queue() const {
  absl::MutexLock lock(&mu_);
  return limits_.max_queue;
}

ConcurrencyLimiter::Limits ConcurrencyLimiter::limits() const {
  absl::MutexLock lock(&mu_);
  return limits_;
}

ConcurrencyLimiter::Stats ConcurrencyLimiter::GetStats() const {
  absl::MutexLock lock(&mu_);
  Stats stats;
  stats.in_flight = in_flight_;
  stats.queue_depth = queue_depth_;
  stats.keys = static_cast<int64_t>(flows_.size());
  stats.rejected_queue_full = rejected_queue_full_;
  stats.rejected_key_queue_full = rejected_key_queue_full_;
  stats.overflow_acquisitions = overflow_acquisitions_;
  return stats;
}

std::vector<ConcurrencyLimiter::KeyLoad> ConcurrencyLimiter::TopKeys(
    size_t k) const {
  std::vector<KeyLoad> all;
  {
    absl::MutexLock lock(&mu_);
    all.reserve(flows_.size());
    for (const auto& [key, flow] : flows_) {
      all.push_back(KeyLoad{key, flow->in_flight, flow->depth});
    }
  }
  auto heavier = [](const KeyLoad& a, const KeyLoad& b) {
    return std::make_tuple(-(a.in_flight + a.queued), a.key) <
           std::make_tuple(-(b.in_flight + b.queued), b.key);
  };
  if (all.size() > k) {
    std::partial_sort(all.begin(), all.begin() + k, all.end(), heavier);
    all.resize(k);
  } else {
    std::sort(all.begin(), all.end(), heavier);
  }
  return all;
}

void ConcurrencyLimiter::UpdateReadyLocked(Flow* flow) {
  const bool eligible = EligibleLocked(*flow);
  if (eligible && !flow->ready) {
    PushReadyLocked(flow);
  } else if (!eligible && flow->ready) {
    RemoveReadyLocked(flow);
  }
}

void ConcurrencyLimiter::PushReadyLocked(Flow* flow) {
  flow->ready = true;
  flow->ready_prev = ready_tail_;
  flow->ready_next = nullptr;
  if (ready_tail_ == nullptr) {
    ready_head_ = flow;
  } else {
    ready_tail_->ready_next = flow;
  }
  ready_tail_ = flow;
}

void ConcurrencyLimiter::RemoveReadyLocked(Flow* flow) {
  if (flow->ready_prev == nullptr) {
    ready_head_ = flow->ready_next;
  } else {
    flow->ready_prev->ready_next = flow->ready_next;
  }
  if (flow->ready_next == nullptr) {
    ready_tail_ = flow->ready_prev;
  } else {
    flow->ready_next->ready_prev = flow->ready_prev;
  }
  flow->ready_prev = nullptr;
  flow->ready_next = nullptr;
  flow->ready = false;
}

void ConcurrencyLimiter::GrantLocked(GrantChain* chain) {
  while (ready_head_ != nullptr && in_flight_ < limits_.max_in_flight) {
    Flow* flow = ready_head_;
    Waiter* waiter = flow->head;
    UnlinkLocked(waiter);
    ++in_flight_;
    ++flow->in_flight;
    waiter->granted_flow_ = flow;
    waiter->grant_next_ = nullptr;
    if (chain->last == nullptr) {
      chain->first = waiter;
    } else {
      chain->last->grant_next_ = waiter;
    }
    chain->last = waiter;
    // Its turn is over: to the back of the ring if still ready.
    RemoveReadyLocked(flow);
    UpdateReadyLocked(flow);
  }
}

void ConcurrencyLimiter::PushBackLocked(Flow* flow, Waiter* waiter) {
  assert(!waiter->queued_ && "Waiter enqueued twice");
  waiter->prev_ = flow->tail;
  waiter->next_ = nullptr;
  waiter->grant_next_ = nullptr;
  waiter->flow_ = flow;
  waiter->queued_ = true;
  if (flow->tail == nullptr) {
    flow->head = waiter;
  } else {
    flow->tail->next_ = waiter;
  }
  flow->tail = waiter;
  ++flow->depth;
  ++queue_depth_;
}

void ConcurrencyLimiter::UnlinkLocked(Waiter* waiter) {
  Flow* flow = waiter->flow_;
  if (waiter->prev_ == nullptr) {
    flow->head = waiter->next_;
  } else {
    waiter->prev_->next_ = waiter->next_;
  }
  if (waiter->next_ == nullptr) {
    flow->tail = waiter->prev_;
  } else {
    waiter->next_->prev_ = waiter->prev_;
  }
  waiter->prev_ = nullptr;
  waiter->next_ = nullptr;
  waiter->flow_ = nullptr;
  waiter->queued_ = false;
  --flow->depth;
  --queue_depth_;
}

void ConcurrencyLimiter::DispatchGrants(const GrantChain& chain) {
  // The chain is private to this thread now: its waiters left the queue
  // under mu_, and nobody else touches grant_next_ until OnGranted() runs.
  if (tls_pending_tail == nullptr) {
    tls_pending_head = chain.first;
  } else {
    tls_pending_tail->grant_next_ = chain.first;
  }
  tls_pending_tail = chain.last;
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
