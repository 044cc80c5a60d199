// A rate limit shared by every replica (scope: global): GCRA per key in
// Redis, run atomically by a Lua script (redis_client.h), with an optional
// local lease of tokens and a fallback while Redis fails.
#ifndef SLUICE_SERVER_LIMITS_GLOBAL_RATE_LIMITER_H_
#define SLUICE_SERVER_LIMITS_GLOBAL_RATE_LIMITER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "server/config/config.h"
#include "server/limits/keyed_buckets.h"
#include "server/limits/redis_link.h"
#include "server/limits/token_bucket.h"

namespace sluice {

// The GCRA script. KEYS[1]: the bucket; ARGV: emission interval (µs),
// tolerance = burst × interval (µs), tokens wanted (the lease), reservation
// horizon (µs; 0: none). Time is Redis' own clock (TIME), so replicas with
// different clocks agree. Takes min(wanted, whole tokens available) and
// returns {granted, retry_after_us, remaining, reset_after_us, reserved};
// granted 0 means rejected. With no token available and the next one due
// within the horizon, it reserves that token for the caller (reserved 1: the
// token is the caller's from retry_after_us on).
//
// Why reservations: without them every replica whose refusal ends at the
// same instant races for the next token, and with steady arrivals the same
// replica wins every race (measured 97/s against 4/s for two equal
// replicas at 100/s). A replica holds at most one reservation per key, so
// reservations queue the competing replicas in turn: each saturated replica
// gets one token per round of all of them.
extern const char kGcraScript[];

// Parsed reply of kGcraScript.
struct GcraReply {
  int64_t granted = 0;
  int64_t retry_after_nanos = 0;
  int64_t remaining = 0;
  int64_t reset_after_nanos = 0;
  bool reserved = false;  // the token due in retry_after_nanos is ours
};
// False if the reply is not the script's 5-integer array.
bool ParseGcraReply(const std::vector<int64_t>& ints, GcraReply* out);

// Whether Redis is trusted right now. Enters fallback after
// `failures_to_enter` consecutive failures; while in fallback, lets one
// probe request through per backoff interval (100 ms doubling to 2 s) and
// leaves fallback on the first success. Pure logic with injected time;
// thread-safe (one mutex). Owned by its GlobalRateLimiter.
class FallbackState {
 public:
  enum class Change { kNone, kEntered, kLeft };
  explicit FallbackState(int failures_to_enter = 3,
                         int64_t min_probe_nanos = 100'000'000,
                         int64_t max_probe_nanos = 2'000'000'000);

  // Before a request: true to ask Redis, false to apply the fallback.
  bool ShouldAskRedis(int64_t now);
  // The next ShouldAskRedis() may probe at once (the servers behind the
  // link changed), whatever the backoff.
  void ProbeNow();
  Change OnSuccess();
  Change OnFailure(int64_t now);
  bool active() const { return active_.load(std::memory_order_relaxed); }

 private:
  const int failures_to_enter_;
  const int64_t min_probe_nanos_;
  const int64_t max_probe_nanos_;
  std::atomic<bool> active_{false};
  absl::Mutex mu_;
  int failures_ ABSL_GUARDED_BY(mu_) = 0;
  bool probing_ ABSL_GUARDED_BY(mu_) = false;
  int64_t next_probe_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t probe_backoff_ ABSL_GUARDED_BY(mu_) = 0;
};

// Tokens leased from Redis and not spent yet, per key, keys Redis refused
// until a known time, and tokens Redis reserved for this replica from a
// known time on (at most one per key, and at most one reservation request
// in flight per key). A leased token expires after `ttl_nanos` (a reserved
// one `ttl_nanos` after it is due), so a stock never outlives the rate it
// was taken under for long. Bounded by `max_keys` (beyond it, extra tokens
// are dropped: conservative). Thread-safe (one mutex); owned by its
// GlobalRateLimiter.
class LeaseStock {
 public:
  LeaseStock(size_t max_keys, int64_t ttl_nanos)
      : max_keys_(max_keys), ttl_nanos_(ttl_nanos) {}
  // Takes one token of `key` (a leased one, or the reserved one once due);
  // false if none is left.
  bool TakeOne(const std::string& key, int64_t now);
  void Add(const std::string& key, int64_t tokens, int64_t now);
  int64_t Tokens(const std::string& key, int64_t now) const;
  // Negative cache: Redis said no token for `key` before `until`. Exact:
  // other replicas only move the key's TAT later, never earlier.
  void Block(const std::string& key, int64_t until, int64_t now);
  // Nanoseconds `key` stays blocked at `now` (0: not blocked): refused, or
  // waiting for its reserved token.
  int64_t BlockedFor(const std::string& key, int64_t now) const;
  // Before asking Redis: true if this request may ask for a reservation
  // (`key` holds none, due or not, and no other request is asking for
  // one); it is then marked as asking until Reserved() or EndReserving().
  bool StartReserving(const std::string& key, int64_t now);
  // Redis reserved the token due at `due` for `key`.
  void Reserved(const std::string& key, int64_t due, int64_t now);
  // The asking request got no reservation (a grant, a refusal, a failure).
  void EndReserving(const std::string& key);
  // Whether `key` holds a reservation or a request is asking for one.
  bool Reserving(const std::string& key) const;
  // At `now`: keys holding leased tokens, those tokens, keys blocked.
  struct Totals {
    int64_t keys = 0;
    int64_t tokens = 0;
    int64_t blocked_keys = 0;
    int64_t reserved_keys = 0;  // a token reserved, due or not
  };
  Totals Count(int64_t now) const;

 private:
  struct Entry {
    int64_t tokens = 0;
    int64_t expires = 0;
  };
  const size_t max_keys_;
  const int64_t ttl_nanos_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> stock_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int64_t> blocked_ ABSL_GUARDED_BY(mu_);
  // Key -> when its reserved token is due (0: a request is asking for one).
  absl::flat_hash_map<std::string, int64_t> reserved_ ABSL_GUARDED_BY(mu_);
};

// One global rate limit. Owned by its LimitState; shares the RedisLink (one
// Redis or a cluster).
// Take() may be called from any worker thread; its asynchronous callback
// runs on the Redis I/O thread.
class GlobalRateLimiter {
 public:
  struct Result {
    TokenBucket::Decision decision;
    // Rejected because Redis is unavailable and the fallback is fail_closed.
    bool redis_unavailable = false;
  };
  using Done = std::function<void(const Result&)>;

  GlobalRateLimiter(std::shared_ptr<RedisLink> redis,
                    const std::string& key_prefix, const std::string& route,
                    const LimitSettings& settings);

  // Decides at once (from the lease stock or the fallback): returns true
  // with *result set, and `done` is not called. Otherwise returns false and
  // calls `done` exactly once later, on the Redis I/O thread.
  bool Take(const std::string& key, int64_t now, Result* result, Done done);

  bool fallback_active() const { return fallback_.active(); }
  // Why Redis does not answer this limit, for metrics and the admin API:
  // "ok", "connecting" (no connect attempt finished yet), "auth" (AUTH
  // refused or missing), "unreachable" (no connection), "slow" (requests
  // time out), "error" (other error replies).
  static constexpr const char* kRedisStates[] = {
      "ok", "connecting", "auth", "unreachable", "slow", "error"};
  const char* redis_state() const;
  // Redis' or the client's last error message ("" if none); no secret.
  std::string redis_error() const;
  const RedisLink& redis() const { return *redis_; }
  LeaseStock::Totals leases(int64_t now) const { return stock_.Count(now); }

 private:
  Result Fallback(const std::string& key, int64_t now);
  void Note(FallbackState::Change change, const std::string& why);

  const std::shared_ptr<RedisLink> redis_;
  const std::string key_base_;  // prefix + route + ":" + limit
  const std::string route_;
  const LimitSettings settings_;
  const std::vector<std::string> args_;          // no reservation
  const std::vector<std::string> reserve_args_;  // with one
  FallbackState fallback_;
  LeaseStock stock_;
  std::unique_ptr<KeyedTokenBuckets> local_;  // fallback "local"
  // RedisLink::Reply::Status of the last request (kOk: it succeeded).
  std::atomic<int> last_status_{0};
  // The link's topology_epoch() when this limit last looked, in fallback.
  std::atomic<uint64_t> seen_epoch_{0};
  mutable absl::Mutex error_mu_;
  std::string last_error_ ABSL_GUARDED_BY(error_mu_);
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_GLOBAL_RATE_LIMITER_H_
