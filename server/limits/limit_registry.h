// All live limits, by route and limit name. Owned by the DataPlane; called
// from the control thread when a config snapshot is built and from admin
// threads. A limit whose definition (LimitSettings::fingerprint) is
// unchanged by a reload keeps its LimitState, so buckets, permits and
// queues carry over; a changed or new one starts fresh.
#ifndef SLUICE_SERVER_LIMITS_LIMIT_REGISTRY_H_
#define SLUICE_SERVER_LIMITS_LIMIT_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/config/config.h"
#include "server/limits/limit_state.h"

namespace sluice {

class LimitRegistry {
 public:
  // The states for `config`'s routes (parallel to routes()[i].limits).
  // Limits no longer configured are dropped from the registry (calls still
  // holding them keep them alive until they finish).
  std::vector<std::vector<std::shared_ptr<LimitState>>> Bind(
      const Config& config);

  // Every live limit, ordered by route then limit name.
  std::vector<std::shared_ptr<LimitState>> All() const;
  std::shared_ptr<LimitState> Find(const std::string& route,
                                   const std::string& limit) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<LimitState>>
      states_ ABSL_GUARDED_BY(mu_);
  // The Redis client of global limits, kept while its settings are unchanged.
  std::shared_ptr<RedisClient> redis_ ABSL_GUARDED_BY(mu_);
  std::string redis_fingerprint_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_LIMIT_REGISTRY_H_
