#include "server/proxy/metadata_filter.h"

namespace sluice {
namespace {

bool IsCommonHopByHop(std::string_view key) {
  if (key.empty() || key[0] == ':') return true;
  static constexpr std::string_view kKeys[] = {
      "te",
      "content-type",
      "content-length",
      "connection",
      "keep-alive",
      "proxy-connection",
      "transfer-encoding",
      "upgrade",
      "host",
      "grpc-encoding",
      "grpc-accept-encoding",
      "accept-encoding",
  };
  for (std::string_view k : kKeys) {
    if (key == k) return true;
  }
  return false;
}

// gRPC core refuses to send a key outside [0-9a-z_.-] (and asserts, which
// kills the process, when a C++ call is handed one), yet its HTTP/2 parser
// accepts such keys from a peer: e.g. "X-Upper" from a hand-written client.
bool IsLegalKey(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_' || c == '.')) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool IsHopByHopRequestKey(std::string_view key) {
  return IsCommonHopByHop(key) || key == "grpc-timeout" ||
         key == "user-agent" || !IsLegalKey(key);
}

bool IsHopByHopResponseKey(std::string_view key) {
  return IsCommonHopByHop(key) || key == "grpc-status" ||
         key == "grpc-message" || key == "grpc-status-details-bin" ||
         !IsLegalKey(key);
}

bool IsLegalValue(std::string_view key, std::string_view value) {
  if (key.ends_with("-bin")) return true;  // any bytes (base64 on the wire)
  for (char c : value) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

bool IsForwardableRequestHeader(std::string_view key, std::string_view value) {
  return !IsHopByHopRequestKey(key) && IsLegalValue(key, value);
}

bool IsForwardableResponseHeader(std::string_view key, std::string_view value) {
  return !IsHopByHopResponseKey(key) && IsLegalValue(key, value);
}

std::string_view PeerAddressOnly(std::string_view peer) {
  if (peer.starts_with("ipv4:")) {
    peer.remove_prefix(5);
    size_t colon = peer.rfind(':');
    return colon == std::string_view::npos ? peer : peer.substr(0, colon);
  }
  if (peer.starts_with("ipv6:")) {
    peer.remove_prefix(5);
    if (!peer.empty() && peer[0] == '[') {
      size_t close = peer.find(']');
      if (close != std::string_view::npos) {
        std::string_view host = peer.substr(1, close - 1);
        // Strip a %-encoded zone id if present.
        return host;
      }
    }
    return peer;
  }
  return peer;
}

}  // namespace sluice
