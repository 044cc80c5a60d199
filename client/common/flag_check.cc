#include "client/common/flag_check.h"

#include <set>
#include <string>
#include <utility>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"  // FindCommandLineFlag
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sluice {

std::optional<std::string> FindFlagError(int argc, char** argv) {
  // Flags absl's parser handles itself (usage and flag files).
  static const auto* const kAbslBuiltins =
      new std::set<std::string, std::less<>>{
          "help",     "helpfull",  "helpshort",  "helppackage",
          "helpon",   "helpmatch", "version",    "only_check_args",
          "flagfile", "fromenv",   "tryfromenv", "undefok"};
  // ParseFrom below sets a flag it accepts: absl's parser sets the same
  // value again later. (absl::FlagSaver would log each restore.)
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;  // positional
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    const size_t eq = arg.find('=');
    const std::string name(arg.substr(0, eq));
    std::optional<std::string> value;
    if (eq != std::string_view::npos) value = std::string(arg.substr(eq + 1));

    if (kAbslBuiltins->contains(name)) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated =
          absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) {
        if (value) return absl::StrCat("--", name, " takes no value");
        continue;
      }
    }
    if (flag == nullptr) return absl::StrCat("unknown flag --", name);
    if (!value) {
      if (flag->IsOfType<bool>()) continue;
      if (i + 1 >= argc) return absl::StrCat("flag --", name, " needs a value");
      value = argv[++i];
    }
    std::string error;
    if (!flag->ParseFrom(*value, &error)) {
      // absl's message repeats the value and the name; keep its detail.
      absl::string_view detail = error;
      if (absl::ConsumePrefix(
              &detail, absl::StrCat("Illegal value '", *value,
                                    "' specified for flag '", name, "'"))) {
        absl::ConsumePrefix(&detail, "; ");
      }
      return absl::StrCat("bad value \"", *value, "\" for --", name,
                          detail.empty() ? "" : ": ", detail);
    }
  }
  return std::nullopt;
}

void SetUsageConfig(std::string_view main_file, std::string version) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags =
      [file = std::string(main_file)](absl::string_view path) {
        return absl::EndsWith(path, file);
      };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.contains_helppackage_flags = config.contains_help_flags;
  if (!version.empty()) {
    config.version_string = [version = std::move(version)] { return version; };
  }
  absl::SetFlagsUsageConfig(config);
}

}  // namespace sluice
