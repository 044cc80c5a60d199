// Command line checks for the tools: flag errors found before absl's
// parser sees them, so that a tool can exit 2 (usage) where absl would
// exit 1, and --help that lists the tool's own flags.
#ifndef SLUICE_CLIENT_COMMON_FLAG_CHECK_H_
#define SLUICE_CLIENT_COMMON_FLAG_CHECK_H_

#include <optional>
#include <string>
#include <string_view>

namespace sluice {

// The first problem absl::ParseCommandLine would exit 1 on: an unknown
// flag, a flag without its value, or a value the flag's type does not
// parse; worded for a usage message ("unknown flag --x", "flag --x needs a
// value", "bad value \"v\" for --x: ..."). nullopt if absl will accept the
// command line. absl's own flags (--help..., --flagfile, --fromenv,
// --undefok...) are left to absl; arguments after "--" are positional.
// Sets each flag it checks, as absl's parser does after it.
std::optional<std::string> FindFlagError(int argc, char** argv);

// Makes --help, --helpshort and --helppackage list the flags declared in
// `main_file` (a path ending, e.g. "client/bench/main.cc") instead of
// absl's default (only flags in a file named after the program) and
// `version` the --version text, if not empty. Call before parsing.
void SetUsageConfig(std::string_view main_file, std::string version = "");

}  // namespace sluice

#endif  // SLUICE_CLIENT_COMMON_FLAG_CHECK_H_
