// The live state of one configured limit of one route: its token bucket
// (one, or one per key), its concurrency limiter, and its counters.
//
// Created by the LimitRegistry and shared (shared_ptr) by every config
// snapshot whose definition of the limit is unchanged, so a reload keeps
// buckets and permits. Used concurrently by all workers and the admin
// threads: the hot path takes one shared (reader) lock on the rate table's
// cell, then the GCRA CAS (or a key's shard lock); only replacing the table
// (a reload's or an override's new rate) takes that lock exclusively, for
// the time of a pointer swap.
//
// A changed limit keeps the load it carries. When a reload changes a
// limit's definition, the registry builds the new LimitState from the old
// one (its `previous`), and when set-limit overrides it, the state changes
// in place; in both cases:
// - one ConcurrencyLimiter serves the old and the new state (calls of the
//   old snapshot still hold and take permits from it), with the new
//   bounds applied by SetLimits: permits held count against the new
//   maximum and waiters stay queued in their keys' order;
// - likewise one AdaptiveLimit (concurrency.adaptive) serves both, with
//   the new settings applied by Reconfigure: its estimate and long RTT
//   carry over, and it alone drives the limiter's maximum;
// - the rate table lives in a cell shared by the old and new state; a new
//   definition replaces the table in the cell by one that carries every
//   bucket's debt scaled to the new rate (TokenBucket::Config::CarryTat;
//   keyed tables keep their keys), so calls of either snapshot take from
//   the same, current table. A superseded table is freed at once: a take
//   uses the table only under the cell's reader lock, so none can still
//   hold it after the swap;
// - the counters (admitted, rejected, ...) are one set shared by both
//   states, so Prometheus sees no reset.
// The rate is carried only between like tables: both unkeyed, or both
// keyed by the same key parts; otherwise the new table starts full. A
// global (Redis) rate keeps its state in Redis and is rebuilt as before.
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
#include "server/limits/adaptive_limit.h"
#include "server/limits/clock.h"
#include "server/limits/concurrency_limiter.h"
#include "server/limits/global_rate_limiter.h"
#include "server/limits/keyed_buckets.h"
#include "server/limits/token_bucket.h"

namespace sluice {

class LimitState {
 public:
  // The counters of a limit, shared by every generation of its state.
  struct Counters {
    std::atomic<int64_t> admitted{0};
    std::atomic<int64_t> rejected{0};
    std::atomic<int64_t> dry_run_rejected{0};
    std::atomic<int64_t> queued{0};
  };

 private:
  // First: the public counter references below are bound to it.
  const std::shared_ptr<Counters> counters_;

 public:
  // `redis`: the shared client, for a limit with scope: global (else unused).
  // `previous`: the state this one replaces (same route and limit name, a
  // changed definition), whose load it carries (see the file comment);
  // null for a new limit. `clock`: the time of carrying and of overrides
  // (null: RealClock).
  LimitState(std::string route, const LimitSettings& settings,
             std::shared_ptr<RedisLink> redis = nullptr,
             const std::string& key_prefix = "", LimitState* previous = nullptr,
             const Clock* clock = nullptr);

  const std::string& route() const { return route_; }
  const LimitSettings& settings() const { return settings_; }
  bool has_rate() const { return settings_.rate_count > 0; }
  bool keyed() const { return !settings_.key.empty(); }
  // Null when the limit has no concurrency part.
  ConcurrencyLimiter* concurrency() { return concurrency_.get(); }
  const ConcurrencyLimiter* concurrency() const { return concurrency_.get(); }
  // Whether the concurrency part queues per key (settings().concurrency_key
  // names the parts; the limit's default_key stands for a missing one).
  bool concurrency_keyed() const { return !settings_.concurrency_key.empty(); }
  // Null unless the concurrency part is adaptive. Its limit() is the
  // limiter's max_in_flight; calls report to it through StartCall().
  AdaptiveLimit* adaptive() { return adaptive_.get(); }
  const AdaptiveLimit* adaptive() const { return adaptive_.get(); }
  // The AdaptiveLimit settings of a concurrency.adaptive config.
  static AdaptiveLimit::Settings AdaptiveSettings(
      const AdaptiveConcurrencySettings& config);
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
  // A new rate carries the old table's debt (and keys); the old table is
  // freed once no take is using it.
  absl::Status Override(std::optional<double> rate_per_second,
                        std::optional<int64_t> burst,
                        std::optional<int64_t> concurrency_max,
                        std::optional<int64_t> concurrency_queue);
  bool overridden() const { return overridden_.load(); }

  // Counters, for metrics and the admin view: references into the
  // Counters shared with the previous and next generations of this limit.
  std::atomic<int64_t>& admitted;
  std::atomic<int64_t>& rejected;
  std::atomic<int64_t>& dry_run_rejected;
  std::atomic<int64_t>& queued;

  // Admin view.
  double Tokens(int64_t now_nanos) const;  // unkeyed: the bucket's tokens
  std::vector<KeyedTokenBuckets::KeyTokens> TopKeys(size_t k,
                                                    int64_t now_nanos) const;
  size_t KeyCount() const;
  // Requests charged to the shared overflow bucket of a keyed table (keys
  // refused a bucket of their own); 0 when not keyed.
  uint64_t KeyOverflowTakes() const;

  // Tests: rate tables alive in the process (made and not yet freed), to
  // see superseded tables freed.
  static int64_t LiveRateTablesForTest();
  // Tests: the limiter object (shared across generations).
  const ConcurrencyLimiter* concurrency_for_test() const {
    return concurrency_.get();
  }

 private:
  struct Rate {
    Rate(const TokenBucket::Config& config);
    ~Rate();
    Rate(const Rate&) = delete;
    Rate& operator=(const Rate&) = delete;

    std::unique_ptr<TokenBucket> bucket;       // not keyed
    std::unique_ptr<KeyedTokenBuckets> keyed;  // keyed
    const TokenBucket::Config config;
  };
  // The current rate table, shared by every generation of the limit whose
  // tables are alike. Hot path: a take holds `mu` shared (one atomic
  // read-modify-write to lock and one to unlock, on a line all workers of
  // the limit share: about the cost of the GCRA CAS itself; readers never
  // wait for each other). A replacement builds the new table under the
  // shared lock (reading the old one while takes go on), then swaps it in
  // under the exclusive lock and frees the old one: no take can be using
  // it, and no table outlives its replacement.
  struct RateCell {
    absl::Mutex write_mu;  // serializes replacements (overrides, reloads)
    absl::Mutex mu;
    std::unique_ptr<Rate> current ABSL_GUARDED_BY(mu);
  };
  // A table for `config`, carrying `from`'s load at `now` if given.
  std::unique_ptr<Rate> MakeRate(const TokenBucket::Config& config,
                                 const Rate* from, int64_t now) const;
  // Replaces the cell's table by one for `config` carrying the current
  // one's load, unless the current one already is for `config` (and, keyed,
  // for this state's max_keys).
  void ReplaceRate(const TokenBucket::Config& config);
  // Calls `f(const Rate&)` under the cell's shared lock; `otherwise`
  // without a rate part.
  template <typename F, typename R>
  R WithRate(F f, R otherwise) const;
  // Whether `previous`'s table may carry into this state's.
  bool RateCompatible(const LimitState& previous) const;

  const Clock* const clock_;
  const std::string route_;
  const LimitSettings settings_;
  std::shared_ptr<RateCell> rate_;  // null without a rate part
  std::shared_ptr<ConcurrencyLimiter> concurrency_;
  std::shared_ptr<AdaptiveLimit> adaptive_;  // null unless adaptive
  std::unique_ptr<GlobalRateLimiter> global_;
  std::atomic<bool> overridden_{false};
  mutable absl::Mutex mu_;  // serializes overrides of this state
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_LIMIT_STATE_H_
