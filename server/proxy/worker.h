// One data-path worker: a thread draining one ServerCompletionQueue.
//
// Owned by the DataPlane. Every call accepted on this queue lives its whole
// life here (its upstream call is started on the same queue), so a call's
// state needs no lock. The worker keeps an intrusive list of its live calls,
// touched only on its own thread, to finish them at the drain deadline.
#ifndef SLUICE_SERVER_PROXY_WORKER_H_
#define SLUICE_SERVER_PROXY_WORKER_H_

#include <memory>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/server_builder.h"
#include "server/proxy/cq_tag.h"

namespace sluice {

class DataPlane;
class ProxyCall;

class Worker {
 public:
  Worker(int index, DataPlane* plane,
         std::unique_ptr<grpc::ServerCompletionQueue> cq);
  ~Worker();  // joins the thread; the queue must be shut down first

  // Posts the initial accepts and starts the thread.
  void Start(int accepts);
  // From any thread: at `deadline`, finish every call still live on this
  // worker with UNAVAILABLE + `sluice-reason: draining`.
  void ScheduleForceDrain(absl::Time deadline);
  void CancelForceDrain();
  // Shuts the queue down; the thread exits once it is empty.
  void ShutdownQueue();
  void Join();

  int index() const { return index_; }
  DataPlane* plane() const { return plane_; }
  grpc::ServerCompletionQueue* cq() const { return cq_.get(); }

  // Worker thread only.
  void Link(ProxyCall* call);
  void Unlink(ProxyCall* call);
  // Worker thread only: run call->OnFlush() once the queue has no event
  // ready, or after kFlushAfterEvents events or kMaxFlushDelay, whichever
  // comes first (flush consolidation for the pumps' coalesced writes, as
  // Netty's FlushConsolidationHandler). The call holds itself alive until
  // then.
  void RequestFlush(ProxyCall* call);

 private:
  void Run();
  // Runs OnFlush of every call on the flush list (RequestFlush).
  void RunFlushes();
  void OnForceDrain(bool ok);

  const int index_;
  DataPlane* const plane_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
  grpc::Alarm drain_alarm_;
  MemberTag<Worker> drain_tag_{this, &Worker::OnForceDrain};
  ProxyCall* live_head_ = nullptr;  // worker thread only
  // Calls waiting for the queue to run dry (RequestFlush); worker thread.
  std::vector<ProxyCall*> flush_list_;
  std::vector<ProxyCall*> flushing_;
  // Events run since the flush list was last run, and when its first call
  // asked (monotonic): at kFlushAfterEvents or kMaxFlushDelay the list runs
  // even though the queue has not run dry.
  static constexpr int kFlushAfterEvents = 1024;
  static constexpr absl::Duration kMaxFlushDelay = absl::Milliseconds(1);
  int events_since_flush_ = 0;
  absl::Time flush_requested_at_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_WORKER_H_
