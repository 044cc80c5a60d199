// Admission of one proxied call by the limits of its route.
#ifndef SLUICE_SERVER_PROXY_ADMISSION_H_
#define SLUICE_SERVER_PROXY_ADMISSION_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"
#include "server/limits/adaptive_limit.h"
#include "server/limits/concurrency_limiter.h"
#include "server/limits/global_rate_limiter.h"
#include "server/limits/token_bucket.h"
#include "server/metrics/reason.h"
#include "server/proxy/cq_tag.h"
#include "server/proxy/proxy_snapshot.h"
#include "server/proxy/queue_wait.h"

namespace sluice {

// Takes every limit of a call's route in order: each rate limit (a local
// token bucket at once; a global one through the Redis thread, whose reply
// comes back as an alarm on the call's queue), then each concurrency limit,
// waiting in its queue (one QueueWait per wait) where it has one. The
// call hears back exactly once: Admitted() with every permit held here, or
// Refused() with the status and reason. Stop() ends admission at any point
// (the call ended): it leaves a queue and returns every permit.
//
// Ownership: a member of its ProxyCall (the Host), declared after the
// snapshot whose limiters its permits point into. While a global reply or a
// queue wait is out it holds the call (Host::Hold/Unhold). Threading: the
// call's worker thread, except the global limiter's reply callback, which
// runs on the Redis thread and only stores the result and sets an alarm.
class CallAdmission final : private QueueWait::Owner {
 public:
  class Host {
   public:
    // This call's key for a keyed limit: the values of `parts` (peer,
    // method, header:<name>) joined, or `default_key` when a header is
    // missing.
    virtual std::string LimitKey(const std::vector<std::string>& parts,
                                 const std::string& default_key) const = 0;
    // Keep the call alive while an event of admission is out.
    virtual void Hold() = 0;
    virtual void Unhold() = 0;
    // Every limit admitted the call.
    virtual void Admitted() = 0;
    // Limit `limit` (index in the route) refused the call. `rate_headers`:
    // the x-ratelimit-* trailers (AddRateHeaders) go with the status.
    virtual void Refused(const grpc::Status& status, Reason reason, int limit,
                         bool rate_headers) = 0;

   protected:
    ~Host() = default;
  };

  CallAdmission(Host* host, grpc::CompletionQueue* cq) : host_(host), cq_(cq) {}
  ~CallAdmission();
  CallAdmission(const CallAdmission&) = delete;
  CallAdmission& operator=(const CallAdmission&) = delete;

  // Starts with the first limit of route `route` of `snap` (which outlives
  // this). `client_deadline` (wall clock) bounds queue waits.
  void Start(const ProxySnapshot* snap, int route, absl::Time client_deadline);
  // The call ended: leave any queue, return every permit, ignore a global
  // reply still on its way. Idempotent.
  void Stop();

  // The route asks for x-ratelimit-* headers and a rate limit decided.
  bool has_rate_headers() const { return header_limit_ != nullptr; }
  // Adds them from the first rate limit's decision to the initial metadata
  // or (`trailers`) the trailing metadata of `ctx`.
  void AddRateHeaders(grpc::ServerContext& ctx, bool trailers) const;
  // Time spent in concurrency queues.
  absl::Duration queue_wait() const { return queue_wait_; }
  // The upstream call starts: each adaptive limit of the route counts it in
  // flight from now until EndUpstream.
  void StartUpstream();
  // The upstream call ended after `rtt`. `sample`: it was one request and
  // one response (a long stream never is a latency sample); `dropped`: it
  // ended in a status that means overload (deadline, resource exhausted,
  // unavailable).
  void EndUpstream(bool sample, bool dropped);

 private:
  enum class Stage {
    kIdle,         // not started
    kRates,        // taking rate limits
    kGlobalReply,  // a global rate's reply is on its way from Redis
    kConcurrency,  // taking concurrency limits
    kQueued,       // waiting in a concurrency queue (wait_)
    kAdmitted,     // Host::Admitted was called
    kRefused,      // Host::Refused was called
    kStopped       // Stop() was called
  };

  // Goes on from rate_index_ / concurrency_index_.
  void Continue();
  // Counts a rate decision of limit `i`; refuses the call (false) if it
  // must.
  bool ApplyRateDecision(size_t i, const TokenBucket::Decision& d,
                         bool redis_unavailable);
  void OnGlobalReply(bool ok);
  void Refuse(const grpc::Status& status, Reason reason, int limit,
              bool rate_headers);
  void NoteQueueWait();

  // QueueWait::Owner
  void OnQueueGranted(ConcurrencyLimiter::Permit permit) override;
  void OnQueueTimedOut() override;
  void HoldForWait() override { host_->Hold(); }
  void ReleaseWaitHold() override { host_->Unhold(); }

  Host* const host_;
  grpc::CompletionQueue* const cq_;
  const ProxySnapshot* snap_ = nullptr;
  const RouteSettings* route_ = nullptr;
  const RouteStats* stats_ = nullptr;
  const std::vector<std::shared_ptr<LimitState>>* limits_ = nullptr;
  absl::Time client_deadline_ = absl::InfiniteFuture();
  Stage stage_ = Stage::kIdle;
  size_t rate_index_ = 0;         // next rate limit to take
  size_t concurrency_index_ = 0;  // next concurrency limit to take

  // Set by the Redis thread; global_alarm_ brings it to this thread. At
  // most one global take is out at a time, and the next is asked only
  // after this one's event was delivered, so the alarm is never re-set
  // under an event still out.
  GlobalRateLimiter::Result global_result_;
  grpc::Alarm global_alarm_;
  MemberTag<CallAdmission> global_tag_{this, &CallAdmission::OnGlobalReply};

  QueueWait* wait_ = nullptr;  // the queue wait in progress (kQueued)
  absl::Time queued_at_;       // monotonic
  absl::Duration queue_wait_;

  const LimitState* header_limit_ = nullptr;  // for x-ratelimit-* headers
  TokenBucket::Decision rate_decision_;
  std::vector<ConcurrencyLimiter::Permit> permits_;
  // The route's adaptive limits counting this call (StartUpstream).
  std::vector<AdaptiveLimit::Call> adaptive_calls_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_ADMISSION_H_
