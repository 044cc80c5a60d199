#include "server/demo/demo_upstream.h"

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace sluice::demo {
namespace {

// "host:port" -> the host to dial, or "" if `listen` has no ':'.
std::string DialHost(absl::string_view listen) {
  const size_t colon = listen.rfind(':');
  if (colon == absl::string_view::npos) return "";
  absl::string_view host = listen.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    return "127.0.0.1";
  }
  return std::string(host);
}

}  // namespace

DemoUpstream::DemoUpstream() = default;

DemoUpstream::~DemoUpstream() { Shutdown(absl::Now()); }

absl::StatusOr<int> DemoUpstream::Start(
    absl::string_view listen,
    std::shared_ptr<grpc::ServerCredentials> credentials) {
  if (server_ != nullptr) {
    return absl::FailedPreconditionError("DemoUpstream already started");
  }
  const std::string host = DialHost(listen);
  if (host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address must be host:port, got '", listen, "'"));
  }
  // Process-wide and idempotent; linking libgrpc++_reflection already does
  // it from a static initializer.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  if (credentials == nullptr) credentials = grpc::InsecureServerCredentials();
  builder.AddListeningPort(std::string(listen), credentials, &port);
  builder.RegisterService(&test_service_);
  builder.RegisterService(&ticker_service_);

  const bool health_was_enabled = grpc::DefaultHealthCheckServiceEnabled();
  grpc::EnableDefaultHealthCheckService(true);
  server_ = builder.BuildAndStart();
  grpc::EnableDefaultHealthCheckService(health_was_enabled);

  if (server_ == nullptr || port == 0) {
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on '", listen, "'"));
  }
  if (grpc::HealthCheckServiceInterface* health =
          server_->GetHealthCheckService()) {
    health->SetServingStatus(true);
    health->SetServingStatus(grpc::testing::TestService::service_full_name(),
                             true);
    health->SetServingStatus(sluice::demo::v1::Ticker::service_full_name(),
                             true);
  }
  port_ = port;
  address_ = absl::StrCat(host, ":", port);
  return port;
}

void DemoUpstream::Shutdown(absl::Time deadline) {
  if (server_ == nullptr || shut_down_) return;
  shut_down_ = true;
  if (grpc::HealthCheckServiceInterface* health =
          server_->GetHealthCheckService()) {
    health->Shutdown();
  }
  server_->Shutdown(absl::ToChronoTime(deadline));
  server_->Wait();
}

}  // namespace sluice::demo
