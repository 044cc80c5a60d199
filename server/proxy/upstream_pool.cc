#include "server/proxy/upstream_pool.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/support/channel_arguments.h"
#include "server/common/read_file.h"
#include "spdlog/spdlog.h"

namespace sluice {
namespace {

// How often the upstream TLS files are re-read (besides at each reload).
constexpr unsigned int kTlsRefreshSeconds = 60;

// A channel-argument duration (config validation bounds it to an hour).
int Millis(absl::Duration d) {
  return static_cast<int>(absl::ToInt64Milliseconds(d));
}

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
    const Config& config,
    prometheus::Family<prometheus::Counter>* shape_fallbacks,
    prometheus::Family<prometheus::Gauge>* reflected_methods) {
  auto pool = std::make_unique<UpstreamPool>();
  for (const UpstreamSettings& u : config.upstreams()) {
    auto creds = Credentials(u, &pool->tls_files_);
    if (!creds.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "upstream \"", u.name, "\": ", creds.status().message()));
    }
    auto up = std::make_unique<Upstream>();
    up->name = u.name;
    up->shapes = std::make_shared<ShapeBoard>(
        u.name, config.workers(), shape_fallbacks, reflected_methods);
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
      // Connection backoff (subchannel.cc): the first retry after
      // INITIAL, then x1.6 with +-20% jitter up to MAX; an attempt may
      // take max(MIN_RECONNECT_BACKOFF, time until the next one is due), so
      // gRPC's "min reconnect backoff" is the connect timeout.
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                  Millis(u.reconnect_initial_backoff));
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                  Millis(u.reconnect_max_backoff));
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, Millis(u.connect_timeout));
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

bool SentByUpstream(const grpc::ClientContext& ctx,
                    const grpc::Status& status) {
  // gRPC core describes a status read from trailers this way (call.cc,
  // RecvTrailingFilter); a call that never reached a connection (no
  // address connected, wait ended) differently.
  if (!absl::StrContains(ctx.debug_error_string(),
                         "Error received from peer")) {
    return false;
  }
  // The upstream's own trailers: its status, whatever it says.
  if (!ctx.GetServerTrailingMetadata().empty()) return true;
  // chttp2 ends the streams of a connection that failed with trailers it
  // makes up (grpc_chttp2_fake_status), which read like the peer's: known
  // by their messages (gRPC 1.51's transport errors).
  static constexpr absl::string_view kTransportErrors[] = {
      "keepalive watchdog timeout",
      "Socket closed",
      "Transport closed",
      "Transport destroyed",
      "Endpoint read failed",
      "Delayed close due to in-progress write",
      "Connection reset by peer",
      "Broken pipe",
      "GOAWAY received",
      "Cancelling all calls",
  };
  for (absl::string_view error : kTransportErrors) {
    if (absl::StrContains(status.error_message(), error)) return false;
  }
  return true;
}

bool IsKeepaliveTimeout(const grpc::Status& status) {
  // chttp2's message for a ping without an answer (gRPC 1.51's
  // keepalive watchdog).
  return absl::StrContains(status.error_message(),
                           "keepalive watchdog timeout");
}

void LogUpstreamUnavailable(const std::string& name, const std::string& target,
                            const std::string& detail) {
  static std::atomic<int64_t> next_log_ns{0};
  const int64_t now = absl::GetCurrentTimeNanos();
  int64_t due = next_log_ns.load(std::memory_order_relaxed);
  if (now < due || !next_log_ns.compare_exchange_strong(
                       due, now + absl::ToInt64Nanoseconds(absl::Seconds(1)))) {
    return;
  }
  spdlog::warn("upstream \"{}\" ({}) unavailable: {}", name, target, detail);
}

const char* ConnectivityName(grpc_connectivity_state state) {
  switch (state) {
    case GRPC_CHANNEL_IDLE:
      return "IDLE";
    case GRPC_CHANNEL_CONNECTING:
      return "CONNECTING";
    case GRPC_CHANNEL_READY:
      return "READY";
    case GRPC_CHANNEL_TRANSIENT_FAILURE:
      return "TRANSIENT_FAILURE";
    case GRPC_CHANNEL_SHUTDOWN:
      return "SHUTDOWN";
  }
  return "UNKNOWN";
}

bool UpstreamPool::TlsFilesChanged() const {
  for (const auto& [path, contents] : tls_files_) {
    auto now = ReadSmallFile(path, "tls");
    if (!now.ok() || *now != contents) return true;
  }
  return false;
}

UpstreamPool::Choice UpstreamPool::Pick(int index) {
  Upstream& up = *upstreams_[index];
  const uint32_t n = up.next.fetch_add(1, std::memory_order_relaxed);
  const size_t size = up.stubs.size();
  for (size_t i = 0; i < size; ++i) {
    const size_t k = (n + i) % size;
    if (up.channels[k]->GetState(/*try_to_connect=*/false) ==
        GRPC_CHANNEL_READY) {
      return {up.stubs[k].get(), up.channels[k].get(), GRPC_CHANNEL_READY};
    }
  }
  const size_t k = n % size;
  return {up.stubs[k].get(), up.channels[k].get(),
          up.channels[k]->GetState(/*try_to_connect=*/true)};
}

}  // namespace sluice
