// Which metadata keys Sluice does not copy between the two calls: HTTP/2
// pseudo-headers, hop-by-hop headers and the gRPC transport's reserved
// headers, which each hop sets for itself. Everything else, `-bin` keys
// included, is copied byte for byte. Pure functions; thread-safe.
#ifndef SLUICE_SERVER_PROXY_METADATA_FILTER_H_
#define SLUICE_SERVER_PROXY_METADATA_FILTER_H_

#include <string_view>

namespace sluice {

// Request headers from the client that must not go to the upstream. Keys
// gRPC would refuse to send (anything outside [0-9a-z_.-]: its parser
// accepts them from a raw HTTP/2 peer, but handing one to a call is an
// assertion failure that kills the process) count as hop-by-hop too.
bool IsHopByHopRequestKey(std::string_view key);

// Response headers/trailers from the upstream that must not go back to the
// client (grpc-status, grpc-message and grpc-status-details-bin travel in
// the forwarded grpc::Status instead); illegal keys as above.
bool IsHopByHopResponseKey(std::string_view key);

// Whether gRPC will send `value` under `key`: any bytes for a `-bin` key,
// otherwise printable ASCII (0x20..0x7e) only. gRPC's parser accepts
// other bytes (e.g. a NUL) from a raw HTTP/2 peer; handing such a value to
// a call kills the process just like an illegal key.
bool IsLegalValue(std::string_view key, std::string_view value);

// Not hop-by-hop and legal to send: what the proxy may copy to the other
// call. Use these (not the *Key functions alone) when copying metadata.
bool IsForwardableRequestHeader(std::string_view key, std::string_view value);
bool IsForwardableResponseHeader(std::string_view key, std::string_view value);

// "ipv4:127.0.0.1:5555" -> "127.0.0.1", "ipv6:[::1]:5555" -> "::1".
std::string_view PeerAddressOnly(std::string_view grpc_peer);

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_METADATA_FILTER_H_
