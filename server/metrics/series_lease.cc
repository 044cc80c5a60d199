#include "server/metrics/series_lease.h"

namespace sluice {

size_t SeriesLeases::HeldCount() const {
  absl::MutexLock lock(&mu_);
  return leases_.size();
}

SeriesHold::~SeriesHold() {
  std::vector<const void*> held;
  {
    absl::MutexLock lock(&mu_);
    held.swap(held_);
  }
  absl::MutexLock lock(&leases_->mu_);
  for (const void* series : held) {
    auto it = leases_->leases_.find(series);
    if (it == leases_->leases_.end()) continue;  // cannot happen
    if (--it->second.holders == 0) {
      it->second.remove();
      leases_->leases_.erase(it);
    }
  }
}

}  // namespace sluice
