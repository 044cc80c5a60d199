// The canonical upper-case names of gRPC status codes ("OK",
// "RESOURCE_EXHAUSTED", ...), as grpcurl and the gRPC docs print them.
// Pure function; thread-safe.
#ifndef SLUICE_SERVER_COMMON_GRPC_CODE_NAME_H_
#define SLUICE_SERVER_COMMON_GRPC_CODE_NAME_H_

namespace sluice {

// The name of `code`, or nullptr when it is not a gRPC code (outside 0..16);
// callers choose their own fallback.
const char* GrpcCodeName(int code);

}  // namespace sluice

#endif  // SLUICE_SERVER_COMMON_GRPC_CODE_NAME_H_
