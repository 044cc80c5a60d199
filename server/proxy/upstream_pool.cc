#include "server/proxy/upstream_pool.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace sluice {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", what, " file \"", path, "\""));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(
    const UpstreamSettings& u) {
  if (!u.tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  if (!u.tls_ca_file.empty()) {
    auto ca = ReadFile(u.tls_ca_file, "tls.ca_file");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
  }
  if (!u.tls_cert_file.empty()) {
    auto cert = ReadFile(u.tls_cert_file, "tls.cert_file");
    if (!cert.ok()) return cert.status();
    auto key = ReadFile(u.tls_key_file, "tls.key_file");
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *cert;
    options.pem_private_key = *key;
  }
  return grpc::SslCredentials(options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<UpstreamPool>> UpstreamPool::Create(
    const Config& config) {
  auto pool = std::make_unique<UpstreamPool>();
  for (const UpstreamSettings& u : config.upstreams()) {
    auto creds = Credentials(u);
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

grpc::GenericStub* UpstreamPool::Pick(int index) {
  Upstream& up = *upstreams_[index];
  uint32_t n = up.next.fetch_add(1, std::memory_order_relaxed);
  return up.stubs[n % up.stubs.size()].get();
}

}  // namespace sluice
