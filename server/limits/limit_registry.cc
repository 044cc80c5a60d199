#include "server/limits/limit_registry.h"

namespace sluice {

std::vector<std::vector<std::shared_ptr<LimitState>>> LimitRegistry::Bind(
    const Config& config) {
  absl::MutexLock lock(&mu_);
  std::map<std::pair<std::string, std::string>, std::shared_ptr<LimitState>>
      next;
  std::vector<std::vector<std::shared_ptr<LimitState>>> bound;
  for (const RouteSettings& route : config.routes()) {
    auto& states = bound.emplace_back();
    for (const LimitSettings& limit : route.limits) {
      auto id = std::make_pair(route.name, limit.name);
      std::shared_ptr<LimitState> state;
      auto it = states_.find(id);
      if (it != states_.end() &&
          it->second->settings().fingerprint == limit.fingerprint) {
        state = it->second;
      } else {
        state = std::make_shared<LimitState>(route.name, limit);
      }
      next[id] = state;
      states.push_back(std::move(state));
    }
  }
  states_ = std::move(next);
  return bound;
}

std::vector<std::shared_ptr<LimitState>> LimitRegistry::All() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<LimitState>> all;
  for (const auto& [id, state] : states_) all.push_back(state);
  return all;
}

std::shared_ptr<LimitState> LimitRegistry::Find(
    const std::string& route, const std::string& limit) const {
  absl::MutexLock lock(&mu_);
  auto it = states_.find({route, limit});
  return it == states_.end() ? nullptr : it->second;
}

}  // namespace sluice
