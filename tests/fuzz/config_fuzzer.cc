// libFuzzer target: the config loader. Any bytes given as a config file's
// contents must either load (a Config with a hash) or be refused with an
// InvalidArgument status whose every line names the file; never crash,
// hang or leak. Also drives the schema-aware YAML -> JSON layer on its own.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "server/config/config.h"
#include "server/config/yaml_to_json.h"
#include "sluice/config/v1/config.pb.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Config files are capped at a few MiB by LoadConfigFile; keep runs fast.
  if (size > 64 * 1024) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const auto config = sluice::ParseConfigYaml(text, "fuzz.yaml");
  if (config.ok()) {
    FUZZ_CHECK(*config != nullptr, "ok status without a config");
    FUZZ_CHECK((*config)->hash().size() == 16, "hash \"%s\"",
               (*config)->hash().c_str());
    FUZZ_CHECK((*config)->workers() > 0, "workers %d", (*config)->workers());
    FUZZ_CHECK((*config)->source() == "fuzz.yaml", "source \"%s\"",
               (*config)->source().c_str());
    for (const auto& route : (*config)->routes()) {
      FUZZ_CHECK(route.upstream_index >= 0 &&
                     static_cast<size_t>(route.upstream_index) <
                         (*config)->upstreams().size(),
                 "route %s: upstream_index %d", route.name.c_str(),
                 route.upstream_index);
    }
  } else {
    const absl::Status& status = config.status();
    FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument,
               "unexpected status code: %s", status.ToString().c_str());
    FUZZ_CHECK(!status.message().empty(), "empty error");
    for (absl::string_view line : absl::StrSplit(status.message(), '\n')) {
      FUZZ_CHECK(absl::StartsWith(line, "fuzz.yaml: "),
                 "error line without the file name: \"%s\"",
                 std::string(line).c_str());
    }
  }

  // The YAML -> JSON layer alone: ok or InvalidArgument, and a loadable
  // config implies convertible YAML.
  const auto json =
      sluice::YamlTextToJson(text, *sluice::config::v1::Config::descriptor());
  if (json.ok()) {
    FUZZ_CHECK(!json->empty(), "empty JSON");
  } else {
    FUZZ_CHECK(json.status().code() == absl::StatusCode::kInvalidArgument,
               "unexpected status code: %s", json.status().ToString().c_str());
    FUZZ_CHECK(!config.ok(), "config loaded but YamlTextToJson failed: %s",
               json.status().ToString().c_str());
  }
  return 0;
}
