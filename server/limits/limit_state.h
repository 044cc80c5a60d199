// The live state of one configured limit of one route: its token bucket
// (one, or one per key), its concurrency limiter, and its counters.
//
// Created by the LimitRegistry and shared (shared_ptr) by every config
// snapshot whose definition of the limit is unchanged, so a reload keeps
// buckets and permits. Used concurrently by all workers and the admin
// threads: the hot path is lock-free (an atomic bucket pointer, GCRA CAS,
// atomics); only run-time overrides and the admin view take a lock.
#ifndef SLUICE_SERVER_LIMITS_LIMIT_STATE_H_
#define SLUICE_SERVER_LIMITS_LIMIT_STATE_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/config/config.h"
#include "server/limits/concurrency_limiter.h"
#include "server/limits/global_rate_limiter.h"
#include "server/limits/keyed_buckets.h"
#include "server/limits/token_bucket.h"

namespace sluice {

class LimitState {
 public:
  // `redis`: the shared client, for a limit with scope: global (else unused).
  LimitState(std::string route, const LimitSettings& settings,
             std::shared_ptr<RedisClient> redis = nullptr,
             const std::string& key_prefix = "");

  const std::string& route() const { return route_; }
  const LimitSettings& settings() const { return settings_; }
  bool has_rate() const { return settings_.rate_count > 0; }
  bool keyed() const { return !settings_.key.empty(); }
  // Null when the limit has no concurrency part.
  ConcurrencyLimiter* concurrency() { return concurrency_.get(); }
  // Non-null for a global rate (scope: global with a Redis client); then
  // the rate is taken through it instead of TakeRate().
  GlobalRateLimiter* global() { return global_.get(); }
  const GlobalRateLimiter* global() const { return global_.get(); }

  // Charges one call to the bucket of `key` (ignored when not keyed).
  // Reads `clock` as late as possible (see TokenBucket::TryTake(const
  // Clock&)), so a call delayed on its way here is not judged by an old
  // time.
  TokenBucket::Decision TakeRate(std::string_view key, const Clock& clock);
  // The current rate (tokens per second) and burst, overrides included.
  double rate_per_second() const;
  int64_t rate_burst() const;

  // Run-time override from the admin API; unset fields keep their value.
  // A new rate starts a fresh (full) bucket.
  absl::Status Override(std::optional<double> rate_per_second,
                        std::optional<int64_t> burst,
                        std::optional<int64_t> concurrency_max,
                        std::optional<int64_t> concurrency_queue);
  bool overridden() const { return overridden_.load(); }

  // Counters, for metrics and the admin view.
  std::atomic<int64_t> admitted{0};
  std::atomic<int64_t> rejected{0};
  std::atomic<int64_t> dry_run_rejected{0};
  std::atomic<int64_t> queued{0};

  // Admin view.
  double Tokens(int64_t now_nanos) const;  // unkeyed: the bucket's tokens
  std::vector<KeyedTokenBuckets::KeyTokens> TopKeys(size_t k,
                                                    int64_t now_nanos) const;
  size_t KeyCount() const;

 private:
  struct Rate {
    std::unique_ptr<TokenBucket> bucket;       // not keyed
    std::unique_ptr<KeyedTokenBuckets> keyed;  // keyed
    TokenBucket::Config config;
  };
  std::unique_ptr<Rate> MakeRate(const TokenBucket::Config& config) const;

  const std::string route_;
  const LimitSettings settings_;
  std::atomic<Rate*> rate_{nullptr};
  std::unique_ptr<ConcurrencyLimiter> concurrency_;
  std::unique_ptr<GlobalRateLimiter> global_;
  std::atomic<bool> overridden_{false};
  mutable absl::Mutex mu_;
  // Every Rate ever made; an override swaps rate_ and keeps the old one
  // alive, since workers may still be using it (overrides are rare).
  std::vector<std::unique_ptr<Rate>> rates_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_LIMIT_STATE_H_
