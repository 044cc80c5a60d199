// sluicectl: a small command line client for Sluice's admin API
// (sluice.admin.v1.Admin), plus offline config validation.
//
//   sluicectl [--admin=HOST:PORT] [--token_file=PATH] [--timeout=5s] [--json]
//             COMMAND [ARGS]
//
// Exit codes: 0 success; 1 the admin API could not be reached or refused
// the request; 2 usage error, or `check` found an invalid config.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/sluicectl/render.h"
#include "google/protobuf/struct.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/common/grpc_code_name.h"
#include "server/common/read_file.h"
#include "server/config/config.h"
#include "server/version.h"
#include "sluice/admin/v1/admin.grpc.pb.h"

ABSL_FLAG(std::string, admin, "127.0.0.1:9901",
          "Address (HOST:PORT) of the daemon's admin API.");
ABSL_FLAG(std::string, token_file, "",
          "File holding the admin bearer token (admin.bearer_token_file of "
          "the daemon's config); default: the SLUICE_ADMIN_TOKEN "
          "environment variable, if set.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5),
          "Deadline of each admin API call.");
ABSL_FLAG(bool, json, false,
          "Print protobuf JSON (proto field names) instead of tables.");
ABSL_FLAG(std::optional<int>, top_keys, std::nullopt,
          "limits: keys shown per keyed limit, those with the fewest tokens "
          "left (server default 10).");
ABSL_FLAG(std::optional<double>, rate, std::nullopt,
          "set-limit: new rate, in calls per second.");
ABSL_FLAG(std::optional<int64_t>, burst, std::nullopt, "set-limit: new burst.");
ABSL_FLAG(std::optional<int64_t>, concurrency, std::nullopt,
          "set-limit: new maximum of calls in flight.");
ABSL_FLAG(std::optional<int64_t>, queue, std::nullopt,
          "set-limit: new concurrency queue length.");

namespace sluice::sluicectl {
namespace {

using sluice::admin::v1::Admin;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitBadConfig = 2;

constexpr char kUsage[] =
    R"(sluicectl: command line client for Sluice's admin API.

usage: sluicectl [--admin=HOST:PORT] [--token_file=PATH] [--timeout=5s]
                 [--json] COMMAND [ARGS]

commands:
  status                  version, uptime, config hash, workers, calls in
                          flight, draining, bound addresses
  config                  the configuration in force (JSON), its hash and
                          source
  limits [--top_keys=N]   live state of every limit, and the N keys with
                          the fewest tokens left of each keyed limit
  set-limit ROUTE LIMIT [--rate=R] [--burst=B] [--concurrency=N] [--queue=Q]
                          override a limit's numbers (until a reload changes
                          its definition) and print its new state
  drain                   start draining the daemon
  check CONFIG            validate a config file offline, as
                          `sluice --config=CONFIG --check` does

flags:
  --admin=HOST:PORT       admin API address (default 127.0.0.1:9901)
  --token_file=PATH       file holding the admin bearer token, sent as
                          "authorization: Bearer <token>" (default: the
                          SLUICE_ADMIN_TOKEN environment variable, if set)
  --timeout=DURATION      deadline of each call (default 5s)
  --json                  protobuf JSON (proto field names) for scripts

exit: 0 ok; 1 the admin API is unreachable or refused the request;
      2 usage error, or `check` found errors)";

int UsageError(std::string_view message) {
  std::cerr << "sluicectl: " << message << "\n\n" << kUsage << "\n";
  return kExitUsage;
}

// ---- Flag pre-check ------------------------------------------------------

template <typename T>
bool Parses(absl::string_view text, std::string* error) {
  T value;
  return absl::ParseFlag(text, &value, error);
}

using Validator = bool (*)(absl::string_view, std::string*);

// absl's parser exits 1 on an unknown flag or a malformed value; sluicectl
// treats both as usage errors (exit 2, usage on stderr), so it looks first.
// Returns the problem, or nullopt if absl will accept the command line.
std::optional<std::string> PrecheckFlags(int argc, char** argv) {
  static const auto* const kValidators = new std::map<std::string, Validator>{
      {"timeout", &Parses<absl::Duration>},
      {"json", &Parses<bool>},
      {"top_keys", &Parses<std::optional<int>>},
      {"rate", &Parses<std::optional<double>>},
      {"burst", &Parses<std::optional<int64_t>>},
      {"concurrency", &Parses<std::optional<int64_t>>},
      {"queue", &Parses<std::optional<int64_t>>},
  };
  // Flags absl's parser handles itself (usage and flag files).
  static const auto* const kAbslBuiltins = new std::set<std::string>{
      "help",     "helpfull",  "helpshort",  "helppackage",
      "helpon",   "helpmatch", "version",    "only_check_args",
      "flagfile", "fromenv",   "tryfromenv", "undefok"};
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;  // positional
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    const size_t eq = arg.find('=');
    const std::string name(arg.substr(0, eq));
    std::optional<std::string> value;
    if (eq != std::string_view::npos) value = std::string(arg.substr(eq + 1));

    if (kAbslBuiltins->contains(name)) continue;  // absl handles these
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no") && !value) {
      absl::CommandLineFlag* negated =
          absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) continue;
    }
    if (flag == nullptr) return absl::StrCat("unknown flag --", name);
    if (!flag->IsOfType<bool>() && !value) {
      if (i + 1 >= argc) return absl::StrCat("flag --", name, " needs a value");
      value = argv[++i];
    }
    auto it = kValidators->find(name);
    std::string error;
    if (value && it != kValidators->end() && !it->second(*value, &error)) {
      return absl::StrCat("bad value \"", *value, "\" for --", name,
                          error.empty() ? "" : ": ", error);
    }
  }
  return std::nullopt;
}

// ---- Admin API calls -----------------------------------------------------

const char* CodeName(grpc::StatusCode code) {
  const char* name = GrpcCodeName(static_cast<int>(code));
  return name != nullptr ? name : "UNKNOWN";
}

// "CODE: message" on one line.
std::string Describe(const grpc::Status& status) {
  std::string message =
      absl::StrReplaceAll(status.error_message(), {{"\r", " "}, {"\n", " "}});
  if (message.empty()) return CodeName(status.error_code());
  return absl::StrCat(CodeName(status.error_code()), ": ", message);
}

// The admin API at --admin, one call at a time, each with --timeout and,
// if one is known, the bearer token. Owned by Main; single-threaded.
class AdminClient {
 public:
  // `token`: empty for none; `token_source` names where it came from.
  AdminClient(std::string address, absl::Duration timeout, std::string token,
              std::string token_source)
      : address_(std::move(address)),
        timeout_(timeout),
        token_(std::move(token)),
        token_source_(std::move(token_source)),
        stub_(Admin::NewStub(grpc::CreateChannel(
            address_, grpc::InsecureChannelCredentials()))) {}

  // Runs `rpc` (a stub method) with a fresh context. On failure prints one
  // line to stderr and returns false; `what` names the request in it.
  template <typename Request, typename Response, typename Rpc>
  bool Call(std::string_view what, Rpc rpc, const Request& request,
            Response* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
    if (!token_.empty())
      context.AddMetadata("authorization", "Bearer " + token_);
    grpc::Status status = ((*stub_).*rpc)(&context, request, response);
    if (status.ok()) return true;
    const grpc::StatusCode code = status.error_code();
    if (code == grpc::StatusCode::UNAUTHENTICATED) {
      std::cerr << "sluicectl: " << what << ": the admin API at " << address_
                << " refused the request: " << Describe(status) << "\n"
                << (token_.empty()
                        ? "sluicectl: no token was sent; give the daemon's "
                          "admin token with --token_file=PATH or "
                          "SLUICE_ADMIN_TOKEN\n"
                        : absl::StrCat("sluicectl: the token from ",
                                       token_source_,
                                       " is not the daemon's admin token\n"));
    } else if (code == grpc::StatusCode::UNAVAILABLE ||
               code == grpc::StatusCode::DEADLINE_EXCEEDED) {
      std::cerr << "sluicectl: cannot reach the admin API at " << address_
                << ": " << Describe(status)
                << (code == grpc::StatusCode::DEADLINE_EXCEEDED
                        ? absl::StrCat(" (--timeout=",
                                       absl::FormatDuration(timeout_), ")")
                        : "")
                << "\n";
    } else {
      std::cerr << "sluicectl: " << what << ": " << Describe(status) << "\n";
    }
    return false;
  }

  Admin::Stub* stub() { return stub_.get(); }

 private:
  const std::string address_;
  const absl::Duration timeout_;
  const std::string token_;
  const std::string token_source_;
  std::unique_ptr<Admin::Stub> stub_;
};

// Prints `message` as JSON (--json) or `text`.
void Print(const google::protobuf::Message& message, const std::string& text) {
  std::cout << (absl::GetFlag(FLAGS_json) ? ToJson(message) : text);
  std::cout.flush();
}

// ---- Commands ------------------------------------------------------------

int Status(AdminClient& admin) {
  sluice::admin::v1::GetStatusResponse response;
  if (!admin.Call("status", &Admin::Stub::GetStatus,
                  sluice::admin::v1::GetStatusRequest(), &response)) {
    return kExitFailed;
  }
  Print(response, RenderStatus(response));
  return kExitOk;
}

int Config(AdminClient& admin) {
  sluice::admin::v1::GetConfigResponse response;
  if (!admin.Call("config", &Admin::Stub::GetConfig,
                  sluice::admin::v1::GetConfigRequest(), &response)) {
    return kExitFailed;
  }
  Print(response, RenderConfig(response));
  return kExitOk;
}

int Limits(AdminClient& admin) {
  sluice::admin::v1::ListLimitsRequest request;
  if (auto top = absl::GetFlag(FLAGS_top_keys)) {
    if (*top < 1) return UsageError("--top_keys must be >= 1");
    request.set_top_keys(static_cast<uint32_t>(*top));
  }
  sluice::admin::v1::ListLimitsResponse response;
  if (!admin.Call("limits", &Admin::Stub::ListLimits, request, &response)) {
    return kExitFailed;
  }
  Print(response, RenderLimits(response));
  return kExitOk;
}

int SetLimit(AdminClient& admin, const std::string& route,
             const std::string& name) {
  sluice::admin::v1::SetLimitRequest request;
  request.set_route(route);
  request.set_name(name);
  if (auto v = absl::GetFlag(FLAGS_rate)) request.set_rate_per_second(*v);
  if (auto v = absl::GetFlag(FLAGS_burst)) request.set_burst(*v);
  if (auto v = absl::GetFlag(FLAGS_concurrency)) {
    request.set_concurrency_max(*v);
  }
  if (auto v = absl::GetFlag(FLAGS_queue)) request.set_concurrency_queue(*v);
  if (!request.has_rate_per_second() && !request.has_burst() &&
      !request.has_concurrency_max() && !request.has_concurrency_queue()) {
    return UsageError(
        "set-limit needs at least one of --rate, --burst, --concurrency, "
        "--queue");
  }
  sluice::admin::v1::SetLimitResponse response;
  if (!admin.Call(absl::StrCat("set-limit ", route, " ", name),
                  &Admin::Stub::SetLimit, request, &response)) {
    return kExitFailed;
  }
  Print(response, RenderLimits({&response.limit()}));
  return kExitOk;
}

int Drain(AdminClient& admin) {
  sluice::admin::v1::DrainResponse response;
  if (!admin.Call("drain", &Admin::Stub::Drain,
                  sluice::admin::v1::DrainRequest(), &response)) {
    return kExitFailed;
  }
  Print(response,
        response.started() ? "drain started\n" : "already draining\n");
  return kExitOk;
}

// Offline: the daemon's own loader, so the same errors and hash as
// `sluice --config=PATH --check`.
int Check(const std::string& path) {
  auto config = LoadConfigFile(path);
  if (absl::GetFlag(FLAGS_json)) {
    google::protobuf::Struct out;
    auto& fields = *out.mutable_fields();
    fields["ok"].set_bool_value(config.ok());
    fields["source"].set_string_value(path);
    if (config.ok()) {
      fields["config_hash"].set_string_value((*config)->hash());
    } else {
      auto* errors = fields["errors"].mutable_list_value();
      for (absl::string_view line :
           absl::StrSplit(config.status().message(), '\n', absl::SkipEmpty())) {
        errors->add_values()->set_string_value(std::string(line));
      }
    }
    std::cout << ToJson(out);
    return config.ok() ? kExitOk : kExitBadConfig;
  }
  if (!config.ok()) {
    std::cerr << config.status().message() << "\n";
    return kExitBadConfig;
  }
  std::cout << "config OK: " << (*config)->source() << " (hash "
            << (*config)->hash() << ")\n";
  return kExitOk;
}

// Flags that only one command takes; giving them to another is an error.
std::optional<std::string> StrayFlag(const std::string& command) {
  if (command != "limits" && absl::GetFlag(FLAGS_top_keys)) {
    return "--top_keys only applies to limits";
  }
  if (command != "set-limit") {
    if (absl::GetFlag(FLAGS_rate)) return "--rate only applies to set-limit";
    if (absl::GetFlag(FLAGS_burst)) return "--burst only applies to set-limit";
    if (absl::GetFlag(FLAGS_concurrency)) {
      return "--concurrency only applies to set-limit";
    }
    if (absl::GetFlag(FLAGS_queue)) return "--queue only applies to set-limit";
  }
  return std::nullopt;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  absl::FlagsUsageConfig usage_config;
  usage_config.version_string = []() -> std::string {
    return "sluicectl " + std::string(kSluiceVersion) + "\n";
  };
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "client/sluicectl/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  if (auto problem = PrecheckFlags(argc, argv)) return UsageError(*problem);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) return UsageError("no command given");

  const std::string command = args[0];
  args.erase(args.begin());
  static const auto* const kArity = new std::map<std::string, size_t>{
      {"status", 0},    {"config", 0}, {"limits", 0},
      {"set-limit", 2}, {"drain", 0},  {"check", 1},
  };
  auto arity = kArity->find(command);
  if (arity == kArity->end()) {
    return UsageError(absl::StrCat("unknown command \"", command, "\""));
  }
  if (args.size() != arity->second) {
    return UsageError(
        arity->second == 0
            ? absl::StrCat(command, " takes no arguments")
            : absl::StrCat(command, " needs ",
                           command == "check" ? "CONFIG" : "ROUTE LIMIT"));
  }
  if (auto problem = StrayFlag(command)) return UsageError(*problem);

  if (command == "check") return Check(args[0]);

  const std::string address = absl::GetFlag(FLAGS_admin);
  const absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (address.empty()) return UsageError("--admin is empty");
  if (timeout <= absl::ZeroDuration()) {
    return UsageError("--timeout must be > 0");
  }
  std::string token;
  std::string token_source;
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    auto text = ReadSmallFile(path, "--token_file", 64 << 10);
    if (!text.ok()) {
      std::cerr << "sluicectl: " << text.status().message() << "\n";
      return kExitUsage;
    }
    token = std::string(absl::StripAsciiWhitespace(*text));
    if (token.empty()) {
      std::cerr << "sluicectl: --token_file \"" << path << "\" is empty\n";
      return kExitUsage;
    }
    token_source = absl::StrCat("--token_file \"", path, "\"");
  } else if (const char* env = std::getenv("SLUICE_ADMIN_TOKEN")) {
    token = std::string(absl::StripAsciiWhitespace(env));
    token_source = "SLUICE_ADMIN_TOKEN";
  }
  AdminClient admin(address, timeout, std::move(token),
                    std::move(token_source));
  if (command == "status") return Status(admin);
  if (command == "config") return Config(admin);
  if (command == "limits") return Limits(admin);
  if (command == "set-limit") return SetLimit(admin, args[0], args[1]);
  return Drain(admin);
}

}  // namespace
}  // namespace sluice::sluicectl

int main(int argc, char** argv) { return sluice::sluicectl::Main(argc, argv); }
