#include "server/proxy/pump.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/limits/clock.h"
#include "server/proxy/call_time.h"
#include "server/proxy/rejection.h"

namespace sluice {

void Pump::AddMessageLimit(const LimitSettings* settings, LimitState* state,
                           int limit_index) {
  auto config = TokenBucket::Config::PerSecond(
      static_cast<double>(settings->messages_per_second),
      settings->messages_burst);
  limits_.push_back(
      {std::make_unique<TokenBucket>(config), settings, state, limit_index});
}

Pump::PaceResult Pump::Pace(grpc::CompletionQueue* cq) {
  if (limits_.empty()) return PaceResult::kGo;
  if (pace_armed_) return PaceResult::kWaiting;
  if (!token_reserved_) {
    // Take every pacing limit's token for the message this read will
    // bring; wait for the latest of them.
    const int64_t now = RealClock::Get().NowNanos();
    int64_t delay = 0;
    for (MessageLimit& ml : limits_) {
      if (ml.settings->messages_reject) continue;
      const int64_t d = ml.bucket->Reserve(now);
      if (d <= 0) continue;
      if (ml.settings->dry_run) {
        ml.state->dry_run_rejected.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      delay = std::max(delay, d);
    }
    if (delay <= 0) return PaceResult::kGo;
    token_reserved_ = true;
    pace_until_ = MonoNow() + absl::Nanoseconds(delay);
  }
  const absl::Time now = MonoNow();
  if (now >= pace_until_) {
    token_reserved_ = false;
    pace_until_ = absl::InfinitePast();
    return PaceResult::kGo;
  }
  pace_armed_ = true;
  pace_started_ = now;
  pace_alarm_.Set(cq, AlarmAt(pace_until_), pace_tag_);
  return PaceResult::kArmed;
}

void Pump::Paced() {
  pace_armed_ = false;
  paced_nanos_ += absl::ToInt64Nanoseconds(MonoNow() - pace_started_);
}

std::optional<Pump::Refusal> Pump::Queue(const std::string& route_name) {
  queue_.push_back(std::move(read_buf_));
  if (limits_.empty()) return std::nullopt;
  const int64_t now = RealClock::Get().NowNanos();
  for (MessageLimit& ml : limits_) {
    if (!ml.settings->messages_reject) continue;
    TokenBucket::Decision d = ml.bucket->TryTake(now);
    if (d.admitted) continue;
    if (ml.settings->dry_run) {
      ml.state->dry_run_rejected.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    ml.state->rejected.fetch_add(1, std::memory_order_relaxed);
    return Refusal{
        MakeRejection(
            grpc::StatusCode::RESOURCE_EXHAUSTED,
            absl::StrCat("sluice: message rate limit \"", ml.settings->name,
                         "\" of route \"", route_name, "\" exceeded"),
            absl::Nanoseconds(d.retry_after_nanos)),
        ml.limit_index};
  }
  return std::nullopt;
}

Pump::WriteStep Pump::NextWrite() const {
  if (!CanWrite()) return WriteStep::kNone;
  if (queue_.size() == 1 && reading_ && !flush_due_) return WriteStep::kHold;
  return WriteStep::kWrite;
}

grpc::WriteOptions Pump::StartWrite() {
  write_buf_ = std::move(queue_.front());
  queue_.pop_front();
  grpc::WriteOptions options;
  if (!queue_.empty()) {
    options.set_buffer_hint();
  } else {
    flush_due_ = false;  // this write flushes what was hinted before it
  }
  writing_ = true;
  return options;
}

int64_t Pump::WriteDone(bool ok) {
  writing_ = false;
  const int64_t bytes = ok ? static_cast<int64_t>(write_buf_.Length()) : 0;
  write_buf_.Clear();
  if (!ok) Fail();
  return bytes;
}

void Pump::Fail() {
  dst_failed_ = true;
  queue_.clear();
}

void Pump::NoteBlocked(bool blocked) {
  const bool was = blocked_since_ != absl::InfinitePast();
  if (blocked == was) return;
  const absl::Time now = MonoNow();
  if (blocked) {
    blocked_since_ = now;
  } else {
    blocked_nanos_ += absl::ToInt64Nanoseconds(now - blocked_since_);
    blocked_since_ = absl::InfinitePast();
  }
}

}  // namespace sluice
