// The status Sluice sends when it rejects a call itself: the code, a
// message naming the limit, and (when the retry delay is known)
// `grpc-status-details-bin` holding a google.rpc.Status with a
// google.rpc.RetryInfo. Pure functions; thread-safe.
#ifndef SLUICE_SERVER_PROXY_REJECTION_H_
#define SLUICE_SERVER_PROXY_REJECTION_H_

#include <string>

#include "absl/time/time.h"
#include "grpcpp/support/status.h"

namespace sluice {

// retry_after < 0: unknown, no details attached.
grpc::Status MakeRejection(grpc::StatusCode code, const std::string& message,
                           absl::Duration retry_after);

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_REJECTION_H_
