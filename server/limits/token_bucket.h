// GCRA token bucket: the rate limiter behind every Sluice rate limit.
//
// The Generic Cell Rate Algorithm keeps one number per bucket, the
// "theoretical arrival time" (TAT): the instant at which the bucket would be
// full again if nothing more were taken. With emission interval T = 1/rate
// and burst B, taking n tokens at time `now` is allowed iff
//
//     max(TAT, now) + n*T - B*T <= now
//
// and then TAT becomes max(TAT, now) + n*T. Everything an operator wants to
// know follows exactly from TAT: the time until a rejected call would be
// admitted, the tokens left, and the time until the bucket is full. A new
// bucket starts full (TAT in the past).
//
// Time is injected: every method takes `now` in nanoseconds on the caller's
// monotonic clock (see clock.h). Values of `now` must lie in [0, 2^62) ns
// (146 years); within that range no arithmetic here overflows.
#ifndef SLUICE_SERVER_LIMITS_TOKEN_BUCKET_H_
#define SLUICE_SERVER_LIMITS_TOKEN_BUCKET_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>

#include "absl/time/time.h"
#include "server/limits/clock.h"

namespace sluice {

// One rate limit: a lock-free GCRA bucket whose whole state is a single
// std::atomic<int64_t> updated by compare-and-swap.
//
// Ownership: owned by whatever the limit belongs to (a route's limiter
// state, a stream's pacing state). Thread-safety: every method may be called
// concurrently from any thread (worker threads of the completion queues);
// Config is immutable. Lifetime: it must outlive the calls into it; it
// holds no references and may die at any time after the last call returns.
class TokenBucket {
 public:
  // Returned by TryTake/TimeUntilAvailable when `n` exceeds the burst: such
  // a request can never be admitted.
  static constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

  // The result of one TryTake.
  struct Decision {
    bool admitted = false;
    // Nanoseconds until the same request would be admitted if nothing else
    // were taken: 0 when admitted, kNever when n > burst. Exact with GCRA.
    int64_t retry_after_nanos = 0;
    // Whole tokens left after this decision (x-ratelimit-remaining).
    int64_t remaining = 0;
    // Nanoseconds until the bucket is full again (x-ratelimit-reset).
    int64_t reset_after_nanos = 0;
  };

  // The immutable definition of a bucket: emission interval T = 1/rate and
  // burst B. Copyable; compare with == to see whether a reloaded limit is
  // unchanged (and its state may be kept).
  //
  // It also holds the GCRA arithmetic as pure functions of an external TAT,
  // so that KeyedTokenBuckets, which keeps its TATs under a shard lock, runs
  // exactly the same algorithm as TokenBucket's atomic. They are not
  // synchronized; the caller owns `tat`.
  class Config {
   public:
    // `tokens_per_second` > 0. The emission interval is rounded to whole
    // nanoseconds (so rates above 1e9/s act as 1e9/s). A rate that is not
    // positive (or NaN) yields the slowest representable rate.
    // `burst` >= 1 (smaller values are raised to 1).
    static Config PerSecond(double tokens_per_second, int64_t burst);
    // `count` tokens per `period` (e.g. 100 per absl::Minutes(1)). The
    // interval is period/count rounded to the nearest nanosecond, so
    // per-minute and per-hour rates are exact whenever the division is.
    static Config PerPeriod(int64_t count, absl::Duration period,
                            int64_t burst);

    int64_t interval_nanos() const { return interval_nanos_; }
    int64_t burst() const { return burst_; }
    double tokens_per_second() const { return 1e9 / interval_nanos_; }

    friend bool operator==(const Config& a, const Config& b) {
      return a.interval_nanos_ == b.interval_nanos_ && a.burst_ == b.burst_;
    }
    friend bool operator!=(const Config& a, const Config& b) {
      return !(a == b);
    }

    // --- GCRA on an external TAT ---
    // The TAT of a bucket nobody has touched: full at any `now`.
    static constexpr int64_t kFreshTat = std::numeric_limits<int64_t>::min();

    // Tries to take `n` tokens. On admission sets *new_tat to the TAT to
    // store; otherwise leaves it equal to `tat`. n <= 0 is a probe: admitted,
    // nothing taken.
    Decision Take(int64_t tat, int64_t now, int64_t n, int64_t* new_tat) const {
      const int64_t base = std::max(tat, now);
      *new_tat = tat;
      Decision d;
      if (n <= 0) {
        d.admitted = true;
        d.remaining = RemainingAt(base, now);
        d.reset_after_nanos = base - now;
        return d;
      }
      if (n > burst_) {
        d.retry_after_nanos = kNever;
        d.remaining = RemainingAt(base, now);
        d.reset_after_nanos = base - now;
        return d;
      }
      // Written so nothing overflows for now in [0, 2^62): the subtracted
      // term is in [0, 2^62], so allow_at >= now - 2^62; when admitted,
      // allow_at <= now and so next <= now + 2^62 < 2^63.
      const int64_t allow_at = base - (tolerance_nanos_ - n * interval_nanos_);
      if (allow_at > now) {
        d.retry_after_nanos = allow_at - now;
        d.remaining = RemainingAt(base, now);
        d.reset_after_nanos = base - now;
        return d;
      }
      const int64_t next = allow_at + tolerance_nanos_;
      *new_tat = next;
      d.admitted = true;
      d.remaining = (now - allow_at) / interval_nanos_;
      d.reset_after_nanos = next - now;
      return d;
    }

    // Always takes `n` tokens (going into debt if needed) and returns the
    // nanoseconds the caller must wait before using them. Each call moves
    // TAT by exactly n*T, so a caller that waits as told runs at exactly the
    // configured rate after its initial burst.
    int64_t Reserve(int64_t tat, int64_t now, int64_t n,
                    int64_t* new_tat) const {
      const int64_t base = std::max(tat, now);
      if (n <= 0) {
        *new_tat = tat;
        return 0;
      }
      *new_tat = SaturatingAdd(base, SaturatingMul(n, interval_nanos_));
      return std::max<int64_t>(0, *new_tat - tolerance_nanos_ - now);
    }

    // Nanoseconds until Take(n) would be admitted (0 if now; kNever if
    // n > burst).
    int64_t TimeUntilAvailable(int64_t tat, int64_t now, int64_t n) const {
      if (n <= 0) return 0;
      if (n > burst_) return kNever;
      const int64_t base = std::max(tat, now);
      const int64_t allow_at = base - (tolerance_nanos_ - n * interval_nanos_);
      return std::max<int64_t>(0, allow_at - now);
    }

    // Tokens available at `now`, fractional; in [0, burst] unless Reserve()
    // has put the bucket into debt, which shows as a negative value.
    double Tokens(int64_t tat, int64_t now) const {
      const int64_t base = std::max(tat, now);
      // Whole tokens in integers, then the fraction: dividing the two
      // int64s as doubles rounds both and could show a full bucket as
      // holding more than its burst when B*T exceeds 2^53.
      const int64_t slack = tolerance_nanos_ - (base - now);
      return static_cast<double>(slack / interval_nanos_) +
             static_cast<double>(slack % interval_nanos_) /
                 static_cast<double>(interval_nanos_);
    }

    // A full bucket is indistinguishable from a fresh one.
    static bool IsFull(int64_t tat, int64_t now) { return tat <= now; }

    // Carrying a bucket's load across a change of definition (a reload or
    // a run-time override). The debt of a bucket of definition `from` with
    // TAT `from_tat` at `now` is the tokens taken and not yet refilled:
    // from.burst() - from.Tokens(from_tat, now) = max(0, from_tat - now) /
    // from.interval; it may exceed the burst after Reserve(). Returns the TAT
    // under this definition that owes the same number of tokens, now +
    // debt * interval (the debt refills at the new rate), or kFreshTat when
    // there is no debt. So a change admits at most the new burst minus the
    // debt at once, and never hands out a fresh burst. The debt is capped
    // at 2^62 ns of the new interval (kept overflow-free, see the header).
    int64_t CarryTat(const Config& from, int64_t from_tat, int64_t now) const;

   private:
    Config(int64_t interval_nanos, int64_t burst);

    static int64_t SaturatingAdd(int64_t a, int64_t b) {
      int64_t r;
      if (__builtin_add_overflow(a, b, &r)) {
        return b > 0 ? std::numeric_limits<int64_t>::max()
                     : std::numeric_limits<int64_t>::min();
      }
      return r;
    }
    static int64_t SaturatingMul(int64_t a, int64_t b) {
      int64_t r;
      if (__builtin_mul_overflow(a, b, &r)) {
        return std::numeric_limits<int64_t>::max();  // a, b > 0 here
      }
      return r;
    }
    // Whole tokens at `now` given base = max(TAT, now); 0 when in debt.
    int64_t RemainingAt(int64_t base, int64_t now) const {
      const int64_t slack = tolerance_nanos_ - (base - now);
      return slack <= 0 ? 0 : slack / interval_nanos_;
    }

    int64_t interval_nanos_;   // T, in [1, 2^62]
    int64_t burst_;            // B, in [1, 2^62 / T]
    int64_t tolerance_nanos_;  // B * T <= 2^62
  };

  // `tokens_per_second` tokens per second, at most `burst` at once.
  TokenBucket(double tokens_per_second, int64_t burst);
  // `count` tokens per `period` (e.g. 600 per absl::Minutes(1)).
  TokenBucket(int64_t count, absl::Duration period, int64_t burst);
  explicit TokenBucket(const Config& config);
  // Starts from `initial_tat` instead of full, e.g. config.CarryTat(...) to
  // carry an old bucket's debt into a new definition.
  TokenBucket(const Config& config, int64_t initial_tat);

  TokenBucket(const TokenBucket&) = delete;
  TokenBucket& operator=(const TokenBucket&) = delete;

  // Takes `n` tokens if all are available now; otherwise takes nothing.
  // Lock-free: one load and, when admitted, one CAS (retried on contention).
  Decision TryTake(int64_t now, int64_t n = 1);

  // The same, reading `clock` after loading the state, on every attempt.
  // Use this from threads that share the bucket: a `now` read before a
  // thread was delayed (preempted, or waiting for a lock) can be older than
  // the state another thread has since written, and GCRA then rejects a
  // call the bucket has room for whenever the delay exceeds burst/rate
  // (10 us at 1,000,000/s with a burst of 10).
  Decision TryTake(const Clock& clock, int64_t n = 1);

  // Pacing: always takes `n` tokens and returns the nanoseconds the caller
  // must wait before acting on them (0 while within the burst). A stream that
  // delays its next read by the returned amount runs at exactly the rate,
  // e.g. 50/s -> reads 20 ms apart once the burst is spent. Debt is bounded
  // by the caller's waiting: one outstanding reservation per stream.
  int64_t Reserve(int64_t now, int64_t n = 1);

  // Nanoseconds until TryTake(now + result, n) would succeed if nothing else
  // were taken; kNever if n > burst. Takes nothing.
  int64_t TimeUntilAvailable(int64_t now, int64_t n = 1) const;

  // Fractional tokens available at `now` (admin view); negative while in
  // Reserve() debt.
  double Tokens(int64_t now) const;

  // True if the bucket is full: indistinguishable from a new one.
  bool IsFull(int64_t now) const;

  // The whole state (for carrying it into a new definition: CarryTat).
  int64_t Tat() const { return tat_.load(std::memory_order_acquire); }

  const Config& config() const { return config_; }

 private:
  // The compare-and-swap loop of both TryTake()s: `now()` gives the time
  // for each attempt, called after the state is loaded.
  template <typename Now>
  Decision TakeWith(Now now, int64_t n);

  const Config config_;
  std::atomic<int64_t> tat_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_TOKEN_BUCKET_H_
