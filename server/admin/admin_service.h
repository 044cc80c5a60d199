// sluice.admin.v1.Admin, served on the admin port (sync API: admin traffic
// is light and never on the data path). Owned by the AdminServer; runs on
// gRPC's sync-server threads; holds a non-owning AdminBackend that outlives
// it.
//
// When the config in force has an admin token (admin.bearer_token_file),
// every method first requires the metadata `authorization: Bearer
// <token>` and answers UNAUTHENTICATED without it. The token is taken from
// the backend's current config on each call, so it follows reloads.
#ifndef SLUICE_SERVER_ADMIN_ADMIN_SERVICE_H_
#define SLUICE_SERVER_ADMIN_ADMIN_SERVICE_H_

#include "grpcpp/server_context.h"
#include "server/admin/admin_backend.h"
#include "sluice/admin/v1/admin.grpc.pb.h"

namespace sluice {

class AdminService final : public sluice::admin::v1::Admin::Service {
 public:
  explicit AdminService(AdminBackend* backend) : backend_(backend) {}

  grpc::Status GetStatus(
      grpc::ServerContext* context,
      const sluice::admin::v1::GetStatusRequest* request,
      sluice::admin::v1::GetStatusResponse* response) override;
  grpc::Status GetConfig(
      grpc::ServerContext* context,
      const sluice::admin::v1::GetConfigRequest* request,
      sluice::admin::v1::GetConfigResponse* response) override;
  grpc::Status Drain(grpc::ServerContext* context,
                     const sluice::admin::v1::DrainRequest* request,
                     sluice::admin::v1::DrainResponse* response) override;
  grpc::Status ListLimits(
      grpc::ServerContext* context,
      const sluice::admin::v1::ListLimitsRequest* request,
      sluice::admin::v1::ListLimitsResponse* response) override;
  grpc::Status SetLimit(grpc::ServerContext* context,
                        const sluice::admin::v1::SetLimitRequest* request,
                        sluice::admin::v1::SetLimitResponse* response) override;

 private:
  // OK, or UNAUTHENTICATED if a token is configured and `context` does not
  // carry it.
  grpc::Status Authorize(const grpc::ServerContext* context);

  AdminBackend* const backend_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_ADMIN_ADMIN_SERVICE_H_
