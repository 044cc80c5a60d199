// libFuzzer target: per-key buckets with a key bound
// (server/limits/keyed_buckets.h).
//
// A fuzzed per-key and overflow definition, a small max_keys, and a fuzzed
// stream of keys (from a small alphabet, so keys repeat and shards fill)
// at monotone fuzzed times. Checked after each step:
//   - Size() <= max_keys() and GetStats().size == Size();
//   - per key, tokens admitted by the key's own bucket stay within GCRA's
//     bound burst + span/T (eviction only drops full buckets, which are
//     indistinguishable from fresh ones, so the bound survives eviction);
//   - tokens admitted by the shared overflow bucket stay within its bound;
//   - Tokens(key) is in [0, burst] (TryTake never goes into debt);
//   - TopKeys(k) returns at most min(k, Size()) keys, fewest tokens first;
//   - EvictIdle leaves only busy (non-full) keys.
// Then the table is carried into a fuzzed new definition and max_keys (a
// reload or set-limit changing the limit), and checked:
//   - the new table holds at most its max_keys keys, and only keys that
//     were in debt; its counts (overflow, evictions) go on from the old;
//   - each carried key owes the same tokens as before (never fewer; at
//     most one nanosecond of the new interval more, the rounding);
//   - a one-shard table (max_keys < 16) keeps min(indebted, max_keys)
//     keys, those with the most debt.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "server/limits/keyed_buckets.h"
#include "server/limits/token_bucket.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using sluice::KeyedTokenBuckets;
using sluice::TokenBucket;
using sluice::fuzz::FuzzInput;

constexpr int64_t kMaxNow = (int64_t{1} << 62) - 1;

TokenBucket::Config MakeConfig(FuzzInput& in) {
  return TokenBucket::Config::PerPeriod(
      1 + in.Magnitude(1'000'000), absl::Nanoseconds(1 + in.Magnitude(kMaxNow)),
      in.Magnitude(1000));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const TokenBucket::Config per_key = MakeConfig(in);
  const bool own_overflow = in.U8() % 2;
  const TokenBucket::Config overflow = own_overflow ? MakeConfig(in) : per_key;
  const size_t max_keys = static_cast<size_t>(in.Range(0, 70));
  KeyedTokenBuckets buckets(per_key, max_keys, overflow);
  FUZZ_CHECK(buckets.max_keys() == max_keys, "max_keys %zu -> %zu", max_keys,
             buckets.max_keys());
  const TokenBucket::Config& of = buckets.overflow_bucket().config();

  const int64_t start = in.Range(0, kMaxNow / 2);
  int64_t now = start;
  std::map<std::string, __int128> own_taken;
  __int128 overflow_taken = 0;
  const int alphabet = 1 + in.U8() % 200;

  for (int step = 0; step < 3000 && !in.empty(); ++step) {
    switch (in.U8() % 4) {
      case 0:
        break;
      case 1:
        now = std::min<int64_t>(kMaxNow,
                                now + in.Range(0, per_key.interval_nanos()));
        break;
      case 2:
        now = std::min<int64_t>(kMaxNow, now + in.Magnitude(1'000'000'000));
        break;
      default:
        now = std::min<int64_t>(kMaxNow, now + in.Range(0, 1000));
    }
    const uint8_t op = in.U8();
    std::string key;
    if (op % 16 == 15) {
      key = in.Bytes(40);  // arbitrary bytes, incl. empty and NULs
    } else {
      key = "k" + std::to_string(in.U8() % alphabet);
    }

    if (op % 16 < 12) {
      const int64_t n = (op & 0x80) ? in.Range(-1, per_key.burst() + 1) : 1;
      const KeyedTokenBuckets::Decision d = buckets.TryTake(key, now, n);
      FUZZ_CHECK(d.remaining >= 0, "remaining %lld", (long long)d.remaining);
      FUZZ_CHECK(d.admitted == (d.retry_after_nanos == 0) || n <= 0,
                 "admitted/retry mismatch");
      if (d.admitted && n > 0) {
        if (d.overflow) {
          overflow_taken += n;
        } else {
          own_taken[key] += n;
        }
      }
    } else if (op % 16 == 12) {
      const size_t evicted = buckets.EvictIdle(now);
      (void)evicted;
      for (const auto& kt : buckets.TopKeys(SIZE_MAX, now)) {
        // (Exact while B*T fits a double's mantissa.)
        FUZZ_CHECK(kt.tokens < per_key.burst() ||
                       static_cast<double>(per_key.interval_nanos()) *
                               per_key.burst() >
                           0x1p52,
                   "idle key %s left after EvictIdle (%f tokens)",
                   kt.key.c_str(), kt.tokens);
      }
    } else if (op % 16 == 13) {
      const size_t k = in.U8() % 8 == 0 ? size_t{UINT32_MAX} : in.U8() % 20;
      const auto top = buckets.TopKeys(k, now);
      FUZZ_CHECK(top.size() <= std::min(k, buckets.Size()), "TopKeys size %zu",
                 top.size());
      for (size_t i = 1; i < top.size(); ++i) {
        FUZZ_CHECK(top[i - 1].tokens <= top[i].tokens, "TopKeys not sorted");
      }
    } else {
      const auto tokens = buckets.Tokens(key, now);
      if (tokens.has_value()) {
        FUZZ_CHECK(*tokens >= 0 && *tokens <= per_key.burst(),
                   "Tokens(%s) = %f", key.c_str(), *tokens);
      }
    }

    const size_t sz = buckets.Size();
    FUZZ_CHECK(sz <= buckets.max_keys(), "Size %zu > max_keys %zu", sz,
               buckets.max_keys());
    FUZZ_CHECK(buckets.GetStats().size == sz, "Stats.size %zu != Size %zu",
               buckets.GetStats().size, sz);
    const __int128 span = static_cast<__int128>(now) - start;
    if (auto it = own_taken.find(key); it != own_taken.end()) {
      FUZZ_CHECK(it->second * per_key.interval_nanos() <=
                     span + static_cast<__int128>(per_key.burst()) *
                                per_key.interval_nanos(),
                 "key %s admitted %lld tokens over %lld ns", key.c_str(),
                 (long long)it->second, (long long)span);
    }
    FUZZ_CHECK(
        overflow_taken * of.interval_nanos() <=
            span + static_cast<__int128>(of.burst()) * of.interval_nanos(),
        "overflow admitted %lld tokens over %lld ns", (long long)overflow_taken,
        (long long)span);
  }

  // --- Carry into a new definition. ---
  const TokenBucket::Config next_config = MakeConfig(in);
  const size_t next_max = static_cast<size_t>(in.Range(0, 70));
  const auto old_keys = buckets.TopKeys(SIZE_MAX, now);
  KeyedTokenBuckets next(next_config, next_max, next_config, buckets, now);
  FUZZ_CHECK(next.Size() <= next_max, "carried Size %zu > max_keys %zu",
             next.Size(), next_max);
  FUZZ_CHECK(
      next.GetStats().overflow_takes >= buckets.GetStats().overflow_takes,
      "overflow count went back");
  FUZZ_CHECK(next.GetStats().evictions >= buckets.GetStats().evictions,
             "eviction count went back");
  // Exact enough in doubles while every B*T stays below 2^52 ns.
  const auto small = [](const TokenBucket::Config& c) {
    return static_cast<double>(c.interval_nanos()) * c.burst() < 0x1p52;
  };
  const bool exact = small(per_key) && small(next_config);
  size_t indebted = 0;
  double least_kept = -1, most_dropped = -1;  // debts in old tokens
  for (const auto& kt : old_keys) {
    const double old_debt = per_key.burst() - kt.tokens;
    const auto tokens = next.Tokens(kt.key, now);
    if (old_debt <= 0) {
      FUZZ_CHECK(!exact || !tokens.has_value(), "full key %s carried",
                 kt.key.c_str());
      continue;
    }
    ++indebted;
    if (!tokens.has_value()) {
      most_dropped = std::max(most_dropped, old_debt);
      continue;
    }
    least_kept = least_kept < 0 ? old_debt : std::min(least_kept, old_debt);
    const double new_debt = next_config.burst() - *tokens;
    // The carried debt is capped at 2^62 ns of the new interval.
    const bool capped =
        static_cast<double>(old_debt) * next_config.interval_nanos() >= 0x1p61;
    if (exact && !capped && old_debt * next_config.interval_nanos() < 0x1p52) {
      const double slack = 1e-6 * std::max(1.0, old_debt);
      FUZZ_CHECK(new_debt >= old_debt - slack, "key %s: debt %f -> %f",
                 kt.key.c_str(), old_debt, new_debt);
      FUZZ_CHECK(
          new_debt <= old_debt + 1.0 / next_config.interval_nanos() + slack,
          "key %s: debt %f -> %f", kt.key.c_str(), old_debt, new_debt);
    }
  }
  if (next_max < 16 && exact) {
    FUZZ_CHECK(next.Size() == std::min(indebted, next_max),
               "one-shard table kept %zu of %zu indebted keys (max %zu)",
               next.Size(), indebted, next_max);
    FUZZ_CHECK(most_dropped < 0 || least_kept < 0 ||
                   most_dropped <= least_kept + 1e-6 * least_kept,
               "dropped a key owing %f, kept one owing %f", most_dropped,
               least_kept);
  }
  return 0;
}
