#include "server/admin/admin_service.h"

#include "google/protobuf/util/json_util.h"

namespace sluice {

grpc::Status AdminService::GetStatus(
    grpc::ServerContext*, const sluice::admin::v1::GetStatusRequest*,
    sluice::admin::v1::GetStatusResponse* response) {
  *response = backend_->Status();
  return grpc::Status::OK;
}

grpc::Status AdminService::GetConfig(
    grpc::ServerContext*, const sluice::admin::v1::GetConfigRequest*,
    sluice::admin::v1::GetConfigResponse* response) {
  std::shared_ptr<const Config> config = backend_->CurrentConfig();
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  std::string json;
  auto status =
      google::protobuf::util::MessageToJsonString(config->proto(), &json, options);
  if (!status.ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        std::string(status.message()));
  }
  response->set_config_json(json);
  response->set_config_hash(config->hash());
  response->set_source(config->source());
  return grpc::Status::OK;
}

grpc::Status AdminService::Drain(grpc::ServerContext*,
                                 const sluice::admin::v1::DrainRequest*,
                                 sluice::admin::v1::DrainResponse* response) {
  response->set_started(backend_->RequestDrain());
  return grpc::Status::OK;
}

}  // namespace sluice
