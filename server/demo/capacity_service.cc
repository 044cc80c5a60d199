#include "server/demo/capacity_service.h"

#include <cstdint>

#include "absl/time/time.h"

namespace sluice::demo {

using sluice::demo::v1::CapacityState;
using sluice::demo::v1::GetCapacityRequest;
using sluice::demo::v1::SetCapacityRequest;

void CapacityService::Describe(CapacityState* out) const {
  const CapacityModel::State state = model_->state();
  out->set_capacity(static_cast<uint32_t>(state.settings.capacity));
  out->set_service_time_us(static_cast<uint32_t>(
      absl::ToInt64Microseconds(state.settings.service_time)));
  out->set_in_flight(static_cast<uint32_t>(state.in_flight));
  out->set_max_in_flight(static_cast<uint32_t>(state.max_in_flight));
  out->set_served(static_cast<uint64_t>(state.served));
}

grpc::ServerUnaryReactor* CapacityService::Get(
    grpc::CallbackServerContext* context, const GetCapacityRequest* /*request*/,
    CapacityState* response) {
  Describe(response);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* CapacityService::Set(
    grpc::CallbackServerContext* context, const SetCapacityRequest* request,
    CapacityState* response) {
  CapacityModel::Settings settings = model_->state().settings;
  settings.capacity = request->capacity();
  if (request->service_time_us() > 0) {
    settings.service_time = absl::Microseconds(request->service_time_us());
  }
  model_->Set(settings);
  Describe(response);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace sluice::demo
