#include "server/common/grpc_code_name.h"

#include <iterator>

namespace sluice {
namespace {

constexpr const char* kCodeNames[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

constexpr const char* kGoNames[] = {
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
};
static_assert(std::size(kGoNames) == std::size(kCodeNames));

}  // namespace

const char* GrpcCodeName(int code) {
  if (code < 0 || code >= static_cast<int>(std::size(kCodeNames))) {
    return nullptr;
  }
  return kCodeNames[code];
}

const char* GrpcCodeGoName(int code) {
  if (code < 0 || code >= static_cast<int>(std::size(kGoNames))) {
    return "Unknown";
  }
  return kGoNames[code];
}

}  // namespace sluice
