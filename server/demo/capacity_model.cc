#include "server/demo/capacity_model.h"

#include <algorithm>
#include <cstdint>

namespace sluice::demo {

void CapacityModel::Set(const Settings& settings) {
  absl::MutexLock lock(&mu_);
  settings_.capacity = std::max<int64_t>(0, settings.capacity);
  settings_.service_time =
      std::max(absl::ZeroDuration(), settings.service_time);
  max_in_flight_ = in_flight_;
}

absl::Duration CapacityModel::Start() {
  absl::MutexLock lock(&mu_);
  if (settings_.capacity <= 0 ||
      settings_.service_time <= absl::ZeroDuration()) {
    return absl::ZeroDuration();
  }
  const int64_t k = ++in_flight_;
  max_in_flight_ = std::max(max_in_flight_, k);
  if (k <= settings_.capacity) return settings_.service_time;
  return settings_.service_time *
         (static_cast<double>(k) / static_cast<double>(settings_.capacity));
}

void CapacityModel::Finish() {
  absl::MutexLock lock(&mu_);
  if (in_flight_ > 0) --in_flight_;
  ++served_;
}

CapacityModel::State CapacityModel::state() const {
  absl::MutexLock lock(&mu_);
  return State{settings_, in_flight_, max_in_flight_, served_};
}

bool CapacityModel::enabled() const {
  absl::MutexLock lock(&mu_);
  return settings_.capacity > 0 &&
         settings_.service_time > absl::ZeroDuration();
}

}  // namespace sluice::demo
