#include "server/limits/global_rate_limiter.h"

#include <algorithm>
#include <limits>
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
local horizon = tonumber(ARGV[4])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored), now)
end
local avail = math.floor((now + tolerance - tat) / interval)
if avail < 1 then
  local wait = tat - tolerance + interval - now
  if wait > horizon then
    return {0, math.ceil(wait), 0, math.ceil(tat - now), 0}
  end
  tat = tat + interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',
             math.ceil((tat - now) / 1000) + 1000)
  return {0, math.ceil(wait), 0, math.ceil(tat - now), 1}
end
local n = math.min(want, avail)
tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',
           math.ceil((tat - now) / 1000) + 1000)
return {n, 0, avail - n, math.ceil(tat - now), 0}
)lua";

namespace {
constexpr int64_t kLeaseTtlNanos = 1'000'000'000;  // a leased token lives 1 s
constexpr int64_t kAsking = std::numeric_limits<int64_t>::min();
}  // namespace

bool ParseGcraReply(const std::vector<int64_t>& ints, GcraReply* out) {
  if (ints.size() != 5 || ints[0] < 0 || ints[1] < 0 || ints[4] < 0 ||
      ints[4] > 1 || (ints[4] == 1 && ints[0] != 0)) {
    return false;
  }
  out->granted = ints[0];
  out->retry_after_nanos = ints[1] * 1000;
  out->remaining = std::max<int64_t>(0, ints[2]);
  out->reset_after_nanos = std::max<int64_t>(0, ints[3]) * 1000;
  out->reserved = ints[4] == 1;
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

void FallbackState::ProbeNow() {
  absl::MutexLock lock(&mu_);
  next_probe_ = 0;
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
  if (auto r = reserved_.find(key);
      r != reserved_.end() && r->second != kAsking) {
    if (r->second + ttl_nanos_ <= now) {
      reserved_.erase(r);  // never spent: given up
    } else if (r->second <= now) {
      reserved_.erase(r);
      return true;
    }
  }
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
  int64_t until = now;
  if (auto it = blocked_.find(key); it != blocked_.end()) {
    until = std::max(until, it->second);
  }
  if (auto r = reserved_.find(key);
      r != reserved_.end() && r->second != kAsking) {
    until = std::max(until, r->second);
  }
  return until - now;
}

bool LeaseStock::StartReserving(const std::string& key, int64_t now) {
  absl::MutexLock lock(&mu_);
  auto it = reserved_.find(key);
  if (it != reserved_.end()) {
    if (it->second == kAsking || it->second + ttl_nanos_ > now) return false;
    it->second = kAsking;  // the old one was never spent
    return true;
  }
  if (reserved_.size() >= max_keys_) {
    absl::erase_if(reserved_, [this, now](const auto& kv) {
      return kv.second != kAsking && kv.second + ttl_nanos_ <= now;
    });
    if (reserved_.size() >= max_keys_) return false;  // no reservation
  }
  reserved_.emplace(key, kAsking);
  return true;
}

void LeaseStock::Reserved(const std::string& key, int64_t due, int64_t now) {
  absl::MutexLock lock(&mu_);
  auto it = reserved_.find(key);
  // Only the asking request gets a reservation, and it marked the key.
  if (it == reserved_.end() || it->second != kAsking) return;
  it->second = std::max(due, now);
}

bool LeaseStock::Reserving(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  return reserved_.contains(key);
}

void LeaseStock::EndReserving(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = reserved_.find(key);
  if (it != reserved_.end() && it->second == kAsking) reserved_.erase(it);
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
  for (const auto& [key, due] : reserved_) {
    if (due != kAsking && due + ttl_nanos_ > now) ++t.reserved_keys;
  }
  return t;
}

// ---- GlobalRateLimiter ----

namespace {

// `reserve`: with the reservation horizon, max(1 s, expected_replicas
// intervals): room for every replica's turn at the rates most limits have,
// and at a slow rate for the replicas the operator expects. A reserved
// token whose replica stops taking calls is lost (at most one per replica
// and key, like a lease's tokens).
std::vector<std::string> ScriptArgs(const LimitSettings& s, bool reserve) {
  const double interval_us = absl::ToDoubleMicroseconds(s.rate_period) /
                             static_cast<double>(s.rate_count);
  const double horizon_us = std::max(
      1e6, interval_us *
               static_cast<double>(std::max<int64_t>(1, s.expected_replicas)));
  return {
      absl::StrFormat("%.6f", interval_us),
      absl::StrFormat("%.6f", interval_us * static_cast<double>(s.rate_burst)),
      absl::StrCat(std::max<int64_t>(1, s.lease)),
      reserve ? absl::StrFormat("%.0f", horizon_us) : std::string("0")};
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

GlobalRateLimiter::GlobalRateLimiter(std::shared_ptr<RedisLink> redis,
                                     const std::string& key_prefix,
                                     const std::string& route,
                                     const LimitSettings& settings)
    : redis_(std::move(redis)),
      key_base_(absl::StrCat(key_prefix, route, ":", settings.name)),
      route_(route),
      settings_(settings),
      args_(ScriptArgs(settings, /*reserve=*/false)),
      reserve_args_(ScriptArgs(settings, /*reserve=*/true)),
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
    case RedisLink::Reply::kTimeout:
      return "slow";
    case RedisLink::Reply::kConnection:
      return "unreachable";
    case RedisLink::Reply::kAuth:
      return "auth";
    case RedisLink::Reply::kError:
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
  if (stock_.TakeOne(key, now)) {
    result->decision = TokenBucket::Decision{};
    result->decision.admitted = true;
    result->decision.remaining = stock_.Tokens(key, now);
    result->redis_unavailable = false;
    return true;
  }
  if (const int64_t blocked = stock_.BlockedFor(key, now); blocked > 0) {
    // Redis already said no token before then (and nobody can move it
    // earlier), or this replica's reserved token is not due yet: reject
    // without a round trip.
    result->decision = TokenBucket::Decision{};
    result->decision.retry_after_nanos = blocked;
    result->redis_unavailable = false;
    return true;
  }
  if (fallback_.active()) {
    const uint64_t epoch = redis_->topology_epoch();
    if (seen_epoch_.exchange(epoch, std::memory_order_relaxed) != epoch) {
      fallback_.ProbeNow();
    }
  }
  if (!fallback_.ShouldAskRedis(now)) {
    *result = Fallback(key, now);
    return true;
  }
  std::string redis_key =
      key.empty() ? key_base_ : absl::StrCat(key_base_, ":", key);
  const bool reserve = stock_.StartReserving(key, now);
  redis_->EvalScript(
      std::move(redis_key), reserve ? reserve_args_ : args_,
      [this, key, reserve,
       done = std::move(done)](const RedisLink::Reply& reply) {
        const int64_t now = RealClock::Get().NowNanos();
        GcraReply g;
        if (reply.status == RedisLink::Reply::kOk &&
            ParseGcraReply(reply.ints, &g)) {
          last_status_.store(RedisLink::Reply::kOk, std::memory_order_relaxed);
          Note(fallback_.OnSuccess(), "");
          Result r;
          if (g.reserved && reserve) {
            stock_.Reserved(key, now + g.retry_after_nanos, now);
          } else if (reserve) {
            stock_.EndReserving(key);
          }
          if (g.granted > 0) {
            r.decision.admitted = true;
            r.decision.remaining = g.remaining + g.granted - 1;
            if (g.granted > 1) stock_.Add(key, g.granted - 1, now);
          } else {
            r.decision.retry_after_nanos = g.retry_after_nanos;
            // A refusal beside this replica's reservation (held or asked
            // for) says nothing of the reserved token, and blocking would
            // keep the replica from its next turn: only refusals with no
            // reservation in sight are cached.
            if (!g.reserved && (reserve || !stock_.Reserving(key))) {
              stock_.Block(key, now + g.retry_after_nanos, now);
            }
          }
          r.decision.reset_after_nanos = g.reset_after_nanos;
          done(r);
          return;
        }
        const std::string why = reply.status == RedisLink::Reply::kOk
                                    ? "unexpected reply"
                                    : reply.error;
        last_status_.store(reply.status == RedisLink::Reply::kOk
                               ? RedisLink::Reply::kError
                               : reply.status,
                           std::memory_order_relaxed);
        {
          absl::MutexLock lock(&error_mu_);
          last_error_ = why;
        }
        if (reserve) stock_.EndReserving(key);
        Note(fallback_.OnFailure(now), why);
        done(Fallback(key, now));
      });
  return false;
}

}  // namespace sluice
