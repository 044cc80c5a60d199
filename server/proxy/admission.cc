#include "server/proxy/admission.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/limits/clock.h"
#include "server/proxy/call_time.h"
#include "server/proxy/rejection.h"
#include "server/proxy/tsan_edges.h"

namespace sluice {

CallAdmission::~CallAdmission() {
  // The call is freed only with no event out: no wait can be left.
  permits_.clear();
}

void CallAdmission::Start(const ProxySnapshot* snap, int route,
                          absl::Time client_deadline) {
  snap_ = snap;
  route_ = &snap->config->routes()[route];
  stats_ = &snap->route_stats[route];
  limits_ = &snap->limits[route];
  client_deadline_ = client_deadline;
  stage_ = Stage::kRates;
  Continue();
}

void CallAdmission::Stop() {
  if (stage_ == Stage::kQueued) {
    QueueWait* wait = std::exchange(wait_, nullptr);
    stage_ = Stage::kStopped;
    NoteQueueWait();
    wait->Abandon();  // may release its hold on the call
  }
  stage_ = Stage::kStopped;
  permits_.clear();         // each goes back once: here or in the destructor
  adaptive_calls_.clear();  // an ended call is no latency sample
}

void CallAdmission::AddRateHeaders(grpc::ServerContext& ctx,
                                   bool trailers) const {
  if (header_limit_ == nullptr) return;
  const std::string limit = std::to_string(header_limit_->rate_burst());
  const std::string remaining = std::to_string(rate_decision_.remaining);
  const std::string reset = std::to_string(
      (rate_decision_.reset_after_nanos + 999999999) / 1000000000);
  if (trailers) {
    ctx.AddTrailingMetadata("x-ratelimit-limit", limit);
    ctx.AddTrailingMetadata("x-ratelimit-remaining", remaining);
    ctx.AddTrailingMetadata("x-ratelimit-reset", reset);
  } else {
    ctx.AddInitialMetadata("x-ratelimit-limit", limit);
    ctx.AddInitialMetadata("x-ratelimit-remaining", remaining);
    ctx.AddInitialMetadata("x-ratelimit-reset", reset);
  }
}

void CallAdmission::Refuse(const grpc::Status& status, Reason reason, int limit,
                           bool rate_headers) {
  stage_ = Stage::kRefused;
  permits_.clear();
  host_->Refused(status, reason, limit, rate_headers);
}

bool CallAdmission::ApplyRateDecision(size_t i, const TokenBucket::Decision& d,
                                      bool redis_unavailable) {
  LimitState* limit = (*limits_)[i].get();
  const LimitSettings& ls = limit->settings();
  if (route_->rate_limit_headers && header_limit_ == nullptr) {
    header_limit_ = limit;
    rate_decision_ = d;
  }
  if (d.admitted) {
    limit->admitted.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (ls.dry_run) {
    limit->dry_run_rejected.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  limit->rejected.fetch_add(1, std::memory_order_relaxed);
  const absl::Duration retry = d.retry_after_nanos == TokenBucket::kNever
                                   ? absl::Duration(-absl::Nanoseconds(1))
                                   : absl::Nanoseconds(d.retry_after_nanos);
  Refuse(
      MakeRejection(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat(
              "sluice: rate limit \"", ls.name, "\" of route \"", route_->name,
              redis_unavailable ? "\": redis unavailable (fallback fail_closed)"
                                : "\" exceeded"),
          retry),
      Reason::kRateLimited, static_cast<int>(i),
      /*rate_headers=*/header_limit_ == limit);
  return false;
}

void CallAdmission::Continue() {
  const auto& limits = *limits_;
  if (stage_ == Stage::kRates) {
    // Rates first: local ones never wait; a global one may wait for Redis
    // (OnGlobalReply resumes here at rate_index_).
    const int64_t now = RealClock::Get().NowNanos();
    for (; rate_index_ < limits.size(); ++rate_index_) {
      LimitState* limit = limits[rate_index_].get();
      if (!limit->has_rate()) continue;
      const std::string key =
          limit->keyed() ? host_->LimitKey(limit->settings().key,
                                           limit->settings().default_key)
                         : std::string();
      if (GlobalRateLimiter* global = limit->global()) {
        stage_ = Stage::kGlobalReply;
        host_->Hold();  // until the reply's event is delivered
        if (!global->Take(key, now, &global_result_,
                          [this](const GlobalRateLimiter::Result& r) {
                            // Redis thread: touch only the result and alarm.
                            global_result_ = r;
                            TsanHandOff(&global_tag_);
                            global_alarm_.Set(cq_, AlarmNow(), &global_tag_);
                          })) {
          return;  // OnGlobalReply goes on
        }
        stage_ = Stage::kRates;
        host_->Unhold();  // answered at once (lease, fallback)
        if (!ApplyRateDecision(rate_index_, global_result_.decision,
                               global_result_.redis_unavailable)) {
          return;
        }
        continue;
      }
      if (!ApplyRateDecision(rate_index_,
                             limit->TakeRate(key, RealClock::Get()), false)) {
        return;
      }
    }
    stage_ = Stage::kConcurrency;
  }
  for (; concurrency_index_ < limits.size(); ++concurrency_index_) {
    LimitState& limit = *limits[concurrency_index_];
    ConcurrencyLimiter* c = limit.concurrency();
    if (c == nullptr) continue;
    const LimitSettings& ls = limit.settings();
    std::optional<std::string> key;
    if (limit.concurrency_keyed()) {
      key = host_->LimitKey(ls.concurrency_key, ls.default_key);
    }
    if (ls.dry_run) {
      ConcurrencyLimiter::Permit permit =
          key ? c->TryAcquirePermit(*key) : c->TryAcquirePermit();
      if (permit) {
        permits_.push_back(std::move(permit));
        limit.admitted.fetch_add(1, std::memory_order_relaxed);
      } else {
        limit.dry_run_rejected.fetch_add(1, std::memory_order_relaxed);
      }
      continue;
    }
    const absl::Time now = MonoNow();
    absl::Time until = now + ls.concurrency_max_wait;
    if (client_deadline_ != absl::InfiniteFuture()) {
      // Past this, the upstream could not get min_budget of what the
      // offset leaves (deadline_budget.cc): stop waiting there.
      until =
          std::min(until, now + (client_deadline_ - route_->deadline.offset -
                                 route_->deadline.min_budget - absl::Now()));
    }
    QueueWait* wait = nullptr;
    ConcurrencyLimiter::Permit permit;
    switch (QueueWait::Enqueue(c, key ? &*key : nullptr, this, cq_, until,
                               &wait, &permit)) {
      case ConcurrencyLimiter::AcquireResult::kAcquired:
        permits_.push_back(std::move(permit));
        limit.admitted.fetch_add(1, std::memory_order_relaxed);
        continue;
      case ConcurrencyLimiter::AcquireResult::kRejectedQueueFull:
        limit.rejected.fetch_add(1, std::memory_order_relaxed);
        Refuse(
            grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                         absl::StrCat("sluice: concurrency limit \"", ls.name,
                                      "\" of route \"", route_->name,
                                      key ? "\" reached and the queue of "
                                            "this key or the limit is full"
                                          : "\" reached and its queue is "
                                            "full")),
            Reason::kConcurrencyLimited, static_cast<int>(concurrency_index_),
            /*rate_headers=*/header_limit_ != nullptr);
        return;
      case ConcurrencyLimiter::AcquireResult::kQueued:
        stage_ = Stage::kQueued;
        wait_ = wait;
        limit.queued.fetch_add(1, std::memory_order_relaxed);
        queued_at_ = now;
        return;  // OnQueueGranted or OnQueueTimedOut goes on
    }
  }
  stage_ = Stage::kAdmitted;
  host_->Admitted();
}

void CallAdmission::OnGlobalReply(bool /*ok*/) {
  if (stage_ == Stage::kGlobalReply) {
    stage_ = Stage::kRates;
    if (ApplyRateDecision(rate_index_, global_result_.decision,
                          global_result_.redis_unavailable)) {
      ++rate_index_;
      Continue();
    }
  }
  host_->Unhold();  // the reply's hold
}

void CallAdmission::NoteQueueWait() {
  const absl::Duration wait = MonoNow() - queued_at_;
  queue_wait_ += wait;
  if (prometheus::Histogram* h = stats_->queue_wait[concurrency_index_]) {
    h->Observe(absl::ToDoubleSeconds(wait));
  }
}

void CallAdmission::OnQueueGranted(ConcurrencyLimiter::Permit permit) {
  // Only a wait still in progress reports (Stop abandons it first).
  wait_ = nullptr;
  stage_ = Stage::kConcurrency;
  NoteQueueWait();
  permits_.push_back(std::move(permit));
  (*limits_)[concurrency_index_]->admitted.fetch_add(1,
                                                     std::memory_order_relaxed);
  ++concurrency_index_;
  Continue();
}

void CallAdmission::OnQueueTimedOut() {
  wait_ = nullptr;
  NoteQueueWait();
  LimitState& limit = *(*limits_)[concurrency_index_];
  limit.rejected.fetch_add(1, std::memory_order_relaxed);
  Refuse(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      absl::StrCat("sluice: waited ",
                                   absl::FormatDuration(MonoNow() - queued_at_),
                                   " in the queue of concurrency limit \"",
                                   limit.settings().name, "\" of route \"",
                                   route_->name, "\"")),
         Reason::kQueueTimeout, static_cast<int>(concurrency_index_),
         /*rate_headers=*/header_limit_ != nullptr);
}

void CallAdmission::StartUpstream() {
  for (const auto& limit : *limits_) {
    if (AdaptiveLimit* a = limit->adaptive()) {
      adaptive_calls_.push_back(a->StartCall());
    }
  }
}

void CallAdmission::EndUpstream(bool sample, bool dropped) {
  if (sample) {
    for (AdaptiveLimit::Call& call : adaptive_calls_) call.Finish(dropped);
  }
  adaptive_calls_.clear();  // no sample: only stops counting
}

}  // namespace sluice
