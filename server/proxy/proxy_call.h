// One proxied call: the downstream (client) call accepted on the data port
// and the upstream call it is forwarded to, with two pumps between them.
//
// Created by its Worker to wait for a call, it owns both calls' contexts and
// streams and lives on that worker's thread only, so it takes no lock. It
// counts the operations it has out on the queue and deletes itself once the
// downstream call is finished and nothing is outstanding. Backpressure: per
// direction it holds at most `stream_window` messages (read, not yet
// written); the next read is posted only when a write completes and frees a
// slot.
//
// When a descriptor set names the method, its shape saves batches: a call
// with one request (unary, server_stream) sends the upstream its headers,
// the request and the half-close in one batch; a unary call also answers
// the client with headers, response and status in one batch, as a gRPC
// server does. Any other call takes the general path.
#ifndef SLUICE_SERVER_PROXY_PROXY_CALL_H_
#define SLUICE_SERVER_PROXY_PROXY_CALL_H_

#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/generic/generic_stub.h"
#include "server/limits/concurrency_limiter.h"
#include "server/limits/global_rate_limiter.h"
#include "server/limits/token_bucket.h"
#include "server/metrics/reason.h"
#include "server/proxy/client_read.h"
#include "server/proxy/cq_tag.h"
#include "server/proxy/proxy_snapshot.h"
#include "server/proxy/upstream_pool.h"

namespace sluice {

class Worker;

class ProxyCall final : public ConcurrencyLimiter::Waiter {
 public:
  // Creates a call object and posts an accept on the worker's queue.
  static void Accept(Worker* worker);

  // Worker thread: end the call now with UNAVAILABLE + draining.
  void ForceDrain();

  // ConcurrencyLimiter::Waiter: any thread; only posts a tag to our queue.
  void OnGranted() override;

  // Intrusive list links owned by the Worker.
  ProxyCall* prev_live = nullptr;
  ProxyCall* next_live = nullptr;

 private:
  // One `messages` limit applied to one direction of one stream.
  struct MessageBucket {
    std::unique_ptr<TokenBucket> bucket;
    const LimitSettings* settings = nullptr;
    LimitState* state = nullptr;  // counters
    int limit_index = 0;          // in the route's limits
  };

  // One direction of message flow.
  struct Pump {
    std::deque<grpc::ByteBuffer> queue;  // read, waiting to be written
    grpc::ByteBuffer read_buf;
    grpc::ByteBuffer write_buf;
    bool reading = false;
    bool writing = false;
    bool src_done = false;    // the source has no more messages
    bool dst_failed = false;  // the destination refuses writes
    bool closed = false;      // half-close sent to the destination
    // Message limits of the route (every one applies) and pacing state.
    std::vector<MessageBucket> buckets;
    absl::Time pace_until = absl::InfinitePast();  // monotonic (MonoNow)
    bool pace_armed = false;
    bool token_reserved = false;  // the next read's token is already taken
    absl::Time pace_started;      // when the pacing alarm was armed (mono)
    // Time reads were held back (flushed to the metrics in batches).
    int64_t paced_nanos = 0;
    absl::Time blocked_since = absl::InfinitePast();  // full since (mono)
    int64_t blocked_nanos = 0;
    int held() const {
      return static_cast<int>(queue.size()) + (writing ? 1 : 0) +
             (reading ? 1 : 0);
    }
  };

  explicit ProxyCall(Worker* worker);
  ~ProxyCall() override;

  // Completion handlers, one per kind of operation.
  void OnAccepted(bool ok);
  void OnDone(bool ok);
  void OnUpstreamStarted(bool ok);
  void OnUpstreamInitialMetadata(bool ok);
  void OnDownstreamInitialMetadataSent(bool ok);
  void OnClientRead(bool ok);
  void OnUpstreamWritten(bool ok);
  void OnUpstreamWritesDone(bool ok);
  void OnUpstreamRead(bool ok);
  void OnClientWritten(bool ok);
  void OnUpstreamFinished(bool ok);
  void OnDownstreamFinished(bool ok);
  void OnIdleAlarm(bool ok);
  // A write to the client still in flight kStuckWriteGrace after Sluice
  // decided to end the call: the client does not read, so the status could
  // wait for ever behind flow control. Cancels the downstream call.
  void OnStuckWriteAlarm(bool ok);

  // Admission: every rate limit, then every concurrency limit (possibly
  // waiting in its queue), then StartUpstream().
  void Admit();
  void OnPermitGranted(bool ok);
  // A global rate's decision came back from the Redis thread (via
  // global_alarm_); applies it and goes on with Admit().
  void OnGlobalRate(bool ok);
  // Counts a rate decision of limit `i`; rejects the call (false) if it must.
  bool ApplyRateDecision(size_t i, const TokenBucket::Decision& d,
                         bool redis_unavailable);
  void OnQueueAlarm(bool ok);
  // Leaves a concurrency queue (cancel, drain, timeout); true if it did.
  bool LeaveQueue();
  // Bounds the current queue wait at `until` (see queue_alarm_).
  void ArmQueueAlarm(absl::Time until);
  void CancelQueueAlarm();
  // Adds the time since queued_at_ to the access log and the histogram.
  void NoteQueueWait();
  // The client's address without port or scheme ("ipv4:127.0.0.1:5555"
  // -> "127.0.0.1"): its key for peer limits, logs and early cancels.
  std::string PeerAddress() const;
  std::string LimitKey(const LimitSettings& limit) const;
  void SetRateLimitHeaders(bool trailers);
  // mode reject: charges the message just read; false if the stream was
  // ended for it.
  bool ChargeMessage(Pump& pump);
  // mode pace: takes the token for the next read before it is posted; false
  // (and an alarm armed) while that token is not due yet.
  bool PaceAllowsRead(Pump& pump, grpc::Alarm& alarm, CqTag& tag);
  void OnUpstreamPaceAlarm(bool ok);
  void OnClientPaceAlarm(bool ok);
  void StartUpstream();
  // No channel of the upstream is connected: waits for one to connect
  // (true), within the upstream's connect_wait and the call's budget, or
  // ends the call with upstream_unavailable (true); false: start now.
  bool WaitForUpstream(absl::Time now, absl::Time deadline,
                       const UpstreamPool::Choice& pick);
  void OnUpstreamConnectivity(bool ok);
  // Ends the call with `code` (UNAVAILABLE, or DEADLINE_EXCEEDED when its
  // deadline ended the wait) + upstream_unavailable, naming the upstream by
  // its config name; the address and `detail` go to the log only.
  void AbortUpstreamUnavailable(grpc::StatusCode code, const std::string& why,
                                const std::string& detail);
  // The request's headers are on their way upstream: start receiving.
  void OnUpstreamHeadersSent();
  // Adds the upstream's (forwardable) headers to the client's.
  void ForwardUpstreamHeaders();
  void AdvanceClientToUpstream();
  void AdvanceUpstreamToClient();
  // Ends the call with a status Sluice originates (and cancels upstream).
  // `limit`: index of the route's limit that caused it (limit reasons).
  void Abort(grpc::StatusCode code, const std::string& message, Reason reason,
             int limit = -1);
  void Abort(const grpc::Status& status, Reason reason, int limit = -1);
  // Records `reason` as the call's: its counter and the sluice-reason
  // trailer (Abort does; so does a rewritten upstream status).
  void NoteRejected(Reason reason, int limit);
  // Tracks whether a pump's reads wait for its window (backpressure).
  void NoteBlocked(Pump& p, bool blocked);
  void MaybeFinishDownstream();
  // The client cancelled or disconnected: cancel upstream, count it once.
  void OnClientGone();
  // The client's address has no early cancel left (DataPlane::early_cancels);
  // may charge this call's early cancel up front (early_cancel_charged_).
  bool EarlyCancelBudgetSpent();
  void ArmIdleAlarm(absl::Time at);
  // Drops one outstanding count; deletes the call when it may.
  void Release();

  Worker* const worker_;
  std::shared_ptr<const ProxySnapshot> snap_;
  const RouteSettings* route_ = nullptr;
  int route_index_ = -1;
  const RouteStats* stats_ = nullptr;
  CallSeries series_;  // go-grpc-prometheus series of the method
  int window_ = 1;
  bool single_request_ = false;  // see the class comment
  bool unary_ = false;
  absl::Time accepted_at_;
  absl::Time last_activity_;  // monotonic (MonoNow in proxy_call.cc)

  grpc::GenericServerContext sctx_;
  grpc::GenericServerAsyncReaderWriter sstream_{&sctx_};
  grpc::ClientContext uctx_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> ustream_;
  grpc::Status upstream_status_;
  std::optional<grpc::Status> local_status_;
  grpc::Alarm idle_alarm_;
  grpc::Alarm stuck_alarm_;  // see OnStuckWriteAlarm
  bool stuck_armed_ = false;

  // Admission state.
  size_t admit_index_ = 0;  // next concurrency limit to take
  size_t rate_index_ = 0;   // next rate limit to take
  // Set by the Redis thread, then global_alarm_ brings it to this thread.
  GlobalRateLimiter::Result global_result_;
  grpc::Alarm global_alarm_;
  ConcurrencyLimiter* waiting_ = nullptr;  // queued in this limiter
  LimitState* waiting_limit_ = nullptr;
  grpc::Alarm grant_alarm_;  // set by OnGranted from the releasing thread
  // The queue wait's bound. A call may wait in several queues one after the
  // other, and one grpc::Alarm may be Set again only after the event of its
  // previous Set was delivered: a new wait's bound is deferred
  // (queue_deferred_until_) while the old, cancelled event is still out,
  // and each event is judged by the wait it was set for (queue_alarm_wait_).
  grpc::Alarm queue_alarm_;
  bool queue_alarm_out_ = false;  // an event of queue_alarm_ is outstanding
  int queue_wait_number_ = 0;     // counts the queue waits of this call
  int queue_alarm_wait_ = 0;      // the wait the outstanding event is for
  std::optional<absl::Time> queue_deferred_until_;
  absl::Time queued_at_;  // monotonic
  TokenBucket::Decision rate_decision_;
  const LimitState* header_limit_ = nullptr;  // for x-ratelimit-* headers
  grpc::Alarm u2c_pace_alarm_;
  grpc::Alarm c2u_pace_alarm_;
  // Declared after snap_, so permits go back before the limiters could.
  std::vector<ConcurrencyLimiter::Permit> permits_;

  Pump c2u_;  // client -> upstream
  Pump u2c_;  // upstream -> client

  int outstanding_ = 0;
  bool accepted_ = false;
  bool done_seen_ = false;  // AsyncNotifyWhenDone fired
  bool upstream_started_ = false;
  bool upstream_start_pending_ = false;  // StartCall's batch in flight
  // Upstream reads may start: its initial metadata arrived (or, unary,
  // the request went out and the headers come with the first read).
  bool upstream_readable_ = false;
  bool sinit_pending_ = false;  // SendInitialMetadata in flight
  bool sinit_sent_ = false;
  bool upstream_finished_ = false;  // upstream status known
  bool ufinish_posted_ = false;
  bool finish_posted_ = false;    // downstream Finish posted
  bool reply_in_finish_ = false;  // unary: the response rides with Finish
  bool idle_armed_ = false;
  bool counted_cancel_ = false;
  bool early_cancel_charged_ = false;  // see EarlyCancelBudgetSpent
  bool early_cancelled_ = false;       // OnClientGone found an early cancel
  // When the wait for a connecting upstream began (set by its first wait;
  // wall clock for the budget, monotonic for the wait).
  std::optional<absl::Time> connect_wait_started_;
  absl::Time connect_wait_started_mono_;
  grpc::StatusCode final_code_ = grpc::StatusCode::OK;
  // For the access log.
  std::optional<Reason> reason_;
  absl::Duration queue_wait_;
  int64_t msgs_in_ = 0, msgs_out_ = 0, bytes_in_ = 0, bytes_out_ = 0;
  int64_t flushed_in_ = 0, flushed_out_ = 0;
  // Messages to and from the upstream (grpc_client_msg_*).
  int64_t umsgs_out_ = 0, umsgs_in_ = 0;
  int64_t uflushed_out_ = 0, uflushed_in_ = 0;
  absl::Time upstream_started_at_;
  int unflushed_msgs_ = 0;
  void FlushMessageCounts();
  // `duration`: accept to status sent.
  void WriteAccessLog(absl::Duration duration);

  MemberTag<ProxyCall> accept_tag_{this, &ProxyCall::OnAccepted};
  MemberTag<ProxyCall> done_tag_{this, &ProxyCall::OnDone};
  MemberTag<ProxyCall> ustart_tag_{this, &ProxyCall::OnUpstreamStarted};
  MemberTag<ProxyCall> uinit_tag_{this, &ProxyCall::OnUpstreamInitialMetadata};
  MemberTag<ProxyCall> sinit_tag_{this,
                                  &ProxyCall::OnDownstreamInitialMetadataSent};
  MemberTag<ProxyCall> cread_tag_{this, &ProxyCall::OnClientRead};
  ClientRead client_read_{&cread_tag_};  // client reads, by core batch
  MemberTag<ProxyCall> uwrite_tag_{this, &ProxyCall::OnUpstreamWritten};
  MemberTag<ProxyCall> uwritesdone_tag_{this, &ProxyCall::OnUpstreamWritesDone};
  MemberTag<ProxyCall> uread_tag_{this, &ProxyCall::OnUpstreamRead};
  MemberTag<ProxyCall> cwrite_tag_{this, &ProxyCall::OnClientWritten};
  MemberTag<ProxyCall> ufinish_tag_{this, &ProxyCall::OnUpstreamFinished};
  MemberTag<ProxyCall> sfinish_tag_{this, &ProxyCall::OnDownstreamFinished};
  MemberTag<ProxyCall> idle_tag_{this, &ProxyCall::OnIdleAlarm};
  MemberTag<ProxyCall> stuck_tag_{this, &ProxyCall::OnStuckWriteAlarm};
  MemberTag<ProxyCall> connect_tag_{this, &ProxyCall::OnUpstreamConnectivity};
  MemberTag<ProxyCall> grant_tag_{this, &ProxyCall::OnPermitGranted};
  MemberTag<ProxyCall> queue_tag_{this, &ProxyCall::OnQueueAlarm};
  MemberTag<ProxyCall> global_tag_{this, &ProxyCall::OnGlobalRate};
  MemberTag<ProxyCall> u2c_pace_tag_{this, &ProxyCall::OnUpstreamPaceAlarm};
  MemberTag<ProxyCall> c2u_pace_tag_{this, &ProxyCall::OnClientPaceAlarm};
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_PROXY_CALL_H_
