#include "server/admin/admin_server.h"

#include <chrono>
#include <utility>

#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/config/listen_probe.h"

namespace sluice {
namespace {

constexpr absl::string_view kField = "listeners.admin";
constexpr absl::string_view kHealthField = "listeners.health";

// Drops the server builder plugins (reflection: once registered, gRPC adds
// it to every server built afterwards). The health-only port serves
// grpc.health.v1.Health and nothing else.
class WithoutPlugins : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->clear();
  }
};

void SetStatus(grpc::Server* server, const std::string& service, bool serving) {
  if (server == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health == nullptr) return;
  // The one-argument SetServingStatus(bool) would set every service; the
  // overall status is the service named "".
  health->SetServingStatus(service, serving);
}

void Stop(std::unique_ptr<grpc::Server> server) {
  if (server == nullptr) return;
  if (auto* health = server->GetHealthCheckService()) health->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server->Wait();
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(
    const std::string& address, AdminBackend* backend,
    const std::string& health_address) {
  // Asked first: gRPC's own report of a port it cannot bind is a
  // multi-line dump without the reason.
  if (absl::Status can_listen = CheckListener(kField, address);
      !can_listen.ok()) {
    return can_listen;
  }
  if (!health_address.empty()) {
    if (absl::Status can_listen = CheckListener(kHealthField, health_address);
        !can_listen.ok()) {
      return can_listen;
    }
  }
  std::unique_ptr<AdminServer> admin(new AdminServer(backend));
  absl::MutexLock lock(&admin->mu_);
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
  if (!health_address.empty()) {
    // Only gRPC's default health service (EnableDefaultHealthCheckService
    // above), no plugin; every other method UNIMPLEMENTED.
    grpc::ServerBuilder health;
    health.AddListeningPort(health_address, grpc::InsecureServerCredentials(),
                            &admin->health_port_);
    health.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    health.SetOption(std::make_unique<WithoutPlugins>());
    health.RegisterCallbackGenericService(&admin->unimplemented_);
    admin->health_server_ = health.BuildAndStart();
    if (admin->health_server_ == nullptr || admin->health_port_ == 0) {
      return ListenerFailed(kHealthField, health_address,
                            "gRPC could not bind it");
    }
  }
  // For liveness probes: SERVING as long as the process runs, also while
  // it drains or an upstream is down (a restart would not help then).
  const std::string liveness(kLivenessService);
  SetStatus(admin->server_.get(), liveness, true);
  SetStatus(admin->health_server_.get(), liveness, true);
  return admin;
}

AdminServer::~AdminServer() { Shutdown(); }

void AdminServer::SetServing(const std::string& service, bool serving) {
  absl::MutexLock lock(&mu_);
  serving_[service] = serving;
  SetStatus(server_.get(), service, serving);
  SetStatus(health_server_.get(), service, serving);
}

std::vector<std::pair<std::string, bool>> AdminServer::Serving() const {
  absl::MutexLock lock(&mu_);
  return {serving_.begin(), serving_.end()};
}

void AdminServer::Shutdown() {
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<grpc::Server> health_server;
  {
    absl::MutexLock lock(&mu_);
    server = std::move(server_);
    health_server = std::move(health_server_);
  }
  // Outside the lock: SetServing meanwhile finds no server and does nothing.
  Stop(std::move(health_server));
  Stop(std::move(server));
}

}  // namespace sluice
