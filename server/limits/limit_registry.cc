#include "server/limits/limit_registry.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/limits/redis_client.h"
#include "server/limits/redis_cluster_client.h"
#include "spdlog/spdlog.h"

namespace sluice {

std::vector<std::vector<std::shared_ptr<LimitState>>> LimitRegistry::Bind(
    const Config& config) {
  absl::MutexLock lock(&mu_);
  const RedisSettings& redis = config.redis();
  const bool redis_changed =
      redis.enabled != (redis_ != nullptr) ||
      (redis.enabled && redis.fingerprint != redis_fingerprint_);
  // The global limits that use Redis, named in the client's log lines.
  std::vector<std::string> users;
  for (const RouteSettings& route : config.routes()) {
    for (const LimitSettings& limit : route.limits) {
      if (limit.global) {
        users.push_back(absl::StrCat("\"", route.name, "/", limit.name, "\""));
      }
    }
  }
  if (redis_changed) {
    redis_.reset();
    redis_fingerprint_.clear();
    if (redis.enabled) {
      RedisClientOptions options;
      options.host = redis.host;
      options.port = redis.port;
      options.pool_size = redis.pool_size;
      options.timeout = redis.timeout;
      options.connect_timeout = redis.connect_timeout;
      options.username = redis.username;
      options.password = redis.password;
      options.users = absl::StrJoin(users, ", ");
      if (redis.cluster.empty()) {
        redis_ = std::make_shared<RedisClient>(options, kGcraScript);
      } else {
        std::vector<ClusterNode> seeds;
        for (const RedisSettings::Node& n : redis.cluster) {
          seeds.push_back(ClusterNode{n.host, n.port});
        }
        redis_ = std::make_shared<RedisClusterClient>(std::move(seeds), options,
                                                      kGcraScript);
      }
      redis_fingerprint_ = redis.fingerprint;
    }
  }
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
          it->second->settings().fingerprint == limit.fingerprint &&
          !(limit.global && redis_changed)) {
        state = it->second;
      } else {
        // A changed limit carries the old state's load; a new one (or a
        // global one whose Redis connection changed) starts fresh.
        LimitState* previous =
            it != states_.end() && !(limit.global && redis_changed)
                ? it->second.get()
                : nullptr;
        state = std::make_shared<LimitState>(
            route.name, limit, redis_, redis.key_prefix, previous, clock_);
      }
      next[id] = state;
      states.push_back(std::move(state));
    }
  }
  states_ = std::move(next);
  if (redis_ != nullptr) {
    redis_->SetUsers(absl::StrJoin(users, ", "));
    if (!redis_changed && redis_->link_state() == RedisLinkState::kAuthFailed) {
      // The client (and its error) is kept: say it again on this reload.
      spdlog::error(
          "redis {} (global limits {}): authentication still fails: {}",
          redis_->address(), absl::StrJoin(users, ", "), redis_->last_error());
    }
  }
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
