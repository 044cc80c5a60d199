// Per-key rate limits (per header value, per peer address, ...) with a hard
// bound on the number of keys.
#ifndef SLUICE_SERVER_LIMITS_KEYED_BUCKETS_H_
#define SLUICE_SERVER_LIMITS_KEYED_BUCKETS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/limits/clock.h"
#include "server/limits/token_bucket.h"

namespace sluice {

// One GCRA bucket (see token_bucket.h) per key, all with the same Config,
// in a map of kNumShards shards, each an absl::Mutex over a hash map. The
// hot path is one hash of the key, one shard lock and the GCRA step on the
// key's TAT (a plain int64_t under that lock: the lock already serializes
// it, so an atomic CAS would add nothing).
//
// Bound and eviction policy. At most `max_keys` keys exist at any time (the
// bound is split exactly across the shards in use: max_keys / 8 of them,
// between 1 and kNumShards, so that no shard in use has a capacity below
// kMinKeysPerShard unless the whole table is that small; a table of fewer
// than 16 keys is one shard and every key up to max_keys gets a bucket). A key
// whose bucket is full is indistinguishable from a missing one, so it may be
// dropped at no cost. When a new key arrives at a full shard, the shard's CLOCK
// hand inspects at most kMaxEvictionProbes keys in insertion/rotation order:
// the first idle (full) one is replaced; a busy one is skipped (second chance).
// If none of them is idle, the new key is REFUSED a bucket of its own and is
// charged to one shared overflow bucket instead (Decision::overflow).
//
// Why refuse rather than evict the least recently used key: evicting a key
// whose bucket is not full hands that key a fresh burst, so an attacker who
// floods max_keys distinct keys could reset any victim's (or its own) limit
// for the price of max_keys requests. With refusal an active key's state is
// never lost: eviction is unobservable by construction. Memory stays bounded
// by max_keys, CPU per request by kMaxEvictionProbes. The price: while more
// than max_keys keys are simultaneously active, newcomers share the overflow
// bucket (they are limited together, and the flood competes with them). This
// heals by itself: a key is busy only until its bucket refills (at most
// burst/rate after its last admitted request), after which the hand
// reclaims its slot. Size max_keys for the expected active population and
// give the overflow bucket a rate that bounds what newcomers may do
// together.
//
// Ownership: owned by a route's limiter state (one per keyed limit).
// Thread-safety: all methods may be called concurrently from any thread
// (the completion-queue workers, the admin service). Lifetime: it holds no
// external references; it dies with the route state, or when a reload or
// an override replaces it by a table that carries its keys (see the
// carrying constructor), once the last take using it has returned.
class KeyedTokenBuckets {
 public:
  static constexpr int kNumShards = 16;
  static constexpr int kMinKeysPerShard = 8;
  static constexpr int kMaxEvictionProbes = 8;

  // TokenBucket's decision, plus whether the shared overflow bucket decided.
  struct Decision : TokenBucket::Decision {
    bool overflow = false;
  };

  struct KeyTokens {
    std::string key;
    double tokens = 0;
  };

  struct Stats {
    size_t size = 0;              // keys with a bucket of their own
    uint64_t evictions = 0;       // idle keys replaced by new ones
    uint64_t overflow_takes = 0;  // requests charged to the overflow bucket
  };

  // Every key gets `per_key`; keys refused a bucket share one bucket with
  // the same definition.
  KeyedTokenBuckets(const TokenBucket::Config& per_key, size_t max_keys);
  KeyedTokenBuckets(const TokenBucket::Config& per_key, size_t max_keys,
                    const TokenBucket::Config& overflow);
  // A table that carries the load of `old` (a reload or an override changed
  // the definition): every key of `old` still in debt at `now` gets a
  // bucket owing the same tokens, refilled at the new rate
  // (TokenBucket::Config::CarryTat); keys whose buckets are full are
  // dropped (indistinguishable from new ones). When the new shards cannot
  // hold them all, each keeps the keys with the most debt. The overflow
  // bucket's debt and the eviction/overflow counts carry over too, so the
  // counters exported from GetStats() never go back. `old` may still be in
  // use on other threads: each of its shards is read under its lock, and a
  // take that lands on `old` after its shard was read is not carried.
  KeyedTokenBuckets(const TokenBucket::Config& per_key, size_t max_keys,
                    const TokenBucket::Config& overflow,
                    const KeyedTokenBuckets& old, int64_t now);

  KeyedTokenBuckets(const KeyedTokenBuckets&) = delete;
  KeyedTokenBuckets& operator=(const KeyedTokenBuckets&) = delete;

  // Takes `n` tokens from `key`'s bucket, creating it (full) if needed. A
  // request that a fresh bucket would answer without taking anything
  // (n <= 0, n > burst) does not create a key.
  Decision TryTake(absl::string_view key, int64_t now, int64_t n = 1);
  // The same, reading `clock` once the key's shard is locked (see
  // TokenBucket::TryTake(const Clock&): a time read before waiting for the
  // lock can be older than the bucket's state).
  Decision TryTake(absl::string_view key, const Clock& clock, int64_t n = 1);

  // Gives `n` tokens back to `key`'s bucket (one taken for something that
  // did not happen); a bucket cannot hold more than its burst. No-op for a
  // key without a bucket of its own.
  void Refund(absl::string_view key, int64_t n = 1);

  // Tokens of `key` at `now`, or nullopt if it has no bucket of its own
  // (then it would start full).
  std::optional<double> Tokens(absl::string_view key, int64_t now) const;

  // Keys with a bucket of their own; always <= max_keys().
  size_t Size() const;

  // The `k` keys with the fewest tokens at `now`, fewest first (admin
  // view). O(Size()), locks one shard at a time.
  std::vector<KeyTokens> TopKeys(size_t k, int64_t now) const;

  // Drops every idle (full) key; returns how many. Optional housekeeping
  // (for example on a slow timer) so that Size() reflects active keys; the
  // bound holds without it. O(Size()), locks one shard at a time.
  size_t EvictIdle(int64_t now);

  Stats GetStats() const;

  const TokenBucket::Config& config() const { return config_; }
  size_t max_keys() const { return max_keys_; }
  const TokenBucket& overflow_bucket() const { return overflow_; }

 private:
  struct Entry {
    int64_t tat;
    size_t hash;  // of the key; lets eviction find the entry without rehash
  };

  // A key with its hash already computed: the shard is chosen from the same
  // hash, so the hot path hashes the key once.
  struct PrehashedKey {
    absl::string_view key;
    size_t hash;
  };
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(absl::string_view key) const {
      return absl::Hash<absl::string_view>{}(key);
    }
    size_t operator()(const PrehashedKey& key) const { return key.hash; }
  };
  struct KeyEq {
    using is_transparent = void;
    bool operator()(absl::string_view a, absl::string_view b) const {
      return a == b;
    }
    bool operator()(const PrehashedKey& a, absl::string_view b) const {
      return a.key == b;
    }
    bool operator()(absl::string_view a, const PrehashedKey& b) const {
      return a == b.key;
    }
  };

  // node_hash_map: entries never move, so the CLOCK ring can point at them.
  using Map = absl::node_hash_map<std::string, Entry, KeyHash, KeyEq>;
  using Node = Map::value_type;

  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    Map map ABSL_GUARDED_BY(mu);
    // Every entry of `map` exactly once, in CLOCK order; holds `capacity`
    // slots once the shard has filled.
    std::vector<Node*> ring ABSL_GUARDED_BY(mu);
    size_t hand ABSL_GUARDED_BY(mu) = 0;
    uint64_t evictions ABSL_GUARDED_BY(mu) = 0;
    uint64_t overflow_takes ABSL_GUARDED_BY(mu) = 0;
    size_t capacity = 0;  // set once in the constructor
  };

  // Splits max_keys across the shards in use (constructors only).
  void InitShards();

  // Makes room for one key in a full shard by dropping an idle key at the
  // hand, leaving the hand on the freed ring slot. False if the probes found
  // no idle key.
  static bool MakeRoomLocked(Shard& shard, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  static void InsertLocked(Shard& shard, absl::string_view key, size_t hash,
                           int64_t tat) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  size_t ShardIndex(size_t hash) const {
    // The top 32 bits (the hash map uses the low ones for slot positions),
    // scaled to [0, num_shards_): with 16 shards, the top 4 bits.
    return static_cast<size_t>(
        ((static_cast<uint64_t>(hash) >> 32) * num_shards_) >> 32);
  }

  const TokenBucket::Config config_;
  const size_t max_keys_;
  const size_t num_shards_;  // shards in use, in [1, kNumShards]
  TokenBucket overflow_;
  // Counts carried from the table this one replaced.
  const uint64_t carried_evictions_ = 0;
  const uint64_t carried_overflow_takes_ = 0;
  std::array<Shard, kNumShards> shards_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_KEYED_BUCKETS_H_
