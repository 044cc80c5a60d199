// All live limits, by route and limit name. Owned by the DataPlane; called
// from the control thread when a config snapshot is built and from admin
// threads. A limit whose definition (LimitSettings::fingerprint) is
// unchanged by a reload keeps its LimitState, so buckets, permits and
// queues carry over. A changed one gets a new LimitState built from the old
// one, which carries its load: the same concurrency limiter (permits held
// count against the new maximum), the rate table's debt scaled to the new
// rate, the keys of a keyed table, and the counters (see limit_state.h). A
// new one starts fresh.
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
#include "server/limits/clock.h"
#include "server/limits/limit_state.h"

namespace sluice {

class LimitRegistry {
 public:
  // `clock`: the time at which a changed limit's debt is carried (null:
  // RealClock, the clock of the data path).
  explicit LimitRegistry(const Clock* clock = nullptr) : clock_(clock) {}

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
  const Clock* const clock_;
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<LimitState>>
      states_ ABSL_GUARDED_BY(mu_);
  // The Redis client of global limits, kept while its settings are unchanged.
  std::shared_ptr<RedisLink> redis_ ABSL_GUARDED_BY(mu_);
  std::string redis_fingerprint_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_LIMIT_REGISTRY_H_
