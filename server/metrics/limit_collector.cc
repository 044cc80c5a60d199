#include "server/metrics/limit_collector.h"

#include <string>

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
  for (const auto& s : registry_->All()) {
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
  return {decisions, in_flight, queue, keys};
}

}  // namespace sluice
