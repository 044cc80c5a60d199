#include "server/proxy/rejection.h"

#include "sluice/rpc/v1/error_details.pb.h"

namespace sluice {

grpc::Status MakeRejection(grpc::StatusCode code, const std::string& message,
                           absl::Duration retry_after) {
  if (retry_after < absl::ZeroDuration()) return grpc::Status(code, message);
  sluice::rpc::v1::RetryInfo retry;
  const int64_t nanos = absl::ToInt64Nanoseconds(retry_after);
  retry.mutable_retry_delay()->set_seconds(nanos / 1000000000);
  retry.mutable_retry_delay()->set_nanos(
      static_cast<int32_t>(nanos % 1000000000));
  sluice::rpc::v1::Status status;
  status.set_code(static_cast<int32_t>(code));
  status.set_message(message);
  auto* any = status.add_details();
  any->set_type_url("type.googleapis.com/google.rpc.RetryInfo");
  any->set_value(retry.SerializeAsString());
  return grpc::Status(code, message, status.SerializeAsString());
}

}  // namespace sluice
