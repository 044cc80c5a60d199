#include "server/proxy/upstream_pool.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/support/channel_arguments.h"
#include "server/common/read_file.h"

namespace sluice {
namespace {

// How often the upstream TLS files are re-read (besides at each reload).
constexpr unsigned int kTlsRefreshSeconds = 60;

// Credentials of upstream `u`. Its TLS files are read here once, so a
// missing or unreadable one is an error now (and a failed reload), and
// their contents are appended to `files` for TlsFilesChanged(); gRPC's
// file watcher then re-reads them every kTlsRefreshSeconds.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(
    const UpstreamSettings& u,
    std::vector<std::pair<std::string, std::string>>* files) {
  if (!u.tls) return grpc::InsecureChannelCredentials();
  const std::pair<const std::string*, const char*> named[] = {
      {&u.tls_ca_file, "tls.ca_file"},
      {&u.tls_cert_file, "tls.cert_file"},
      {&u.tls_key_file, "tls.key_file"}};
  for (const auto& [path, what] : named) {
    if (path->empty()) continue;
    auto text = ReadSmallFile(*path, what);
    if (!text.ok()) return text.status();
    files->emplace_back(*path, std::move(*text));
  }
  grpc::experimental::TlsChannelCredentialsOptions options;
  if (!u.tls_ca_file.empty() || !u.tls_cert_file.empty()) {
    options.set_certificate_provider(
        std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
            u.tls_key_file, u.tls_cert_file, u.tls_ca_file,
            kTlsRefreshSeconds));
    // Without a watched CA file gRPC uses the system roots.
    if (!u.tls_ca_file.empty()) options.watch_root_certs();
    if (!u.tls_cert_file.empty()) options.watch_identity_key_cert_pairs();
  }
  // Verify the chain and the name (target host, or tls.server_name).
  options.set_verify_server_certs(true);
  options.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  auto credentials = grpc::experimental::TlsCredentials(options);
  if (credentials == nullptr) {
    return absl::InvalidArgumentError("gRPC refused the TLS settings");
  }
  return credentials;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UpstreamPool>> UpstreamPool::Create(
    const Config& config) {
  auto pool = std::make_unique<UpstreamPool>();
  for (const UpstreamSettings& u : config.upstreams()) {
    auto creds = Credentials(u, &pool->tls_files_);
    if (!creds.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "upstream \"", u.name, "\": ", creds.status().message()));
    }
    auto up = std::make_unique<Upstream>();
    up->name = u.name;
    for (int i = 0; i < u.channels; ++i) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetLoadBalancingPolicyName(u.lb_policy);
      args.SetMaxReceiveMessageSize(u.max_message_bytes);
      args.SetMaxSendMessageSize(u.max_message_bytes);
      // Transparent proxying: never retry on the client's behalf.
      args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
      args.SetString(GRPC_ARG_PRIMARY_USER_AGENT_STRING, "sluice");
      args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, config.bdp_probe() ? 1 : 0);
      if (u.keepalive_time > absl::ZeroDuration()) {
        args.SetInt(
            GRPC_ARG_KEEPALIVE_TIME_MS,
            static_cast<int>(absl::ToInt64Milliseconds(u.keepalive_time)));
        args.SetInt(
            GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
            static_cast<int>(absl::ToInt64Milliseconds(u.keepalive_timeout)));
        args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
                    u.keepalive_permit_without_calls ? 1 : 0);
        args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
      }
      if (u.tls && !u.tls_server_name.empty()) {
        args.SetSslTargetNameOverride(u.tls_server_name);
      }
      auto channel = grpc::CreateCustomChannel(u.target, *creds, args);
      channel->GetState(/*try_to_connect=*/true);
      up->stubs.push_back(std::make_unique<grpc::GenericStub>(channel));
      up->channels.push_back(std::move(channel));
    }
    pool->upstreams_.push_back(std::move(up));
  }
  return pool;
}

bool UpstreamPool::TlsFilesChanged() const {
  for (const auto& [path, contents] : tls_files_) {
    auto now = ReadSmallFile(path, "tls");
    if (!now.ok() || *now != contents) return true;
  }
  return false;
}

grpc::GenericStub* UpstreamPool::Pick(int index) {
  Upstream& up = *upstreams_[index];
  uint32_t n = up.next.fetch_add(1, std::memory_order_relaxed);
  return up.stubs[n % up.stubs.size()].get();
}

}  // namespace sluice
