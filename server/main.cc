// sluice: the gRPC rate-limiting proxy daemon.
//
//   sluice --config=deploy/examples/demo.yaml
//   sluice --listen=127.0.0.1:8080 --upstream=127.0.0.1:50051
//   sluice --config=FILE --check
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/common/flag_check.h"
#include "server/config/config.h"
#include "server/config/config_watcher.h"
#include "server/daemon.h"
#include "server/signal_thread.h"
#include "server/version.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, config, "", "Path of the YAML configuration file.");
ABSL_FLAG(bool, check, false,
          "Validate --config and exit: 0 if valid, 2 with the errors if not.");
ABSL_FLAG(std::string, listen, "",
          "Data port address (host:port), overrides listeners.data.");
ABSL_FLAG(std::string, admin, "",
          "Admin port address, overrides listeners.admin.");
ABSL_FLAG(std::string, metrics, "",
          "Metrics port address, overrides listeners.metrics.");
ABSL_FLAG(std::string, health, "",
          "Health-only gRPC port address, overrides listeners.health.");
ABSL_FLAG(std::string, upstream, "",
          "Quick start without --config: forward every method to this gRPC "
          "target (host:port), required for readiness. With --config: "
          "overrides the target of the first upstream.");
ABSL_FLAG(int, workers, -1,
          "Worker threads (0: one per core), overrides workers.");
ABSL_FLAG(std::string, log_level, "info",
          "trace, debug, info, warn, error or off.");
ABSL_FLAG(std::string, ready_file, "",
          "Once serving, write the bound addresses as JSON to this file.");
ABSL_FLAG(bool, version, false, "Print the version and exit.");
ABSL_FLAG(bool, watch_config, true,
          "Reload when the --config file changes on disk (an edit, or a "
          "Kubernetes ConfigMap update), as SIGHUP does.");

namespace sluice {
namespace {

constexpr int kExitBadConfig = 2;

// The configuration: the file (or a quick-start one) plus flag overrides.
// The command-line overrides, applied to the parsed file (or quick-start)
// proto before its defaults are filled in.
void ApplyFlags(sluice::config::v1::Config* proto) {
  if (!absl::GetFlag(FLAGS_upstream).empty() && proto->upstreams_size() > 0) {
    proto->mutable_upstreams(0)->set_target(absl::GetFlag(FLAGS_upstream));
  }
  if (!absl::GetFlag(FLAGS_listen).empty()) {
    proto->mutable_listeners()->set_data(absl::GetFlag(FLAGS_listen));
  }
  if (!absl::GetFlag(FLAGS_admin).empty()) {
    proto->mutable_listeners()->set_admin(absl::GetFlag(FLAGS_admin));
  }
  if (!absl::GetFlag(FLAGS_metrics).empty()) {
    proto->mutable_listeners()->set_metrics(absl::GetFlag(FLAGS_metrics));
  }
  if (!absl::GetFlag(FLAGS_health).empty()) {
    proto->mutable_listeners()->set_health(absl::GetFlag(FLAGS_health));
  }
  if (absl::GetFlag(FLAGS_workers) >= 0) {
    proto->set_workers(absl::GetFlag(FLAGS_workers));
  }
}

// The configuration: the file (or a quick-start one) plus flag overrides.
// The overrides go in before defaults are filled, so a default that
// follows the target (an upstream's reconnect backoff) follows --upstream.
absl::StatusOr<std::shared_ptr<const Config>> LoadWithFlags() {
  const std::string path = absl::GetFlag(FLAGS_config);
  if (!path.empty()) {
    bool no_upstream = false;
    auto loaded = LoadConfigFile(path, [&](sluice::config::v1::Config* proto) {
      no_upstream = proto->upstreams_size() == 0;
      ApplyFlags(proto);
    });
    if (no_upstream && !absl::GetFlag(FLAGS_upstream).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--upstream: ", path,
                       " defines no upstream to point"
                       " at it (it overrides the target of the first one)"));
    }
    return loaded;
  }
  if (absl::GetFlag(FLAGS_upstream).empty()) {
    return absl::InvalidArgumentError(
        "either --config=FILE or --upstream=HOST:PORT is required");
  }
  sluice::config::v1::Config proto;
  auto* up = proto.add_upstreams();
  up->set_name("default");
  // Quick start has one upstream and nothing to serve without it:
  // readiness follows it (docs/reliability.md).
  up->set_required(true);
  auto* route = proto.add_routes();
  route->set_name("default");
  route->mutable_match()->set_prefix("/");
  route->set_upstream("default");
  ApplyFlags(&proto);
  return Config::FromProto(proto, "flags");
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "gRPC rate-limiting proxy.\n"
      "  sluice --config=FILE\n"
      "  sluice --listen=127.0.0.1:8080 --upstream=127.0.0.1:50051\n"
      "  sluice --config=FILE --check");
  // --help lists the flags of this file (absl's default lists only those
  // declared in a file named after the program).
  sluice::SetUsageConfig("server/main.cc");
  absl::ParseCommandLine(argc, argv);
  // Debian's Abseil runs its deadlock detector on every Mutex operation
  // (3x the cost of a lock, and it serialises contended threads); the
  // daemon's lock order is fixed and tested, so turn it off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (absl::GetFlag(FLAGS_version)) {
    std::cout << "sluice " << kSluiceVersion << "\n";
    return 0;
  }
  spdlog::set_level(spdlog::level::from_str(absl::GetFlag(FLAGS_log_level)));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");

  if (absl::GetFlag(FLAGS_check)) {
    if (absl::GetFlag(FLAGS_config).empty()) {
      std::cerr << "sluice: --check needs --config=FILE\n";
      return kExitBadConfig;
    }
    auto config = LoadWithFlags();
    if (!config.ok()) {
      std::cerr << config.status().message() << "\n";
      return kExitBadConfig;
    }
    std::cout << "config OK: " << (*config)->source() << " (hash "
              << (*config)->hash() << ")\n";
    return 0;
  }

  // Signals go to a dedicated thread (sigwait); block them everywhere else.
  SignalThread::BlockSignals();
  signal(SIGPIPE, SIG_IGN);

  auto daemon = Daemon::Start(LoadWithFlags, absl::GetFlag(FLAGS_ready_file));
  if (!daemon.ok()) {
    std::cerr << "sluice: " << daemon.status().message() << "\n";
    return absl::IsInvalidArgument(daemon.status()) ? kExitBadConfig : 1;
  }
  Daemon* d = daemon->get();
  // Stopped (joined) below before the daemon is destroyed: a SIGHUP during
  // shutdown can never reach a destroyed Daemon.
  SignalThread signal_thread(SignalThread::Callbacks{
      .reload =
          [d] {
            spdlog::info("SIGHUP: reloading the configuration");
            d->Reload().IgnoreError();
          },
      .drain =
          [d](int sig) {
            spdlog::info("{}: draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
            d->RequestDrain();
          },
      .abort =
          [] {
            spdlog::warn(
                "second signal: exiting without waiting for the drain");
            std::_Exit(1);
          },
  });
  std::unique_ptr<ConfigWatcher> watcher;
  if (!absl::GetFlag(FLAGS_config).empty() &&
      absl::GetFlag(FLAGS_watch_config)) {
    auto started = ConfigWatcher::Start(
        absl::GetFlag(FLAGS_config), ConfigWatcher::Options(), [d]() {
          spdlog::info("config file changed on disk: reloading");
          d->Reload().IgnoreError();
        });
    if (started.ok()) {
      watcher = std::move(*started);
    } else {
      spdlog::warn("{}; reload with SIGHUP",
                   std::string(started.status().message()));
    }
  }
  d->Run();
  watcher.reset();
  signal_thread.Stop();
  daemon->reset();
  return 0;
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) { return sluice::Main(argc, argv); }
