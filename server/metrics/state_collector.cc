#include "server/metrics/state_collector.h"

#include <algorithm>

namespace sluice {
namespace {

prometheus::MetricFamily Gauge(const std::string& name,
                               const std::string& help) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Gauge;
  return f;
}

prometheus::ClientMetric Value(
    double value, std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  return m;
}

}  // namespace

std::vector<prometheus::MetricFamily> StateCollector::Collect() const {
  auto ready = Gauge("sluice_ready",
                     "1 while Sluice's readiness (admin health service \"\") "
                     "is SERVING, else 0 (an upstream marked required is "
                     "not serving, a global limit is in fallback with "
                     "redis.not_ready_in_fallback, or Sluice is draining).");
  auto upstream = Gauge(
      "sluice_upstream_serving",
      "1 while the upstream is serving as the admin health service reports "
      "it (a channel connected, its health_check passing, not frozen), "
      "else 0.");
  for (const auto& [service, serving] : sources_.serving()) {
    if (service.empty()) {
      ready.metric.push_back(Value(serving ? 1 : 0));
    } else {
      upstream.metric.push_back(
          Value(serving ? 1 : 0, {{"upstream", service}}));
    }
  }
  auto resident = Gauge("sluice_resident_memory_bytes",
                        "Sluice's resident memory (RSS), bytes.");
  resident.metric.push_back(
      Value(static_cast<double>(sources_.resident_bytes())));
  auto ceiling = Gauge(
      "sluice_memory_ceiling_bytes",
      "The memory ceiling in effect (proxy.max_memory_bytes, or 90% of the "
      "cgroup limit): at it new calls are refused with overloaded. 0: none.");
  ceiling.metric.push_back(Value(static_cast<double>(
      std::max<int64_t>(0, sources_.memory_ceiling_bytes()))));
  std::vector<prometheus::MetricFamily> out;
  if (!ready.metric.empty()) out.push_back(std::move(ready));
  if (!upstream.metric.empty()) out.push_back(std::move(upstream));
  out.push_back(std::move(resident));
  out.push_back(std::move(ceiling));
  return out;
}

}  // namespace sluice
