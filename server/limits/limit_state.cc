#include "server/limits/limit_state.h"

#include <utility>

#include "absl/strings/string_view.h"

namespace sluice {

LimitState::LimitState(std::string route, const LimitSettings& settings,
                       std::shared_ptr<RedisClient> redis,
                       const std::string& key_prefix)
    : route_(std::move(route)), settings_(settings) {
  if (settings.global && has_rate() && redis != nullptr) {
    global_ = std::make_unique<GlobalRateLimiter>(std::move(redis), key_prefix,
                                                  route_, settings);
  }
  if (has_rate()) {
    auto rate = MakeRate(TokenBucket::Config::PerPeriod(
        settings.rate_count, settings.rate_period, settings.rate_burst));
    rate_.store(rate.get());
    absl::MutexLock lock(&mu_);
    rates_.push_back(std::move(rate));
  }
  if (settings.concurrency_max > 0) {
    concurrency_ = std::make_unique<ConcurrencyLimiter>(
        settings.concurrency_max, settings.concurrency_queue);
  }
}

std::unique_ptr<LimitState::Rate> LimitState::MakeRate(
    const TokenBucket::Config& config) const {
  auto rate = std::make_unique<Rate>(Rate{nullptr, nullptr, config});
  if (keyed()) {
    rate->keyed = std::make_unique<KeyedTokenBuckets>(
        config, static_cast<size_t>(settings_.max_keys));
  } else {
    rate->bucket = std::make_unique<TokenBucket>(config);
  }
  return rate;
}

TokenBucket::Decision LimitState::TakeRate(std::string_view key,
                                           const Clock& clock) {
  Rate* rate = rate_.load(std::memory_order_acquire);
  if (rate->keyed != nullptr) {
    return rate->keyed->TryTake(absl::string_view(key.data(), key.size()),
                                clock);
  }
  return rate->bucket->TryTake(clock);
}

double LimitState::rate_per_second() const {
  Rate* rate = rate_.load(std::memory_order_acquire);
  return rate == nullptr ? 0 : rate->config.tokens_per_second();
}

int64_t LimitState::rate_burst() const {
  Rate* rate = rate_.load(std::memory_order_acquire);
  return rate == nullptr ? 0 : rate->config.burst();
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
    Rate* current = rate_.load();
    auto rate = MakeRate(TokenBucket::Config::PerSecond(
        rate_per_second.value_or(current->config.tokens_per_second()),
        burst.value_or(current->config.burst())));
    rate_.store(rate.get(), std::memory_order_release);
    rates_.push_back(std::move(rate));
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
  Rate* rate = rate_.load(std::memory_order_acquire);
  if (rate == nullptr || rate->bucket == nullptr) return 0;
  return rate->bucket->Tokens(now_nanos);
}

std::vector<KeyedTokenBuckets::KeyTokens> LimitState::TopKeys(
    size_t k, int64_t now_nanos) const {
  Rate* rate = rate_.load(std::memory_order_acquire);
  if (rate == nullptr || rate->keyed == nullptr) return {};
  return rate->keyed->TopKeys(k, now_nanos);
}

size_t LimitState::KeyCount() const {
  Rate* rate = rate_.load(std::memory_order_acquire);
  if (rate == nullptr || rate->keyed == nullptr) return 0;
  return rate->keyed->Size();
}

}  // namespace sluice
