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

}  // namespace

bool IsHopByHopRequestKey(std::string_view key) {
  return IsCommonHopByHop(key) || key == "grpc-timeout" || key == "user-agent";
}

bool IsHopByHopResponseKey(std::string_view key) {
  return IsCommonHopByHop(key) || key == "grpc-status" ||
         key == "grpc-message" || key == "grpc-status-details-bin";
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
