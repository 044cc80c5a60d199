// Sluice's version, reported by --version, the admin API and
// sluice_build_info.
#ifndef SLUICE_SERVER_VERSION_H_
#define SLUICE_SERVER_VERSION_H_

#include <string_view>

namespace sluice {
inline constexpr std::string_view kSluiceVersion = "0.1.0";
}  // namespace sluice

#endif  // SLUICE_SERVER_VERSION_H_
