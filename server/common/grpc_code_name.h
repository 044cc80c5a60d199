// The names of gRPC status codes: the canonical upper-case ones ("OK",
// "RESOURCE_EXHAUSTED", ...), as grpcurl and the gRPC docs print them, and
// Go's codes.Code.String() ones ("ResourceExhausted"), which the
// go-grpc-prometheus grpc_code label uses. Pure functions; thread-safe.
#ifndef SLUICE_SERVER_COMMON_GRPC_CODE_NAME_H_
#define SLUICE_SERVER_COMMON_GRPC_CODE_NAME_H_

namespace sluice {

// The name of `code`, or nullptr when it is not a gRPC code (outside 0..16);
// callers choose their own fallback.
const char* GrpcCodeName(int code);

// Go's name of `code` ("Canceled", "ResourceExhausted"); "Unknown" outside
// 0..16.
const char* GrpcCodeGoName(int code);

}  // namespace sluice

#endif  // SLUICE_SERVER_COMMON_GRPC_CODE_NAME_H_
