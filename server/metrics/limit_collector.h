// Prometheus view of the live limits, read at scrape time from the
// LimitRegistry's counters, so admission touches no metric on its hot path.
// Registered with the exposer by the Daemon; Collect() runs on the
// exposer's HTTP thread. Labels are route and limit names only: key values
// (header contents) never become labels. A limit has exactly the series its
// settings make possible (series_plan.h), from the moment it is bound (a
// reload that adds or changes it), with the values of its live state; the
// Redis series exist only while some limit is global. A keyed local rate
// also exports sluice_limit_key_overflow_total: calls charged to the shared
// overflow bucket (the key table full); it carries across reloads and
// overrides like the other counters.
#ifndef SLUICE_SERVER_METRICS_LIMIT_COLLECTOR_H_
#define SLUICE_SERVER_METRICS_LIMIT_COLLECTOR_H_

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/limits/limit_registry.h"

namespace sluice {

class LimitCollector : public prometheus::Collectable {
 public:
  explicit LimitCollector(const LimitRegistry* registry)
      : registry_(registry) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const LimitRegistry* const registry_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_METRICS_LIMIT_COLLECTOR_H_
