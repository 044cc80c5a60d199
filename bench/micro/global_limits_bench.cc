// Per-call cost of a global rate limit (Redis GCRA via EVALSHA) against a
// local one, with and without leasing. Starts its own redis-server
// (/usr/bin/redis-server) on a free 127.0.0.1 port and stops it by PID.
// Results: docs/BENCHMARKS.md ("Global limits").
//
//   bazel run -c opt //bench/micro:global_limits_bench
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "server/config/config.h"
#include "server/limits/clock.h"
#include "server/limits/global_rate_limiter.h"
#include "server/limits/limit_state.h"
#include "server/limits/redis_client.h"

namespace sluice {
namespace {

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// One redis-server for the whole run.
struct Redis {
  pid_t pid = -1;
  int port = 0;
  Redis() {
    port = FreePort();
    pid = fork();
    if (pid == 0) {
      // Not our stdout: a pipe reader (`| tail`) would wait for redis too.
      const int null_fd = open("/dev/null", O_WRONLY);
      dup2(null_fd, 1);
      dup2(null_fd, 2);
      const std::string p = std::to_string(port);
      execl("/usr/bin/redis-server", "redis-server", "--port", p.c_str(),
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--logfile", "/dev/null", static_cast<char*>(nullptr));
      _exit(127);
    }
    absl::SleepFor(absl::Milliseconds(300));
  }
  ~Redis() {
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
  }
};

// Destroyed (redis-server stopped by its PID) when main returns.
Redis& SharedRedis() {
  static Redis redis;
  return redis;
}

LimitSettings Settings(bool global, int64_t lease) {
  LimitSettings s;
  s.name = "bench";
  s.rate_count = 1'000'000'000;  // never rejects: measures the path only
  s.rate_period = absl::Seconds(1);
  s.rate_burst = 1'000'000;
  s.global = global;
  s.global_fallback = "fail_closed";
  s.lease = lease;
  return s;
}

void BM_LocalRate(benchmark::State& state) {
  LimitState limit("route", Settings(false, 1));
  for (auto _ : state) {
    benchmark::DoNotOptimize(limit.TakeRate("", RealClock::Get()).admitted);
  }
}
BENCHMARK(BM_LocalRate);

// One call at a time (the latency a call sees), lease = state.range(0).
void BM_GlobalRate(benchmark::State& state) {
  Redis& redis = SharedRedis();
  RedisClientOptions options;
  options.port = redis.port;
  options.pool_size = 1;
  options.timeout = absl::Seconds(1);
  auto client = std::make_shared<RedisClient>(options, kGcraScript);
  while (!client->connected()) absl::SleepFor(absl::Milliseconds(5));
  LimitState limit("route", Settings(true, state.range(0)), client, "bench:");
  GlobalRateLimiter* g = limit.global();
  int64_t fallbacks = 0, rejected = 0;
  for (auto _ : state) {
    GlobalRateLimiter::Result result;
    absl::Notification done;
    if (!g->Take("", RealClock::Get().NowNanos(), &result,
                 [&](const GlobalRateLimiter::Result& r) {
                   result = r;
                   done.Notify();
                 })) {
      done.WaitForNotification();
    }
    if (result.redis_unavailable) ++fallbacks;
    if (!result.decision.admitted) ++rejected;
  }
  state.counters["fallbacks"] = fallbacks;
  state.counters["rejected"] = rejected;
}
BENCHMARK(BM_GlobalRate)->Arg(1)->Arg(10)->Arg(100)->UseRealTime();

}  // namespace
}  // namespace sluice
