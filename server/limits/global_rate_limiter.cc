#include "server/limits/global_rate_limiter.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/limits/clock.h"
#include "spdlog/spdlog.h"

namespace sluice {

const char kGcraScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored), now)
end
local avail = math.floor((now + tolerance - tat) / interval)
if avail < 1 then
  return {0, math.ceil(tat - tolerance + interval - now), 0, math.ceil(tat - now)}
end
local n = math.min(want, avail)
tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',
           math.ceil((tat - now) / 1000) + 1000)
return {n, 0, avail - n, math.ceil(tat - now)}
)lua";

namespace {
constexpr int64_t kLeaseTtlNanos = 1'000'000'000;  // a leased token lives 1 s
}  // namespace

bool ParseGcraReply(const std::vector<int64_t>& ints, GcraReply* out) {
  if (ints.size() != 4 || ints[0] < 0 || ints[1] < 0) return false;
  out->granted = ints[0];
  out->retry_after_nanos = ints[1] * 1000;
  out->remaining = std::max<int64_t>(0, ints[2]);
  out->reset_after_nanos = std::max<int64_t>(0, ints[3]) * 1000;
  return true;
}

// ---- FallbackState ----

FallbackState::FallbackState(int failures_to_enter, int64_t min_probe_nanos,
                             int64_t max_probe_nanos)
    : failures_to_enter_(std::max(1, failures_to_enter)),
      min_probe_nanos_(min_probe_nanos),
      max_probe_nanos_(max_probe_nanos) {}

bool FallbackState::ShouldAskRedis(int64_t now) {
  if (!active_.load(std::memory_order_relaxed)) return true;
  absl::MutexLock lock(&mu_);
  if (!active_.load(std::memory_order_relaxed)) return true;
  if (probing_ || now < next_probe_) return false;
  probing_ = true;
  return true;
}

FallbackState::Change FallbackState::OnSuccess() {
  if (!active_.load(std::memory_order_relaxed)) {
    absl::MutexLock lock(&mu_);
    failures_ = 0;
    if (!active_.load(std::memory_order_relaxed)) return Change::kNone;
  }
  absl::MutexLock lock(&mu_);
  failures_ = 0;
  probing_ = false;
  if (!active_.load(std::memory_order_relaxed)) return Change::kNone;
  active_.store(false, std::memory_order_relaxed);
  probe_backoff_ = min_probe_nanos_;
  return Change::kLeft;
}

FallbackState::Change FallbackState::OnFailure(int64_t now) {
  absl::MutexLock lock(&mu_);
  ++failures_;
  if (active_.load(std::memory_order_relaxed)) {
    probing_ = false;
    probe_backoff_ = std::min(probe_backoff_ * 2, max_probe_nanos_);
    next_probe_ = now + probe_backoff_;
    return Change::kNone;
  }
  if (failures_ < failures_to_enter_) return Change::kNone;
  active_.store(true, std::memory_order_relaxed);
  probing_ = false;
  probe_backoff_ = min_probe_nanos_;
  next_probe_ = now + probe_backoff_;
  return Change::kEntered;
}

// ---- LeaseStock ----

bool LeaseStock::TakeOne(const std::string& key, int64_t now) {
  absl::MutexLock lock(&mu_);
  auto it = stock_.find(key);
  if (it == stock_.end()) return false;
  if (it->second.expires <= now || it->second.tokens <= 0) {
    stock_.erase(it);
    return false;
  }
  if (--it->second.tokens == 0) stock_.erase(it);
  return true;
}

void LeaseStock::Add(const std::string& key, int64_t tokens, int64_t now) {
  if (tokens <= 0) return;
  absl::MutexLock lock(&mu_);
  if (stock_.size() >= max_keys_ && !stock_.contains(key)) {
    absl::erase_if(stock_,
                   [now](const auto& kv) { return kv.second.expires <= now; });
    if (stock_.size() >= max_keys_) return;  // dropped: conservative
  }
  Entry& e = stock_[key];
  if (e.expires <= now) e.tokens = 0;
  e.tokens += tokens;
  e.expires = now + ttl_nanos_;
}

int64_t LeaseStock::Tokens(const std::string& key, int64_t now) const {
  absl::MutexLock lock(&mu_);
  auto it = stock_.find(key);
  if (it == stock_.end() || it->second.expires <= now) return 0;
  return it->second.tokens;
}

void LeaseStock::Block(const std::string& key, int64_t until, int64_t now) {
  if (until <= now) return;
  absl::MutexLock lock(&mu_);
  if (blocked_.size() >= max_keys_ && !blocked_.contains(key)) {
    absl::erase_if(blocked_,
                   [now](const auto& kv) { return kv.second <= now; });
    if (blocked_.size() >= max_keys_) return;  // not cached: ask Redis
  }
  int64_t& at = blocked_[key];
  at = std::max(at, until);
}

int64_t LeaseStock::BlockedFor(const std::string& key, int64_t now) const {
  absl::MutexLock lock(&mu_);
  auto it = blocked_.find(key);
  if (it == blocked_.end() || it->second <= now) return 0;
  return it->second - now;
}

LeaseStock::Totals LeaseStock::Count(int64_t now) const {
  absl::MutexLock lock(&mu_);
  Totals t;
  for (const auto& [key, e] : stock_) {
    if (e.expires <= now || e.tokens <= 0) continue;
    ++t.keys;
    t.tokens += e.tokens;
  }
  for (const auto& [key, until] : blocked_) {
    if (until > now) ++t.blocked_keys;
  }
  return t;
}

// ---- GlobalRateLimiter ----

namespace {

std::vector<std::string> ScriptArgs(const LimitSettings& s) {
  const double interval_us = absl::ToDoubleMicroseconds(s.rate_period) /
                             static_cast<double>(s.rate_count);
  return {
      absl::StrFormat("%.6f", interval_us),
      absl::StrFormat("%.6f", interval_us * static_cast<double>(s.rate_burst)),
      absl::StrCat(std::max<int64_t>(1, s.lease))};
}

TokenBucket::Config LocalConfig(const LimitSettings& s) {
  const double replicas =
      static_cast<double>(std::max<int64_t>(1, s.expected_replicas));
  const double per_second = static_cast<double>(s.rate_count) /
                            absl::ToDoubleSeconds(s.rate_period) / replicas;
  const int64_t burst = std::max<int64_t>(
      1, static_cast<int64_t>(static_cast<double>(s.rate_burst) / replicas));
  return TokenBucket::Config::PerSecond(per_second, burst);
}

}  // namespace

GlobalRateLimiter::GlobalRateLimiter(std::shared_ptr<RedisClient> redis,
                                     const std::string& key_prefix,
                                     const std::string& route,
                                     const LimitSettings& settings)
    : redis_(std::move(redis)),
      key_base_(absl::StrCat(key_prefix, route, ":", settings.name)),
      route_(route),
      settings_(settings),
      args_(ScriptArgs(settings)),
      stock_(static_cast<size_t>(std::max<int64_t>(1, settings.max_keys)),
             kLeaseTtlNanos),
      local_(std::make_unique<KeyedTokenBuckets>(
          LocalConfig(settings),
          static_cast<size_t>(std::max<int64_t>(1, settings.max_keys)))) {}

GlobalRateLimiter::Result GlobalRateLimiter::Fallback(const std::string& key,
                                                      int64_t now) {
  Result r;
  if (settings_.global_fallback == "fail_open") {
    r.decision.admitted = true;
  } else if (settings_.global_fallback == "fail_closed") {
    r.decision.admitted = false;
    r.decision.retry_after_nanos = TokenBucket::kNever;
    r.redis_unavailable = true;
  } else {
    r.decision = local_->TryTake(key, now);
  }
  return r;
}

void GlobalRateLimiter::Note(FallbackState::Change change,
                             const std::string& why) {
  if (change == FallbackState::Change::kEntered) {
    spdlog::warn(
        "global limit \"{}\" of route \"{}\": redis failing ({}); fallback "
        "\"{}\" in effect",
        settings_.name, route_, why, settings_.global_fallback);
  } else if (change == FallbackState::Change::kLeft) {
    spdlog::info(
        "global limit \"{}\" of route \"{}\": redis answers again; global "
        "enforcement resumed",
        settings_.name, route_);
  }
}

const char* GlobalRateLimiter::redis_state() const {
  switch (redis_->link_state()) {
    case RedisLinkState::kConnecting:
      return "connecting";
    case RedisLinkState::kAuthFailed:
      return "auth";
    case RedisLinkState::kUnreachable:
      if (!redis_->connected()) return "unreachable";
      break;
    default:
      break;
  }
  if (!fallback_active()) return "ok";
  switch (last_status_.load(std::memory_order_relaxed)) {
    case RedisClient::Reply::kTimeout:
      return "slow";
    case RedisClient::Reply::kConnection:
      return "unreachable";
    case RedisClient::Reply::kAuth:
      return "auth";
    case RedisClient::Reply::kError:
      return "error";
    default:
      return "ok";
  }
}

std::string GlobalRateLimiter::redis_error() const {
  std::string client = redis_->last_error();
  if (!client.empty()) return client;
  absl::MutexLock lock(&error_mu_);
  return last_error_;
}

bool GlobalRateLimiter::Take(const std::string& key, int64_t now,
                             Result* result, Done done) {
  if (settings_.lease > 1 && stock_.TakeOne(key, now)) {
    result->decision = TokenBucket::Decision{};
    result->decision.admitted = true;
    result->decision.remaining = stock_.Tokens(key, now);
    result->redis_unavailable = false;
    return true;
  }
  if (const int64_t blocked = stock_.BlockedFor(key, now); blocked > 0) {
    // Redis already said no token before then (and nobody can move it
    // earlier): reject without a round trip.
    result->decision = TokenBucket::Decision{};
    result->decision.retry_after_nanos = blocked;
    result->redis_unavailable = false;
    return true;
  }
  if (!fallback_.ShouldAskRedis(now)) {
    *result = Fallback(key, now);
    return true;
  }
  std::string redis_key =
      key.empty() ? key_base_ : absl::StrCat(key_base_, ":", key);
  redis_->EvalScript(
      std::move(redis_key), args_,
      [this, key, done = std::move(done)](const RedisClient::Reply& reply) {
        const int64_t now = RealClock::Get().NowNanos();
        GcraReply g;
        if (reply.status == RedisClient::Reply::kOk &&
            ParseGcraReply(reply.ints, &g)) {
          last_status_.store(RedisClient::Reply::kOk,
                             std::memory_order_relaxed);
          Note(fallback_.OnSuccess(), "");
          Result r;
          if (g.granted > 0) {
            r.decision.admitted = true;
            r.decision.remaining = g.remaining + g.granted - 1;
            if (g.granted > 1) stock_.Add(key, g.granted - 1, now);
          } else {
            r.decision.retry_after_nanos = g.retry_after_nanos;
            stock_.Block(key, now + g.retry_after_nanos, now);
          }
          r.decision.reset_after_nanos = g.reset_after_nanos;
          done(r);
          return;
        }
        const std::string why = reply.status == RedisClient::Reply::kOk
                                    ? "unexpected reply"
                                    : reply.error;
        last_status_.store(reply.status == RedisClient::Reply::kOk
                               ? RedisClient::Reply::kError
                               : reply.status,
                           std::memory_order_relaxed);
        {
          absl::MutexLock lock(&error_mu_);
          last_error_ = why;
        }
        Note(fallback_.OnFailure(now), why);
        done(Fallback(key, now));
      });
  return false;
}

}  // namespace sluice
