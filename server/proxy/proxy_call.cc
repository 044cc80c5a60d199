#include "server/proxy/proxy_call.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/grpc.h"
#include "server/limits/clock.h"
#include "server/proxy/call_time.h"
#include "server/proxy/data_plane.h"
#include "server/proxy/deadline_budget.h"
#include "server/proxy/header_limits.h"
#include "server/proxy/metadata_filter.h"
#include "server/proxy/rejection.h"
#include "server/proxy/worker.h"

namespace sluice {
namespace {

// Messages counted locally before they are added to the shared counters.
constexpr int kMessageFlushBatch = 64;

// How long the status may take to reach the client after Sluice decided to
// end the call (idle timeout, drain, a limit) before the downstream call is
// cancelled: a status not stuck behind a client that does not read arrives
// in far less, and keeps its code and sluice-reason.
constexpr absl::Duration kStuckWriteGrace = absl::Milliseconds(250);

// The longest a call waiting for a connecting upstream waits before it
// looks again (a cancelled or drained call outlives its end by at most
// this much); a state change ends the wait at once.
constexpr absl::Duration kConnectWatchSlice = absl::Milliseconds(100);

std::string_view View(const grpc::string_ref& s) {
  return std::string_view(s.data(), s.size());
}

// Calls add(key, value) for each upstream header or trailer in `md` that
// may go on to the client (what gRPC would refuse to send is dropped).
template <typename Add>
void ForEachForwardableResponseHeader(
    const std::multimap<grpc::string_ref, grpc::string_ref>& md, Add add) {
  for (const auto& [key, value] : md) {
    const std::string_view k = View(key), v = View(value);
    if (IsForwardableResponseHeader(k, v)) add(std::string(k), std::string(v));
  }
}

}  // namespace

void ProxyCall::Accept(Worker* worker) {
  auto* call = new ProxyCall(worker);
  call->sctx_.AsyncNotifyWhenDone(&call->done_tag_);
  call->outstanding_ = 1;  // the accept; the done tag counts once accepted
  worker->plane()->service()->RequestCall(&call->sctx_, &call->sstream_,
                                          worker->cq(), worker->cq(),
                                          &call->accept_tag_);
}

ProxyCall::ProxyCall(Worker* worker)
    : worker_(worker), admission_(this, worker->cq()) {
  worker_->plane()->CallObjectCreated();
}

ProxyCall::~ProxyCall() {
  DataPlane* plane = worker_->plane();
  if (early_cancel_charged_ && !early_cancelled_ && plane->early_cancels_on()) {
    // Charged up front (EarlyCancelBudgetSpent) for a call that turned out
    // not to be an early cancel: its token goes back, so a busy address
    // that once spent half its budget is not throttled by its good calls.
    plane->early_cancels().Refund(PeerAddress());
  }
  if (phase_ != Phase::kAccepting) {
    worker_->Unlink(this);
    plane->CallFreed();
    if (upstream_ != Upstream::kNone && upstream_ != Upstream::kFinished &&
        series_.client != nullptr) {
      // Sluice cancelled the upstream call (the client went away, or the
      // call was aborted) before its status came: count it as cancelled.
      series_.client->handled(grpc::StatusCode::CANCELLED).Increment();
      series_.client->handling_seconds().Observe(
          absl::ToDoubleSeconds(absl::Now() - upstream_started_at_));
    }
    if (stats_ != nullptr) {
      stats_->open_calls->Decrement();
      stats_->handling_seconds->Observe(
          absl::ToDoubleSeconds(absl::Now() - accepted_at_));
    }
  }
  plane->CallObjectDestroyed();
}

void ProxyCall::Release() {
  if (--outstanding_ == 0 &&
      (phase_ == Phase::kAccepting || (finishing() && done_seen_))) {
    delete this;
  }
}

void ProxyCall::OnAccepted(bool ok) {
  if (!ok) {  // the server is shutting down; no done tag will come
    Release();
    return;
  }
  DataPlane* plane = worker_->plane();
  if (plane->accepting()) ProxyCall::Accept(worker_);  // keep accepting
  phase_ = Phase::kAdmitting;
  accepted_at_ = absl::Now();
  last_activity_ = MonoNow();
  ++outstanding_;  // the done tag
  worker_->Link(this);
  plane->CallAccepted();

  snap_ = plane->snapshot(worker_->index());
  window_ = snap_->config->stream_window();
  const std::string& method = sctx_.method();
  int route = snap_->router.Match(method);
  const int upstream =
      route < 0 ? -1 : snap_->config->routes()[route].upstream_index;
  series_ = snap_->methods.Find(method, upstream);
  // The descriptor sets' shape, else the upstream's reflection's, unless
  // the method broke it once (method_shapes.h).
  const MethodShape shape =
      snap_->pool->ShapeFor(upstream, worker_->index(), method,
                            {series_.unary, series_.single_request});
  single_request_ = shape.single_request;
  unary_ = shape.unary;
  // Unary: the read after the response sees the upstream's end (or a
  // second response: OnUpstreamRead), whatever the window.
  if (unary_) window_ = std::max(window_, 2);
  series_.server->started().Increment();
  if (route < 0) {
    stats_ = &snap_->no_route_stats;
    stats_->open_calls->Increment();
    Abort(grpc::StatusCode::UNIMPLEMENTED,
          absl::StrCat("sluice: no route for method ", method),
          Reason::kNoRoute);
  } else {
    route_index_ = route;
    route_ = &snap_->config->routes()[route];
    stats_ = &snap_->route_stats[route];
    stats_->open_calls->Increment();
    // Header limits at the edge: before admission and the upstream call,
    // so an oversized header block never reaches a shared upstream
    // connection (gRPC 1.51 would break it for every call on it).
    std::optional<std::string> too_large = CheckRequestHeaders(
        MeasureRequestHeaders(sctx_.client_metadata(), method),
        snap_->config->max_header_list_bytes(),
        snap_->config->max_header_count());
    if (too_large) {
      Abort(grpc::StatusCode::RESOURCE_EXHAUSTED, *too_large,
            Reason::kHeaderTooLarge);
    } else if (plane->draining()) {
      Abort(grpc::StatusCode::UNAVAILABLE, "sluice: draining",
            Reason::kDraining);
    } else if (plane->memory_guard().overloaded()) {
      // Before admission and the upstream: a refused call costs little.
      Abort(grpc::StatusCode::RESOURCE_EXHAUSTED,
            absl::StrCat("sluice: overloaded (memory at its ceiling, ",
                         plane->memory_guard().limit() >> 20, " MiB)"),
            Reason::kOverloaded);
    } else if (EarlyCancelBudgetSpent()) {
      // Flood defence (rapid reset): this address cancelled too many calls
      // before their response; refused before admission and upstream.
      Abort(MakeRejection(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "sluice: too many calls from this address were "
                          "cancelled before their response",
                          absl::Seconds(1)),
            Reason::kEarlyCancels);
    } else {
      admission_.Start(snap_.get(), route, ClientDeadline(sctx_));
    }
  }
  Release();
}

// ---- admission (admission.cc takes the limits) ----

std::string ProxyCall::PeerAddress() const {
  const std::string peer = sctx_.peer();
  return std::string(PeerAddressOnly(peer));
}

std::string ProxyCall::LimitKey(const std::vector<std::string>& parts,
                                const std::string& default_key) const {
  std::string key;
  for (const std::string& part : parts) {
    if (!key.empty()) key.push_back('|');
    if (part == "peer") {
      key.append(PeerAddress());
    } else if (part == "method") {
      key.append(sctx_.method());
    } else {  // "header:<name>"
      const std::string name = part.substr(7);
      auto it = sctx_.client_metadata().find(name);
      if (it == sctx_.client_metadata().end()) return default_key;
      key.append(it->second.data(), it->second.size());
    }
  }
  return key;
}

void ProxyCall::Refused(const grpc::Status& status, Reason reason, int limit,
                        bool rate_headers) {
  if (ended()) return;
  if (rate_headers) admission_.AddRateHeaders(sctx_, /*trailers=*/true);
  Abort(status, reason, limit);
}

// ---- the upstream call ----

void ProxyCall::StartUpstream() {
  if (ended()) return;
  phase_ = Phase::kConnecting;
  const absl::Time now = absl::Now();
  // A wait for the upstream to connect is part of the upstream's budget:
  // the budget stays the one computed when the wait began.
  Budget budget = ComputeBudget(connect_wait_started_.value_or(now),
                                ClientDeadline(sctx_), route_->deadline);
  if (!budget.ok) {
    Abort(grpc::StatusCode::DEADLINE_EXCEEDED,
          absl::StrCat("sluice: deadline budget too small for route ",
                       route_->name),
          Reason::kDeadlineBudget);
    return;
  }
  const UpstreamPool::Choice pick = snap_->pool->Pick(route_->upstream_index);
  if (pick.state != GRPC_CHANNEL_READY &&
      WaitForUpstream(now, budget.upstream_deadline, pick)) {
    return;  // OnUpstreamConnectivity comes back here, or the call ended
  }
  if (budget.upstream_deadline != absl::InfiniteFuture()) {
    uctx_.set_deadline(absl::ToChronoTime(budget.upstream_deadline));
  }
  const std::string& fwd = snap_->config->forwarded_for_header();
  std::string forwarded;
  for (const auto& [key, value] : sctx_.client_metadata()) {
    std::string_view k = View(key);
    // Also drops what gRPC would refuse to send (it aborts the process).
    if (!IsForwardableRequestHeader(k, View(value))) continue;
    if (!fwd.empty() && k == fwd) {
      absl::StrAppend(&forwarded, forwarded.empty() ? "" : ", ",
                      std::string(View(value)));
      continue;
    }
    uctx_.AddMetadata(std::string(k), std::string(View(value)));
  }
  if (!fwd.empty()) {
    absl::StrAppend(&forwarded, forwarded.empty() ? "" : ", ", PeerAddress());
    uctx_.AddMetadata(fwd, forwarded);
  }

  if (admission_.has_rate_headers()) {
    admission_.AddRateHeaders(sctx_, /*trailers=*/false);
  }
  const auto& states = snap_->limits[route_index_];
  for (size_t i = 0; i < route_->limits.size(); ++i) {
    const LimitSettings& limit = route_->limits[i];
    if (limit.messages_per_second <= 0) continue;
    const int index = static_cast<int>(i);
    u2c_.AddMessageLimit(&limit, states[i].get(), index);
    if (limit.messages_client_to_upstream) {
      c2u_.AddMessageLimit(&limit, states[i].get(), index);
    }
  }

  grpc::GenericStub* stub = pick.stub;
  // One request: its headers wait for it (no batch, no tag) and leave
  // with it and the half-close.
  if (single_request_) uctx_.set_initial_metadata_corked(true);
  ustream_ = stub->PrepareCall(&uctx_, sctx_.method(), worker_->cq());
  phase_ = Phase::kForwarding;
  upstream_ = Upstream::kOpen;
  upstream_started_at_ = now;
  admission_.StartUpstream();
  if (series_.client != nullptr) series_.client->started().Increment();
  if (single_request_) {
    ustream_->StartCall(nullptr);
  } else {
    upstream_start_pending_ = true;
    ++outstanding_;
    ustream_->StartCall(&ustart_tag_);
    OnUpstreamHeadersSent();
  }
  AdvanceClientToUpstream();
  if (route_->deadline.stream_idle_timeout > absl::ZeroDuration() && !ended()) {
    ArmIdleAlarm(MonoNow() + route_->deadline.stream_idle_timeout);
  }
}

bool ProxyCall::WaitForUpstream(absl::Time now, absl::Time deadline,
                                const UpstreamPool::Choice& pick) {
  const UpstreamSettings& u =
      snap_->config->upstreams()[route_->upstream_index];
  if (u.connect_wait <= absl::ZeroDuration()) return false;  // fail fast
  const absl::Time mono_now = MonoNow();
  if (!connect_wait_started_) {
    connect_wait_started_ = now;
    connect_wait_started_mono_ = mono_now;
  }
  const absl::Duration waited = mono_now - connect_wait_started_mono_;
  const absl::Duration wait_left = u.connect_wait - waited;
  // Leave the upstream call at least min_budget of its (wall-clock)
  // deadline.
  const absl::Duration budget_left =
      deadline - route_->deadline.min_budget - now;
  if (wait_left <= absl::ZeroDuration() ||
      budget_left <= absl::ZeroDuration()) {
    const std::string detail =
        absl::StrCat("no connection, channel ", ConnectivityName(pick.state));
    if (budget_left < wait_left) {
      // The call's own deadline ended the wait: a deadline, as gRPC's
      // wait_for_ready would report it, with Sluice's reason.
      AbortUpstreamUnavailable(grpc::StatusCode::DEADLINE_EXCEEDED,
                               "not connected before the deadline", detail);
    } else {
      AbortUpstreamUnavailable(
          grpc::StatusCode::UNAVAILABLE,
          absl::StrCat(
              "not connected within ",
              absl::FormatDuration(absl::Trunc(waited, absl::Milliseconds(1)))),
          detail);
    }
    return true;
  }
  // A state watch cannot be cancelled: watch in short slices, so a call
  // that ends meanwhile (cancelled, drained) is gone within one slice.
  ++outstanding_;
  pick.channel->NotifyOnStateChange(
      pick.state,
      AlarmAt(mono_now +
              std::min({wait_left, budget_left, kConnectWatchSlice})),
      worker_->cq(), &connect_tag_);
  return true;
}

void ProxyCall::OnUpstreamConnectivity(bool /*ok*/) {
  // Changed state (maybe READY, maybe another failure) or the wait's end:
  // StartUpstream looks again, with the budget that is left.
  if (!ended()) StartUpstream();
  Release();
}

void ProxyCall::AbortUpstreamUnavailable(grpc::StatusCode code,
                                         const std::string& why,
                                         const std::string& detail) {
  const UpstreamSettings& u =
      snap_->config->upstreams()[route_->upstream_index];
  LogUpstreamUnavailable(u.name, u.target, detail);
  Abort(
      code,
      absl::StrCat("sluice: upstream \"", u.name, "\" unavailable (", why, ")"),
      Reason::kUpstreamUnavailable);
}

void ProxyCall::OnUpstreamHeadersSent() {
  if (unary_) {
    upstream_readable_ = true;  // the response's headers come with it
    AdvanceUpstreamToClient();
  } else {
    ++outstanding_;
    ustream_->ReadInitialMetadata(&uinit_tag_);
  }
}

void ProxyCall::OnUpstreamStarted(bool /*ok*/) {
  // A failed start shows up as failed reads/writes and in Finish's status.
  upstream_start_pending_ = false;
  AdvanceClientToUpstream();
  Release();
}

void ProxyCall::ForwardUpstreamHeaders() {
  ForEachForwardableResponseHeader(
      uctx_.GetServerInitialMetadata(), [this](std::string k, std::string v) {
        sctx_.AddInitialMetadata(std::move(k), std::move(v));
      });
}

void ProxyCall::OnUpstreamInitialMetadata(bool ok) {
  upstream_readable_ = true;
  if (ok && !ended()) {
    ForwardUpstreamHeaders();
    headers_ = Headers::kSending;
    ++outstanding_;
    sstream_.SendInitialMetadata(&sinit_tag_);
  }
  AdvanceUpstreamToClient();
  Release();
}

void ProxyCall::OnDownstreamInitialMetadataSent(bool ok) {
  headers_ = Headers::kSent;
  if (!ok) {
    // The client is gone: as a failed write (OnClientWritten), drop what
    // waits for it and stop the upstream.
    u2c_.Fail();
    if (upstream_ == Upstream::kOpen || upstream_ == Upstream::kFinishPosted) {
      uctx_.TryCancel();
    }
  }
  AdvanceUpstreamToClient();
  Release();
}

bool ProxyCall::QueueRead(Pump& p) {
  if (idle_armed_) last_activity_ = MonoNow();
  if (std::optional<Pump::Refusal> refusal = p.Queue(route_->name)) {
    Abort(refusal->status, Reason::kStreamRate, refusal->limit);
    return false;
  }
  return true;
}

// ---- client -> upstream ----

void ProxyCall::AdvanceClientToUpstream() {
  Pump& p = c2u_;
  if (upstream_ == Upstream::kNone || ended()) return;
  // The read first: a read in flight lets the last message in hand wait
  // for the flush point (pump.h, write coalescing).
  if (p.WantsRead(window_)) {
    const Pump::PaceResult pace = p.Pace(worker_->cq());
    if (pace == Pump::PaceResult::kArmed) ++outstanding_;
    if (pace == Pump::PaceResult::kGo) {
      p.StartRead();
      ++outstanding_;
      if (!client_read_.Start(sctx_.c_call())) {
        // gRPC refused the read (the call is over): as a failed read.
        p.ReadDone();
        --outstanding_;
        OnClientGone();
        return;
      }
    }
  }
  if (!upstream_start_pending_) {
    switch (p.NextWrite()) {
      case Pump::WriteStep::kNone:
        break;
      case Pump::WriteStep::kHold:
        RequestFlush();
        break;
      case Pump::WriteStep::kWrite: {
        grpc::WriteOptions options = p.StartWrite();
        if (single_request_ || (p.src_done() && p.queue_empty())) {
          // The last message: the half-close goes in the same batch (with
          // the corked headers too, for one request). A client's request
          // and half-close usually arrive together, so the hold above lets
          // the half-close's read complete first.
          options.clear_buffer_hint();
          options.set_last_message();
          p.Close();
        }
        ++outstanding_;
        ustream_->Write(p.write_buf(), options, &uwrite_tag_);
        if (single_request_) OnUpstreamHeadersSent();
        break;
      }
    }
  }
  p.NoteBlocked(!p.reading() && !p.src_done() && !p.dst_failed() &&
                !p.WantsRead(window_));
  if (!upstream_start_pending_ && p.ReadyToClose()) {
    p.Close();
    ++outstanding_;
    ustream_->WritesDone(&uwritesdone_tag_);
    if (single_request_) OnUpstreamHeadersSent();
  }
}

void ProxyCall::OnClientRead(bool ok) {
  Pump& p = c2u_;
  p.ReadDone();
  const ClientRead::Result read = client_read_.Outcome(ok);
  if (read == ClientRead::Result::kMessage &&
      client_read_.TakeMessage(p.read_buf())) {
    ++msgs_in_;
    if (++unflushed_msgs_ >= kMessageFlushBatch) FlushMessageCounts();
    bytes_in_ += static_cast<int64_t>(p.read_buf()->Length());
    // One request: never forward past it (its half-close goes with it);
    // one more read checks that the client half-closes after it.
    if (single_request_) {
      p.SourceDone();
      ++outstanding_;
      if (!shape_check_.Start(sctx_.c_call())) --outstanding_;
    }
    if (QueueRead(p)) AdvanceClientToUpstream();
  } else if (read != ClientRead::Result::kHalfClosed ||
             grpc_call_failed_before_recv_message(sctx_.c_call())) {
    // Not a graceful half-close: gRPC refused a message over
    // max_receive_message_bytes and cancelled the call (the read failed),
    // or the client cancelled or vanished (the transport ends a pending
    // read without a message and says so here). Never half-close
    // upstream, which would commit a cut upload; cancel it.
    OnClientGone();
  } else {
    p.SourceDone();  // a graceful half-close: forward it
    AdvanceClientToUpstream();
  }
  Release();
}

void ProxyCall::OnShapeCheckRead(bool ok) {
  // A second request on a one-request method: ignored (as before), and the
  // method falls back for good. A failed read is the client's end, which
  // OnDone sees.
  if (shape_check_.Outcome(ok) == ClientRead::Result::kMessage &&
      route_ != nullptr) {
    snap_->pool->shapes(route_->upstream_index)->Fallback(sctx_.method());
  }
  Release();
}

void ProxyCall::OnUpstreamWritten(bool ok) {
  // A failed write: the upstream call is over; its status comes by Finish.
  c2u_.WriteDone(ok);
  if (ok) {
    ++umsgs_out_;
    // A message delivered is activity too (a slow reader's stream moves).
    if (idle_armed_) last_activity_ = MonoNow();
  }
  AdvanceClientToUpstream();
  Release();
}

void ProxyCall::OnUpstreamWritesDone(bool /*ok*/) { Release(); }

void ProxyCall::OnClientPaceAlarm(bool /*ok*/) {
  c2u_.Paced();
  AdvanceClientToUpstream();
  Release();
}

// ---- upstream -> client ----

void ProxyCall::AdvanceUpstreamToClient() {
  Pump& p = u2c_;
  if (!upstream_readable_ || finishing()) return;
  // The read first: a read in flight lets the last message in hand wait
  // for the flush point (pump.h, write coalescing).
  if (!ended() && p.WantsRead(window_)) {
    // The read after a unary response only brings the end of the call (or
    // a second response: a shape fallback): it carries no message to pace.
    const Pump::PaceResult pace = unary_ && umsgs_in_ >= 1
                                      ? Pump::PaceResult::kGo
                                      : p.Pace(worker_->cq());
    if (pace == Pump::PaceResult::kArmed) ++outstanding_;
    if (pace == Pump::PaceResult::kGo) {
      p.StartRead();
      ++outstanding_;
      ustream_->Read(p.read_buf(), &uread_tag_);
    }
  }
  // Unary: the response is sent with the status (MaybeFinishDownstream).
  if (!unary_ && !ended() && headers_ == Headers::kSent) {
    switch (p.NextWrite()) {
      case Pump::WriteStep::kNone:
        break;
      case Pump::WriteStep::kHold:
        RequestFlush();
        break;
      case Pump::WriteStep::kWrite: {
        const grpc::WriteOptions options = p.StartWrite();
        ++outstanding_;
        sstream_.Write(p.write_buf(), options, &cwrite_tag_);
        break;
      }
    }
  }
  p.NoteBlocked(!ended() && !p.reading() && !p.src_done() && !p.dst_failed() &&
                !p.WantsRead(window_));
  if ((p.src_done() || ended()) && upstream_ == Upstream::kOpen &&
      !p.reading()) {
    upstream_ = Upstream::kFinishPosted;
    ++outstanding_;
    ustream_->Finish(&upstream_status_, &ufinish_tag_);
  }
  MaybeFinishDownstream();
}

void ProxyCall::RequestFlush() {
  if (flush_requested_) return;
  flush_requested_ = true;
  ++outstanding_;  // the worker holds the call until OnFlush
  worker_->RequestFlush(this);
}

void ProxyCall::DropFlush() {
  flush_requested_ = false;
  Release();
}

void ProxyCall::OnFlush() {
  flush_requested_ = false;
  u2c_.FlushDue();
  c2u_.FlushDue();
  AdvanceUpstreamToClient();
  AdvanceClientToUpstream();
  Release();
}

void ProxyCall::OnUpstreamRead(bool ok) {
  Pump& p = u2c_;
  p.ReadDone();
  if (ok && !ended()) {
    ++umsgs_in_;
    if (unary_ && umsgs_in_ > 1) {
      // A second response on a unary method: the method falls back for
      // good, and this call goes on as a server stream (headers now).
      snap_->pool->shapes(route_->upstream_index)->Fallback(sctx_.method());
      unary_ = false;
      ForwardUpstreamHeaders();
      headers_ = Headers::kSending;
      ++outstanding_;
      sstream_.SendInitialMetadata(&sinit_tag_);
    }
    if (!QueueRead(p)) {
      Release();
      return;
    }
  } else {
    p.SourceDone();  // the upstream finished (or failed): get its status
  }
  AdvanceUpstreamToClient();
  Release();
}

void ProxyCall::OnClientWritten(bool ok) {
  const int64_t bytes = u2c_.WriteDone(ok);
  if (ok) {
    if (idle_armed_) last_activity_ = MonoNow();
    ++msgs_out_;
    if (++unflushed_msgs_ >= kMessageFlushBatch) FlushMessageCounts();
    bytes_out_ += bytes;
  } else {
    // The client is gone: stop the upstream too.
    if (upstream_ != Upstream::kNone && upstream_ != Upstream::kFinished) {
      uctx_.TryCancel();
    }
  }
  AdvanceUpstreamToClient();
  Release();
}

void ProxyCall::OnUpstreamPaceAlarm(bool /*ok*/) {
  u2c_.Paced();
  AdvanceUpstreamToClient();
  Release();
}

void ProxyCall::OnUpstreamFinished(bool /*ok*/) {
  upstream_ = Upstream::kFinished;
  if (series_.client != nullptr) {
    series_.client->handled(upstream_status_.error_code()).Increment();
    series_.client->handling_seconds().Observe(
        absl::ToDoubleSeconds(absl::Now() - upstream_started_at_));
  }
  u2c_.SourceDone();
  {
    // Adaptive limits learn from calls of one request and one response;
    // a stream only stops counting.
    const grpc::StatusCode code = upstream_status_.error_code();
    const bool sample =
        !ended() && code != grpc::StatusCode::CANCELLED &&
        (unary_ || (msgs_in_ == 1 && umsgs_in_ <= 1 && c2u_.src_done()));
    admission_.EndUpstream(sample,
                           code == grpc::StatusCode::DEADLINE_EXCEEDED ||
                               code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                               code == grpc::StatusCode::UNAVAILABLE);
  }
  // A status the upstream sent passes untouched; one Sluice's own channel
  // made (no answer from the upstream at all) is Sluice's, with a reason.
  // Responses already read from the upstream still go to the client
  // first, like those before an upstream's own error.
  if (upstream_status_.error_code() == grpc::StatusCode::UNAVAILABLE &&
      !ended() && !SentByUpstream(uctx_, upstream_status_)) {
    const UpstreamSettings& u =
        snap_->config->upstreams()[route_->upstream_index];
    LogUpstreamUnavailable(u.name, u.target, upstream_status_.error_message());
    if (IsKeepaliveTimeout(upstream_status_)) {
      snap_->pool->NoteKeepaliveFailure(route_->upstream_index);
    }
    upstream_status_ =
        grpc::Status(grpc::StatusCode::UNAVAILABLE,
                     absl::StrCat("sluice: upstream \"", u.name,
                                  "\" unavailable (its connection failed)"));
    NoteRejected(Reason::kUpstreamUnavailable, /*limit=*/-1);
  }
  MaybeFinishDownstream();
  Release();
}

// ---- the end ----

void ProxyCall::Abort(grpc::StatusCode code, const std::string& message,
                      Reason reason, int limit) {
  Abort(grpc::Status(code, message), reason, limit);
}

void ProxyCall::NoteRejected(Reason reason, int limit) {
  reason_ = reason;
  prometheus::Counter* rejected =
      limit >= 0 ? stats_->limit_rejected[limit][static_cast<int>(reason)]
                 : stats_->rejected[static_cast<int>(reason)];
  if (rejected != nullptr) rejected->Increment();
  sctx_.AddTrailingMetadata(std::string(kReasonTrailer),
                            std::string(ReasonName(reason)));
}

void ProxyCall::Abort(const grpc::Status& status, Reason reason, int limit) {
  if (ended()) return;
  phase_ = Phase::kEnding;
  // The call is over for admission now, even if its status has to wait for
  // a write stuck behind a client that does not read.
  admission_.Stop();
  // After a channel-made status was rewritten (OnUpstreamFinished), that
  // status and its one sluice-reason stand; a later end (drain, idle) only
  // ends the call.
  const bool rewritten = reason_.has_value();
  local_status_ = rewritten ? upstream_status_ : status;
  if (!rewritten) NoteRejected(reason, limit);
  if (upstream_ == Upstream::kOpen || upstream_ == Upstream::kFinishPosted) {
    uctx_.TryCancel();
  }
  u2c_.Discard();
  c2u_.Discard();
  MaybeFinishDownstream();
  // The status may wait behind messages a client that does not read never
  // takes: the write in flight, or hinted writes gRPC completed but could
  // not send (pump.h). If it has not reached the client by the grace
  // period, end the call anyway.
  if ((u2c_.writing() || headers_ == Headers::kSent) && !stuck_armed_) {
    stuck_armed_ = true;
    ++outstanding_;
    stuck_alarm_.Set(worker_->cq(), AlarmAt(MonoNow() + kStuckWriteGrace),
                     &stuck_tag_);
  }
}

void ProxyCall::OnStuckWriteAlarm(bool ok) {
  stuck_armed_ = false;
  if (ok && !downstream_finished_) {
    // The write or the Finish then completes with ok == false, and the
    // call finishes; the client, not reading, sees its stream reset.
    sctx_.TryCancel();
  }
  Release();
}

void ProxyCall::ForceDrain() {
  if (phase_ == Phase::kAccepting || ended()) return;
  Abort(grpc::StatusCode::UNAVAILABLE,
        "sluice: draining; the call did not finish within drain_timeout",
        Reason::kDraining);
}

void ProxyCall::MaybeFinishDownstream() {
  if (finishing() || headers_ == Headers::kSending || u2c_.writing()) return;
  grpc::Status status;
  if (local_status_) {
    status = *local_status_;
  } else if (upstream_ == Upstream::kFinished &&
             (unary_ || u2c_.queue_empty() || u2c_.dst_failed())) {
    if (unary_) ForwardUpstreamHeaders();  // nothing went to the client yet
    ForEachForwardableResponseHeader(uctx_.GetServerTrailingMetadata(),
                                     [this](std::string k, std::string v) {
                                       sctx_.AddTrailingMetadata(std::move(k),
                                                                 std::move(v));
                                     });
    status = upstream_status_;
  } else {
    return;
  }
  phase_ = Phase::kFinishing;
  final_code_ = status.error_code();
  admission_.Stop();  // each permit goes back once: here, in Abort or in ~
  if (idle_armed_) idle_alarm_.Cancel();
  u2c_.CancelPace();
  c2u_.CancelPace();
  ++outstanding_;
  // Unary: headers, response and status in one batch (WriteAndFinish takes
  // an OK status only; a client ignores a response sent with an error).
  if (unary_ && !local_status_ && status.ok() && !u2c_.queue_empty() &&
      !u2c_.dst_failed()) {
    reply_in_finish_ = true;
    sstream_.WriteAndFinish(u2c_.TakeReplyForFinish(), grpc::WriteOptions(),
                            status, &sfinish_tag_);
  } else {
    sstream_.Finish(status, &sfinish_tag_);
  }
}

void ProxyCall::OnDownstreamFinished(bool ok) {
  downstream_finished_ = true;
  if (stuck_armed_) stuck_alarm_.Cancel();
  if (reply_in_finish_ && ok) {
    ++msgs_out_;
    bytes_out_ += static_cast<int64_t>(u2c_.write_buf().Length());
  }
  int code = static_cast<int>(final_code_);
  if (code >= 0 && code < kGrpcCodes) stats_->handled[code]->Increment();
  series_.server->handled(code).Increment();
  const absl::Duration duration = absl::Now() - accepted_at_;
  series_.server->handling_seconds().Observe(absl::ToDoubleSeconds(duration));
  c2u_.NoteBlocked(false);
  u2c_.NoteBlocked(false);
  FlushMessageCounts();
  WriteAccessLog(duration);
  Release();
}

void ProxyCall::OnDone(bool /*ok*/) {
  done_seen_ = true;
  if (sctx_.IsCancelled()) OnClientGone();
  Release();
}

bool ProxyCall::EarlyCancelBudgetSpent() {
  DataPlane* plane = worker_->plane();
  const int64_t now = RealClock::Get().NowNanos();
  if (!plane->MaybeEarlyCancels(now)) return false;
  const std::string address = PeerAddress();
  const std::optional<double> tokens =
      plane->early_cancels().Tokens(address, now);
  if (!tokens) return false;  // a full budget
  if (*tokens < 1) return true;
  // Under a flood gRPC delivers a reset's done tag many accepts late, so
  // charging only then would let a whole wave through: an address that
  // spent half its budget pays for each new call up front.
  if (*tokens < static_cast<double>(plane->early_cancel_burst()) / 2) {
    plane->ChargeEarlyCancel(address, now);
    early_cancel_charged_ = true;
  }
  return false;
}

bool ProxyCall::NearDeadline() const {
  const absl::Time deadline = ClientDeadline(sctx_);
  if (deadline == absl::InfiniteFuture()) return false;
  // Sluice's copy of the deadline runs from when the call arrived, a little
  // after the client's own clock started it: a client that gives up at its
  // deadline resets the stream just before Sluice's copy ends. Within
  // max(100 ms, a tenth of the call's time) of it, a cancel is the deadline.
  const absl::Duration margin =
      std::max(absl::Milliseconds(100), (deadline - accepted_at_) / 10);
  return absl::Now() >= deadline - margin;
}

void ProxyCall::OnClientGone() {
  if (counted_cancel_) return;
  counted_cancel_ = true;
  // An early cancel: nothing of the response reached the client and its
  // deadline (if any) was still ahead; charged to its address. A call
  // refused for early cancels and reset anyway counts too, so a flood
  // keeps its budget spent for as long as it goes on.
  if (phase_ != Phase::kAccepting && headers_ != Headers::kSent &&
      (!reason_ || *reason_ == Reason::kEarlyCancels) && !NearDeadline()) {
    early_cancelled_ = true;
    if (!early_cancel_charged_) {
      early_cancel_charged_ = true;
      worker_->plane()->ChargeEarlyCancel(PeerAddress(),
                                          RealClock::Get().NowNanos());
    }
    // Refused because its address spent its budget, and reset anyway:
    // this connection floods. gRPC would go on creating a call for each of
    // its resets; closing it bounds what the flood costs.
    if (reason_ == Reason::kEarlyCancels) {
      worker_->plane()->CloseFloodingConnection(sctx_.peer());
    }
  }
  admission_.Stop();
  if (stats_ != nullptr && !finishing()) stats_->client_cancels->Increment();
  // The client cancelled or vanished: cancel the upstream call at once.
  if (upstream_ == Upstream::kOpen || upstream_ == Upstream::kFinishPosted) {
    uctx_.TryCancel();
  }
  u2c_.Fail();
  c2u_.SourceDone();
  if (!ended()) {
    // Nobody will read the status, but Finish frees the server call.
    phase_ = Phase::kEnding;
    local_status_ =
        grpc::Status(grpc::StatusCode::CANCELLED, "sluice: client cancelled");
  }
  MaybeFinishDownstream();
}

void ProxyCall::FlushMessageCounts() {
  // The counters are shared by all workers: add in batches, not per
  // message, so busy streams do not bounce their cache line between cores.
  if (msgs_in_ > flushed_in_) {
    const double n = static_cast<double>(msgs_in_ - flushed_in_);
    stats_->msg_received->Increment(n);
    series_.server->msg_received().Increment(n);
    flushed_in_ = msgs_in_;
  }
  if (msgs_out_ > flushed_out_) {
    const double n = static_cast<double>(msgs_out_ - flushed_out_);
    stats_->msg_sent->Increment(n);
    series_.server->msg_sent().Increment(n);
    flushed_out_ = msgs_out_;
  }
  if (series_.client != nullptr) {
    if (umsgs_out_ > uflushed_out_) {
      series_.client->msg_sent().Increment(
          static_cast<double>(umsgs_out_ - uflushed_out_));
      uflushed_out_ = umsgs_out_;
    }
    if (umsgs_in_ > uflushed_in_) {
      series_.client->msg_received().Increment(
          static_cast<double>(umsgs_in_ - uflushed_in_));
      uflushed_in_ = umsgs_in_;
    }
  }
  const std::pair<Pump*, Direction> pumps[] = {{&c2u_, kToUpstream},
                                               {&u2c_, kToClient}};
  for (auto [p, direction] : pumps) {
    if (const int64_t paced = p->TakePacedNanos(); paced > 0) {
      stats_->paced_seconds[direction]->Increment(paced * 1e-9);
    }
    if (const int64_t blocked = p->TakeBlockedNanos(); blocked > 0) {
      stats_->backpressure_seconds[direction]->Increment(blocked * 1e-9);
    }
  }
  unflushed_msgs_ = 0;
}

void ProxyCall::WriteAccessLog(absl::Duration duration) {
  if (snap_ == nullptr || snap_->access_log == nullptr) return;
  const AccessLogSettings& settings = snap_->config->access_log();
  if (!AccessLog::Sample(settings.sample_rate)) return;
  AccessRecord r;
  r.start = accepted_at_;
  r.peer = PeerAddress();
  r.method = sctx_.method();
  if (route_ != nullptr) {
    r.route = route_->name;
    if (upstream_ != Upstream::kNone) r.upstream = route_->upstream;
  }
  r.grpc_code = static_cast<int>(final_code_);
  if (reason_) r.reason = ReasonName(*reason_);
  r.duration = duration;
  r.queue_wait = admission_.queue_wait();
  r.msgs_in = msgs_in_;
  r.msgs_out = msgs_out_;
  r.bytes_in = bytes_in_;
  r.bytes_out = bytes_out_;
  r.metadata = &sctx_.client_metadata();
  snap_->access_log->Write(r, settings);
}

// ---- idle timeout ----

void ProxyCall::ArmIdleAlarm(absl::Time at) {
  idle_armed_ = true;
  ++outstanding_;
  idle_alarm_.Set(worker_->cq(), AlarmAt(at), &idle_tag_);
}

void ProxyCall::OnIdleAlarm(bool ok) {
  idle_armed_ = false;
  if (ok && !ended()) {
    const absl::Duration timeout = route_->deadline.stream_idle_timeout;
    const absl::Time now = MonoNow();
    if (now - last_activity_ >= timeout) {
      Abort(grpc::StatusCode::DEADLINE_EXCEEDED,
            absl::StrCat("sluice: stream idle for ",
                         absl::FormatDuration(timeout)),
            Reason::kIdleTimeout);
    } else {
      ArmIdleAlarm(last_activity_ + timeout);
    }
  }
  Release();
}

}  // namespace sluice
