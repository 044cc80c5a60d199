// Micro-benchmarks of the admission-control building blocks in
// server/limits. Results and the exact command: docs/limits-bench.md.
//
//   bazel run -c opt //bench/micro:limits_bench
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "server/limits/clock.h"
#include "server/limits/concurrency_limiter.h"
#include "server/limits/keyed_buckets.h"
#include "server/limits/token_bucket.h"

namespace sluice {
namespace {

// Debian's libabsl is built without NDEBUG, so absl::Mutex runs its
// deadlock detector (a lock-graph update on every Lock, ~45 ns here) unless
// the process turns it off. A production daemon turns it off at startup;
// so does this benchmark, unless SLUICE_BENCH_MUTEX_DEADLOCK_DETECTION=1
// asks for the library default (to measure what it costs).
const bool kDeadlockDetectionConfigured = [] {
  const char* keep = std::getenv("SLUICE_BENCH_MUTEX_DEADLOCK_DETECTION");
  if (keep == nullptr || std::string(keep) != "1") {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    return false;
  }
  return true;
}();

// --- TokenBucket -----------------------------------------------------------

// Uncontended, every call admitted (load + CAS), time supplied by the caller
// as on the data path (the worker reads the clock once per event).
void BM_TokenBucket_TryTake_Admitted(benchmark::State& state) {
  state.SetLabel(kDeadlockDetectionConfigured ? "absl deadlock detection on"
                                              : "");
  TokenBucket bucket(1e9, 1'000'000);  // never the limiting factor
  int64_t now = 1'000'000'000;
  for (auto _ : state) {
    benchmark::DoNotOptimize(bucket.TryTake(now));
    ++now;
  }
}
BENCHMARK(BM_TokenBucket_TryTake_Admitted);

// Uncontended, every call rejected (load only, no write).
void BM_TokenBucket_TryTake_Rejected(benchmark::State& state) {
  TokenBucket bucket(1.0, 1);
  const int64_t now = 1'000'000'000;
  bucket.TryTake(now);
  for (auto _ : state) {
    benchmark::DoNotOptimize(bucket.TryTake(now));
  }
}
BENCHMARK(BM_TokenBucket_TryTake_Rejected);

// Uncontended, including the clock read (steady_clock, vDSO).
void BM_TokenBucket_TryTake_WithRealClock(benchmark::State& state) {
  TokenBucket bucket(1e9, 1'000'000);
  const Clock& clock = RealClock::Get();
  for (auto _ : state) {
    benchmark::DoNotOptimize(bucket.TryTake(clock.NowNanos()));
  }
}
BENCHMARK(BM_TokenBucket_TryTake_WithRealClock);

void BM_RealClock_NowNanos(benchmark::State& state) {
  const Clock& clock = RealClock::Get();
  for (auto _ : state) {
    benchmark::DoNotOptimize(clock.NowNanos());
  }
}
BENCHMARK(BM_RealClock_NowNanos);

void BM_TokenBucket_Reserve(benchmark::State& state) {
  TokenBucket bucket(1e9, 1'000'000);
  int64_t now = 1'000'000'000;
  for (auto _ : state) {
    benchmark::DoNotOptimize(bucket.Reserve(now));
    ++now;
  }
}
BENCHMARK(BM_TokenBucket_Reserve);

// One bucket shared by all benchmark threads: every call admitted, so every
// call CASes the same cache line.
TokenBucket& SharedBucket() {
  static TokenBucket* const bucket = new TokenBucket(1e9, 1'000'000'000);
  return *bucket;
}

void BM_TokenBucket_TryTake_Contended(benchmark::State& state) {
  TokenBucket& bucket = SharedBucket();
  const Clock& clock = RealClock::Get();
  int64_t admitted = 0;
  for (auto _ : state) {
    admitted += bucket.TryTake(clock.NowNanos()).admitted;
  }
  state.counters["admitted_pct"] = benchmark::Counter(
      100.0 * admitted / std::max<int64_t>(1, state.iterations()),
      benchmark::Counter::kAvgThreads);
}
BENCHMARK(BM_TokenBucket_TryTake_Contended)->Threads(1)->Threads(2);

// Same, without the clock read: each thread supplies its own increasing
// `now`, so the time measured is the CAS and its cache-line transfers.
void BM_TokenBucket_TryTake_Contended_NoClock(benchmark::State& state) {
  TokenBucket& bucket = SharedBucket();
  int64_t now = RealClock::Get().NowNanos();
  int64_t admitted = 0;
  for (auto _ : state) {
    admitted += bucket.TryTake(now).admitted;
    ++now;
  }
  state.counters["admitted_pct"] = benchmark::Counter(
      100.0 * admitted / std::max<int64_t>(1, state.iterations()),
      benchmark::Counter::kAvgThreads);
}
BENCHMARK(BM_TokenBucket_TryTake_Contended_NoClock)->Threads(1)->Threads(2);

// --- KeyedTokenBuckets -----------------------------------------------------

constexpr int kKeys = 1'000'000;

const std::vector<std::string>& ShuffledKeys() {
  static const std::vector<std::string>* const keys = [] {
    auto* v = new std::vector<std::string>();
    v->reserve(kKeys);
    for (int i = 0; i < kKeys; ++i) v->push_back(absl::StrCat("user-", i));
    std::shuffle(v->begin(), v->end(), std::mt19937(42));
    return v;
  }();
  return *keys;
}

// A million keys present, looked up in random order (cache-cold, as real
// per-client traffic would be). Per-key limit high enough to admit.
KeyedTokenBuckets& MillionKeyBuckets() {
  static KeyedTokenBuckets* const buckets = [] {
    auto* b = new KeyedTokenBuckets(
        TokenBucket::Config::PerSecond(1e6, 1'000'000), 1 << 20);
    for (const std::string& key : ShuffledKeys()) b->TryTake(key, 1);
    return b;
  }();
  return *buckets;
}

void BM_Keyed_TryTake_1MKeys(benchmark::State& state) {
  KeyedTokenBuckets& buckets = MillionKeyBuckets();
  const std::vector<std::string>& keys = ShuffledKeys();
  size_t i = static_cast<size_t>(state.thread_index()) * 7919;
  int64_t now = 2'000'000'000;
  for (auto _ : state) {
    benchmark::DoNotOptimize(buckets.TryTake(keys[i], now));
    if (++i == keys.size()) i = 0;
    ++now;
  }
  state.counters["keys"] = benchmark::Counter(
      static_cast<double>(buckets.Size()), benchmark::Counter::kAvgThreads);
}
BENCHMARK(BM_Keyed_TryTake_1MKeys)->Threads(1)->Threads(2);

// One hot key (cache-resident): the fixed cost of hash + shard lock + GCRA.
void BM_Keyed_TryTake_HotKey(benchmark::State& state) {
  KeyedTokenBuckets buckets(TokenBucket::Config::PerSecond(1e9, 1'000'000),
                            1000);
  const std::string key = "user-12345";
  int64_t now = 1'000'000'000;
  for (auto _ : state) {
    benchmark::DoNotOptimize(buckets.TryTake(key, now));
    ++now;
  }
}
BENCHMARK(BM_Keyed_TryTake_HotKey);

// A flood of never-seen keys into a full map of busy keys: every call is
// refused a bucket (kMaxEvictionProbes probes) and charged to overflow.
void BM_Keyed_TryTake_FloodRefused(benchmark::State& state) {
  KeyedTokenBuckets buckets(
      TokenBucket::Config::PerPeriod(1, absl::Hours(1), 10), 10000);
  for (int i = 0; i < 20000; ++i) buckets.TryTake(absl::StrCat("busy-", i), 1);
  const std::vector<std::string>& keys = ShuffledKeys();
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(buckets.TryTake(keys[i], 2));
    if (++i == keys.size()) i = 0;
  }
  state.counters["overflow_takes"] =
      static_cast<double>(buckets.GetStats().overflow_takes);
}
BENCHMARK(BM_Keyed_TryTake_FloodRefused);

// --- ConcurrencyLimiter ----------------------------------------------------

void BM_Concurrency_TryAcquireRelease(benchmark::State& state) {
  ConcurrencyLimiter limiter(100, 100);
  for (auto _ : state) {
    benchmark::DoNotOptimize(limiter.TryAcquire());
    limiter.Release();
  }
}
BENCHMARK(BM_Concurrency_TryAcquireRelease);

void BM_Concurrency_Permit(benchmark::State& state) {
  ConcurrencyLimiter limiter(100, 100);
  for (auto _ : state) {
    ConcurrencyLimiter::Permit permit = limiter.TryAcquirePermit();
    benchmark::DoNotOptimize(permit.held());
  }
}
BENCHMARK(BM_Concurrency_Permit);

ConcurrencyLimiter& SharedLimiter() {
  static ConcurrencyLimiter* const limiter = new ConcurrencyLimiter(1000, 0);
  return *limiter;
}

void BM_Concurrency_TryAcquireRelease_Contended(benchmark::State& state) {
  ConcurrencyLimiter& limiter = SharedLimiter();
  for (auto _ : state) {
    benchmark::DoNotOptimize(limiter.TryAcquire());
    limiter.Release();
  }
}
BENCHMARK(BM_Concurrency_TryAcquireRelease_Contended)->Threads(1)->Threads(2);

class CountingWaiter : public ConcurrencyLimiter::Waiter {
 public:
  void OnGranted() override { ++grants; }
  int64_t grants = 0;
};

// The queued path: enqueue behind a held permit, Release() hands it over
// and runs OnGranted, then the waiter releases.
void BM_Concurrency_EnqueueGrantRelease(benchmark::State& state) {
  ConcurrencyLimiter limiter(1, 10);
  CountingWaiter waiter;
  limiter.TryAcquire();
  for (auto _ : state) {
    limiter.AcquireOrEnqueue(&waiter);
    limiter.Release();  // grant to the waiter
    // The waiter now holds the only permit; give it back and take it again
    // as the "other call" for the next round.
    limiter.Release();
    limiter.TryAcquire();
  }
  limiter.Release();
  benchmark::DoNotOptimize(waiter.grants);
}
BENCHMARK(BM_Concurrency_EnqueueGrantRelease);

void BM_Concurrency_EnqueueCancel(benchmark::State& state) {
  ConcurrencyLimiter limiter(1, 10);
  CountingWaiter waiter;
  limiter.TryAcquire();
  for (auto _ : state) {
    limiter.AcquireOrEnqueue(&waiter);
    benchmark::DoNotOptimize(limiter.Cancel(&waiter));
  }
  limiter.Release();
}
BENCHMARK(BM_Concurrency_EnqueueCancel);

}  // namespace
}  // namespace sluice
