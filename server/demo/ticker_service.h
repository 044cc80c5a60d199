// sluice.demo.v1.Ticker for the demo upstream, on gRPC's callback API.
#ifndef SLUICE_SERVER_DEMO_TICKER_SERVICE_H_
#define SLUICE_SERVER_DEMO_TICKER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <optional>

#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "server/demo/call_record.h"
#include "server/demo/call_stats.h"
#include "sluice/demo/v1/ticker.grpc.pb.h"

namespace sluice::demo {

// Ticker.Subscribe: sends initial metadata at once, then `count` ticks
// (0: until cancelled), the first one `interval_ms` after the call starts
// and then one every `interval_ms` (0: as fast as flow control allows),
// each with `payload_bytes` zero bytes (at most 64 MiB), seq from 1 and the
// upstream's wall clock in unix_micros, and the number of Subscribe calls
// active now and at most so far (streams_active, max_streams_active: a
// call is active from its start until the upstream calls Finish, so a
// proxy's concurrency limit can be checked from what the upstream saw).
// Then OK.
//
// Pacing is at a fixed rate without catch-up: a tick delayed by
// backpressure is sent as soon as its write may start, and the next one is
// due one interval after it. The next write starts only after OnWriteDone;
// waits are grpc::Alarm callbacks, so an idle stream holds no thread. A
// cancelled stream stops its alarm and finishes at once.
//
// Ownership and threads: owned by its creator (DemoUpstream), registered
// with one grpc::Server, and must outlive that server's Shutdown/Wait.
// Reactors run on gRPC's callback threads; the observability accessors are
// thread-safe and may be called from any thread.
class TickerService final : public sluice::demo::v1::Ticker::CallbackService {
 public:
  TickerService();
  TickerService(const TickerService&) = delete;
  TickerService& operator=(const TickerService&) = delete;
  ~TickerService() override;

  grpc::ServerWriteReactor<sluice::demo::v1::Tick>* Subscribe(
      grpc::CallbackServerContext* context,
      const sluice::demo::v1::SubscribeRequest* request) override;

  // Observability.
  int64_t MessagesWritten() const;  // ticks whose write completed
  int64_t StreamsStarted() const;
  int64_t StreamsOpen() const;       // started and not yet finished (OnDone)
  int64_t StreamsCancelled() const;  // OnCancel ran
  int64_t StreamsFinished() const;
  // Deadline, peer and client metadata of the last Subscribe call.
  std::optional<CallRecord> LastCall() const;
  // Block until the counter is at least `n` or `timeout` passes; return
  // whether it is. For tests and benchmarks: no sleeping, no polling.
  bool WaitForStreamsOpen(int64_t n, absl::Duration timeout) const;
  bool WaitForStreamsCancelled(int64_t n, absl::Duration timeout) const;
  bool WaitForStreamsFinished(int64_t n, absl::Duration timeout) const;
  bool WaitForMessagesWritten(int64_t n, absl::Duration timeout) const;
  // Everything above, plus Await on any condition of the counters.
  const CallStats& stats() const { return stats_; }
  // Subscribe calls started and not yet finished by the upstream (Finish
  // called), and the most there were at once.
  int64_t StreamsActive() const { return active_.now.load(); }
  int64_t MaxStreamsActive() const { return active_.max.load(); }

  // The active-call count the reactors keep (internal).
  struct Active {
    std::atomic<int64_t> now{0};
    std::atomic<int64_t> max{0};
  };

 private:
  CallStats stats_;
  Active active_;
};

}  // namespace sluice::demo

#endif  // SLUICE_SERVER_DEMO_TICKER_SERVICE_H_
