// Series that exist only while a configuration that makes them possible is
// in use (docs/metrics.md, "Which series exist").
//
// SeriesLeases counts, for each series of a prometheus-cpp Family added
// through it, the SeriesHolds that hold it, and removes the series from its
// family when the last one lets go. A SeriesHold is the set of series one
// config snapshot added (its routes' series, its method table); it lets go
// of them when destroyed, i.e. when the last call that started under that
// snapshot is freed. Family::Add of a label set already held returns the
// same series, so a reload that keeps a route keeps counting in it, and a
// reload that adds one creates its series at 0 when the snapshot is built,
// before any call can use them.
//
// Ownership: SeriesLeases is shared (shared_ptr) by its creator
// (ProxyMetrics, GrpcMetrics) and every SeriesHold made from it, and keeps
// the Registry, so the families, alive as long as any of them. Thread
// safety: every method may be called from any thread; one mutex, taken only
// when a snapshot is built or freed (and on the never-expected fallback of
// MethodSeries), never for an increment.
#ifndef SLUICE_SERVER_METRICS_SERIES_LEASE_H_
#define SLUICE_SERVER_METRICS_SERIES_LEASE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/registry.h"

namespace sluice {

class SeriesLeases {
 public:
  explicit SeriesLeases(std::shared_ptr<prometheus::Registry> registry)
      : registry_(std::move(registry)) {}
  SeriesLeases(const SeriesLeases&) = delete;
  SeriesLeases& operator=(const SeriesLeases&) = delete;

  const std::shared_ptr<prometheus::Registry>& registry() const {
    return registry_;
  }
  // Series held by at least one SeriesHold (for tests).
  size_t HeldCount() const;

 private:
  friend class SeriesHold;
  struct Lease {
    int64_t holders = 0;
    std::function<void()> remove;  // removes the series from its family
  };

  const std::shared_ptr<prometheus::Registry> registry_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<const void*, Lease> leases_ ABSL_GUARDED_BY(mu_);
};

class SeriesHold {
 public:
  explicit SeriesHold(std::shared_ptr<SeriesLeases> leases)
      : leases_(std::move(leases)) {}
  ~SeriesHold();  // lets go of every series it added
  SeriesHold(const SeriesHold&) = delete;
  SeriesHold& operator=(const SeriesHold&) = delete;

  // Family::Add (the series starts at 0 if it did not exist), held until
  // this SeriesHold is destroyed. `args`: the metric's constructor
  // arguments (a histogram's buckets).
  template <typename T, typename... Args>
  T* Add(prometheus::Family<T>& family, const prometheus::Labels& labels,
         Args&&... args) {
    T* series;
    {
      absl::MutexLock lock(&leases_->mu_);
      series = &family.Add(labels, std::forward<Args>(args)...);
      SeriesLeases::Lease& lease = leases_->leases_[series];
      if (lease.holders++ == 0) {
        lease.remove = [&family, series] { family.Remove(series); };
      }
    }
    absl::MutexLock lock(&mu_);
    held_.push_back(series);
    return series;
  }

  // A counter no family exports: where a slot points whose series the
  // configuration makes impossible, so that code touching it anyway
  // neither crashes nor adds a series.
  prometheus::Counter& sink() { return sink_; }

 private:
  const std::shared_ptr<SeriesLeases> leases_;
  absl::Mutex mu_;
  std::vector<const void*> held_ ABSL_GUARDED_BY(mu_);
  prometheus::Counter sink_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_METRICS_SERIES_LEASE_H_
