#include "server/metrics/limit_collector.h"

#include <atomic>
#include <limits>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "server/limits/adaptive_limit.h"
#include "server/limits/clock.h"
#include "server/limits/concurrency_limiter.h"
#include "server/limits/redis_client.h"
#include "server/metrics/series_plan.h"

namespace sluice {
namespace {

prometheus::MetricFamily Family(const std::string& name,
                                const std::string& help,
                                prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

prometheus::ClientMetric Sample(const LimitState& s, double value,
                                prometheus::MetricType type,
                                const char* decision = nullptr) {
  prometheus::ClientMetric m;
  m.label.push_back({"route", s.route()});
  m.label.push_back({"limit", s.settings().name});
  if (decision != nullptr) m.label.push_back({"decision", decision});
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return m;
}

}  // namespace

std::vector<prometheus::MetricFamily> LimitCollector::Collect() const {
  using prometheus::MetricType;
  auto decisions = Family(
      "sluice_limit_decisions_total",
      "Admission decisions per limit: admitted, rejected, dry_run_rejected "
      "(would have been rejected), queued (waited for a permit).",
      MetricType::Counter);
  auto in_flight =
      Family("sluice_limit_permits_in_use",
             "Concurrency permits held, per limit.", MetricType::Gauge);
  auto queue = Family("sluice_limit_queue_depth",
                      "Calls waiting for a concurrency permit, per limit.",
                      MetricType::Gauge);
  auto keys = Family("sluice_limit_keys",
                     "Distinct key buckets held by a keyed rate limit.",
                     MetricType::Gauge);
  auto key_overflow =
      Family("sluice_limit_key_overflow_total",
             "Calls of a keyed rate limit charged to its shared overflow "
             "bucket because the key table was full (max_keys active keys).",
             MetricType::Counter);
  auto fallback =
      Family("sluice_limit_fallback_active",
             "1 while a global limit applies its fallback because Redis fails.",
             MetricType::Gauge);
  auto redis_state = Family(
      "sluice_limit_redis_state",
      "Whether Redis answers a global limit: 1 for the current state, 0 for "
      "the others: ok, connecting, auth (AUTH refused or missing), "
      "unreachable, slow "
      "(timeouts), error (other error replies).",
      MetricType::Gauge);
  auto lease_tokens =
      Family("sluice_limit_lease_tokens",
             "Tokens a global limit with lease > 1 holds locally (leased from "
             "Redis, not spent yet).",
             MetricType::Gauge);
  auto queue_keys =
      Family("sluice_limit_queue_keys",
             "Keys holding a permit or queued in a concurrency limit with a "
             "key (fair queuing; bounded by max_keys).",
             MetricType::Gauge);
  auto key_queue_full =
      Family("sluice_limit_key_queue_full_total",
             "Calls a keyed concurrency limit rejected because their key's "
             "queue was full (max_queue_per_key).",
             MetricType::Counter);
  auto adaptive_limit =
      Family("sluice_adaptive_limit",
             "The current value of an adaptive concurrency limit (its min "
             "while probing the no-load latency).",
             MetricType::Gauge);
  auto adaptive_gradient =
      Family("sluice_adaptive_limit_gradient",
             "An adaptive limit's last gradient, 0.5..1 (1: the upstream "
             "does not queue).",
             MetricType::Gauge);
  auto adaptive_rtt =
      Family("sluice_adaptive_limit_rtt_seconds",
             "An adaptive limit's no-load (window=long) and last window's "
             "(window=short) round-trip time.",
             MetricType::Gauge);
  auto adaptive_samples =
      Family("sluice_adaptive_limit_samples_total",
             "Unary calls' samples an adaptive limit took; dropped=true: "
             "timed out or shed by the upstream.",
             MetricType::Counter);
  auto adaptive_probes =
      Family("sluice_adaptive_limit_probes_total",
             "Probes that re-measured an adaptive limit's no-load latency.",
             MetricType::Counter);
  const int64_t now = RealClock::Get().NowNanos();
  // Only the series each limit's settings make possible (series_plan.h),
  // all of them from the moment the limit is bound: at 0 for a new limit.
  bool global = false;
  for (const auto& s : registry_->All()) {
    const LimitSeriesPlan plan = PlanLimitSeries(s->settings());
    if (plan.fallback_active) {
      global = true;
      const GlobalRateLimiter* g = s->global();
      fallback.metric.push_back(Sample(
          *s, g != nullptr && g->fallback_active() ? 1 : 0, MetricType::Gauge));
      const std::string state = g != nullptr ? g->redis_state() : "ok";
      for (const char* name : GlobalRateLimiter::kRedisStates) {
        prometheus::ClientMetric m =
            Sample(*s, state == name ? 1 : 0, MetricType::Gauge);
        m.label.push_back({"state", name});
        redis_state.metric.push_back(std::move(m));
      }
      if (s->settings().lease > 1) {
        lease_tokens.metric.push_back(Sample(
            *s, g != nullptr ? static_cast<double>(g->leases(now).tokens) : 0,
            MetricType::Gauge));
      }
    }
    const std::pair<const char*, const std::atomic<int64_t>*> decided[] = {
        {plan.admitted ? "admitted" : nullptr, &s->admitted},
        {plan.rejected ? "rejected" : nullptr, &s->rejected},
        {plan.dry_run_rejected ? "dry_run_rejected" : nullptr,
         &s->dry_run_rejected},
        {plan.queued ? "queued" : nullptr, &s->queued}};
    for (const auto& [decision, count] : decided) {
      if (decision == nullptr) continue;
      decisions.metric.push_back(
          Sample(*s, count->load(), MetricType::Counter, decision));
    }
    if (const ConcurrencyLimiter* c = s->concurrency()) {
      if (plan.permits_in_use) {
        in_flight.metric.push_back(
            Sample(*s, c->InFlight(), MetricType::Gauge));
      }
      if (plan.queue_depth) {
        queue.metric.push_back(Sample(*s, c->QueueDepth(), MetricType::Gauge));
      }
    }
    if (plan.queue_keys && s->concurrency() != nullptr) {
      const ConcurrencyLimiter::Stats stats = s->concurrency()->GetStats();
      queue_keys.metric.push_back(
          Sample(*s, static_cast<double>(stats.keys), MetricType::Gauge));
      key_queue_full.metric.push_back(
          Sample(*s, static_cast<double>(stats.rejected_key_queue_full),
                 MetricType::Counter));
    }
    if (plan.adaptive && s->adaptive() != nullptr) {
      const AdaptiveLimit::Snapshot a = s->adaptive()->GetSnapshot();
      adaptive_limit.metric.push_back(
          Sample(*s, static_cast<double>(a.limit), MetricType::Gauge));
      adaptive_gradient.metric.push_back(
          Sample(*s, a.gradient, MetricType::Gauge));
      for (const auto& [window, rtt] :
           {std::pair{"long", a.long_rtt}, std::pair{"short", a.short_rtt}}) {
        prometheus::ClientMetric m =
            Sample(*s, absl::ToDoubleSeconds(rtt), MetricType::Gauge);
        m.label.push_back({"window", window});
        adaptive_rtt.metric.push_back(std::move(m));
      }
      for (const auto& [dropped, count] :
           {std::pair{"false", a.samples - a.dropped_samples},
            std::pair{"true", a.dropped_samples}}) {
        prometheus::ClientMetric m =
            Sample(*s, static_cast<double>(count), MetricType::Counter);
        m.label.push_back({"dropped", dropped});
        adaptive_samples.metric.push_back(std::move(m));
      }
      adaptive_probes.metric.push_back(
          Sample(*s, static_cast<double>(a.probes), MetricType::Counter));
    }
    if (plan.keys) {
      keys.metric.push_back(Sample(*s, s->KeyCount(), MetricType::Gauge));
      key_overflow.metric.push_back(Sample(
          *s, static_cast<double>(s->KeyOverflowTakes()), MetricType::Counter));
    }
  }
  std::vector<prometheus::MetricFamily> out;
  for (auto* f : {&decisions, &in_flight, &queue, &keys, &key_overflow,
                  &fallback, &redis_state, &lease_tokens, &queue_keys,
                  &key_queue_full, &adaptive_limit, &adaptive_gradient,
                  &adaptive_rtt, &adaptive_samples, &adaptive_probes}) {
    if (!f->metric.empty()) out.push_back(std::move(*f));
  }
  // Only global limits send requests to Redis: without one, no Redis series
  // (the counters are process-wide and keep their values across reloads).
  if (!global) return out;
  // The process-wide Redis client counters (global limits).
  RedisStats& redis = RedisStats::Get();
  auto errors = Family("sluice_redis_errors_total",
                       "Failed Redis requests of global limits, by kind: "
                       "timeout, connection, reply.",
                       MetricType::Counter);
  for (int k = 0; k < RedisStats::kNumKinds; ++k) {
    prometheus::ClientMetric m;
    m.label.push_back({"kind", RedisStats::KindName(k)});
    m.counter.value = static_cast<double>(redis.errors[k].load());
    errors.metric.push_back(m);
  }
  auto redirects = Family("sluice_redis_cluster_redirects_total",
                          "Redis Cluster redirections followed by global "
                          "limits, by kind: moved, ask.",
                          MetricType::Counter);
  for (int k = 0; k < 2; ++k) {
    prometheus::ClientMetric m;
    m.label.push_back({"kind", k == 0 ? "moved" : "ask"});
    m.counter.value = static_cast<double>(redis.redirects[k].load());
    redirects.metric.push_back(m);
  }
  auto latency = Family("sluice_redis_request_duration_seconds",
                        "Time from sending a Redis request of a global limit "
                        "to its reply (timeouts are counted as errors).",
                        MetricType::Histogram);
  prometheus::ClientMetric h;
  int64_t cumulative = 0;
  for (size_t b = 0; b < RedisStats::kBounds.size(); ++b) {
    cumulative += redis.buckets[b].load();
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = static_cast<uint64_t>(cumulative);
    bucket.upper_bound = RedisStats::kBounds[b];
    h.histogram.bucket.push_back(bucket);
  }
  cumulative += redis.buckets[RedisStats::kBounds.size()].load();
  prometheus::ClientMetric::Bucket inf;
  inf.cumulative_count = static_cast<uint64_t>(cumulative);
  inf.upper_bound = std::numeric_limits<double>::infinity();
  h.histogram.bucket.push_back(inf);
  h.histogram.sample_count = static_cast<uint64_t>(cumulative);
  h.histogram.sample_sum = static_cast<double>(redis.sum_nanos.load()) / 1e9;
  latency.metric.push_back(h);
  out.push_back(std::move(errors));
  out.push_back(std::move(redirects));
  out.push_back(std::move(latency));
  return out;
}

}  // namespace sluice
