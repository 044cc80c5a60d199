// The admin port: grpc.health.v1.Health (gRPC's default implementation,
// Watch included), server reflection and sluice.admin.v1.Admin.
//
// Owned by the Daemon; started after the data plane and shut down after
// it. Health is set from the daemon's control thread.
#ifndef SLUICE_SERVER_ADMIN_ADMIN_SERVER_H_
#define SLUICE_SERVER_ADMIN_ADMIN_SERVER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "server/admin/admin_service.h"

namespace sluice {

// Health service name that is SERVING while the process runs (for
// liveness probes); "" and the upstream names are for readiness.
inline constexpr std::string_view kLivenessService = "liveness";

class AdminServer {
 public:
  static absl::StatusOr<std::unique_ptr<AdminServer>> Start(
      const std::string& address, AdminBackend* backend);
  ~AdminServer();

  // Sets the overall ("") status and that of each named service.
  void SetServing(const std::string& service, bool serving);
  void Shutdown();
  int port() const { return port_; }

 private:
  explicit AdminServer(AdminBackend* backend) : service_(backend) {}
  AdminService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_ADMIN_ADMIN_SERVER_H_
