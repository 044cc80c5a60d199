// Watches the connectivity of every upstream's channels and reports it to
// the admin health service: service "<upstream name>" is SERVING while at
// least one of its channels is READY; the overall service "" is
// NOT_SERVING while any upstream marked `required` has none.
//
// Owned by the Daemon. Runs one thread of its own with a completion queue
// (channel NotifyOnStateChange, re-armed at most every second, so it also
// nudges idle channels to reconnect). The report callback runs on that
// thread. Stop() (or the destructor) waits for the thread, at most ~1 s.
#ifndef SLUICE_SERVER_ADMIN_UPSTREAM_HEALTH_H_
#define SLUICE_SERVER_ADMIN_UPSTREAM_HEALTH_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/channel.h"
#include "grpcpp/completion_queue.h"

namespace sluice {

class UpstreamHealth {
 public:
  struct Upstream {
    std::string name;
    bool required = false;
    std::vector<std::shared_ptr<grpc::Channel>> channels;
  };
  // (service, serving): "" for the overall status, else an upstream name.
  using Report = std::function<void(const std::string&, bool)>;

  UpstreamHealth(std::vector<Upstream> upstreams, Report report);
  ~UpstreamHealth();
  void Stop();

 private:
  struct Watch {
    int upstream;
    int channel;
    grpc_connectivity_state last;
  };
  void Run();
  void Arm(Watch* w);
  void Publish(bool force);

  std::vector<Upstream> upstreams_;
  Report report_;
  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<Watch>> watches_;
  std::vector<int> serving_;  // last reported per upstream: -1 unknown
  int overall_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_ADMIN_UPSTREAM_HEALTH_H_
