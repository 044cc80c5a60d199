// Header limits at the edge of the data port: the size of a request's
// header list counted the way HTTP/2 and gRPC's chttp2 transport count it
// (name + value + 32 bytes per entry, RFC 7540 section 6.5.2), and the
// check every call passes before anything of it is forwarded. Pure
// functions; thread-safe.
//
// Two tiers (docs/security.md): Sluice refuses one call whose headers are
// over `proxy.max_header_list_bytes` / `proxy.max_header_count` (this
// file); gRPC's own transport limit on the data port's server
// (GRPC_ARG_MAX_METADATA_SIZE, TransportMetadataLimit below) sits well
// above it, because above it gRPC 1.51 breaks the whole client connection.
#ifndef SLUICE_SERVER_PROXY_HEADER_LIMITS_H_
#define SLUICE_SERVER_PROXY_HEADER_LIMITS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "grpcpp/support/string_ref.h"

namespace sluice {

// Bytes one header entry counts for: RFC 7541 section 4.1, the rule chttp2
// applies against GRPC_ARG_MAX_METADATA_SIZE (hpack_constants::
// kEntryOverhead). gRPC counts a `-bin` value by its decoded length.
inline constexpr int64_t kHeaderEntryOverhead = 32;

inline int64_t HeaderEntryBytes(std::string_view name, std::string_view value) {
  return static_cast<int64_t>(name.size() + value.size()) +
         kHeaderEntryOverhead;
}

// What Sluice counts of a request: every entry of the client's metadata
// as gRPC hands it to the call (user-agent, custom and `-bin` headers,
// also those Sluice will not forward), plus `:path` (the method, which
// Sluice forwards as is). The other pseudo-headers and te, content-type,
// grpc-timeout and grpc-*-encoding are consumed by gRPC and replaced by
// Sluice's own when it forwards: they are in the reserve the default
// limit leaves (kForwardingReserveBytes).
struct HeaderListSize {
  int64_t bytes = 0;
  int64_t count = 0;  // metadata entries, `:path` not included
};
HeaderListSize MeasureRequestHeaders(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    std::string_view method);

// Room for the headers Sluice itself puts on a forwarded request
// (docs/security.md): :method, :scheme, :authority, te, content-type,
// user-agent, grpc-accept-encoding, grpc-timeout and the growth of
// `proxy.forwarded_for_header`. Measured: 475 bytes with a 15-byte
// authority, so an upstream authority of up to about 500 bytes fits.
inline constexpr int64_t kForwardingReserveBytes = 1024;
// What a gRPC server accepts by default (chttp2's
// DEFAULT_MAX_HEADER_LIST_SIZE, 8 KiB).
inline constexpr int64_t kGrpcDefaultHeaderListBytes = 8192;
// Default of proxy.max_header_list_bytes: 7168, so that a request at the
// limit still fits in 8 KiB once Sluice forwards it.
inline constexpr int64_t kDefaultMaxHeaderListBytes =
    kGrpcDefaultHeaderListBytes - kForwardingReserveBytes;
// Default of proxy.max_header_count (Envoy's max_headers_count default).
inline constexpr int64_t kDefaultMaxHeaderCount = 100;

// The second tier: GRPC_ARG_MAX_METADATA_SIZE of the data port's server,
// max(64 KiB, 4 x max_header_list_bytes).
int TransportMetadataLimit(int64_t max_header_list_bytes);

// nullopt when `size` is within both limits; otherwise the message of the
// refusal (the status goes with `sluice-reason: header_too_large`).
std::optional<std::string> CheckRequestHeaders(const HeaderListSize& size,
                                               int64_t max_bytes,
                                               int64_t max_count);

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_HEADER_LIMITS_H_
