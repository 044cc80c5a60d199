// libFuzzer target: the GCRA token bucket (server/limits/token_bucket.h).
//
// A fuzzed definition (rate or count/period, burst, including extreme and
// invalid values) and a fuzzed sequence of TryTake / Reserve / probes at
// fuzzed times in the documented domain [0, 2^62). Checked after each step:
//   - no signed overflow anywhere (UBSan aborts on one);
//   - TryTake never admits more than burst + span/T tokens in total, where
//     span is the range of `now` values seen (GCRA's exact bound), counting
//     Reserve()d tokens at the time they may be used;
//   - a decision's fields are consistent: admitted <=> retry_after == 0
//     (n <= burst), kNever exactly when n > burst, remaining in [0, burst],
//     reset_after in [0, B*T] unless in Reserve debt;
//   - retry_after is exact: the same request is admitted at now+retry and
//     not one nanosecond earlier (checked on the pure Config arithmetic with
//     the bucket's state mirrored);
//   - TimeUntilAvailable agrees with TryTake's retry_after.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "absl/time/time.h"
#include "server/limits/token_bucket.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using sluice::TokenBucket;
using sluice::fuzz::FuzzInput;

constexpr int64_t kMaxNow = (int64_t{1} << 62) - 1;

TokenBucket::Config MakeConfig(FuzzInput& in) {
  const int64_t burst = in.Range(-2, 3) == 0 ? in.Range(INT64_MIN, INT64_MAX)
                                             : in.Magnitude(int64_t{1} << 62);
  switch (in.U8() % 3) {
    case 0: {
      // Doubles from raw bits too: NaN, infinities, denormals, negatives.
      const uint64_t bits = in.U64();
      double rate;
      if (bits % 4 == 0) {
        static_assert(sizeof(rate) == sizeof(bits));
        __builtin_memcpy(&rate, &bits, sizeof(rate));
      } else {
        rate = static_cast<double>(in.Magnitude(2'000'000'000)) /
               static_cast<double>(1 + in.Magnitude(1000));
      }
      return TokenBucket::Config::PerSecond(rate, burst);
    }
    case 1: {
      const int64_t count = in.Range(-1, 5) == 0
                                ? in.Range(INT64_MIN, INT64_MAX)
                                : in.Magnitude(INT64_MAX);
      absl::Duration period;
      switch (in.U8() % 4) {
        case 0:
          period = absl::InfiniteDuration();
          break;
        case 1:
          period = -absl::Nanoseconds(in.Magnitude(INT64_MAX));
          break;
        default:
          period = absl::Nanoseconds(in.Magnitude(INT64_MAX));
      }
      return TokenBucket::Config::PerPeriod(count, period, burst);
    }
    default:
      return TokenBucket::Config::PerSecond(
          static_cast<double>(1 + in.Magnitude(1'000'000)), burst);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const TokenBucket::Config config = MakeConfig(in);
  const int64_t T = config.interval_nanos();
  const int64_t B = config.burst();
  FUZZ_CHECK(T >= 1 && B >= 1, "T=%lld B=%lld", (long long)T, (long long)B);
  FUZZ_CHECK(static_cast<__int128>(T) * B <= (__int128{1} << 62),
             "T*B above 2^62: T=%lld B=%lld", (long long)T, (long long)B);

  TokenBucket bucket(config);
  int64_t tat = TokenBucket::Config::kFreshTat;  // mirror of the bucket
  int64_t now = in.Range(0, kMaxNow);
  int64_t min_now = now, max_now = now;
  // Latest instant any Reserve()d token may be used.
  __int128 max_use = now;
  __int128 taken = 0;     // tokens admitted by TryTake
  __int128 reserved = 0;  // tokens taken by Reserve
  // A pacing caller waits out each reservation before the next one (the
  // documented contract that bounds the debt).
  int64_t reserve_wait_until = 0;
  // Reserve saturates TAT at INT64_MAX ("wait ~forever") instead of
  // overflowing when debt is piled onto a TAT near 2^63 (only with the
  // slowest rates, T ~ 2^62); the token count bound no longer applies then.
  bool saturated = false;

  for (int step = 0; step < 2000 && !in.empty(); ++step) {
    // Time: mostly forward by a small or large step, sometimes backwards (a
    // caller that read the clock before another thread did).
    switch (in.U8() % 6) {
      case 0:
        break;
      case 1:
        now = std::min<int64_t>(
            kMaxNow, now + in.Range(0, std::min(T, kMaxNow / 3) * 3));
        break;
      case 2:
        now = std::min<int64_t>(kMaxNow, now + in.Magnitude(kMaxNow));
        break;
      case 3:
        now = std::max<int64_t>(0, now - in.Range(0, 1'000'000));
        break;
      case 4:
        now = in.Range(0, kMaxNow);
        break;
      default:
        now = std::min<int64_t>(kMaxNow, now + in.Range(0, 1'000'000));
    }
    min_now = std::min(min_now, now);
    max_now = std::max(max_now, now);

    const uint8_t op = in.U8() % 8;
    int64_t n;
    switch (in.U8() % 4) {
      case 0:
        n = 1;
        break;
      case 1:
        n = in.Range(-2, B + 2);
        break;
      case 2:
        n = in.Range(INT64_MIN, INT64_MAX);
        break;
      default:
        n = in.Range(0, 8);
    }

    if (op <= 4) {
      const TokenBucket::Decision d = bucket.TryTake(now, n);
      int64_t new_tat;
      const TokenBucket::Decision m = config.Take(tat, now, n, &new_tat);
      FUZZ_CHECK(d.admitted == m.admitted &&
                     d.retry_after_nanos == m.retry_after_nanos &&
                     d.remaining == m.remaining &&
                     d.reset_after_nanos == m.reset_after_nanos,
                 "bucket and Config::Take disagree");
      FUZZ_CHECK(d.remaining >= 0 && d.remaining <= B, "remaining %lld",
                 (long long)d.remaining);
      FUZZ_CHECK(d.retry_after_nanos >= 0, "retry %lld",
                 (long long)d.retry_after_nanos);
      // TAT <= (latest admission or use instant) + B*T.
      FUZZ_CHECK(
          d.reset_after_nanos >= 0 &&
              d.reset_after_nanos <= std::max<__int128>(max_now, max_use) -
                                         now + static_cast<__int128>(T) * B,
          "reset %lld", (long long)d.reset_after_nanos);
      if (n > B) {
        FUZZ_CHECK(!d.admitted && d.retry_after_nanos == TokenBucket::kNever,
                   "n=%lld > burst admitted", (long long)n);
      } else if (n <= 0) {
        FUZZ_CHECK(d.admitted && new_tat == tat, "probe changed state");
      } else if (d.admitted) {
        FUZZ_CHECK(d.retry_after_nanos == 0, "admitted with a retry delay");
        taken += n;
      } else {
        FUZZ_CHECK(d.retry_after_nanos > 0, "rejected without a delay");
        FUZZ_CHECK(bucket.TimeUntilAvailable(now, n) == d.retry_after_nanos,
                   "TimeUntilAvailable disagrees");
        // Exactness of the retry delay.
        const int64_t at = now + d.retry_after_nanos;
        if (at <= kMaxNow) {
          int64_t ignored;
          FUZZ_CHECK(config.Take(tat, at, n, &ignored).admitted,
                     "not admitted after retry_after");
          FUZZ_CHECK(!config.Take(tat, at - 1, n, &ignored).admitted,
                     "admitted before retry_after");
        }
      }
      tat = new_tat;
    } else if (op <= 6 && now >= reserve_wait_until) {
      // Reserve: keep the debt bounded as a pacing caller would (one
      // outstanding reservation, n within a sane range).
      const int64_t rn = std::clamp<int64_t>(n, -1, B);
      const int64_t delay = bucket.Reserve(now, rn);
      int64_t new_tat;
      FUZZ_CHECK(config.Reserve(tat, now, rn, &new_tat) == delay,
                 "Reserve disagrees with Config::Reserve");
      FUZZ_CHECK(delay >= 0, "negative delay %lld", (long long)delay);
      if (new_tat == INT64_MAX) saturated = true;
      if (rn > 0) {
        reserved += rn;
        max_use =
            std::max<__int128>(max_use, static_cast<__int128>(now) + delay);
        reserve_wait_until = now + delay;
      }
      tat = new_tat;
    } else if (op == 7) {
      // Read-only views must not overflow and must match the mirror.
      const double tokens = bucket.Tokens(now);
      FUZZ_CHECK(tokens == config.Tokens(tat, now), "Tokens disagrees");
      FUZZ_CHECK(tokens <= static_cast<double>(B) * (1 + 1e-9),
                 "tokens %f > burst", tokens);
      FUZZ_CHECK(bucket.IsFull(now) == TokenBucket::Config::IsFull(tat, now),
                 "IsFull disagrees");
    }

    // GCRA bound: every admitted or reserved token moved TAT by T from a
    // start >= min_now, and TAT never exceeds the latest admission/use
    // instant + B*T.
    const __int128 latest = std::max<__int128>(max_now, max_use);
    FUZZ_CHECK(
        saturated || (taken + reserved) * T <=
                         latest - min_now + static_cast<__int128>(B) * T,
        "admitted %lld tokens (+%lld reserved) over %lld ns with T=%lld B=%lld",
        (long long)taken, (long long)reserved, (long long)(latest - min_now),
        (long long)T, (long long)B);
  }
  return 0;
}
