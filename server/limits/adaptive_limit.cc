#include "server/limits/adaptive_limit.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace sluice {
namespace {

// Netflix's ExpAvgMeasurement: a plain mean of the first samples, then an
// exponential moving average with factor 2 / (window + 1).
constexpr int64_t kLongWarmup = 10;

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

AdaptiveLimit::AdaptiveLimit(const Settings& settings, const Clock* clock)
    : clock_(clock), limit_(0), settings_(settings) {
  const int64_t now = clock_->NowNanos();
  absl::MutexLock lock(&mu_);
  rng_ = settings_.seed != 0 ? settings_.seed : static_cast<uint64_t>(now);
  estimated_ = std::clamp(static_cast<double>(settings_.initial_limit),
                          static_cast<double>(settings_.min_limit),
                          static_cast<double>(settings_.max_limit));
  // The first probe comes with the first sample (as Envoy's filter starts
  // with a minRTT measurement): without it the no-load latency would be
  // the mean of the first windows, which under load at start is the
  // loaded latency, and the limit would grow past capacity until the
  // first periodic probe (seen: 3.3 N after 10 s at the default 30 s).
  next_probe_at_ = settings_.probe_interval > absl::ZeroDuration()
                       ? now
                       : NextProbeAtLocked(now);
  PublishLocked();
}

void AdaptiveLimit::Reconfigure(const Settings& settings) {
  {
    const int64_t now = clock_->NowNanos();
    absl::MutexLock lock(&mu_);
    const bool new_interval =
        settings.probe_interval != settings_.probe_interval;
    settings_ = settings;
    estimated_ =
        std::clamp(estimated_, static_cast<double>(settings_.min_limit),
                   static_cast<double>(settings_.max_limit));
    if (new_interval) next_probe_at_ = NextProbeAtLocked(now);
    PublishLocked();
  }
  ApplyToFollower();
}

AdaptiveLimit::Settings AdaptiveLimit::settings() const {
  absl::MutexLock lock(&mu_);
  return settings_;
}

void AdaptiveLimit::Follow(std::shared_ptr<ConcurrencyLimiter> limiter) {
  {
    absl::MutexLock lock(&follow_mu_);
    follower_ = std::move(limiter);
    applied_ = -1;
  }
  ApplyToFollower();
}

void AdaptiveLimit::ApplyToFollower() {
  absl::MutexLock lock(&follow_mu_);
  if (follower_ == nullptr) return;
  // Read under follow_mu_: whichever thread applies last applies the
  // latest value.
  const int64_t value = limit();
  if (value == applied_) return;
  applied_ = value;
  // Grants may run OnGranted() here, under follow_mu_ only (never mu_).
  follower_->SetMaxInFlight(value);
}

AdaptiveLimit::Call AdaptiveLimit::StartCall() {
  const int64_t in_flight =
      calls_in_flight_.fetch_add(1, std::memory_order_relaxed) + 1;
  return Call(this, clock_->NowNanos(), in_flight);
}

void AdaptiveLimit::Call::Finish(bool dropped) {
  if (limit_ == nullptr) return;
  AdaptiveLimit* limit = limit_;
  const int64_t rtt = limit->clock_->NowNanos() - start_nanos_;
  End();
  limit->AddSample(Sample{absl::Nanoseconds(rtt), in_flight_, dropped});
}

void AdaptiveLimit::Call::End() {
  if (limit_ == nullptr) return;
  std::exchange(limit_, nullptr)
      ->calls_in_flight_.fetch_sub(1, std::memory_order_relaxed);
}

int64_t AdaptiveLimit::NextProbeAtLocked(int64_t now) {
  const double interval =
      static_cast<double>(absl::ToInt64Nanoseconds(settings_.probe_interval));
  // Uniform in [-1, 1).
  const double u =
      static_cast<double>(SplitMix64(&rng_) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
  return now +
         static_cast<int64_t>(interval * (1.0 + settings_.probe_jitter * u));
}

void AdaptiveLimit::PublishLocked() {
  const int64_t value =
      probing_ ? settings_.min_limit
               : std::clamp(static_cast<int64_t>(estimated_),
                            settings_.min_limit, settings_.max_limit);
  limit_.store(value, std::memory_order_release);
}

double AdaptiveLimit::AddLongRttLocked(double rtt) {
  // Between probes the average only comes down (see the header: it is a
  // smoothed long-window minimum, raised only by a probe).
  if (long_count_ >= kLongWarmup && rtt > long_rtt_) return long_rtt_;
  if (long_count_ < kLongWarmup) {
    long_rtt_ = (long_rtt_ * static_cast<double>(long_count_) + rtt) /
                static_cast<double>(long_count_ + 1);
    ++long_count_;
  } else {
    const double factor =
        2.0 / (static_cast<double>(settings_.long_window) + 1.0);
    long_rtt_ = long_rtt_ * (1.0 - factor) + rtt * factor;
  }
  return long_rtt_;
}

int64_t AdaptiveLimit::AddSample(const Sample& sample) {
  const int64_t before = limit();
  const int64_t after = UpdateWithSample(sample);
  if (after != before) ApplyToFollower();
  return after;
}

int64_t AdaptiveLimit::UpdateWithSample(const Sample& sample) {
  const int64_t now = clock_->NowNanos();
  const double rtt = static_cast<double>(
      std::max<int64_t>(0, absl::ToInt64Nanoseconds(sample.rtt)));
  absl::MutexLock lock(&mu_);
  ++samples_;
  if (sample.dropped) ++dropped_samples_;
  if (probing_) {
    if (!sample.dropped && sample.in_flight <= settings_.min_limit) {
      probe_rtt_sum_ += rtt;
      ++probe_count_;
    }
    if (probe_count_ >= settings_.probe_samples) {
      EndProbeLocked(now, /*measured=*/true);
    } else if (now - probe_start_ >=
               absl::ToInt64Nanoseconds(settings_.probe_timeout)) {
      EndProbeLocked(now, /*measured=*/false);
    }
    return limit_.load(std::memory_order_relaxed);
  }
  if (settings_.probe_interval > absl::ZeroDuration() &&
      now >= next_probe_at_) {
    // This call started before the probe: it does not count in it.
    StartProbeLocked(now);
    return limit_.load(std::memory_order_relaxed);
  }
  if (!window_open_) ResetWindowLocked(now);
  if (sample.dropped) {
    ++window_dropped_;
  } else {
    window_rtt_sum_ += rtt;
    ++window_count_;
  }
  window_max_in_flight_ = std::max(window_max_in_flight_, sample.in_flight);
  if (now - window_start_ >= window_length_ &&
      window_count_ + window_dropped_ >= settings_.window_samples) {
    EndWindowLocked(now);
  }
  return limit_.load(std::memory_order_relaxed);
}

void AdaptiveLimit::ResetWindowLocked(int64_t now) {
  window_open_ = true;
  window_start_ = now;
  // At least `window`, and long enough for calls of the current latency to
  // finish twice (Netflix WindowedLimit: max(2 * rtt, min window)).
  window_length_ = std::max(absl::ToInt64Nanoseconds(settings_.window),
                            static_cast<int64_t>(2.0 * short_rtt_));
  window_rtt_sum_ = 0;
  window_count_ = 0;
  window_dropped_ = 0;
  window_max_in_flight_ = 0;
}

void AdaptiveLimit::EndWindowLocked(int64_t /*now*/) {
  window_open_ = false;
  ++windows_;
  const int64_t total = window_count_ + window_dropped_;
  double long_rtt = long_rtt_;
  double short_rtt = 0;
  if (window_count_ > 0) {
    short_rtt = window_rtt_sum_ / static_cast<double>(window_count_);
    short_rtt_ = short_rtt;
    long_rtt = AddLongRttLocked(short_rtt);
    // Latency came back to normal after a long overload: bring the long
    // average down faster than its smoothing would.
    if (long_rtt / short_rtt > 2.0) {
      long_rtt_ *= 0.95;
      long_rtt = long_rtt_;
    }
  }
  double gradient;
  if (window_count_ == 0 || window_dropped_ * 2 > total) {
    gradient = 0.5;
  } else {
    gradient = std::clamp(
        short_rtt > 0 ? settings_.rtt_tolerance * long_rtt / short_rtt : 1.0,
        0.5, 1.0);
  }
  // App-limited: the callers, not this limit, bound the concurrency. Then
  // the limit never grows (Gradient2's rule), but when the upstream queues
  // it still comes down, to no less than twice the window's largest
  // in-flight (where windows judge it again): Gradient2 skips such windows
  // altogether, so a limit that grew above twice what the callers send
  // (e.g. while the no-load latency was not known yet) would stay there,
  // enforcing nothing, however slow the upstream got.
  const double app_floor = 2.0 * static_cast<double>(window_max_in_flight_);
  const bool app_limited = app_floor < estimated_;
  if (app_limited && gradient >= 1.0) return;
  const double queue = std::sqrt(estimated_);
  double next = estimated_ * gradient + queue;
  next = estimated_ * (1.0 - settings_.smoothing) + next * settings_.smoothing;
  if (app_limited) next = std::clamp(next, app_floor, estimated_);
  estimated_ = std::clamp(next, static_cast<double>(settings_.min_limit),
                          static_cast<double>(settings_.max_limit));
  gradient_ = gradient;
  PublishLocked();
}

void AdaptiveLimit::StartProbeLocked(int64_t now) {
  probing_ = true;
  probe_start_ = now;
  probe_rtt_sum_ = 0;
  probe_count_ = 0;
  window_open_ = false;  // the open window's samples are dropped
  PublishLocked();
}

void AdaptiveLimit::EndProbeLocked(int64_t now, bool measured) {
  probing_ = false;
  if (measured && probe_count_ > 0) {
    long_rtt_ = probe_rtt_sum_ / static_cast<double>(probe_count_);
    long_count_ = std::max(long_count_, kLongWarmup);
    ++probes_;
  }
  next_probe_at_ = NextProbeAtLocked(now);
  window_open_ = false;
  PublishLocked();
}

AdaptiveLimit::Snapshot AdaptiveLimit::GetSnapshot() const {
  absl::MutexLock lock(&mu_);
  Snapshot snapshot;
  snapshot.limit = limit_.load(std::memory_order_relaxed);
  snapshot.estimated_limit = estimated_;
  snapshot.samples = samples_;
  snapshot.dropped_samples = dropped_samples_;
  snapshot.windows = windows_;
  snapshot.gradient = gradient_;
  snapshot.long_rtt = absl::Nanoseconds(static_cast<int64_t>(long_rtt_));
  snapshot.short_rtt = absl::Nanoseconds(static_cast<int64_t>(short_rtt_));
  snapshot.probing = probing_;
  snapshot.probes = probes_;
  return snapshot;
}

}  // namespace sluice
