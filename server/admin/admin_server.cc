#include "server/admin/admin_server.h"

#include <chrono>

#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/config/listen_probe.h"

namespace sluice {
namespace {

constexpr absl::string_view kField = "listeners.admin";

}  // namespace

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(
    const std::string& address, AdminBackend* backend) {
  // Asked first: gRPC's own report of a port it cannot bind is a
  // multi-line dump without the reason.
  if (absl::Status can_listen = CheckListener(kField, address);
      !can_listen.ok()) {
    return can_listen;
  }
  std::unique_ptr<AdminServer> admin(new AdminServer(backend));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(),
                           &admin->port_);
  // gRPC sets SO_REUSEPORT by default: a second server (another Sluice)
  // could then bind the same port, and the kernel would split the admin
  // calls between the two processes. Refuse a port another one holds.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&admin->service_);
  admin->server_ = builder.BuildAndStart();
  if (admin->server_ == nullptr || admin->port_ == 0) {
    return ListenerFailed(kField, address, "gRPC could not bind it");
  }
  // For liveness probes: SERVING as long as the process runs, also while
  // it drains or an upstream is down (a restart would not help then).
  admin->SetServing(std::string(kLivenessService), true);
  return admin;
}

AdminServer::~AdminServer() { Shutdown(); }

void AdminServer::SetServing(const std::string& service, bool serving) {
  if (server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  // The one-argument SetServingStatus(bool) would set every service; the
  // overall status is the service named "".
  health->SetServingStatus(service, serving);
}

void AdminServer::Shutdown() {
  if (server_ == nullptr) return;
  if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_->Wait();
  server_.reset();
}

}  // namespace sluice
