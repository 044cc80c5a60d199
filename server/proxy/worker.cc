#include "server/proxy/worker.h"

#include "server/proxy/call_time.h"
#include "server/proxy/data_plane.h"
#include "server/proxy/proxy_call.h"
#include "server/proxy/tsan_edges.h"

namespace sluice {

Worker::Worker(int index, DataPlane* plane,
               std::unique_ptr<grpc::ServerCompletionQueue> cq)
    : index_(index), plane_(plane), cq_(std::move(cq)) {}

Worker::~Worker() { Join(); }

void Worker::Start(int accepts) {
  for (int i = 0; i < accepts; ++i) ProxyCall::Accept(this);
  thread_ = std::thread([this] { Run(); });
}

void Worker::Run() {
  void* tag;
  bool ok;
  const gpr_timespec block = gpr_inf_future(GPR_CLOCK_MONOTONIC);
  const gpr_timespec poll = gpr_time_0(GPR_CLOCK_MONOTONIC);
  for (;;) {
    // With writes held for the flush point, only look whether an event is
    // ready; when none is, the queue ran dry: flush them, then block.
    switch (cq_->AsyncNext(&tag, &ok, flush_list_.empty() ? block : poll)) {
      case grpc::CompletionQueue::SHUTDOWN:
        // Every call's events were delivered: nothing can be written now.
        for (ProxyCall* call : flush_list_) call->DropFlush();
        flush_list_.clear();
        return;
      case grpc::CompletionQueue::TIMEOUT:
        RunFlushes();
        break;
      case grpc::CompletionQueue::GOT_EVENT:
        TsanTakeOver(tag);
        static_cast<CqTag*>(tag)->Proceed(ok);
        // A queue that never runs dry (sustained load) must not hold
        // messages for long: flush after a bounded number of events or
        // time too, whichever comes first.
        if (!flush_list_.empty() &&
            (++events_since_flush_ >= kFlushAfterEvents ||
             MonoNow() - flush_requested_at_ >= kMaxFlushDelay)) {
          RunFlushes();
        }
        break;
    }
  }
}

void Worker::RequestFlush(ProxyCall* call) {
  if (flush_list_.empty()) {
    flush_requested_at_ = MonoNow();
    events_since_flush_ = 0;
  }
  flush_list_.push_back(call);
}

void Worker::RunFlushes() {
  events_since_flush_ = 0;
  flushing_.swap(flush_list_);
  for (ProxyCall* call : flushing_) call->OnFlush();
  flushing_.clear();
}

void Worker::ScheduleForceDrain(absl::Time deadline) {
  drain_alarm_.Set(cq_.get(), absl::ToChronoTime(deadline), &drain_tag_);
}

void Worker::CancelForceDrain() { drain_alarm_.Cancel(); }

void Worker::OnForceDrain(bool ok) {
  if (!ok) return;
  // ForceDrain may free nothing synchronously (each call finishes through
  // the queue), so walking the list while calling it is safe.
  for (ProxyCall* c = live_head_; c != nullptr; c = c->next_live) {
    c->ForceDrain();
  }
}

void Worker::ShutdownQueue() { cq_->Shutdown(); }

void Worker::Join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::Link(ProxyCall* call) {
  call->prev_live = nullptr;
  call->next_live = live_head_;
  if (live_head_ != nullptr) live_head_->prev_live = call;
  live_head_ = call;
}

void Worker::Unlink(ProxyCall* call) {
  if (call->prev_live != nullptr) {
    call->prev_live->next_live = call->next_live;
  } else {
    live_head_ = call->next_live;
  }
  if (call->next_live != nullptr) call->next_live->prev_live = call->prev_live;
  call->prev_live = call->next_live = nullptr;
}

}  // namespace sluice
