#include "server/demo/demo_upstream.h"

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/health/v1/health.pb.h"
#include "grpc/testing/test.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "sluice/demo/v1/capacity.grpc.pb.h"
#include "sluice/demo/v1/capacity.pb.h"
#include "sluice/demo/v1/ticker.pb.h"

namespace sluice::demo {
namespace {

// Server reflection (grpc::ProtoServerReflection) answers
// file_containing_symbol from protobuf's generated pool, which knows a
// .proto file once the static initializer of its generated .pb.cc has
// registered it. grpc/testing/test.proto declares services only, so nothing
// the program calls lives in test.pb.o: linked from an archive (our
// libraries are linked between --start-lib/--end-lib, --dynamic_mode=off),
// the linker leaves the object out, initializer and all, and reflection
// answers "Symbol not found." for grpc.testing.TestService. A file's
// descriptor table is the one symbol its .pb.o exports: referencing the
// tables of the files whose services this server registers keeps those
// objects in every binary that links this library. The health service is
// gRPC's built-in one (upb inside gRPC, nothing in the generated pool), so
// linking health.proto here is what lets reflection describe it. (`used`:
// emitted, references and all, though nothing reads it.)
[[gnu::used]] const google::protobuf::internal::DescriptorTable* const
    kServedProtoFiles[] = {
        &descriptor_table_grpc_2ftesting_2ftest_2eproto,
        &descriptor_table_sluice_2fdemo_2fv1_2fticker_2eproto,
        &descriptor_table_sluice_2fdemo_2fv1_2fcapacity_2eproto,
        &descriptor_table_grpc_2fhealth_2fv1_2fhealth_2eproto,
};

// OK if reflection can describe every service this server registers: the
// generated pool finds each one (building its file and the files it
// imports). Fails fast rather than serve a reflection that cannot.
absl::Status CheckServicesDescribable() {
  const google::protobuf::DescriptorPool* pool =
      google::protobuf::DescriptorPool::generated_pool();
  for (const char* service : {grpc::testing::TestService::service_full_name(),
                              sluice::demo::v1::Ticker::service_full_name(),
                              sluice::demo::v1::Capacity::service_full_name(),
                              grpc::health::v1::Health::service_full_name()}) {
    if (pool->FindServiceByName(service) == nullptr) {
      return absl::InternalError(absl::StrCat(
          service,
          " is not in protobuf's generated pool, so server reflection "
          "cannot describe it (is its generated .pb.cc linked?)"));
    }
  }
  return absl::OkStatus();
}

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
    std::shared_ptr<grpc::ServerCredentials> credentials,
    absl::Duration min_ping_interval) {
  if (server_ != nullptr) {
    return absl::FailedPreconditionError("DemoUpstream already started");
  }
  const std::string host = DialHost(listen);
  if (host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address must be host:port, got '", listen, "'"));
  }
  if (absl::Status describable = CheckServicesDescribable();
      !describable.ok()) {
    return describable;
  }
  // Process-wide and idempotent; linking libgrpc++_reflection already does
  // it from a static initializer.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  if (credentials == nullptr) credentials = grpc::InsecureServerCredentials();
  builder.AddListeningPort(std::string(listen), credentials, &port);
  if (min_ping_interval > absl::ZeroDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
        static_cast<int>(absl::ToInt64Milliseconds(min_ping_interval)));
  }
  builder.RegisterService(&test_service_);
  builder.RegisterService(&ticker_service_);
  builder.RegisterService(&capacity_service_);

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
