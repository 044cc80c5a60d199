// sluice.demo.v1.Capacity: the demo upstream's capacity mode, read and
// changed at run time (grpcurl -plaintext -d '{"capacity": 20}'
// 127.0.0.1:50051 sluice.demo.v1.Capacity/Set).
#ifndef SLUICE_SERVER_DEMO_CAPACITY_SERVICE_H_
#define SLUICE_SERVER_DEMO_CAPACITY_SERVICE_H_

#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "server/demo/capacity_model.h"
#include "sluice/demo/v1/capacity.grpc.pb.h"

namespace sluice::demo {

// Get and Set over one CapacityModel (the TestService's), answered at once
// on gRPC's callback threads.
//
// Ownership: owned by the DemoUpstream, registered with its server; the
// model must outlive it. Thread-safety: the model is.
class CapacityService final
    : public sluice::demo::v1::Capacity::CallbackService {
 public:
  explicit CapacityService(CapacityModel* model) : model_(model) {}
  CapacityService(const CapacityService&) = delete;
  CapacityService& operator=(const CapacityService&) = delete;

  grpc::ServerUnaryReactor* Get(
      grpc::CallbackServerContext* context,
      const sluice::demo::v1::GetCapacityRequest* request,
      sluice::demo::v1::CapacityState* response) override;
  grpc::ServerUnaryReactor* Set(
      grpc::CallbackServerContext* context,
      const sluice::demo::v1::SetCapacityRequest* request,
      sluice::demo::v1::CapacityState* response) override;

 private:
  void Describe(sluice::demo::v1::CapacityState* out) const;

  CapacityModel* const model_;
};

}  // namespace sluice::demo

#endif  // SLUICE_SERVER_DEMO_CAPACITY_SERVICE_H_
