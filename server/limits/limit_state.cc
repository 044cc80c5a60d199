#include "server/limits/limit_state.h"

#include <memory>
#include <utility>

#include "absl/strings/string_view.h"

namespace sluice {

LimitState::LimitState(std::string route, const LimitSettings& settings,
                       std::shared_ptr<RedisLink> redis,
                       const std::string& key_prefix, LimitState* previous,
                       const Clock* clock)
    : counters_(previous != nullptr ? previous->counters_
                                    : std::make_shared<Counters>()),
      admitted(counters_->admitted),
      rejected(counters_->rejected),
      dry_run_rejected(counters_->dry_run_rejected),
      queued(counters_->queued),
      clock_(clock != nullptr ? clock : &RealClock::Get()),
      route_(std::move(route)),
      settings_(settings) {
  if (settings.global && has_rate() && redis != nullptr) {
    global_ = std::make_unique<GlobalRateLimiter>(std::move(redis), key_prefix,
                                                  route_, settings);
  }
  if (has_rate()) {
    const TokenBucket::Config config = TokenBucket::Config::PerPeriod(
        settings.rate_count, settings.rate_period, settings.rate_burst);
    if (previous != nullptr && RateCompatible(*previous)) {
      // One table for both generations, carrying its load into the new
      // definition.
      rate_ = previous->rate_;
      ReplaceRate(config);
    } else {
      rate_ = std::make_shared<RateCell>();
      absl::MutexLock lock(&rate_->mu);
      rate_->current = MakeRate(config, nullptr, 0);
    }
  }
  if (settings.concurrency_max > 0) {
    if (settings.concurrency_adaptive) {
      if (previous != nullptr && previous->adaptive_ != nullptr) {
        adaptive_ = previous->adaptive_;
        adaptive_->Reconfigure(AdaptiveSettings(settings.adaptive));
      } else {
        adaptive_ = std::make_shared<AdaptiveLimit>(
            AdaptiveSettings(settings.adaptive), clock_);
      }
    }
    ConcurrencyLimiter::Limits limits;
    limits.max_in_flight =
        adaptive_ != nullptr ? adaptive_->limit() : settings.concurrency_max;
    limits.max_queue = settings.concurrency_queue;
    limits.max_per_key = settings.concurrency_max_per_key;
    limits.max_queue_per_key = settings.concurrency_max_queue_per_key;
    limits.max_keys = settings.max_keys;
    if (previous != nullptr && previous->concurrency_ != nullptr) {
      // Permits held (and waiters queued) under the old definition count
      // against the new one.
      concurrency_ = previous->concurrency_;
      if (previous->adaptive_ != nullptr && adaptive_ == nullptr) {
        previous->adaptive_->Follow(nullptr);  // a fixed max from now on
      }
      concurrency_->SetLimits(limits);
    } else {
      concurrency_ = std::make_shared<ConcurrencyLimiter>(limits);
    }
    if (adaptive_ != nullptr) adaptive_->Follow(concurrency_);
  }
}

AdaptiveLimit::Settings LimitState::AdaptiveSettings(
    const AdaptiveConcurrencySettings& config) {
  AdaptiveLimit::Settings settings;
  settings.min_limit = config.min;
  settings.max_limit = config.max;
  settings.initial_limit = config.initial;
  settings.smoothing = config.smoothing;
  settings.rtt_tolerance = config.rtt_tolerance;
  settings.long_window = config.long_window;
  settings.window = config.window;
  settings.window_samples = config.window_samples;
  settings.probe_interval = config.probe_interval;
  settings.probe_jitter = config.probe_jitter;
  settings.probe_samples = config.probe_samples;
  settings.probe_timeout = config.probe_timeout;
  return settings;
}

bool LimitState::RateCompatible(const LimitState& previous) const {
  return previous.rate_ != nullptr && previous.keyed() == keyed() &&
         previous.settings_.key == settings_.key;
}

namespace {
std::atomic<int64_t> live_rate_tables{0};
}  // namespace

LimitState::Rate::Rate(const TokenBucket::Config& config) : config(config) {
  live_rate_tables.fetch_add(1, std::memory_order_relaxed);
}

LimitState::Rate::~Rate() {
  live_rate_tables.fetch_sub(1, std::memory_order_relaxed);
}

int64_t LimitState::LiveRateTablesForTest() { return live_rate_tables.load(); }

std::unique_ptr<LimitState::Rate> LimitState::MakeRate(
    const TokenBucket::Config& config, const Rate* from, int64_t now) const {
  auto rate = std::make_unique<Rate>(config);
  if (keyed()) {
    const size_t max_keys = static_cast<size_t>(settings_.max_keys);
    if (from != nullptr && from->keyed != nullptr) {
      rate->keyed = std::make_unique<KeyedTokenBuckets>(
          config, max_keys, config, *from->keyed, now);
    } else {
      rate->keyed = std::make_unique<KeyedTokenBuckets>(config, max_keys);
    }
  } else if (from != nullptr && from->bucket != nullptr) {
    rate->bucket = std::make_unique<TokenBucket>(
        config, config.CarryTat(from->config, from->bucket->Tat(), now));
  } else {
    rate->bucket = std::make_unique<TokenBucket>(config);
  }
  return rate;
}

void LimitState::ReplaceRate(const TokenBucket::Config& config) {
  absl::MutexLock write_lock(&rate_->write_mu);
  std::unique_ptr<Rate> next;
  {
    // Shared: takes go on while the new table is built from the old one.
    absl::ReaderMutexLock lock(&rate_->mu);
    const Rate& current = *rate_->current;
    const bool same =
        current.config == config &&
        (current.keyed == nullptr ||
         current.keyed->max_keys() == static_cast<size_t>(settings_.max_keys));
    if (same) return;
    next = MakeRate(config, &current, clock_->NowNanos());
  }
  std::unique_ptr<Rate> old;
  {
    absl::MutexLock lock(&rate_->mu);
    old = std::exchange(rate_->current, std::move(next));
  }
  // `old` is freed here: every take that used it held the shared lock,
  // released before the exclusive lock above was granted. (A take that
  // landed on it after the new table was built is not carried: the window
  // is the build's, microseconds.)
}

template <typename F, typename R>
R LimitState::WithRate(F f, R otherwise) const {
  if (rate_ == nullptr) return otherwise;
  absl::ReaderMutexLock lock(&rate_->mu);
  return f(*rate_->current);
}

TokenBucket::Decision LimitState::TakeRate(std::string_view key,
                                           const Clock& clock) {
  return WithRate(
      [&](const Rate& rate) {
        if (rate.keyed != nullptr) {
          return static_cast<TokenBucket::Decision>(rate.keyed->TryTake(
              absl::string_view(key.data(), key.size()), clock));
        }
        return rate.bucket->TryTake(clock);
      },
      TokenBucket::Decision{});
}

double LimitState::rate_per_second() const {
  return WithRate(
      [](const Rate& rate) { return rate.config.tokens_per_second(); }, 0.0);
}

int64_t LimitState::rate_burst() const {
  return WithRate([](const Rate& rate) { return rate.config.burst(); },
                  int64_t{0});
}

absl::Status LimitState::Override(std::optional<double> rate_per_second,
                                  std::optional<int64_t> burst,
                                  std::optional<int64_t> concurrency_max,
                                  std::optional<int64_t> concurrency_queue) {
  if ((rate_per_second || burst) && !has_rate()) {
    return absl::FailedPreconditionError(
        "this limit has no rate part to override");
  }
  if ((concurrency_max || concurrency_queue) && concurrency_ == nullptr) {
    return absl::FailedPreconditionError(
        "this limit has no concurrency part to override");
  }
  if (rate_per_second && *rate_per_second <= 0) {
    return absl::InvalidArgumentError("rate_per_second must be > 0");
  }
  if (burst && *burst < 1) {
    return absl::InvalidArgumentError("burst must be >= 1");
  }
  if (concurrency_max && adaptive_ != nullptr) {
    return absl::FailedPreconditionError(
        "this limit is adaptive: its concurrency max follows the upstream "
        "(change adaptive.min/max in the config)");
  }
  if (concurrency_max && *concurrency_max < 1) {
    return absl::InvalidArgumentError("concurrency_max must be >= 1");
  }
  if (concurrency_queue && *concurrency_queue < 0) {
    return absl::InvalidArgumentError("concurrency_queue must be >= 0");
  }
  absl::MutexLock lock(&mu_);
  if (rate_per_second || burst) {
    // Unset fields keep the current table's values; the new table carries
    // the current one's debt and keys, and the old one is freed.
    const TokenBucket::Config config = TokenBucket::Config::PerSecond(
        rate_per_second.value_or(this->rate_per_second()),
        burst.value_or(rate_burst()));
    ReplaceRate(config);
  }
  if (concurrency_max || concurrency_queue) {
    concurrency_->SetLimits(
        concurrency_max.value_or(concurrency_->max_in_flight()),
        concurrency_queue.value_or(concurrency_->max_queue()));
  }
  overridden_.store(true);
  return absl::OkStatus();
}

double LimitState::Tokens(int64_t now_nanos) const {
  return WithRate(
      [&](const Rate& rate) {
        return rate.bucket == nullptr ? 0.0 : rate.bucket->Tokens(now_nanos);
      },
      0.0);
}

std::vector<KeyedTokenBuckets::KeyTokens> LimitState::TopKeys(
    size_t k, int64_t now_nanos) const {
  return WithRate(
      [&](const Rate& rate) {
        return rate.keyed == nullptr
                   ? std::vector<KeyedTokenBuckets::KeyTokens>()
                   : rate.keyed->TopKeys(k, now_nanos);
      },
      std::vector<KeyedTokenBuckets::KeyTokens>());
}

size_t LimitState::KeyCount() const {
  return WithRate(
      [](const Rate& rate) {
        return rate.keyed == nullptr ? size_t{0} : rate.keyed->Size();
      },
      size_t{0});
}

uint64_t LimitState::KeyOverflowTakes() const {
  return WithRate(
      [](const Rate& rate) {
        return rate.keyed == nullptr ? uint64_t{0}
                                     : rate.keyed->GetStats().overflow_takes;
      },
      uint64_t{0});
}

}  // namespace sluice
