#include "server/demo/test_service.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/compression.h"
#include "grpc/support/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/support/status.h"

namespace sluice::demo {
namespace {

using grpc::testing::Empty;
using grpc::testing::ResponseParameters;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using grpc::testing::StreamingInputCallRequest;
using grpc::testing::StreamingInputCallResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;

// Indices into CallStats; the order of kMethodNames.
enum Method : int {
  kEmptyCall,
  kUnaryCall,
  kCacheableUnaryCall,
  kStreamingOutputCall,
  kStreamingInputCall,
  kFullDuplexCall,
  kHalfDuplexCall,
  kUnimplementedCall,
};

constexpr const char* kMethodNames[] = {
    "EmptyCall",           "UnaryCall",          "CacheableUnaryCall",
    "StreamingOutputCall", "StreamingInputCall", "FullDuplexCall",
    "HalfDuplexCall",      "UnimplementedCall",
};

constexpr int64_t kMaxPayloadBytes = int64_t{64} << 20;
// Bounds what HalfDuplexCall buffers for one call.
constexpr size_t kMaxPlannedResponses = size_t{1} << 20;
constexpr char kEchoInitialKey[] = "x-grpc-test-echo-initial";
constexpr char kEchoTrailingKey[] = "x-grpc-test-echo-trailing-bin";

void EchoMetadata(grpc::CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  auto it = metadata.find(kEchoInitialKey);
  if (it != metadata.end()) {
    context->AddInitialMetadata(
        kEchoInitialKey, std::string(it->second.data(), it->second.size()));
  }
  it = metadata.find(kEchoTrailingKey);
  if (it != metadata.end()) {
    context->AddTrailingMetadata(
        kEchoTrailingKey, std::string(it->second.data(), it->second.size()));
  }
}

void RecordStart(CallStats* stats, Method method,
                 grpc::CallbackServerContext* context) {
  stats->RecordStart(method, CaptureCall(kMethodNames[method], *context));
}

grpc::Status CheckSize(int64_t size) {
  if (size < 0 || size > kMaxPayloadBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "payload size must be in [0, 64 MiB]");
  }
  return grpc::Status::OK;
}

grpc::Status EchoedStatus(const grpc::testing::EchoStatus& echo) {
  return grpc::Status(static_cast<grpc::StatusCode>(echo.code()),
                      echo.message());
}

void FillPayload(int32_t size, grpc::testing::Payload* payload) {
  payload->set_type(grpc::testing::COMPRESSABLE);
  payload->mutable_body()->assign(static_cast<size_t>(size), '\0');
}

// UnaryCall and CacheableUnaryCall: fills `response` as `request` asks.
grpc::Status HandleSimpleRequest(grpc::CallbackServerContext* context,
                                 const SimpleRequest& request,
                                 SimpleResponse* response) {
  if (request.response_type() != grpc::testing::COMPRESSABLE) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "unsupported response_type");
  }
  if (grpc::Status s = CheckSize(request.response_size()); !s.ok()) return s;
  if (request.response_compressed().value()) {
    context->set_compression_algorithm(GRPC_COMPRESS_GZIP);
  }
  if (request.response_size() > 0) {
    FillPayload(request.response_size(), response->mutable_payload());
  }
  if (request.has_response_status()) {
    return EchoedStatus(request.response_status());
  }
  return grpc::Status::OK;
}

// A unary call: counts itself and frees itself in OnDone. The handler
// calls Serve (or Finish) before returning it. Serve finishes at once, or,
// in capacity mode, after the model's service time on a grpc::Alarm; a
// cancel cuts the wait short (CANCELLED). OnDone comes only after Finish,
// which only the alarm's callback calls once an alarm is set, so the
// reactor is never freed with its alarm pending.
class UnaryReactor final : public grpc::ServerUnaryReactor {
 public:
  UnaryReactor(CallStats* stats, Method method,
               grpc::CallbackServerContext* context,
               CapacityModel* capacity = nullptr)
      : stats_(stats), method_(method), capacity_(capacity) {
    RecordStart(stats_, method_, context);
    EchoMetadata(context);
  }

  void Serve(grpc::Status status) {
    const absl::Duration delay =
        capacity_ != nullptr ? capacity_->Start() : absl::ZeroDuration();
    if (delay <= absl::ZeroDuration()) {
      Finish(status);
      return;
    }
    absl::MutexLock lock(&mu_);
    status_ = std::move(status);
    alarm_pending_ = true;
    alarm_.Set(
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_micros(absl::ToInt64Microseconds(delay),
                                          GPR_TIMESPAN)),
        [this](bool ok) { OnServed(ok); });
  }

  void OnCancel() override {
    stats_->RecordCancel(method_);
    bool pending;
    {
      absl::MutexLock lock(&mu_);
      pending = alarm_pending_;
    }
    // Outside the lock: Cancel may run the callback. `this` stays valid
    // until OnCancel returns (OnDone comes last).
    if (pending) alarm_.Cancel();
  }
  void OnDone() override {
    stats_->RecordDone(method_);
    delete this;
  }

 private:
  void OnServed(bool ok) {
    capacity_->Finish();
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      alarm_pending_ = false;
      status =
          ok ? status_ : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    Finish(status);
  }

  CallStats* const stats_;
  const Method method_;
  CapacityModel* const capacity_;
  grpc::Alarm alarm_;
  absl::Mutex mu_;
  bool alarm_pending_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// The write side shared by StreamingOutputCall, FullDuplexCall and
// HalfDuplexCall: writes a planned list of responses one at a time, waiting
// `interval_us` before each on a grpc::Alarm.
//
// Exactly one party drives the call at any time (the "token"): the handler,
// an outstanding read, an outstanding write, or a pending alarm. Only the
// token holder calls Advance, StartRead, StartWrite or Finish, and after
// such a call it touches nothing of `this`. OnCancel only marks the call
// broken and cancels a pending alarm; the token holder then finishes.
//
// The reactor frees itself in OnDone, or in the alarm callback if OnDone
// came first; never while an alarm callback is pending.
template <typename Base>
class PlannedWriter : public Base {
 public:
  void OnWriteDone(bool ok) override {
    if (ok) {
      stats_->RecordWrite(method_);
    } else {
      absl::MutexLock lock(&mu_);
      broken_ = true;
    }
    Advance();
  }

  void OnCancel() override {
    stats_->RecordCancel(method_);
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
    stats_->RecordDone(method_);
    bool free_now;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      free_now = !alarm_pending_;
    }
    if (free_now) delete this;
  }

 protected:
  PlannedWriter(CallStats* stats, Method method,
                grpc::CallbackServerContext* context)
      : stats_(stats), method_(method) {
    RecordStart(stats_, method_, context);
    EchoMetadata(context);
  }

  // Appends the responses `request` asks for; its response_status, if any,
  // becomes the final status.
  grpc::Status PlanLocked(const StreamingOutputCallRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (request.response_type() != grpc::testing::COMPRESSABLE) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "unsupported response_type");
    }
    for (const ResponseParameters& p : request.response_parameters()) {
      if (grpc::Status s = CheckSize(p.size()); !s.ok()) return s;
      if (p.interval_us() < 0) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "interval_us must not be negative");
      }
    }
    if (plan_.size() + request.response_parameters_size() >
        kMaxPlannedResponses) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "too many buffered responses");
    }
    plan_.insert(plan_.end(), request.response_parameters().begin(),
                 request.response_parameters().end());
    if (request.has_response_status()) {
      final_status_ = EchoedStatus(request.response_status());
    }
    return grpc::Status::OK;
  }

  // Called by the token holder, without the lock, once every planned
  // response is written. Must start the next operation or Finish.
  virtual void OnPlanDone() = 0;

  // Writes the next planned response, waits for its interval, or calls
  // OnPlanDone. Token holder only.
  void Advance() {
    enum class Next { kWrite, kPlanDone, kFinishCancelled } next;
    grpc::WriteOptions options;
    {
      absl::MutexLock lock(&mu_);
      if (broken_) {
        next = Next::kFinishCancelled;
      } else if (next_ < plan_.size()) {
        const ResponseParameters& p = plan_[next_];
        if (p.interval_us() > 0 && !waited_) {
          waited_ = true;
          ArmLocked(p.interval_us());
          return;  // the alarm holds the token now
        }
        waited_ = false;
        ++next_;
        if (compressed_ && !p.compressed().value()) {
          options.set_no_compression();
        }
        FillPayload(p.size(), response_.mutable_payload());
        next = Next::kWrite;
      } else {
        next = Next::kPlanDone;
      }
    }
    switch (next) {
      case Next::kWrite:
        this->StartWrite(&response_, options);
        return;
      case Next::kPlanDone:
        OnPlanDone();
        return;
      case Next::kFinishCancelled:
        this->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
        return;
    }
  }

  absl::Mutex mu_;
  std::vector<ResponseParameters> plan_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;  // index of the next write in plan_
  std::optional<grpc::Status> final_status_ ABSL_GUARDED_BY(mu_);
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // cancelled, or a write failed
  // Set by the handler before the first write: compress responses whose
  // `compressed` is set.
  bool compressed_ = false;

 private:
  void ArmLocked(int32_t interval_us) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    alarm_pending_ = true;
    // The previous alarm has fired; freeing it is safe even from its own
    // callback (gRPC keeps the callback alive until it returns).
    alarm_ = std::make_unique<grpc::Alarm>();
    alarm_->Set(gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                             gpr_time_from_micros(interval_us, GPR_TIMESPAN)),
                [this](bool ok) { OnAlarm(ok); });
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
  const Method method_;
  StreamingOutputCallResponse response_;      // token holder only
  bool waited_ ABSL_GUARDED_BY(mu_) = false;  // waited for plan_[next_]
  bool alarm_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // OnDone ran
  std::unique_ptr<grpc::Alarm> alarm_ ABSL_GUARDED_BY(mu_);
};

class StreamingOutputReactor final
    : public PlannedWriter<
          grpc::ServerWriteReactor<StreamingOutputCallResponse>> {
 public:
  StreamingOutputReactor(CallStats* stats, grpc::CallbackServerContext* context,
                         const StreamingOutputCallRequest& request)
      : PlannedWriter(stats, kStreamingOutputCall, context) {
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      status = PlanLocked(request);
    }
    if (!status.ok()) {
      Finish(status);
      return;
    }
    for (const ResponseParameters& p : request.response_parameters()) {
      if (p.compressed().value()) compressed_ = true;
    }
    if (compressed_) context->set_compression_algorithm(GRPC_COMPRESS_GZIP);
    StartSendInitialMetadata();
    Advance();
  }

 private:
  void OnPlanDone() override {
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      status = final_status_.value_or(grpc::Status::OK);
    }
    Finish(status);
  }
};

// FullDuplexCall (ping-pong: read one request, write its responses, read
// the next) and HalfDuplexCall (read all, then write all).
class DuplexReactor final
    : public PlannedWriter<grpc::ServerBidiReactor<
          StreamingOutputCallRequest, StreamingOutputCallResponse>> {
 public:
  DuplexReactor(CallStats* stats, Method method,
                grpc::CallbackServerContext* context)
      : PlannedWriter(stats, method, context),
        half_duplex_(method == kHalfDuplexCall) {
    StartSendInitialMetadata();
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    enum class Next { kRead, kWrite, kFinish } next;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {  // half-close, or the call is gone
        if (broken_) {
          next = Next::kFinish;
          status = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
        } else if (half_duplex_) {
          next = Next::kWrite;
        } else {
          next = Next::kFinish;
          status = grpc::Status::OK;
        }
      } else if (status = PlanLocked(request_); !status.ok()) {
        next = Next::kFinish;
      } else if (half_duplex_ && !final_status_.has_value()) {
        next = Next::kRead;
      } else {
        next = Next::kWrite;
      }
    }
    switch (next) {
      case Next::kRead:
        StartRead(&request_);
        return;
      case Next::kWrite:
        Advance();
        return;
      case Next::kFinish:
        Finish(status);
        return;
    }
  }

 private:
  void OnPlanDone() override {
    bool finish = true;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (broken_) {
        status = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      } else if (half_duplex_ || final_status_.has_value()) {
        status = final_status_.value_or(grpc::Status::OK);
      } else {
        finish = false;
        plan_.clear();
        next_ = 0;
      }
    }
    if (finish) {
      Finish(status);
    } else {
      StartRead(&request_);
    }
  }

  const bool half_duplex_;
  StreamingOutputCallRequest request_;  // token holder only
};

class StreamingInputReactor final
    : public grpc::ServerReadReactor<StreamingInputCallRequest> {
 public:
  StreamingInputReactor(CallStats* stats, grpc::CallbackServerContext* context,
                        StreamingInputCallResponse* response)
      : stats_(stats), response_(response) {
    RecordStart(stats_, kStreamingInputCall, context);
    EchoMetadata(context);
    StartSendInitialMetadata();
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      total_ += static_cast<int64_t>(request_.payload().body().size());
      StartRead(&request_);
      return;
    }
    if (cancelled_.load()) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    response_->set_aggregated_payload_size(static_cast<int32_t>(
        std::min<int64_t>(total_, std::numeric_limits<int32_t>::max())));
    Finish(grpc::Status::OK);
  }

  void OnCancel() override {
    stats_->RecordCancel(kStreamingInputCall);
    cancelled_.store(true);
  }

  void OnDone() override {
    stats_->RecordDone(kStreamingInputCall);
    delete this;
  }

 private:
  CallStats* const stats_;
  StreamingInputCallResponse* const response_;
  StreamingInputCallRequest request_;  // the outstanding read's target
  int64_t total_ = 0;                  // read side only
  std::atomic<bool> cancelled_{false};
};

std::vector<std::string> MethodNameList() {
  return std::vector<std::string>(std::begin(kMethodNames),
                                  std::end(kMethodNames));
}

bool AtLeast(const CallStats& stats, absl::string_view method,
             int64_t MethodStats::*field, int64_t n, absl::Duration timeout) {
  return stats.Await(
      method, [&](const MethodStats& s) { return s.*field >= n; }, timeout);
}

}  // namespace

TestService::TestService()
    : stats_("grpc.testing.TestService", MethodNameList()) {}

TestService::~TestService() = default;

grpc::ServerUnaryReactor* TestService::EmptyCall(
    grpc::CallbackServerContext* context, const Empty* /*request*/,
    Empty* /*response*/) {
  auto* reactor = new UnaryReactor(&stats_, kEmptyCall, context, &capacity_);
  reactor->Serve(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* TestService::UnaryCall(
    grpc::CallbackServerContext* context, const SimpleRequest* request,
    SimpleResponse* response) {
  auto* reactor = new UnaryReactor(&stats_, kUnaryCall, context, &capacity_);
  reactor->Serve(HandleSimpleRequest(context, *request, response));
  return reactor;
}

grpc::ServerUnaryReactor* TestService::CacheableUnaryCall(
    grpc::CallbackServerContext* context, const SimpleRequest* request,
    SimpleResponse* response) {
  auto* reactor =
      new UnaryReactor(&stats_, kCacheableUnaryCall, context, &capacity_);
  context->AddInitialMetadata("cache-control", "max-age=60, public");
  reactor->Serve(HandleSimpleRequest(context, *request, response));
  return reactor;
}

grpc::ServerWriteReactor<StreamingOutputCallResponse>*
TestService::StreamingOutputCall(grpc::CallbackServerContext* context,
                                 const StreamingOutputCallRequest* request) {
  return new StreamingOutputReactor(&stats_, context, *request);
}

grpc::ServerReadReactor<StreamingInputCallRequest>*
TestService::StreamingInputCall(grpc::CallbackServerContext* context,
                                StreamingInputCallResponse* response) {
  return new StreamingInputReactor(&stats_, context, response);
}

grpc::ServerBidiReactor<StreamingOutputCallRequest,
                        StreamingOutputCallResponse>*
TestService::FullDuplexCall(grpc::CallbackServerContext* context) {
  return new DuplexReactor(&stats_, kFullDuplexCall, context);
}

grpc::ServerBidiReactor<StreamingOutputCallRequest,
                        StreamingOutputCallResponse>*
TestService::HalfDuplexCall(grpc::CallbackServerContext* context) {
  return new DuplexReactor(&stats_, kHalfDuplexCall, context);
}

grpc::ServerUnaryReactor* TestService::UnimplementedCall(
    grpc::CallbackServerContext* context, const Empty* /*request*/,
    Empty* /*response*/) {
  auto* reactor = new UnaryReactor(&stats_, kUnimplementedCall, context);
  reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                               "UnimplementedCall is never implemented"));
  return reactor;
}

int64_t TestService::CallsStarted(absl::string_view method) const {
  return stats_.Get(method).started;
}

int64_t TestService::CallsFinished(absl::string_view method) const {
  return stats_.Get(method).finished;
}

int64_t TestService::CallsCancelled(absl::string_view method) const {
  return stats_.Get(method).cancelled;
}

int64_t TestService::MessagesWritten(absl::string_view method) const {
  return stats_.Get(method).messages_written;
}

int64_t TestService::MessagesWritten() const {
  return stats_.Total().messages_written;
}

int64_t TestService::CallsInFlight() const {
  return stats_.Total().in_flight();
}

std::optional<absl::Time> TestService::LastDeadline(
    absl::string_view method) const {
  std::optional<CallRecord> record = stats_.LastCall(method);
  if (!record.has_value()) return std::nullopt;
  return record->deadline;
}

std::optional<CallRecord> TestService::LastCall(
    absl::string_view method) const {
  return stats_.LastCall(method);
}

std::optional<CallRecord> TestService::LastCall() const {
  return stats_.LastCall();
}

bool TestService::WaitForCallsStarted(absl::string_view method, int64_t n,
                                      absl::Duration timeout) const {
  return AtLeast(stats_, method, &MethodStats::started, n, timeout);
}

bool TestService::WaitForCallsFinished(absl::string_view method, int64_t n,
                                       absl::Duration timeout) const {
  return AtLeast(stats_, method, &MethodStats::finished, n, timeout);
}

bool TestService::WaitForCallsCancelled(absl::string_view method, int64_t n,
                                        absl::Duration timeout) const {
  return AtLeast(stats_, method, &MethodStats::cancelled, n, timeout);
}

}  // namespace sluice::demo
