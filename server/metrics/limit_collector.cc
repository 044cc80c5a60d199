#include "server/metrics/limit_collector.h"

#include <limits>
#include <string>

#include "server/limits/redis_client.h"

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
  auto fallback =
      Family("sluice_limit_fallback_active",
             "1 while a global limit applies its fallback because Redis fails.",
             MetricType::Gauge);
  for (const auto& s : registry_->All()) {
    if (const GlobalRateLimiter* g = s->global()) {
      fallback.metric.push_back(
          Sample(*s, g->fallback_active() ? 1 : 0, MetricType::Gauge));
    }
    decisions.metric.push_back(
        Sample(*s, s->admitted.load(), MetricType::Counter, "admitted"));
    decisions.metric.push_back(
        Sample(*s, s->rejected.load(), MetricType::Counter, "rejected"));
    decisions.metric.push_back(Sample(*s, s->dry_run_rejected.load(),
                                      MetricType::Counter, "dry_run_rejected"));
    decisions.metric.push_back(
        Sample(*s, s->queued.load(), MetricType::Counter, "queued"));
    if (auto* c = s->concurrency()) {
      in_flight.metric.push_back(Sample(*s, c->InFlight(), MetricType::Gauge));
      queue.metric.push_back(Sample(*s, c->QueueDepth(), MetricType::Gauge));
    }
    if (s->keyed()) {
      keys.metric.push_back(Sample(*s, s->KeyCount(), MetricType::Gauge));
    }
  }
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
  return {decisions, in_flight, queue, keys, fallback, errors, latency};
}

}  // namespace sluice
