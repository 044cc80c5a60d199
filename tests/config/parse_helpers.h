// Shared by the config tests: parse YAML as the daemon does, under the
// source name "test.yaml", and get either the config or the whole error
// text an operator would see.
#ifndef SLUICE_TESTS_CONFIG_PARSE_HELPERS_H_
#define SLUICE_TESTS_CONFIG_PARSE_HELPERS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "server/config/config.h"

namespace sluice {

inline constexpr char kSource[] = "test.yaml";

// The config of `yaml`, which must be valid (a test failure otherwise).
inline std::shared_ptr<const Config> MustParse(const std::string& yaml) {
  absl::StatusOr<std::shared_ptr<const Config>> config =
      ParseConfigYaml(yaml, kSource);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : nullptr;
}

// The whole error message of a config that must be rejected as invalid;
// "<accepted>" if it was not.
inline std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<std::shared_ptr<const Config>> config =
      ParseConfigYaml(yaml, kSource);
  if (config.ok()) return "<accepted>";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(config.status().message());
}

}  // namespace sluice

#endif  // SLUICE_TESTS_CONFIG_PARSE_HELPERS_H_
