#include "server/admin/admin_service.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <string>

#include "absl/strings/match.h"
#include "google/protobuf/util/json_util.h"
#include "server/limits/adaptive_limit.h"
#include "server/limits/clock.h"
#include "server/limits/concurrency_limiter.h"

namespace sluice {

grpc::Status AdminService::Authorize(const grpc::ServerContext* context) {
  const std::string token = backend_->CurrentConfig()->admin_token();
  if (token.empty()) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the admin API needs a token: send metadata "
                        "\"authorization: Bearer <token>\" (sluicectl: "
                        "--token_file or SLUICE_ADMIN_TOKEN)");
  }
  const std::string value(it->second.data(), it->second.size());
  constexpr char kScheme[] = "Bearer ";
  constexpr size_t kSchemeSize = sizeof(kScheme) - 1;
  // Compared in constant time over the token's length; the length itself
  // is not secret.
  const bool ok = value.size() == kSchemeSize + token.size() &&
                  absl::StartsWithIgnoreCase(value, kScheme) &&
                  CRYPTO_memcmp(value.data() + kSchemeSize, token.data(),
                                token.size()) == 0;
  if (!ok) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "invalid admin token (expected \"authorization: "
                        "Bearer <token>\" with the token of "
                        "admin.bearer_token_file)");
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::GetStatus(
    grpc::ServerContext* context, const sluice::admin::v1::GetStatusRequest*,
    sluice::admin::v1::GetStatusResponse* response) {
  if (auto denied = Authorize(context); !denied.ok()) return denied;
  *response = backend_->Status();
  return grpc::Status::OK;
}

grpc::Status AdminService::GetConfig(
    grpc::ServerContext* context, const sluice::admin::v1::GetConfigRequest*,
    sluice::admin::v1::GetConfigResponse* response) {
  if (auto denied = Authorize(context); !denied.ok()) return denied;
  std::shared_ptr<const Config> config = backend_->CurrentConfig();
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(config->proto(),
                                                            &json, options);
  if (!status.ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        std::string(status.message()));
  }
  response->set_config_json(json);
  response->set_config_hash(config->hash());
  response->set_source(config->source());
  return grpc::Status::OK;
}

grpc::Status AdminService::Drain(grpc::ServerContext* context,
                                 const sluice::admin::v1::DrainRequest*,
                                 sluice::admin::v1::DrainResponse* response) {
  if (auto denied = Authorize(context); !denied.ok()) return denied;
  response->set_started(backend_->RequestDrain());
  return grpc::Status::OK;
}

namespace {

void DescribeFairQueue(const ConcurrencyLimiter& c, const LimitSettings& ls,
                       size_t top, sluice::admin::v1::FairQueueStatus* out) {
  for (const std::string& part : ls.concurrency_key) out->add_key(part);
  const ConcurrencyLimiter::Limits limits = c.limits();
  out->set_max_per_key(limits.max_per_key);
  out->set_max_queue_per_key(limits.max_queue_per_key);
  out->set_max_keys(limits.max_keys);
  const ConcurrencyLimiter::Stats stats = c.GetStats();
  out->set_keys(stats.keys);
  out->set_rejected_queue_full(stats.rejected_queue_full);
  out->set_rejected_key_queue_full(stats.rejected_key_queue_full);
  out->set_overflow_acquisitions(stats.overflow_acquisitions);
  for (const ConcurrencyLimiter::KeyLoad& k : c.TopKeys(top)) {
    auto* key = out->add_top_keys();
    key->set_key(k.key);
    key->set_in_flight(k.in_flight);
    key->set_queued(k.queued);
  }
}

void DescribeAdaptive(const AdaptiveLimit& a,
                      sluice::admin::v1::AdaptiveLimitStatus* out) {
  const AdaptiveLimit::Snapshot snap = a.GetSnapshot();
  const AdaptiveLimit::Settings settings = a.settings();
  out->set_limit(snap.limit);
  out->set_min(settings.min_limit);
  out->set_max(settings.max_limit);
  out->set_estimated_limit(snap.estimated_limit);
  out->set_samples(snap.samples);
  out->set_dropped_samples(snap.dropped_samples);
  out->set_windows(snap.windows);
  out->set_gradient(snap.gradient);
  out->set_long_rtt_seconds(absl::ToDoubleSeconds(snap.long_rtt));
  out->set_short_rtt_seconds(absl::ToDoubleSeconds(snap.short_rtt));
  out->set_probing(snap.probing);
  out->set_probes(snap.probes);
  out->set_calls_in_flight(a.calls_in_flight());
}

void Describe(const LimitState& s, size_t top,
              sluice::admin::v1::LimitStatus* out) {
  const LimitSettings& ls = s.settings();
  const int64_t now = RealClock::Get().NowNanos();
  out->set_route(s.route());
  out->set_name(ls.name);
  out->set_dry_run(ls.dry_run);
  out->set_overridden(s.overridden());
  if (s.has_rate()) {
    out->set_rate_per_second(s.rate_per_second());
    out->set_burst(s.rate_burst());
    if (s.keyed()) {
      out->set_keys(s.KeyCount());
      for (const auto& kt : s.TopKeys(top, now)) {
        auto* k = out->add_top_keys();
        k->set_key(kt.key);
        k->set_tokens(kt.tokens);
      }
    } else {
      out->set_tokens(s.Tokens(now));
    }
  }
  for (const std::string& part : ls.key) out->add_key(part);
  if (auto* c = const_cast<LimitState&>(s).concurrency()) {
    out->set_concurrency_max(c->max_in_flight());
    out->set_in_flight(c->InFlight());
    out->set_queue_max(c->max_queue());
    out->set_queue_depth(c->QueueDepth());
  }
  if (s.concurrency_keyed() && s.concurrency() != nullptr) {
    DescribeFairQueue(*s.concurrency(), ls, top, out->mutable_fair_queue());
  }
  if (const AdaptiveLimit* a = s.adaptive()) {
    DescribeAdaptive(*a, out->mutable_adaptive());
  }
  out->set_messages_per_second(ls.messages_per_second);
  out->set_admitted(s.admitted.load());
  out->set_rejected(s.rejected.load());
  out->set_dry_run_rejected(s.dry_run_rejected.load());
  out->set_queued(s.queued.load());
  if (const GlobalRateLimiter* g = s.global()) {
    auto* gs = out->mutable_global();
    gs->set_redis(g->redis().address());
    gs->set_link(RedisLinkStateName(g->redis().link_state()));
    gs->set_redis_state(g->redis_state());
    gs->set_redis_error(g->redis_error());
    gs->set_fallback_active(g->fallback_active());
    gs->set_fallback(ls.global_fallback);
    gs->set_lease(std::max<int64_t>(1, ls.lease));
    const LeaseStock::Totals t = g->leases(now);
    gs->set_leased_tokens(t.tokens);
    gs->set_leased_keys(t.keys);
    gs->set_blocked_keys(t.blocked_keys);
  }
}

grpc::Status ToGrpc(const absl::Status& s) {
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
      code = grpc::StatusCode::INVALID_ARGUMENT;
      break;
    case absl::StatusCode::kFailedPrecondition:
      code = grpc::StatusCode::FAILED_PRECONDITION;
      break;
    case absl::StatusCode::kNotFound:
      code = grpc::StatusCode::NOT_FOUND;
      break;
    default:
      break;
  }
  return grpc::Status(code, std::string(s.message()));
}

}  // namespace

grpc::Status AdminService::ListLimits(
    grpc::ServerContext* context,
    const sluice::admin::v1::ListLimitsRequest* request,
    sluice::admin::v1::ListLimitsResponse* response) {
  if (auto denied = Authorize(context); !denied.ok()) return denied;
  const size_t top = request->top_keys() == 0 ? 10 : request->top_keys();
  for (const auto& s : backend_->Limits()->All()) {
    Describe(*s, top, response->add_limits());
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::SetLimit(
    grpc::ServerContext* context,
    const sluice::admin::v1::SetLimitRequest* request,
    sluice::admin::v1::SetLimitResponse* response) {
  if (auto denied = Authorize(context); !denied.ok()) return denied;
  auto state = backend_->Limits()->Find(request->route(), request->name());
  if (state == nullptr) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "no limit \"" + request->name() + "\" on route \"" +
                            request->route() + "\"");
  }
  auto opt_d = [](bool has, double v) {
    return has ? std::optional<double>(v) : std::nullopt;
  };
  auto opt_i = [](bool has, int64_t v) {
    return has ? std::optional<int64_t>(v) : std::nullopt;
  };
  absl::Status s = state->Override(
      opt_d(request->has_rate_per_second(), request->rate_per_second()),
      opt_i(request->has_burst(), request->burst()),
      opt_i(request->has_concurrency_max(), request->concurrency_max()),
      opt_i(request->has_concurrency_queue(), request->concurrency_queue()));
  if (!s.ok()) return ToGrpc(s);
  Describe(*state, 10, response->mutable_limit());
  return grpc::Status::OK;
}

}  // namespace sluice
