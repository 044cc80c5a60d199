// Gauges read at scrape time from state Sluice keeps anyway: readiness and
// each upstream's serving status (as the admin health service reports
// them), and resident memory against the memory ceiling
// (proxy.max_memory_bytes). For alerts a counter cannot express ("not
// ready", "upstream down while idle", "memory near the ceiling").
//
// Owned by the Daemon and registered with its exposer; Collect() runs on
// the exposer's threads and only calls the given functions, which must be
// thread-safe.
#ifndef SLUICE_SERVER_METRICS_STATE_COLLECTOR_H_
#define SLUICE_SERVER_METRICS_STATE_COLLECTOR_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace sluice {

class StateCollector : public prometheus::Collectable {
 public:
  struct Sources {
    // ("", ready) first, then (upstream name, serving) per upstream.
    std::function<std::vector<std::pair<std::string, bool>>()> serving;
    std::function<int64_t()> resident_bytes;
    std::function<int64_t()> memory_ceiling_bytes;  // <= 0: none
  };
  explicit StateCollector(Sources sources) : sources_(std::move(sources)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Sources sources_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_METRICS_STATE_COLLECTOR_H_
