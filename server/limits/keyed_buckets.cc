#include "server/limits/keyed_buckets.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/limits/token_bucket.h"

namespace sluice {

static_assert(sizeof(size_t) == 8, "ShardIndex expects a 64-bit hash");

KeyedTokenBuckets::KeyedTokenBuckets(const TokenBucket::Config& per_key,
                                     size_t max_keys)
    : KeyedTokenBuckets(per_key, max_keys, per_key) {}

namespace {

size_t ShardsFor(size_t max_keys) {
  return std::clamp<size_t>(max_keys / KeyedTokenBuckets::kMinKeysPerShard, 1,
                            KeyedTokenBuckets::kNumShards);
}

}  // namespace

KeyedTokenBuckets::KeyedTokenBuckets(const TokenBucket::Config& per_key,
                                     size_t max_keys,
                                     const TokenBucket::Config& overflow)
    : config_(per_key),
      max_keys_(max_keys),
      num_shards_(ShardsFor(max_keys)),
      overflow_(overflow) {
  InitShards();
}

KeyedTokenBuckets::KeyedTokenBuckets(const TokenBucket::Config& per_key,
                                     size_t max_keys,
                                     const TokenBucket::Config& overflow,
                                     const KeyedTokenBuckets& old, int64_t now)
    : config_(per_key),
      max_keys_(max_keys),
      num_shards_(ShardsFor(max_keys)),
      overflow_(overflow, overflow.CarryTat(old.overflow_.config(),
                                            old.overflow_.Tat(), now)),
      carried_evictions_(old.GetStats().evictions),
      carried_overflow_takes_(old.GetStats().overflow_takes) {
  InitShards();
  // The keys in debt, with their TATs under the new definition, by the
  // shard they belong to now (the hash is the same, the shard count may
  // differ).
  struct Carried {
    std::string key;
    size_t hash;
    int64_t tat;
  };
  std::array<std::vector<Carried>, kNumShards> by_shard;
  for (const Shard& shard : old.shards_) {
    absl::MutexLock lock(&shard.mu);
    for (const Node& node : shard.map) {
      const int64_t tat = config_.CarryTat(old.config_, node.second.tat, now);
      if (tat == TokenBucket::Config::kFreshTat) continue;  // full: drop
      by_shard[ShardIndex(node.second.hash)].push_back(
          Carried{node.first, node.second.hash, tat});
    }
  }
  for (size_t i = 0; i < num_shards_; ++i) {
    std::vector<Carried>& keys = by_shard[i];
    Shard& shard = shards_[i];
    // The most debt (latest TAT) first, so a smaller table keeps those.
    const size_t keep = std::min(keys.size(), shard.capacity);
    std::partial_sort(
        keys.begin(), keys.begin() + keep, keys.end(),
        [](const Carried& a, const Carried& b) { return a.tat > b.tat; });
    absl::MutexLock lock(&shard.mu);
    for (size_t k = 0; k < keep; ++k) {
      InsertLocked(shard, keys[k].key, keys[k].hash, keys[k].tat);
    }
  }
}

void KeyedTokenBuckets::InitShards() {
  // Split the bound exactly over the shards in use: the capacities add up
  // to max_keys; unused shards have none and are never chosen.
  for (size_t i = 0; i < num_shards_; ++i) {
    shards_[i].capacity =
        max_keys_ / num_shards_ + (i < max_keys_ % num_shards_ ? 1 : 0);
  }
}

namespace {

// A clock stopped at one time: the TryTake(key, now) overload.
class FixedClock final : public Clock {
 public:
  explicit FixedClock(int64_t now) : now_(now) {}
  int64_t NowNanos() const override { return now_; }

 private:
  const int64_t now_;
};

}  // namespace

KeyedTokenBuckets::Decision KeyedTokenBuckets::TryTake(absl::string_view key,
                                                       int64_t now, int64_t n) {
  return TryTake(key, FixedClock(now), n);
}

KeyedTokenBuckets::Decision KeyedTokenBuckets::TryTake(absl::string_view key,
                                                       const Clock& clock,
                                                       int64_t n) {
  const size_t hash = KeyHash()(key);
  Shard& shard = shards_[ShardIndex(hash)];
  Decision result;
  {
    absl::MutexLock lock(&shard.mu);
    const int64_t now = clock.NowNanos();  // after the wait for the lock
    auto it = shard.map.find(PrehashedKey{key, hash});
    if (it != shard.map.end()) {
      int64_t& tat = it->second.tat;
      static_cast<TokenBucket::Decision&>(result) =
          config_.Take(tat, now, n, &tat);
      return result;
    }
    int64_t new_tat;
    static_cast<TokenBucket::Decision&>(result) =
        config_.Take(TokenBucket::Config::kFreshTat, now, n, &new_tat);
    // Nothing taken (probe, or more than a burst): a fresh bucket is what a
    // missing key already means.
    if (new_tat == TokenBucket::Config::kFreshTat) return result;
    if (shard.map.size() < shard.capacity || MakeRoomLocked(shard, now)) {
      InsertLocked(shard, key, hash, new_tat);
      return result;
    }
    ++shard.overflow_takes;
  }
  // Refused a bucket of its own: charge the shared overflow bucket (outside
  // the shard lock; it is lock-free).
  static_cast<TokenBucket::Decision&>(result) = overflow_.TryTake(clock, n);
  result.overflow = true;
  return result;
}

bool KeyedTokenBuckets::MakeRoomLocked(Shard& shard, int64_t now) {
  if (shard.capacity == 0) return false;
  for (int probe = 0; probe < kMaxEvictionProbes; ++probe) {
    Node* node = shard.ring[shard.hand];
    if (TokenBucket::Config::IsFull(node->second.tat, now)) {
      auto it = shard.map.find(PrehashedKey{node->first, node->second.hash});
      shard.map.erase(it);
      shard.ring[shard.hand] = nullptr;  // InsertLocked fills it
      ++shard.evictions;
      return true;
    }
    // Busy: give it a second chance; it is now the newest in CLOCK order.
    shard.hand = (shard.hand + 1) % shard.capacity;
  }
  return false;
}

void KeyedTokenBuckets::InsertLocked(Shard& shard, absl::string_view key,
                                     size_t hash, int64_t tat) {
  auto [it, inserted] =
      shard.map.try_emplace(std::string(key), Entry{tat, hash});
  Node* node = &*it;
  if (shard.ring.size() < shard.capacity) {
    shard.ring.push_back(node);
  } else {
    // Full ring: MakeRoomLocked just freed the slot under the hand.
    shard.ring[shard.hand] = node;
    shard.hand = (shard.hand + 1) % shard.capacity;
  }
}

void KeyedTokenBuckets::Refund(absl::string_view key, int64_t n) {
  if (n <= 0) return;
  const size_t hash = KeyHash()(key);
  Shard& shard = shards_[ShardIndex(hash)];
  absl::MutexLock lock(&shard.mu);
  auto it = shard.map.find(PrehashedKey{key, hash});
  if (it == shard.map.end()) return;
  // GCRA: a token is one interval of the theoretical arrival time. A TAT
  // in the past means a full bucket, so moving it back never adds more
  // than the burst.
  const int64_t step = config_.interval_nanos();
  int64_t& tat = it->second.tat;
  tat = (tat < std::numeric_limits<int64_t>::min() / 2 + n * step)
            ? tat
            : tat - n * step;
}

std::optional<double> KeyedTokenBuckets::Tokens(absl::string_view key,
                                                int64_t now) const {
  const size_t hash = KeyHash()(key);
  const Shard& shard = shards_[ShardIndex(hash)];
  absl::MutexLock lock(&shard.mu);
  auto it = shard.map.find(PrehashedKey{key, hash});
  if (it == shard.map.end()) return std::nullopt;
  return config_.Tokens(it->second.tat, now);
}

size_t KeyedTokenBuckets::Size() const {
  size_t size = 0;
  for (const Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    size += shard.map.size();
  }
  return size;
}

std::vector<KeyedTokenBuckets::KeyTokens> KeyedTokenBuckets::TopKeys(
    size_t k, int64_t now) const {
  std::vector<KeyTokens> heap;  // max-heap on tokens: heap[0] is the worst
  if (k == 0) return heap;
  // k comes from admin requests (GetLimits top_keys, up to 2^32-1): never
  // reserve more than the keys that can exist.
  heap.reserve(std::min(k, max_keys_));
  const auto fewer = [](const KeyTokens& a, const KeyTokens& b) {
    return a.tokens != b.tokens ? a.tokens < b.tokens : a.key < b.key;
  };
  for (const Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    for (const Node& node : shard.map) {
      const double tokens = config_.Tokens(node.second.tat, now);
      if (heap.size() < k) {
        heap.push_back(KeyTokens{node.first, tokens});
        std::push_heap(heap.begin(), heap.end(), fewer);
      } else if (tokens < heap.front().tokens) {
        std::pop_heap(heap.begin(), heap.end(), fewer);
        heap.back() = KeyTokens{node.first, tokens};
        std::push_heap(heap.begin(), heap.end(), fewer);
      }
    }
  }
  std::sort_heap(heap.begin(), heap.end(), fewer);
  return heap;
}

size_t KeyedTokenBuckets::EvictIdle(int64_t now) {
  size_t evicted = 0;
  for (Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    for (auto it = shard.map.begin(); it != shard.map.end();) {
      if (TokenBucket::Config::IsFull(it->second.tat, now)) {
        shard.map.erase(it++);
        ++evicted;
      } else {
        ++it;
      }
    }
    shard.ring.clear();
    for (Node& node : shard.map) shard.ring.push_back(&node);
    shard.hand = 0;
  }
  return evicted;
}

KeyedTokenBuckets::Stats KeyedTokenBuckets::GetStats() const {
  Stats stats;
  for (const Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    stats.size += shard.map.size();
    stats.evictions += shard.evictions;
    stats.overflow_takes += shard.overflow_takes;
  }
  stats.evictions += carried_evictions_;
  stats.overflow_takes += carried_overflow_takes_;
  return stats;
}

}  // namespace sluice
