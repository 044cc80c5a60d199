// Watches the connectivity of every upstream's channels and reports it to
// the admin health service: service "<upstream name>" is SERVING while at
// least one of its channels is READY (and, for upstreams with a
// health_check, while the upstream's own grpc.health.v1.Health Check last
// answered SERVING); the overall service "" is NOT_SERVING while any
// upstream marked `required` is not serving.
//
// A keepalive timeout (the pool counts those its calls meet) marks the
// upstream frozen: not serving, whatever its channels say (a stopped
// process's kernel still accepts connections), until a Check is answered:
// SERVING with a health_check; without one, any answer but UNAVAILABLE or
// DEADLINE_EXCEEDED (UNIMPLEMENTED too: the process is running), asked
// every second while the upstream is marked.
//
// Owned by the Daemon. Runs one thread of its own with a completion queue
// (channel NotifyOnStateChange, re-armed at most every second, so it also
// nudges idle channels to reconnect; health Checks, one in flight per
// upstream, spaced by an alarm). When a channel becomes READY, the
// upstream's other channels skip the rest of their connect backoff and its
// health is checked at once (not at the next interval). The report
// callback runs on that thread.
// Stop() (or the destructor) waits for the thread, at most ~1 s or one
// check's timeout.
#ifndef SLUICE_SERVER_ADMIN_UPSTREAM_HEALTH_H_
#define SLUICE_SERVER_ADMIN_UPSTREAM_HEALTH_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/alarm.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"

namespace sluice {

class UpstreamHealth {
 public:
  struct Upstream {
    std::string name;
    bool required = false;
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    bool health_check = false;  // also Check its grpc.health.v1.Health
    std::string health_service;
    absl::Duration health_interval = absl::Seconds(5);
    absl::Duration health_timeout = absl::Seconds(1);
    // Keepalive timeouts met by calls to this upstream (UpstreamPool's
    // count; it outlives this watcher). Null: not counted.
    const std::atomic<uint64_t>* keepalive_failures = nullptr;
    // Starts marked frozen (carried over from the watcher it replaces).
    bool frozen = false;
  };
  // (service, serving): "" for the overall status, else an upstream name.
  using Report = std::function<void(const std::string&, bool)>;

  UpstreamHealth(std::vector<Upstream> upstreams, Report report);
  ~UpstreamHealth();
  void Stop();
  // The upstreams marked frozen (see above). Only after Stop().
  std::vector<std::string> FrozenUpstreams() const;

 private:
  // Completion-queue tags: a channel's state watch, or a health probe's
  // Check or its wait for the next one.
  struct Tag {
    enum Kind { kWatch, kCheckDone, kNextCheck } kind;
  };
  struct Watch : Tag {
    int upstream;
    int channel;
    grpc_connectivity_state last;
  };
  struct Probe;
  struct ProbeTag : Tag {
    Probe* probe;
  };
  struct Probe {
    int upstream;
    bool health_check;  // else asked only while the upstream is frozen
    std::unique_ptr<grpc::health::v1::Health::Stub> stub;
    std::unique_ptr<grpc::ClientContext> ctx;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status;
    std::unique_ptr<
        grpc::ClientAsyncResponseReader<grpc::health::v1::HealthCheckResponse>>
        rpc;
    grpc::Alarm alarm;
    ProbeTag done{{Tag::kCheckDone}, this};
    ProbeTag next{{Tag::kNextCheck}, this};
    absl::Time due;  // of the next Check
    bool serving = false;
    bool waiting = false;  // `alarm` is set
    bool busy = false;     // a Check is in flight or `alarm` is set
  };
  void Run();
  void Arm(Watch* w);
  void StartCheck(Probe* p);
  // After a Check or a wait: the next Check now, an alarm for it, or
  // nothing (a probe without health_check whose upstream is not frozen).
  void Schedule(Probe* p);
  void OnCheckDone(Probe* p);
  // Marks `upstream` frozen if its calls met a new keepalive timeout.
  void ReadKeepaliveFailures(int upstream);
  // Asks `p` for a Check now (ends its wait; one in flight is left).
  void CheckSoon(Probe* p);
  // A channel of `upstream` just became READY.
  void OnConnected(int upstream);
  void Publish(bool force);

  std::vector<Upstream> upstreams_;
  Report report_;
  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<Watch>> watches_;
  std::vector<std::unique_ptr<Probe>> probes_;
  std::vector<Probe*> probe_of_;  // by upstream; null: no channels
  std::vector<int> serving_;      // last reported per upstream: -1 unknown
  std::vector<bool> frozen_;      // by upstream: a keepalive timeout seen
  std::vector<uint64_t> failures_seen_;  // keepalive_failures last read
  int outstanding_ = 0;                  // tags out on cq_
  int overall_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_ADMIN_UPSTREAM_HEALTH_H_
