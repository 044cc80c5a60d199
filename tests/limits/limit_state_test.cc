// LimitState and LimitRegistry: a limit changed by a reload or by set-limit
// keeps the load it carries (issue 15 points 6 and 7). Simulated time; no
// sleeps.
#include "server/limits/limit_state.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "server/limits/adaptive_limit.h"
#include "server/limits/clock.h"
#include "server/limits/concurrency_limiter.h"
#include "server/limits/limit_registry.h"

namespace sluice {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;

LimitSettings Concurrency(int64_t max, int64_t queue) {
  LimitSettings s;
  s.name = "c";
  s.concurrency_max = max;
  s.concurrency_queue = queue;
  return s;
}

LimitSettings Rate(int64_t per_second, int64_t burst,
                   std::vector<std::string> key = {}, int64_t max_keys = 100) {
  LimitSettings s;
  s.name = "r";
  s.rate_count = per_second;
  s.rate_period = absl::Seconds(1);
  s.rate_burst = burst;
  s.key = std::move(key);
  s.max_keys = max_keys;
  return s;
}

class Waiter final : public ConcurrencyLimiter::Waiter {
 public:
  void OnGranted() override { granted = true; }
  bool granted = false;
};

TEST(LimitStateCarryTest, PermitsHeldAcrossAChangeCountAgainstTheNewMax) {
  SimulatedClock clock;
  auto state = std::make_shared<LimitState>("route", Concurrency(10, 0),
                                            nullptr, "", nullptr, &clock);
  // Every permit each generation grants is held to the end, as long calls
  // are; the old generations stay alive as old snapshots do.
  std::vector<std::shared_ptr<LimitState>> generations{state};
  std::vector<ConcurrencyLimiter::Permit> held;
  for (int change = 0; change < 100; ++change) {
    ConcurrencyLimiter* c = state->concurrency();
    while (true) {
      ConcurrencyLimiter::Permit p = c->TryAcquirePermit();
      if (!p) break;
      held.push_back(std::move(p));
    }
    // Calls of every older generation try too.
    for (auto& g : generations) {
      ConcurrencyLimiter::Permit p = g->concurrency()->TryAcquirePermit();
      if (p) held.push_back(std::move(p));
    }
    ASSERT_LE(held.size(), 11u) << "after change " << change;
    state = std::make_shared<LimitState>(
        "route", Concurrency(change % 2 == 0 ? 11 : 10, 0), nullptr, "",
        state.get(), &clock);
    generations.push_back(state);
    EXPECT_EQ(state->concurrency()->max_in_flight(), change % 2 == 0 ? 11 : 10);
  }
  EXPECT_EQ(held.size(), 11u);
  EXPECT_EQ(state->concurrency()->InFlight(), 11);
  held.clear();
  EXPECT_EQ(state->concurrency()->InFlight(), 0);
}

TEST(LimitStateCarryTest, WaitersStayQueuedInOrderAcrossAChange) {
  SimulatedClock clock;
  auto old = std::make_shared<LimitState>("route", Concurrency(1, 3), nullptr,
                                          "", nullptr, &clock);
  ConcurrencyLimiter::Permit first = old->concurrency()->TryAcquirePermit();
  ASSERT_TRUE(first);
  Waiter a, b, c;
  for (Waiter* w : {&a, &b, &c}) {
    ASSERT_EQ(old->concurrency()->AcquireOrEnqueue(w),
              ConcurrencyLimiter::AcquireResult::kQueued);
  }
  auto next = std::make_shared<LimitState>("route", Concurrency(2, 3), nullptr,
                                           "", old.get(), &clock);
  EXPECT_EQ(next->concurrency(), old->concurrency());
  EXPECT_TRUE(a.granted);  // the one new permit goes to the oldest waiter
  EXPECT_FALSE(b.granted);
  EXPECT_FALSE(c.granted);
  EXPECT_EQ(next->concurrency()->QueueDepth(), 2);
  auto pa = ConcurrencyLimiter::Permit::Adopt(next->concurrency());
  first.Release();
  EXPECT_TRUE(b.granted);
  EXPECT_FALSE(c.granted);
  auto pb = ConcurrencyLimiter::Permit::Adopt(next->concurrency());
  EXPECT_TRUE(next->concurrency()->Cancel(&c));
}

// Runs `calls_per_ms` calls every millisecond for `seconds`, replacing the
// state every `change_every` by one alternating between `a` and `b`
// per second; returns the admission times.
std::vector<int64_t> AlternateRate(const std::vector<std::string>& key,
                                   int64_t burst, bool override_instead) {
  SimulatedClock clock(kSecond);
  auto state = std::make_shared<LimitState>("route", Rate(20, burst, key),
                                            nullptr, "", nullptr, &clock);
  std::vector<std::shared_ptr<LimitState>> generations{state};
  std::vector<int64_t> admitted;
  int which = 0;
  for (int64_t t = 0; t < 10 * kSecond; t += kMs) {
    if (t > 0 && t % (100 * kMs) == 0) {  // 100 changes in 10 s
      which ^= 1;
      if (override_instead) {
        EXPECT_TRUE(
            state->Override(which ? 21 : 20, burst, std::nullopt, std::nullopt)
                .ok());
      } else {
        state = std::make_shared<LimitState>("route",
                                             Rate(which ? 21 : 20, burst, key),
                                             nullptr, "", state.get(), &clock);
        generations.push_back(state);
      }
    }
    // Callers of the newest and of an old snapshot alike.
    for (LimitState* s : {state.get(), generations.front().get()}) {
      if (s->TakeRate("caller", clock).admitted) {
        admitted.push_back(clock.NowNanos());
      }
    }
    clock.AdvanceNanos(kMs);
  }
  return admitted;
}

void ExpectAtMost(const std::vector<int64_t>& admitted, size_t per_second) {
  size_t lo = 0;
  for (size_t hi = 0; hi < admitted.size(); ++hi) {
    while (admitted[hi] - admitted[lo] >= kSecond) ++lo;
    ASSERT_LE(hi - lo + 1, per_second) << "window ending at " << admitted[hi];
  }
}

TEST(LimitStateCarryTest, AnAlternatingRateAdmitsNoMoreThanTheLargerRate) {
  const std::vector<int64_t> admitted = AlternateRate({}, 5, false);
  ExpectAtMost(admitted, 21 + 5);
  EXPECT_LE(admitted.size(), 21u * 10 + 5);
  EXPECT_GE(admitted.size(), 20u * 10);
}

TEST(LimitStateCarryTest, AnAlternatingKeyedRateAdmitsNoMoreThanTheLarger) {
  const std::vector<int64_t> admitted = AlternateRate({"peer"}, 5, false);
  ExpectAtMost(admitted, 21 + 5);
  EXPECT_GE(admitted.size(), 20u * 10);
}

TEST(LimitStateCarryTest, AnAlternatingOverrideAdmitsNoMoreThanTheLarger) {
  const std::vector<int64_t> admitted = AlternateRate({}, 5, true);
  ExpectAtMost(admitted, 21 + 5);
  EXPECT_GE(admitted.size(), 20u * 10);
}

TEST(LimitStateCarryTest, KeyedKeysAndDebtSurviveAChange) {
  SimulatedClock clock(kSecond);
  auto old = std::make_shared<LimitState>("route", Rate(10, 5, {"peer"}),
                                          nullptr, "", nullptr, &clock);
  for (int k = 0; k < 20; ++k) {
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(old->TakeRate(absl::StrCat("k", k), clock).admitted);
    }
  }
  EXPECT_EQ(old->KeyCount(), 20u);
  auto next = std::make_shared<LimitState>("route", Rate(20, 5, {"peer"}),
                                           nullptr, "", old.get(), &clock);
  EXPECT_EQ(next->KeyCount(), 20u);
  EXPECT_FALSE(next->TakeRate("k3", clock).admitted);  // still owes 5
  EXPECT_TRUE(next->TakeRate("new", clock).admitted);
  clock.AdvanceNanos(50 * kMs);  // one token at 20/s
  EXPECT_TRUE(next->TakeRate("k3", clock).admitted);
  EXPECT_FALSE(next->TakeRate("k3", clock).admitted);
  // The old snapshot takes from the same, current table: k4's one token
  // (50 ms at 20/s) taken through it is gone for the new one too.
  EXPECT_TRUE(old->TakeRate("k4", clock).admitted);
  EXPECT_FALSE(next->TakeRate("k4", clock).admitted);
  EXPECT_EQ(old->KeyCount(), 21u);
}

TEST(LimitStateCarryTest, ADifferentKeyStartsAFreshTable) {
  SimulatedClock clock(kSecond);
  auto old = std::make_shared<LimitState>("route", Rate(10, 1, {"peer"}),
                                          nullptr, "", nullptr, &clock);
  ASSERT_TRUE(old->TakeRate("x", clock).admitted);
  auto next =
      std::make_shared<LimitState>("route", Rate(10, 1, {"header:x-api-key"}),
                                   nullptr, "", old.get(), &clock);
  EXPECT_EQ(next->KeyCount(), 0u);
  EXPECT_TRUE(next->TakeRate("x", clock).admitted);
}

TEST(LimitStateCarryTest, CountersCarryAcrossAChange) {
  SimulatedClock clock;
  auto old = std::make_shared<LimitState>("route", Rate(10, 1), nullptr, "",
                                          nullptr, &clock);
  old->admitted += 5;
  old->rejected += 2;
  auto next = std::make_shared<LimitState>("route", Rate(11, 1), nullptr, "",
                                           old.get(), &clock);
  EXPECT_EQ(next->admitted.load(), 5);
  EXPECT_EQ(next->rejected.load(), 2);
  old->admitted += 1;  // a call of the old snapshot
  EXPECT_EQ(next->admitted.load(), 6);
}

TEST(LimitStateOverrideTest, ANewRateCarriesTheDebt) {
  SimulatedClock clock(kSecond);
  LimitState state("route", Rate(10, 5), nullptr, "", nullptr, &clock);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(state.TakeRate("", clock).admitted);
  ASSERT_TRUE(
      state.Override(20, std::nullopt, std::nullopt, std::nullopt).ok());
  EXPECT_DOUBLE_EQ(state.rate_per_second(), 20);
  EXPECT_FALSE(state.TakeRate("", clock).admitted);  // no fresh burst
  clock.AdvanceNanos(50 * kMs);
  EXPECT_TRUE(state.TakeRate("", clock).admitted);
}

TEST(LimitStateOverrideTest, SupersededTablesAreFreed) {
  SimulatedClock clock;
  for (const auto& key :
       {std::vector<std::string>{}, std::vector<std::string>{"peer"}}) {
    const int64_t before = LimitState::LiveRateTablesForTest();
    {
      LimitState state("route", Rate(10, 5, key), nullptr, "", nullptr, &clock);
      EXPECT_EQ(LimitState::LiveRateTablesForTest(), before + 1);
      for (int i = 0; i < 50; ++i) {
        ASSERT_TRUE(
            state.Override(10 + i + 1, std::nullopt, std::nullopt, std::nullopt)
                .ok());
        state.TakeRate("k", clock);
        EXPECT_EQ(LimitState::LiveRateTablesForTest(), before + 1) << i;
      }
      // Reloads too: the old generation and the new share one table.
      auto old = std::make_shared<LimitState>("route", Rate(10, 5, key),
                                              nullptr, "", nullptr, &clock);
      for (int i = 0; i < 50; ++i) {
        old = std::make_shared<LimitState>("route", Rate(11 + i % 2, 5, key),
                                           nullptr, "", old.get(), &clock);
      }
      EXPECT_EQ(LimitState::LiveRateTablesForTest(), before + 2);
    }
    EXPECT_EQ(LimitState::LiveRateTablesForTest(), before);
  }
}

// Workers take from the table while set-limit and reloads replace it
// (run under TSan by the tsan phase): every take lands on a live table, and
// every superseded table is freed once the takes are done.
TEST(LimitStateOverrideTest, TakesRaceReplacementsSafely) {
  SimulatedClock clock(kSecond);
  for (const auto& key :
       {std::vector<std::string>{}, std::vector<std::string>{"peer"}}) {
    auto first = std::make_shared<LimitState>("route", Rate(1000, 50, key),
                                              nullptr, "", nullptr, &clock);
    // Each worker makes all its takes (a fixed count: how many of them
    // overlap the replacements is up to the scheduler, never the result).
    std::atomic<int64_t> admitted{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < 4; ++w) {
      workers.emplace_back([&, w] {
        for (int i = 0; i < 20000; ++i) {
          if (first->TakeRate(absl::StrCat("k", (w + i) % 7), clock).admitted) {
            admitted.fetch_add(1);
          }
          clock.AdvanceNanos(1000);
        }
      });
    }
    const int64_t live = LimitState::LiveRateTablesForTest();
    std::shared_ptr<LimitState> state = first;
    for (int i = 0; i < 200; ++i) {
      if (i % 2 == 0) {
        ASSERT_TRUE(state
                        ->Override(1000 + i % 3, std::nullopt, std::nullopt,
                                   std::nullopt)
                        .ok());
      } else {
        state = std::make_shared<LimitState>("route", Rate(999, 50, key),
                                             nullptr, "", state.get(), &clock);
      }
      EXPECT_EQ(LimitState::LiveRateTablesForTest(), live);
    }
    for (std::thread& t : workers) t.join();
    EXPECT_GT(admitted.load(), 0);
  }
}

TEST(LimitStateTest, KeyOverflowIsCounted) {
  SimulatedClock clock;
  LimitState state("route", Rate(10, 5, {"peer"}, 1), nullptr, "", nullptr,
                   &clock);
  EXPECT_EQ(state.KeyOverflowTakes(), 0u);
  state.TakeRate("a", clock);
  state.TakeRate("b", clock);
  state.TakeRate("c", clock);
  EXPECT_EQ(state.KeyOverflowTakes(), 2u);
}

// --- The registry: a reload that changes a limit builds on the old state.

std::shared_ptr<const Config> Parse(const std::string& limits) {
  auto config = ParseConfigYaml(absl::StrCat(R"(
upstreams:
  - {name: demo, target: "127.0.0.1:1"}
routes:
  - name: r
    match: {prefix: /}
    upstream: demo
    limits:
)",
                                             limits),
                                "test.yaml");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : nullptr;
}

TEST(LimitRegistryCarryTest, AReloadCarriesPermitsDebtAndCounters) {
  SimulatedClock clock(kSecond);
  LimitRegistry registry(&clock);
  auto first = Parse(
      "      - {name: l, rate: {per_second: 20, burst: 3}, "
      "concurrency: {max: 2, queue: 0}}\n");
  ASSERT_NE(first, nullptr);
  std::shared_ptr<LimitState> old = registry.Bind(*first)[0][0];
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(old->TakeRate("", clock).admitted);
  ConcurrencyLimiter::Permit p1 = old->concurrency()->TryAcquirePermit();
  ConcurrencyLimiter::Permit p2 = old->concurrency()->TryAcquirePermit();
  ASSERT_TRUE(p1 && p2);
  old->admitted += 3;

  auto second = Parse(
      "      - {name: l, rate: {per_second: 21, burst: 3}, "
      "concurrency: {max: 3, queue: 0}}\n");
  ASSERT_NE(second, nullptr);
  std::shared_ptr<LimitState> next = registry.Bind(*second)[0][0];
  ASSERT_NE(next, old);
  EXPECT_EQ(registry.Find("r", "l"), next);
  EXPECT_FALSE(next->TakeRate("", clock).admitted);  // debt carried
  EXPECT_EQ(next->concurrency()->InFlight(), 2);
  EXPECT_TRUE(next->concurrency()->TryAcquirePermit());
  ConcurrencyLimiter::Permit p3 = next->concurrency()->TryAcquirePermit();
  EXPECT_TRUE(p3);
  EXPECT_FALSE(next->concurrency()->TryAcquirePermit());  // 3 of 3
  EXPECT_EQ(next->admitted.load(), 3);

  // Removed, then added again: a new limit starts fresh.
  registry.Bind(*Parse("      - {name: other, rate: {per_second: 1}}\n"));
  std::shared_ptr<LimitState> again = registry.Bind(*second)[0][0];
  EXPECT_TRUE(again->TakeRate("", clock).admitted);
  EXPECT_EQ(again->admitted.load(), 0);
}

// Concurrency with fair queuing and an adaptive maximum (issue 20).

LimitSettings KeyedConcurrency(int64_t max, int64_t queue, int64_t per_key,
                               int64_t queue_per_key) {
  LimitSettings s = Concurrency(max, queue);
  s.concurrency_key = {"header:x-tenant"};
  s.concurrency_max_per_key = per_key;
  s.concurrency_max_queue_per_key = queue_per_key;
  s.max_keys = 7;
  return s;
}

LimitSettings Adaptive(int64_t min, int64_t max, int64_t initial) {
  LimitSettings s = Concurrency(initial, 10);
  s.concurrency_adaptive = true;
  s.adaptive.min = min;
  s.adaptive.max = max;
  s.adaptive.initial = initial;
  s.adaptive.probe_interval = absl::ZeroDuration();
  return s;
}

// Windows of fast unary calls, each started at the current limit.
void FeedFastCalls(LimitState& state, SimulatedClock& clock, int n) {
  for (int i = 0; i < n; ++i) {
    std::vector<AdaptiveLimit::Call> calls;
    const int64_t limit = state.adaptive()->limit();
    for (int64_t j = 0; j < limit; ++j)
      calls.push_back(state.adaptive()->StartCall());
    clock.Advance(absl::Milliseconds(10));
    for (auto& call : calls) call.Finish(false);
  }
}

TEST(LimitStateFairTest, KeyedConcurrencyHasPerKeyBounds) {
  SimulatedClock clock;
  LimitState state("route", KeyedConcurrency(10, 20, 3, 4), nullptr, "",
                   nullptr, &clock);
  EXPECT_TRUE(state.concurrency_keyed());
  EXPECT_EQ(state.adaptive(), nullptr);
  const ConcurrencyLimiter::Limits limits = state.concurrency()->limits();
  EXPECT_EQ(limits.max_in_flight, 10);
  EXPECT_EQ(limits.max_queue, 20);
  EXPECT_EQ(limits.max_per_key, 3);
  EXPECT_EQ(limits.max_queue_per_key, 4);
  EXPECT_EQ(limits.max_keys, 7);
  // A reload that changes the per-key bounds keeps the permits.
  ConcurrencyLimiter::Permit p = state.concurrency()->TryAcquirePermit("a");
  LimitState next("route", KeyedConcurrency(10, 20, 1, 4), nullptr, "", &state,
                  &clock);
  EXPECT_EQ(next.concurrency(), state.concurrency());
  EXPECT_EQ(next.concurrency()->limits().max_per_key, 1);
  EXPECT_FALSE(next.concurrency()->TryAcquirePermit("a"));  // a holds 1
  EXPECT_TRUE(next.concurrency()->TryAcquirePermit("b"));
}

TEST(LimitStateFairTest, TheAdaptiveLimitDrivesTheLimiter) {
  SimulatedClock clock(kSecond);
  LimitSettings settings = Adaptive(2, 100, 5);
  settings.dry_run = true;  // computed and applied to the limiter all the same
  LimitState state("route", settings, nullptr, "", nullptr, &clock);
  ASSERT_NE(state.adaptive(), nullptr);
  EXPECT_EQ(state.concurrency()->max_in_flight(), 5);
  FeedFastCalls(state, clock, 200);
  EXPECT_GT(state.adaptive()->limit(), 5);
  EXPECT_EQ(state.concurrency()->max_in_flight(), state.adaptive()->limit());
  // An override of the maximum would fight the adaptive limit.
  EXPECT_EQ(state.Override(std::nullopt, std::nullopt, 7, std::nullopt).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(state.Override(std::nullopt, std::nullopt, std::nullopt, 3).ok());
  EXPECT_EQ(state.concurrency()->max_queue(), 3);
}

TEST(LimitStateFairTest, AReloadKeepsTheAdaptiveEstimate) {
  SimulatedClock clock(kSecond);
  auto first = std::make_shared<LimitState>("route", Adaptive(2, 100, 5),
                                            nullptr, "", nullptr, &clock);
  FeedFastCalls(*first, clock, 200);
  const int64_t learned = first->adaptive()->limit();
  ASSERT_GT(learned, 8);
  // New bounds: the same adaptive limit, its estimate clamped.
  auto second = std::make_shared<LimitState>("route", Adaptive(2, 8, 5),
                                             nullptr, "", first.get(), &clock);
  EXPECT_EQ(second->adaptive(), first->adaptive());
  EXPECT_EQ(second->adaptive()->limit(), 8);
  EXPECT_EQ(second->concurrency()->max_in_flight(), 8);
  // Back to a fixed maximum: the adaptive limit no longer moves it, even
  // fed by calls of the old generation.
  auto fixed = std::make_shared<LimitState>("route", Concurrency(50, 10),
                                            nullptr, "", second.get(), &clock);
  EXPECT_EQ(fixed->adaptive(), nullptr);
  EXPECT_EQ(fixed->concurrency(), first->concurrency());
  EXPECT_EQ(fixed->concurrency()->max_in_flight(), 50);
  FeedFastCalls(*second, clock, 50);
  EXPECT_EQ(fixed->concurrency()->max_in_flight(), 50);
}

}  // namespace
}  // namespace sluice
