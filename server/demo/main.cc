// demo_upstream: serves grpc.testing.TestService and sluice.demo.v1.Ticker
// (with health and reflection) until SIGTERM or SIGINT.
//
//   demo_upstream --listen=127.0.0.1:0 --ready_file=/tmp/upstream.json
//   demo_upstream --tls_cert=server.pem --tls_key=server.key   # TLS
//   demo_upstream --capacity=20 --service_time=10ms   # capacity mode
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/common/flag_check.h"
#include "grpcpp/security/server_credentials.h"
#include "server/demo/demo_upstream.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "host:port to serve on; port 0 picks a free port");
ABSL_FLAG(std::string, ready_file, "",
          "once serving, write {\"address\":\"HOST:PORT\"} to this file "
          "(atomically: PATH.tmp, then rename)");

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve TLS instead of plaintext (with "
          "--tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(int64_t, capacity, 0,
          "capacity mode: serve this many unary TestService calls at once "
          "in --service_time each, slower beyond (a call started with k in "
          "flight takes service_time * k / capacity); 0: off. Changed at "
          "run time by sluice.demo.v1.Capacity/Set");
ABSL_FLAG(absl::Duration, service_time, absl::Milliseconds(10),
          "capacity mode: how long a unary call takes at full speed");
ABSL_FLAG(absl::Duration, min_ping_interval, absl::ZeroDuration(),
          "shortest interval between HTTP/2 pings without data the server "
          "tolerates (e.g. 500ms, for a client keepalive that fast); 0: "
          "gRPC's default, 5m");

namespace {

// Plaintext, or TLS from --tls_cert and --tls_key.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials() {
  const std::string cert_file = absl::GetFlag(FLAGS_tls_cert);
  const std::string key_file = absl::GetFlag(FLAGS_tls_key);
  if (cert_file.empty() && key_file.empty()) {
    return grpc::InsecureServerCredentials();
  }
  if (cert_file.empty() || key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  for (auto [path, out] : {std::pair{&cert_file, &pair.cert_chain},
                           std::pair{&key_file, &pair.private_key}}) {
    std::ifstream in(*path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in || text.str().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read \"", *path, "\""));
    }
    *out = text.str();
  }
  options.pem_key_cert_pairs.push_back(pair);
  return grpc::SslServerCredentials(options);
}

absl::Status WriteReadyFile(const std::string& path,
                            const std::string& address) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "{\"address\":\"" << address << "\"}\n";
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "serves grpc.testing.TestService and sluice.demo.v1.Ticker\n"
      "(with health and reflection) until SIGTERM or SIGINT.\n"
      "  demo_upstream --listen=127.0.0.1:50051 [--ready_file=PATH]");
  // --help lists the flags of this file (absl's default lists only those
  // declared in a file named after the program).
  sluice::SetUsageConfig("server/demo/main.cc");
  absl::ParseCommandLine(argc, argv);

  // Block the stop signals before gRPC starts threads, so every thread
  // inherits the mask and only sigwait below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  sluice::demo::DemoUpstream upstream;
  if (absl::GetFlag(FLAGS_capacity) < 0 ||
      absl::GetFlag(FLAGS_service_time) <= absl::ZeroDuration()) {
    std::cerr << "demo-upstream: --capacity must be >= 0 and --service_time "
                 "> 0"
              << std::endl;
    return 2;
  }
  upstream.capacity().Set(
      {absl::GetFlag(FLAGS_capacity), absl::GetFlag(FLAGS_service_time)});
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      Credentials();
  if (!credentials.ok()) {
    std::cerr << "demo-upstream: " << credentials.status() << std::endl;
    return 2;
  }
  absl::StatusOr<int> port =
      upstream.Start(absl::GetFlag(FLAGS_listen), *credentials,
                     absl::GetFlag(FLAGS_min_ping_interval));
  if (!port.ok()) {
    std::cerr << "demo-upstream: " << port.status() << std::endl;
    return 1;
  }

  const std::string ready_file = absl::GetFlag(FLAGS_ready_file);
  if (!ready_file.empty()) {
    absl::Status written = WriteReadyFile(ready_file, upstream.address());
    if (!written.ok()) {
      std::cerr << "demo-upstream: " << written << std::endl;
      upstream.Shutdown(absl::ZeroDuration());
      return 1;
    }
  }
  // After the ready file, so whoever reads this line may read the file.
  std::cout << "demo-upstream listening on " << upstream.address() << std::endl;

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::cout << "demo-upstream stopping on signal " << signal_number
            << std::endl;
  upstream.Shutdown(absl::Seconds(2));
  return 0;
}
