// The admin port: grpc.health.v1.Health (gRPC's default implementation,
// Watch included), server reflection and sluice.admin.v1.Admin; and,
// when listeners.health is set, the health-only port: the same
// grpc.health.v1.Health statuses and nothing else (every other method,
// reflection included, is UNIMPLEMENTED there).
//
// Owned by the Daemon; started after the data plane and shut down after
// it. Health is set from the daemon's control thread and the upstream
// watcher's; SetServing is the one place it changes, and it puts each
// status on both ports under one lock, so they never disagree.
#ifndef SLUICE_SERVER_ADMIN_ADMIN_SERVER_H_
#define SLUICE_SERVER_ADMIN_ADMIN_SERVER_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/server.h"
#include "server/admin/admin_service.h"

namespace sluice {

// Health service name that is SERVING while the process runs (for
// liveness probes); "" and the upstream names are for readiness.
inline constexpr std::string_view kLivenessService = "liveness";

class AdminServer {
 public:
  // `health_address` empty: no health-only port.
  static absl::StatusOr<std::unique_ptr<AdminServer>> Start(
      const std::string& address, AdminBackend* backend,
      const std::string& health_address = "");
  ~AdminServer();

  // Sets the overall ("") status and that of each named service, on the
  // admin port and the health-only port alike.
  void SetServing(const std::string& service, bool serving);
  // Every status set so far, ("", ready) first if it was set, then the
  // services by name. Any thread.
  std::vector<std::pair<std::string, bool>> Serving() const;
  void Shutdown();
  int port() const { return port_; }
  // The health-only port's bound port; 0 when there is none.
  int health_port() const { return health_port_; }

 private:
  explicit AdminServer(AdminBackend* backend) : service_(backend) {}
  AdminService service_;
  // The health-only port's answer to every method but Health's:
  // UNIMPLEMENTED (gRPC's default reactor). It also gives that server, whose
  // only other service is gRPC's callback-based default health service, the
  // callback queue gRPC requires before it starts.
  grpc::CallbackGenericService unimplemented_;
  mutable absl::Mutex mu_;
  // What SetServing set, by service (ordered: "" first).
  std::map<std::string, bool> serving_ ABSL_GUARDED_BY(mu_);
  // Null once shut down.
  std::unique_ptr<grpc::Server> server_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<grpc::Server> health_server_ ABSL_GUARDED_BY(mu_);
  int port_ = 0;
  int health_port_ = 0;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_ADMIN_ADMIN_SERVER_H_
