#include "server/limits/limit_state.h"

#include <memory>
#include <utility>

#include "absl/strings/string_view.h"

namespace sluice {

LimitState::LimitState(std::string route, const LimitSettings& settings,
                       std::shared_ptr<RedisClient> redis,
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
      // One table for both generations: replace it by one that carries its
      // load, unless it already is what this definition asks for.
      rate_ = previous->rate_;
      absl::MutexLock lock(&rate_->mu);
      std::shared_ptr<Rate> current = rate_->current.load();
      const bool same = current->config == config &&
                        (current->keyed == nullptr ||
                         current->keyed->max_keys() ==
                             static_cast<size_t>(settings_.max_keys));
      if (!same) {
        rate_->current.store(
            MakeRate(config, current.get(), clock_->NowNanos()),
            std::memory_order_release);
      }
    } else {
      rate_ = std::make_shared<RateCell>();
      rate_->current.store(MakeRate(config, nullptr, 0));
    }
  }
  if (settings.concurrency_max > 0) {
    if (previous != nullptr && previous->concurrency_ != nullptr) {
      // Permits held (and waiters queued) under the old definition count
      // against the new one.
      concurrency_ = previous->concurrency_;
      concurrency_->SetLimits(settings.concurrency_max,
                              settings.concurrency_queue);
    } else {
      concurrency_ = std::make_shared<ConcurrencyLimiter>(
          settings.concurrency_max, settings.concurrency_queue);
    }
  }
}

bool LimitState::RateCompatible(const LimitState& previous) const {
  return previous.rate_ != nullptr && previous.keyed() == keyed() &&
         previous.settings_.key == settings_.key;
}

std::shared_ptr<LimitState::Rate> LimitState::MakeRate(
    const TokenBucket::Config& config, const Rate* from, int64_t now) const {
  auto rate = std::make_shared<Rate>(Rate{nullptr, nullptr, config});
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

TokenBucket::Decision LimitState::TakeRate(std::string_view key,
                                           const Clock& clock) {
  const std::shared_ptr<Rate> rate =
      rate_->current.load(std::memory_order_acquire);
  if (rate->keyed != nullptr) {
    return rate->keyed->TryTake(absl::string_view(key.data(), key.size()),
                                clock);
  }
  return rate->bucket->TryTake(clock);
}

double LimitState::rate_per_second() const {
  if (rate_ == nullptr) return 0;
  return rate_->current.load(std::memory_order_acquire)
      ->config.tokens_per_second();
}

int64_t LimitState::rate_burst() const {
  if (rate_ == nullptr) return 0;
  return rate_->current.load(std::memory_order_acquire)->config.burst();
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
  if (concurrency_max && *concurrency_max < 1) {
    return absl::InvalidArgumentError("concurrency_max must be >= 1");
  }
  if (concurrency_queue && *concurrency_queue < 0) {
    return absl::InvalidArgumentError("concurrency_queue must be >= 0");
  }
  absl::MutexLock lock(&mu_);
  if (rate_per_second || burst) {
    absl::MutexLock cell_lock(&rate_->mu);
    std::shared_ptr<Rate> current = rate_->current.load();
    const TokenBucket::Config config = TokenBucket::Config::PerSecond(
        rate_per_second.value_or(current->config.tokens_per_second()),
        burst.value_or(current->config.burst()));
    if (config != current->config) {
      // The old table carries its debt into the new one, and is freed when
      // the last take that loaded it returns (here, if none is running).
      rate_->current.store(MakeRate(config, current.get(), clock_->NowNanos()),
                           std::memory_order_release);
    }
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
  if (rate_ == nullptr) return 0;
  const std::shared_ptr<Rate> rate =
      rate_->current.load(std::memory_order_acquire);
  if (rate->bucket == nullptr) return 0;
  return rate->bucket->Tokens(now_nanos);
}

std::vector<KeyedTokenBuckets::KeyTokens> LimitState::TopKeys(
    size_t k, int64_t now_nanos) const {
  if (rate_ == nullptr) return {};
  const std::shared_ptr<Rate> rate =
      rate_->current.load(std::memory_order_acquire);
  if (rate->keyed == nullptr) return {};
  return rate->keyed->TopKeys(k, now_nanos);
}

size_t LimitState::KeyCount() const {
  if (rate_ == nullptr) return 0;
  const std::shared_ptr<Rate> rate =
      rate_->current.load(std::memory_order_acquire);
  if (rate->keyed == nullptr) return 0;
  return rate->keyed->Size();
}

uint64_t LimitState::KeyOverflowTakes() const {
  if (rate_ == nullptr) return 0;
  const std::shared_ptr<Rate> rate =
      rate_->current.load(std::memory_order_acquire);
  if (rate->keyed == nullptr) return 0;
  return rate->keyed->GetStats().overflow_takes;
}

std::weak_ptr<const void> LimitState::RateTableForTest() const {
  if (rate_ == nullptr) return {};
  return std::shared_ptr<const void>(rate_->current.load());
}

}  // namespace sluice
