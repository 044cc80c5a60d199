#include "server/limits/token_bucket.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "absl/time/time.h"

namespace sluice {
namespace {

// T * B is kept at or below 2^62 so that TAT arithmetic on clock values
// below 2^62 never overflows (see the header).
constexpr int64_t kMaxTolerance = int64_t{1} << 62;

}  // namespace

TokenBucket::Config::Config(int64_t interval_nanos, int64_t burst) {
  interval_nanos_ = std::clamp<int64_t>(interval_nanos, 1, kMaxTolerance);
  burst_ = std::clamp<int64_t>(burst, 1, kMaxTolerance / interval_nanos_);
  tolerance_nanos_ = interval_nanos_ * burst_;
}

TokenBucket::Config TokenBucket::Config::PerSecond(double tokens_per_second,
                                                   int64_t burst) {
  // !(x > 0) also catches NaN.
  if (!(tokens_per_second > 0)) return Config(kMaxTolerance, burst);
  const double interval = std::round(1e9 / tokens_per_second);
  if (interval >= static_cast<double>(kMaxTolerance)) {
    return Config(kMaxTolerance, burst);
  }
  return Config(static_cast<int64_t>(interval), burst);
}

TokenBucket::Config TokenBucket::Config::PerPeriod(int64_t count,
                                                   absl::Duration period,
                                                   int64_t burst) {
  if (count <= 0 || period <= absl::ZeroDuration()) {
    return Config(kMaxTolerance, burst);
  }
  // ToInt64Nanoseconds saturates an infinite period; the clamp in the
  // constructor then bounds it.
  const int64_t period_nanos =
      std::min(absl::ToInt64Nanoseconds(period), kMaxTolerance);
  return Config((period_nanos + count / 2) / count, burst);
}

int64_t TokenBucket::Config::CarryTat(const Config& from, int64_t from_tat,
                                      int64_t now) const {
  if (from_tat <= now) return kFreshTat;  // full: nothing owed
  // debt_nanos * interval / from.interval, in 128 bits (both factors may be
  // up to 2^62), rounded up so that a change never forgives a fraction.
  const unsigned __int128 debt_nanos =
      static_cast<unsigned __int128>(from_tat - now);
  const unsigned __int128 scaled =
      (debt_nanos * static_cast<unsigned __int128>(interval_nanos_) +
       static_cast<unsigned __int128>(from.interval_nanos_) - 1) /
      static_cast<unsigned __int128>(from.interval_nanos_);
  const int64_t carried = scaled > static_cast<unsigned __int128>(kMaxTolerance)
                              ? kMaxTolerance
                              : static_cast<int64_t>(scaled);
  return now + carried;
}

TokenBucket::TokenBucket(double tokens_per_second, int64_t burst)
    : TokenBucket(Config::PerSecond(tokens_per_second, burst)) {}

TokenBucket::TokenBucket(int64_t count, absl::Duration period, int64_t burst)
    : TokenBucket(Config::PerPeriod(count, period, burst)) {}

TokenBucket::TokenBucket(const Config& config)
    : TokenBucket(config, Config::kFreshTat) {}

TokenBucket::TokenBucket(const Config& config, int64_t initial_tat)
    : config_(config), tat_(initial_tat) {}

template <typename Now>
TokenBucket::Decision TokenBucket::TakeWith(Now now, int64_t n) {
  // Acquire/release pair with the CAS below: a state this load sees was
  // written after its writer read the clock, so a clock read that follows
  // here is never older than the writer's. The TAT publishes nothing else.
  int64_t tat = tat_.load(std::memory_order_acquire);
  while (true) {
    int64_t new_tat;
    const Decision d = config_.Take(tat, now(), n, &new_tat);
    // Rejections and probes write nothing: under overload most calls are
    // rejected and they do not bounce the cache line.
    if (new_tat == tat) return d;
    if (tat_.compare_exchange_weak(tat, new_tat, std::memory_order_acq_rel,
                                   std::memory_order_acquire)) {
      return d;
    }
    // `tat` now holds the current value; decide again against it.
  }
}

TokenBucket::Decision TokenBucket::TryTake(int64_t now, int64_t n) {
  return TakeWith([now] { return now; }, n);
}

TokenBucket::Decision TokenBucket::TryTake(const Clock& clock, int64_t n) {
  return TakeWith([&clock] { return clock.NowNanos(); }, n);
}

int64_t TokenBucket::Reserve(int64_t now, int64_t n) {
  int64_t tat = tat_.load(std::memory_order_relaxed);
  while (true) {
    int64_t new_tat;
    const int64_t delay = config_.Reserve(tat, now, n, &new_tat);
    if (new_tat == tat) return delay;
    if (tat_.compare_exchange_weak(tat, new_tat, std::memory_order_relaxed,
                                   std::memory_order_relaxed)) {
      return delay;
    }
  }
}

int64_t TokenBucket::TimeUntilAvailable(int64_t now, int64_t n) const {
  return config_.TimeUntilAvailable(tat_.load(std::memory_order_relaxed), now,
                                    n);
}

double TokenBucket::Tokens(int64_t now) const {
  return config_.Tokens(tat_.load(std::memory_order_relaxed), now);
}

bool TokenBucket::IsFull(int64_t now) const {
  return Config::IsFull(tat_.load(std::memory_order_relaxed), now);
}

}  // namespace sluice
