// One proxied call: the downstream (client) call accepted on the data port
// and the upstream call it is forwarded to.
//
// The call is the hub of three parts, each in its own file:
// - admission (admission.h): the route's rate and concurrency limits, with
//   one QueueWait object per queue wait (queue_wait.h);
// - two pumps (pump.h), client -> upstream and upstream -> client: the
//   window, pacing, backpressure accounting, the one read and the one write
//   in flight;
// - the call itself (here): accept, route, deadline budget, start the
//   upstream call, the idle timeout, and the end of both sides. Its life is
//   an explicit Phase; every end Sluice decides goes through Abort(), which
//   stops admission, cancels the upstream call and finishes the downstream
//   call at once (or, if a write to a client that does not read is stuck,
//   cancels it after kStuckWriteGrace).
//
// Ownership: created by its Worker to wait for a call; owns both calls'
// contexts and streams. It counts the operations it has out on the queue
// (outstanding_; an admission wait holds it too) and deletes itself once
// the downstream call is finished and nothing is outstanding: no tag, alarm
// or permit outlives it. Threading: that worker's thread only, so it takes
// no lock (the limiters' and Redis's threads only set alarms on its queue).
//
// When the method's shape is known (a descriptor set names it, or the
// upstream's reflection does: method_shapes.h), it saves batches: a call
// with one request (unary, server_stream) sends the upstream its headers,
// the request and the half-close in one batch; a unary call also answers
// the client with headers, response and status in one batch, as a gRPC
// server does. One more read on each one-message side checks the shape (a
// second request or response makes the method fall back for good). Any
// other call takes the general path.
#ifndef SLUICE_SERVER_PROXY_PROXY_CALL_H_
#define SLUICE_SERVER_PROXY_PROXY_CALL_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/generic/generic_stub.h"
#include "server/metrics/reason.h"
#include "server/proxy/admission.h"
#include "server/proxy/client_read.h"
#include "server/proxy/cq_tag.h"
#include "server/proxy/proxy_snapshot.h"
#include "server/proxy/pump.h"
#include "server/proxy/upstream_pool.h"

namespace sluice {

class Worker;

class ProxyCall final : private CallAdmission::Host {
 public:
  // Creates a call object and posts an accept on the worker's queue.
  static void Accept(Worker* worker);

  // Worker thread: end the call now with UNAVAILABLE + draining.
  void ForceDrain();
  // Worker thread: the worker's queue has no event left to run; write the
  // messages the pumps hold for this point (RequestFlush).
  void OnFlush();
  // Worker thread, its queue shut down: forget the flush (drops the hold).
  void DropFlush();

  // Intrusive list links owned by the Worker.
  ProxyCall* prev_live = nullptr;
  ProxyCall* next_live = nullptr;

 private:
  // The downstream call's life.
  enum class Phase {
    kAccepting,   // waiting for gRPC to hand over a call
    kAdmitting,   // taking the route's limits (admission_)
    kConnecting,  // waiting for a channel of the upstream to connect
    kForwarding,  // the upstream call runs; the pumps move messages
    kEnding,      // Sluice set the status (local_status_); waits for the
                  // write to the client in flight
    kFinishing,   // the status is on its way to the client (Finish posted)
  };
  // The upstream call.
  enum class Upstream { kNone, kOpen, kFinishPosted, kFinished };
  // The response headers to the client.
  enum class Headers { kNotSent, kSending, kSent };

  explicit ProxyCall(Worker* worker);
  ~ProxyCall();

  // Sluice or the upstream decided the status: nothing more is forwarded.
  bool ended() const { return phase_ >= Phase::kEnding; }
  bool finishing() const { return phase_ == Phase::kFinishing; }

  // Completion handlers, one per kind of operation.
  void OnAccepted(bool ok);
  void OnDone(bool ok);
  void OnUpstreamStarted(bool ok);
  void OnUpstreamInitialMetadata(bool ok);
  void OnDownstreamInitialMetadataSent(bool ok);
  void OnClientRead(bool ok);
  // The read after a one-request method's request (see OnClientRead).
  void OnShapeCheckRead(bool ok);
  void OnUpstreamWritten(bool ok);
  void OnUpstreamWritesDone(bool ok);
  void OnUpstreamRead(bool ok);
  void OnClientWritten(bool ok);
  void OnUpstreamFinished(bool ok);
  void OnDownstreamFinished(bool ok);
  void OnIdleAlarm(bool ok);
  void OnUpstreamPaceAlarm(bool ok);
  void OnClientPaceAlarm(bool ok);
  void OnUpstreamConnectivity(bool ok);
  // The status has not reached the client kStuckWriteGrace after Sluice
  // decided to end the call: the client does not read, so it could wait
  // for ever behind flow control. Cancels the downstream call.
  void OnStuckWriteAlarm(bool ok);

  // CallAdmission::Host
  std::string LimitKey(const std::vector<std::string>& parts,
                       const std::string& default_key) const override;
  void Hold() override { ++outstanding_; }
  void Unhold() override { Release(); }
  void Admitted() override { StartUpstream(); }
  void Refused(const grpc::Status& status, Reason reason, int limit,
               bool rate_headers) override;

  // The client's address without port or scheme ("ipv4:127.0.0.1:5555"
  // -> "127.0.0.1"): its key for peer limits, logs and early cancels.
  std::string PeerAddress() const;
  void StartUpstream();
  // No channel of the upstream is connected: waits for one to connect
  // (true), within the upstream's connect_wait and the call's budget, or
  // ends the call with upstream_unavailable (true); false: start now.
  bool WaitForUpstream(absl::Time now, absl::Time deadline,
                       const UpstreamPool::Choice& pick);
  // Ends the call with `code` (UNAVAILABLE, or DEADLINE_EXCEEDED when its
  // deadline ended the wait) + upstream_unavailable, naming the upstream by
  // its config name; the address and `detail` go to the log only.
  void AbortUpstreamUnavailable(grpc::StatusCode code, const std::string& why,
                                const std::string& detail);
  // The request's headers are on their way upstream: start receiving.
  void OnUpstreamHeadersSent();
  // Adds the upstream's (forwardable) headers to the client's.
  void ForwardUpstreamHeaders();
  // Starts what each pump may start now (reads, writes, half-close, the
  // upstream's Finish, the downstream's Finish).
  void AdvanceClientToUpstream();
  void AdvanceUpstreamToClient();
  // A pump holds its last message for the flush point: asks the worker
  // for OnFlush once (pump.h, write coalescing).
  void RequestFlush();
  // Counts the message just read into `pump` and queues it; false if a
  // message limit ended the call for it.
  bool QueueRead(Pump& pump);
  // Ends the call with a status Sluice originates (and cancels upstream).
  // `limit`: index of the route's limit that caused it (limit reasons).
  void Abort(grpc::StatusCode code, const std::string& message, Reason reason,
             int limit = -1);
  void Abort(const grpc::Status& status, Reason reason, int limit = -1);
  // Records `reason` as the call's: its counter and the sluice-reason
  // trailer (Abort does; so does a rewritten upstream status).
  void NoteRejected(Reason reason, int limit);
  void MaybeFinishDownstream();
  // The client cancelled or disconnected: cancel upstream, count it once.
  void OnClientGone();
  // The client's deadline is (nearly) over: its cancel is no early cancel.
  bool NearDeadline() const;
  // The client's address has no early cancel left (DataPlane::early_cancels);
  // may charge this call's early cancel up front (early_cancel_charged_).
  bool EarlyCancelBudgetSpent();
  void ArmIdleAlarm(absl::Time at);
  void FlushMessageCounts();
  // `duration`: accept to status sent.
  void WriteAccessLog(absl::Duration duration);
  // Drops one outstanding count; deletes the call when it may.
  void Release();

  Worker* const worker_;
  Phase phase_ = Phase::kAccepting;
  Upstream upstream_ = Upstream::kNone;
  Headers headers_ = Headers::kNotSent;
  std::shared_ptr<const ProxySnapshot> snap_;
  const RouteSettings* route_ = nullptr;
  int route_index_ = -1;
  const RouteStats* stats_ = nullptr;
  CallSeries series_;  // go-grpc-prometheus series of the method
  int window_ = 1;
  bool single_request_ = false;  // see the class comment
  bool unary_ = false;
  absl::Time accepted_at_;
  absl::Time last_activity_;  // monotonic

  grpc::GenericServerContext sctx_;
  grpc::GenericServerAsyncReaderWriter sstream_{&sctx_};
  grpc::ClientContext uctx_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> ustream_;
  grpc::Status upstream_status_;
  std::optional<grpc::Status> local_status_;  // set from kEnding on
  bool upstream_start_pending_ = false;       // StartCall's batch in flight
  // Upstream reads may start: its initial metadata arrived (or, unary,
  // the request went out and the headers come with the first read).
  bool upstream_readable_ = false;
  bool done_seen_ = false;            // AsyncNotifyWhenDone fired
  bool reply_in_finish_ = false;      // unary: the response rides with Finish
  bool downstream_finished_ = false;  // Finish's event arrived
  bool flush_requested_ = false;      // on the worker's flush list

  grpc::Alarm idle_alarm_;
  bool idle_armed_ = false;
  grpc::Alarm stuck_alarm_;  // see OnStuckWriteAlarm
  bool stuck_armed_ = false;
  // When the wait for a connecting upstream began (set by its first wait;
  // wall clock for the budget, monotonic for the wait).
  std::optional<absl::Time> connect_wait_started_;
  absl::Time connect_wait_started_mono_;

  // Declared after snap_: its permits go back before the limiters could.
  CallAdmission admission_;
  MemberTag<ProxyCall> u2c_pace_tag_{this, &ProxyCall::OnUpstreamPaceAlarm};
  MemberTag<ProxyCall> c2u_pace_tag_{this, &ProxyCall::OnClientPaceAlarm};
  Pump c2u_{&c2u_pace_tag_};  // client -> upstream
  Pump u2c_{&u2c_pace_tag_};  // upstream -> client

  int outstanding_ = 0;
  bool counted_cancel_ = false;
  bool early_cancel_charged_ = false;  // see EarlyCancelBudgetSpent
  bool early_cancelled_ = false;       // OnClientGone found an early cancel
  grpc::StatusCode final_code_ = grpc::StatusCode::OK;
  // For the access log and the metrics.
  std::optional<Reason> reason_;
  int64_t msgs_in_ = 0, msgs_out_ = 0, bytes_in_ = 0, bytes_out_ = 0;
  int64_t flushed_in_ = 0, flushed_out_ = 0;
  // Messages to and from the upstream (grpc_client_msg_*).
  int64_t umsgs_out_ = 0, umsgs_in_ = 0;
  int64_t uflushed_out_ = 0, uflushed_in_ = 0;
  absl::Time upstream_started_at_;
  int unflushed_msgs_ = 0;

  MemberTag<ProxyCall> accept_tag_{this, &ProxyCall::OnAccepted};
  MemberTag<ProxyCall> done_tag_{this, &ProxyCall::OnDone};
  MemberTag<ProxyCall> ustart_tag_{this, &ProxyCall::OnUpstreamStarted};
  MemberTag<ProxyCall> uinit_tag_{this, &ProxyCall::OnUpstreamInitialMetadata};
  MemberTag<ProxyCall> sinit_tag_{this,
                                  &ProxyCall::OnDownstreamInitialMetadataSent};
  MemberTag<ProxyCall> cread_tag_{this, &ProxyCall::OnClientRead};
  ClientRead client_read_{&cread_tag_};  // client reads, by core batch
  MemberTag<ProxyCall> ccheck_tag_{this, &ProxyCall::OnShapeCheckRead};
  ClientRead shape_check_{&ccheck_tag_};
  MemberTag<ProxyCall> uwrite_tag_{this, &ProxyCall::OnUpstreamWritten};
  MemberTag<ProxyCall> uwritesdone_tag_{this, &ProxyCall::OnUpstreamWritesDone};
  MemberTag<ProxyCall> uread_tag_{this, &ProxyCall::OnUpstreamRead};
  MemberTag<ProxyCall> cwrite_tag_{this, &ProxyCall::OnClientWritten};
  MemberTag<ProxyCall> ufinish_tag_{this, &ProxyCall::OnUpstreamFinished};
  MemberTag<ProxyCall> sfinish_tag_{this, &ProxyCall::OnDownstreamFinished};
  MemberTag<ProxyCall> idle_tag_{this, &ProxyCall::OnIdleAlarm};
  MemberTag<ProxyCall> stuck_tag_{this, &ProxyCall::OnStuckWriteAlarm};
  MemberTag<ProxyCall> connect_tag_{this, &ProxyCall::OnUpstreamConnectivity};
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_PROXY_CALL_H_
