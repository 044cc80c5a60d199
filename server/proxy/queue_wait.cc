#include "server/proxy/queue_wait.h"

#include "server/proxy/call_time.h"
#include "server/proxy/tsan_edges.h"

namespace sluice {

ConcurrencyLimiter::AcquireResult QueueWait::Enqueue(
    ConcurrencyLimiter* limiter, const std::string* key, Owner* owner,
    grpc::CompletionQueue* cq, absl::Time until, QueueWait** wait,
    ConcurrencyLimiter::Permit* permit) {
  *wait = nullptr;
  auto* w = new QueueWait(limiter, owner, cq);
  const ConcurrencyLimiter::AcquireResult result =
      key != nullptr ? limiter->AcquireOrEnqueue(w, *key)
                     : limiter->AcquireOrEnqueue(w);
  if (result != ConcurrencyLimiter::AcquireResult::kQueued) {
    if (result == ConcurrencyLimiter::AcquireResult::kAcquired) {
      *permit = limiter->AdoptPermit(w);  // returns to the right key
    }
    delete w;  // not queued: the limiter does not know it any more
    return result;
  }
  // A grant from another thread only sets grant_alarm_; its event is run by
  // this (the worker's) thread, after this returns.
  owner->HoldForWait();
  w->timeout_out_ = true;
  w->timeout_alarm_.Set(cq, AlarmAt(until), &w->timeout_tag_);
  *wait = w;
  return result;
}

QueueWait::QueueWait(ConcurrencyLimiter* limiter, Owner* owner,
                     grpc::CompletionQueue* cq)
    : limiter_(limiter), owner_(owner), cq_(cq) {}

void QueueWait::OnGranted() {
  // On the releasing thread: touch nothing but the grant alarm.
  TsanHandOff(&grant_tag_);
  grant_alarm_.Set(cq_, AlarmNow(), &grant_tag_);
}

void QueueWait::OnGrantEvent(bool /*ok*/) {
  grant_possible_ = false;
  // The permit was taken for us: it is the owner's, or goes back.
  ConcurrencyLimiter::Permit permit = limiter_->AdoptPermit(this);
  if (state_ == State::kQueued) {
    state_ = State::kGranted;
    if (timeout_out_) timeout_alarm_.Cancel();
    owner_->OnQueueGranted(std::move(permit));
  }
  // Timed out or abandoned meanwhile: the permit goes back here.
  permit.Release();
  MaybeFinish();
}

void QueueWait::OnTimeoutEvent(bool ok) {
  timeout_out_ = false;
  if (ok && state_ == State::kQueued && limiter_->Cancel(this)) {
    grant_possible_ = false;
    state_ = State::kTimedOut;
    owner_->OnQueueTimedOut();
  }
  // Otherwise a grant is on its way (OnGrantEvent reports it), or the wait
  // already ended and its alarm was cancelled.
  MaybeFinish();
}

void QueueWait::Abandon() {
  if (state_ != State::kQueued) return;
  state_ = State::kAbandoned;
  if (limiter_->Cancel(this)) grant_possible_ = false;
  if (timeout_out_) timeout_alarm_.Cancel();  // its event still comes
  MaybeFinish();
}

void QueueWait::MaybeFinish() {
  if (grant_possible_ || timeout_out_) return;
  Owner* owner = owner_;
  delete this;
  owner->ReleaseWaitHold();  // may free the owner
}

}  // namespace sluice
