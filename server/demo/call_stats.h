// Thread-safe per-method call counters for the demo upstream's services.
#ifndef SLUICE_SERVER_DEMO_CALL_STATS_H_
#define SLUICE_SERVER_DEMO_CALL_STATS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/demo/call_record.h"

namespace sluice::demo {

// Counters of one method. A plain value; CallStats hands out copies.
struct MethodStats {
  int64_t started = 0;    // the handler ran
  int64_t finished = 0;   // OnDone ran: the call is over, its reactor freed
  int64_t cancelled = 0;  // OnCancel ran: client/proxy cancel, deadline,
                          // or server shutdown (not a non-OK status we sent)
  int64_t messages_written = 0;  // stream messages whose write completed

  int64_t in_flight() const { return started - finished; }
};

// Counters and the last CallRecord for a fixed list of methods of one
// service. Owned by the service object (TestService, TickerService) and
// dies with it. Reactors on gRPC's callback threads record into it; tests on
// any thread read it. One absl::Mutex guards everything.
class CallStats {
 public:
  // `service` is the full service name ("grpc.testing.TestService"),
  // `methods` its short method names; a method's index is its position.
  CallStats(std::string service, std::vector<std::string> methods);

  CallStats(const CallStats&) = delete;
  CallStats& operator=(const CallStats&) = delete;

  // The index of `method`, given as a short name ("UnaryCall") or a full
  // one ("/grpc.testing.TestService/UnaryCall"); -1 if unknown.
  int IndexOf(absl::string_view method) const;

  // Recording, called by reactors. `method` is an index from the list.
  void RecordStart(int method, CallRecord record);
  void RecordCancel(int method);
  void RecordDone(int method);
  void RecordWrite(int method);

  // Reading. Unknown names read as zero / nullopt.
  MethodStats Get(absl::string_view method) const;
  MethodStats Total() const;
  std::optional<CallRecord> LastCall(absl::string_view method) const;
  std::optional<CallRecord> LastCall() const;  // of any method

  // Blocks until `pred` holds for `method`'s counters (the empty name means
  // the total over all methods) or `timeout` passes; returns whether it
  // holds. `pred` runs under the lock: it must only read its argument.
  bool Await(absl::string_view method,
             absl::FunctionRef<bool(const MethodStats&)> pred,
             absl::Duration timeout) const;

 private:
  MethodStats TotalLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const std::string prefix_;  // "/<service>/"
  const std::vector<std::string> methods_;

  mutable absl::Mutex mu_;
  std::vector<MethodStats> stats_ ABSL_GUARDED_BY(mu_);
  std::vector<std::optional<CallRecord>> last_ ABSL_GUARDED_BY(mu_);
  int last_method_ ABSL_GUARDED_BY(mu_) = -1;
};

}  // namespace sluice::demo

#endif  // SLUICE_SERVER_DEMO_CALL_STATS_H_
