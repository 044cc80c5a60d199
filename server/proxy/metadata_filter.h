// Which metadata keys Sluice does not copy between the two calls: HTTP/2
// pseudo-headers, hop-by-hop headers and the gRPC transport's reserved
// headers, which each hop sets for itself. Everything else, `-bin` keys
// included, is copied byte for byte. Pure functions; thread-safe.
#ifndef SLUICE_SERVER_PROXY_METADATA_FILTER_H_
#define SLUICE_SERVER_PROXY_METADATA_FILTER_H_

#include <string_view>

namespace sluice {

// Request headers from the client that must not go to the upstream.
bool IsHopByHopRequestKey(std::string_view key);

// Response headers/trailers from the upstream that must not go back to the
// client (grpc-status, grpc-message and grpc-status-details-bin travel in
// the forwarded grpc::Status instead).
bool IsHopByHopResponseKey(std::string_view key);

// "ipv4:127.0.0.1:5555" -> "127.0.0.1", "ipv6:[::1]:5555" -> "::1".
std::string_view PeerAddressOnly(std::string_view grpc_peer);

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_METADATA_FILTER_H_
