#include "server/demo/ticker_service.h"

#include <algorithm>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/alarm.h"
#include "grpcpp/support/status.h"

namespace sluice::demo {
namespace {

using sluice::demo::v1::SubscribeRequest;
using sluice::demo::v1::Tick;

constexpr int kSubscribe = 0;  // the only method in CallStats
constexpr uint32_t kMaxPayloadBytes = uint32_t{64} << 20;

// One Subscribe stream. Exactly one party drives it at any time (the
// "token"): the handler, the outstanding write, or the pending alarm; only
// the token holder calls Advance, StartWrite or Finish, and after such a
// call it touches nothing of `this`. OnCancel only marks the stream broken
// and cancels a pending alarm; the token holder then finishes.
//
// Created by TickerService::Subscribe; frees itself in OnDone, or in the
// alarm callback if OnDone came first, never while an alarm is pending.
class TickReactor final : public grpc::ServerWriteReactor<Tick> {
 public:
  TickReactor(CallStats* stats, TickerService::Active* active,
              grpc::CallbackServerContext* context,
              const SubscribeRequest& request)
      : stats_(stats),
        active_(active),
        count_(request.count()),
        interval_(absl::Milliseconds(request.interval_ms())) {
    stats_->RecordStart(kSubscribe, CaptureCall("Subscribe", *context));
    if (request.payload_bytes() > kMaxPayloadBytes) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "payload_bytes must be at most 64 MiB"));
      return;
    }
    // Active from here until Advance() calls Finish.
    const int64_t now_active = active_->now.fetch_add(1) + 1;
    int64_t max = active_->max.load();
    while (now_active > max &&
           !active_->max.compare_exchange_weak(max, now_active)) {
    }
    tick_.mutable_payload()->assign(request.payload_bytes(), '\0');
    StartSendInitialMetadata();
    if (interval_ > absl::ZeroDuration()) {
      absl::MutexLock lock(&mu_);
      due_ = absl::Now() + interval_;
      ArmLocked();
      return;  // the alarm holds the token now
    }
    Advance();
  }

  void OnWriteDone(bool ok) override {
    if (ok) stats_->RecordWrite(kSubscribe);
    {
      absl::MutexLock lock(&mu_);
      if (!ok) broken_ = true;
      if (!broken_ && interval_ > absl::ZeroDuration() &&
          (count_ == 0 || sent_ < count_)) {
        // Fixed rate, no catch-up: due one interval after the last tick's
        // due time, or now if that has passed already.
        const absl::Time now = absl::Now();
        due_ = std::max(due_ + interval_, now);
        if (due_ > now) {
          ArmLocked();
          return;  // the alarm holds the token now
        }
      }
    }
    Advance();
  }

  void OnCancel() override {
    stats_->RecordCancel(kSubscribe);
    grpc::Alarm* alarm = nullptr;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      if (alarm_pending_) alarm = alarm_.get();
    }
    // Outside the lock, as the alarm may run its callback from Cancel. The
    // pointer stays valid: once broken_ is set nothing replaces alarm_, and
    // the reactor is not freed before OnCancel returns (OnDone comes last).
    if (alarm != nullptr) alarm->Cancel();
  }

  void OnDone() override {
    stats_->RecordDone(kSubscribe);
    bool free_now;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      free_now = !alarm_pending_;
    }
    if (free_now) delete this;
  }

 private:
  // Writes the next tick or finishes. Token holder only.
  void Advance() {
    enum class Next { kWrite, kFinish, kFinishCancelled } next;
    {
      absl::MutexLock lock(&mu_);
      if (broken_) {
        next = Next::kFinishCancelled;
      } else if (count_ != 0 && sent_ >= count_) {
        next = Next::kFinish;
      } else {
        ++sent_;
        tick_.set_seq(sent_);
        tick_.set_unix_micros(absl::ToUnixMicros(absl::Now()));
        tick_.set_streams_active(static_cast<uint32_t>(active_->now.load()));
        tick_.set_max_streams_active(
            static_cast<uint32_t>(active_->max.load()));
        next = Next::kWrite;
      }
    }
    // Finishing: no longer active (before the status leaves, so a proxy
    // that frees a permit on the status never sees this call counted).
    if (next != Next::kWrite) active_->now.fetch_sub(1);
    switch (next) {
      case Next::kWrite:
        StartWrite(&tick_);
        return;
      case Next::kFinish:
        Finish(grpc::Status::OK);
        return;
      case Next::kFinishCancelled:
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
        return;
    }
  }

  void ArmLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    alarm_pending_ = true;
    // The previous alarm has fired; freeing it is safe even from its own
    // callback (gRPC keeps the callback alive until it returns).
    alarm_ = std::make_unique<grpc::Alarm>();
    alarm_->Set(absl::ToChronoTime(due_), [this](bool ok) { OnAlarm(ok); });
  }

  void OnAlarm(bool ok) {
    bool free_now = false;
    {
      absl::MutexLock lock(&mu_);
      alarm_pending_ = false;
      if (done_) {
        free_now = true;
      } else if (!ok) {
        broken_ = true;  // cancelled by OnCancel
      }
    }
    if (free_now) {
      delete this;
      return;
    }
    Advance();
  }

  CallStats* const stats_;
  TickerService::Active* const active_;
  const uint64_t count_;  // 0: unbounded
  const absl::Duration interval_;
  Tick tick_;  // token holder only; the payload is filled once

  absl::Mutex mu_;
  uint64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time due_ ABSL_GUARDED_BY(mu_);       // when the next tick is due
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // cancelled, or a write failed
  bool alarm_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // OnDone ran
  std::unique_ptr<grpc::Alarm> alarm_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

TickerService::TickerService()
    : stats_("sluice.demo.v1.Ticker", {"Subscribe"}) {}

TickerService::~TickerService() = default;

grpc::ServerWriteReactor<Tick>* TickerService::Subscribe(
    grpc::CallbackServerContext* context, const SubscribeRequest* request) {
  return new TickReactor(&stats_, &active_, context, *request);
}

int64_t TickerService::MessagesWritten() const {
  return stats_.Total().messages_written;
}

int64_t TickerService::StreamsStarted() const { return stats_.Total().started; }

int64_t TickerService::StreamsOpen() const {
  return stats_.Total().in_flight();
}

int64_t TickerService::StreamsCancelled() const {
  return stats_.Total().cancelled;
}

int64_t TickerService::StreamsFinished() const {
  return stats_.Total().finished;
}

std::optional<CallRecord> TickerService::LastCall() const {
  return stats_.LastCall();
}

bool TickerService::WaitForStreamsOpen(int64_t n,
                                       absl::Duration timeout) const {
  return stats_.Await(
      "", [n](const MethodStats& s) { return s.in_flight() >= n; }, timeout);
}

bool TickerService::WaitForStreamsCancelled(int64_t n,
                                            absl::Duration timeout) const {
  return stats_.Await(
      "", [n](const MethodStats& s) { return s.cancelled >= n; }, timeout);
}

bool TickerService::WaitForStreamsFinished(int64_t n,
                                           absl::Duration timeout) const {
  return stats_.Await(
      "", [n](const MethodStats& s) { return s.finished >= n; }, timeout);
}

bool TickerService::WaitForMessagesWritten(int64_t n,
                                           absl::Duration timeout) const {
  return stats_.Await(
      "", [n](const MethodStats& s) { return s.messages_written >= n; },
      timeout);
}

}  // namespace sluice::demo
