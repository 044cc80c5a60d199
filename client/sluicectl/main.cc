// sluicectl: a small command line client for Sluice's admin API
// (sluice.admin.v1.Admin), plus offline config validation.
//
//   sluicectl [--admin=HOST:PORT] [--token_file=PATH] [--timeout=5s] [--json]
//             COMMAND [ARGS]
//
// Exit codes: 0 success; 1 the admin API could not be reached or refused
// the request; 2 usage error, or `check` found an invalid config; `health`:
// 3 NOT_SERVING, 4 SERVICE_UNKNOWN.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/common/flag_check.h"
#include "client/sluicectl/render.h"
#include "google/protobuf/struct.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
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

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckResponse;
using sluice::admin::v1::Admin;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitBadConfig = 2;
constexpr int kExitNotServing = 3;
constexpr int kExitServiceUnknown = 4;

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
  health [SERVICE]        grpc.health.v1 Check on the admin port: prints
                          SERVING, NOT_SERVING or SERVICE_UNKNOWN. SERVICE:
                          "" (default) readiness, `liveness`, or an
                          upstream's name
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
      2 usage error, or `check` found errors;
      health: 0 SERVING, 3 NOT_SERVING, 4 SERVICE_UNKNOWN)";

int UsageError(std::string_view message) {
  std::cerr << "sluicectl: " << message << "\n\n" << kUsage << "\n";
  return kExitUsage;
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

// The admin port at --admin (sluice.admin.v1.Admin and grpc.health.v1.Health
// on one channel), one call at a time, each with --timeout and, if one is
// known, the bearer token. Owned by Main; single-threaded.
class AdminClient {
 public:
  // `token`: empty for none; `token_source` names where it came from.
  AdminClient(std::string address, absl::Duration timeout, std::string token,
              std::string token_source)
      : address_(std::move(address)),
        timeout_(timeout),
        token_(std::move(token)),
        token_source_(std::move(token_source)),
        channel_(
            grpc::CreateChannel(address_, grpc::InsecureChannelCredentials())),
        admin_(Admin::NewStub(channel_)),
        health_(Health::NewStub(channel_)) {}

  // Runs `rpc` (an Admin stub method) with a fresh context. On failure
  // prints one line to stderr and returns false; `what` names the request
  // in it.
  template <typename Request, typename Response, typename Rpc>
  bool Call(std::string_view what, Rpc rpc, const Request& request,
            Response* response) {
    grpc::Status status = Invoke(*admin_, rpc, request, response);
    if (status.ok()) return true;
    Report(what, status);
    return false;
  }

  // Runs `rpc`, a method of `stub`, with a fresh context; returns its status.
  template <typename Stub, typename Request, typename Response, typename Rpc>
  grpc::Status Invoke(Stub& stub, Rpc rpc, const Request& request,
                      Response* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
    if (!token_.empty())
      context.AddMetadata("authorization", "Bearer " + token_);
    return (stub.*rpc)(&context, request, response);
  }

  // One line (two for a token problem) on stderr about the failed call.
  void Report(std::string_view what, const grpc::Status& status) {
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
  }

  Health::Stub& health() { return *health_; }

 private:
  const std::string address_;
  const absl::Duration timeout_;
  const std::string token_;
  const std::string token_source_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Admin::Stub> admin_;
  std::unique_ptr<Health::Stub> health_;
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

// grpc.health.v1.Health/Check of `service` on the admin port. gRPC's health
// service answers NOT_FOUND for a name it does not know: SERVICE_UNKNOWN,
// as Watch would say.
int HealthCheck(AdminClient& admin, const std::string& service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  grpc::Status status =
      admin.Invoke(admin.health(), &Health::Stub::Check, request, &response);
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
    response.set_status(HealthCheckResponse::SERVICE_UNKNOWN);
  } else if (!status.ok()) {
    admin.Report(service.empty() ? "health" : absl::StrCat("health ", service),
                 status);
    return kExitFailed;
  }
  Print(response,
        absl::StrCat(HealthCheckResponse::ServingStatus_Name(response.status()),
                     "\n"));
  switch (response.status()) {
    case HealthCheckResponse::SERVING:
      return kExitOk;
    case HealthCheckResponse::SERVICE_UNKNOWN:
      return kExitServiceUnknown;
    default:  // NOT_SERVING, UNKNOWN
      return kExitNotServing;
  }
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
  SetUsageConfig("client/sluicectl/main.cc",
                 "sluicectl " + std::string(kSluiceVersion) + "\n");
  // absl's parser exits 1 on a bad flag; here that is a usage error (2).
  if (auto problem = FindFlagError(argc, argv)) return UsageError(*problem);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) return UsageError("no command given");

  const std::string command = args[0];
  args.erase(args.begin());
  // Each command's arguments: how many at least, at most, and their names.
  struct Arity {
    size_t min;
    size_t max;
    const char* names;
  };
  static const auto* const kArity = new std::map<std::string, Arity>{
      {"status", {0, 0, ""}},        {"config", {0, 0, ""}},
      {"limits", {0, 0, ""}},        {"set-limit", {2, 2, "ROUTE LIMIT"}},
      {"health", {0, 1, "SERVICE"}}, {"drain", {0, 0, ""}},
      {"check", {1, 1, "CONFIG"}},
  };
  auto arity = kArity->find(command);
  if (arity == kArity->end()) {
    return UsageError(absl::StrCat("unknown command \"", command, "\""));
  }
  if (const Arity& a = arity->second;
      args.size() < a.min || args.size() > a.max) {
    return UsageError(
        a.max == 0 ? absl::StrCat(command, " takes no arguments")
        : a.min == 0
            ? absl::StrCat(command, " takes at most one argument, ", a.names)
            : absl::StrCat(command, " needs ", a.names));
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
  if (command == "health") {
    return HealthCheck(admin, args.empty() ? "" : args[0]);
  }
  return Drain(admin);
}

}  // namespace
}  // namespace sluice::sluicectl

int main(int argc, char** argv) { return sluice::sluicectl::Main(argc, argv); }
