#include "server/proxy/header_limits.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace sluice {

HeaderListSize MeasureRequestHeaders(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    std::string_view method) {
  HeaderListSize size;
  size.bytes = HeaderEntryBytes(":path", method);
  for (const auto& [key, value] : metadata) {
    size.bytes +=
        HeaderEntryBytes(std::string_view(key.data(), key.size()),
                         std::string_view(value.data(), value.size()));
    ++size.count;
  }
  return size;
}

int TransportMetadataLimit(int64_t max_header_list_bytes) {
  constexpr int64_t kFloor = 64 * 1024;
  constexpr int64_t kCeiling = 1 << 30;
  return static_cast<int>(
      std::clamp(4 * max_header_list_bytes, kFloor, kCeiling));
}

std::optional<std::string> CheckRequestHeaders(const HeaderListSize& size,
                                               int64_t max_bytes,
                                               int64_t max_count) {
  if (size.bytes > max_bytes) {
    return absl::StrCat("sluice: request header list of ", size.bytes,
                        " bytes is over the limit of ", max_bytes,
                        " (proxy.max_header_list_bytes; name + value + 32 "
                        "per header)");
  }
  if (size.count > max_count) {
    return absl::StrCat("sluice: request has ", size.count,
                        " headers, over the limit of ", max_count,
                        " (proxy.max_header_count)");
  }
  return std::nullopt;
}

}  // namespace sluice
