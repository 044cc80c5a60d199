// An asynchronous client of one Redis server for global limits: hiredis'
// async API driven by one dedicated I/O thread with a poll(2) loop, so no
// worker ever waits on Redis. RedisClusterClient keeps one per cluster node.
//
// Ownership: shared (shared_ptr) by the GlobalRateLimiters that use it and
// the LimitRegistry; the last owner's release stops and joins the I/O
// thread. Threading: EvalScript() may be called from any thread; it only
// queues the request and wakes the I/O thread. Every callback runs exactly
// once, on the I/O thread, and must not block. The client keeps `pool_size`
// connections, reconnects in the background with a bounded backoff
// (100 ms doubling to 2 s), and bounds every request by `timeout`.
#ifndef SLUICE_SERVER_LIMITS_REDIS_CLIENT_H_
#define SLUICE_SERVER_LIMITS_REDIS_CLIENT_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/limits/redis_link.h"

struct redisAsyncContext;

namespace sluice {

// Process-wide Redis counters and latency histogram, read at scrape time by
// the LimitCollector. Lock-free atomics; any thread.
class RedisStats {
 public:
  // kAuth: Redis refused AUTH (WRONGPASS, invalid password) or asked for
  // it (NOAUTH): on a (re)connect, or a request failed because of it.
  enum ErrorKind {
    kTimeout = 0,
    kConnection = 1,
    kReply = 2,
    kAuth = 3,
    kNumKinds = 4
  };
  static constexpr std::array<double, 12> kBounds = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
      0.01,   0.025,   0.05,   0.1,   0.25,   1.0};
  static const char* KindName(int kind);
  static RedisStats& Get();

  void ObserveLatency(int64_t nanos);
  void CountError(ErrorKind kind) { errors[kind].fetch_add(1); }

  std::array<std::atomic<int64_t>, kNumKinds> errors{};
  // Non-cumulative counts; the last slot is +Inf.
  std::array<std::atomic<int64_t>, kBounds.size() + 1> buckets{};
  std::atomic<int64_t> count{0};
  std::atomic<int64_t> sum_nanos{0};
  // Redis Cluster redirections followed: [0] MOVED, [1] ASK.
  std::array<std::atomic<int64_t>, 2> redirects{};
};

struct RedisClientOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  int pool_size = 2;
  absl::Duration timeout = absl::Milliseconds(50);
  absl::Duration connect_timeout = absl::Seconds(1);
  // AUTH on every (re)connect before anything else: `AUTH username
  // password` (ACL user, Redis 6+) or `AUTH password`; no AUTH when
  // `password` is empty (a PING then checks that Redis needs none).
  std::string username;
  std::string password;
  // The global limits using this Redis, named in log lines from the first
  // connection attempt on (SetUsers replaces it on reload).
  std::string users;
  // Runs on the I/O thread each time a connection comes up (authenticated);
  // must not block. RedisClusterClient reads the slot map then.
  std::function<void()> on_connected;
};

class RedisClient : public RedisLink {
 public:
  // `script`: the Lua script EvalScript runs (loaded with SCRIPT LOAD on
  // every new connection, run with EVALSHA, re-sent on NOSCRIPT).
  RedisClient(RedisClientOptions options, std::string script);
  ~RedisClient() override;
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Any thread. Runs the script with one key and `args`; `done` runs once on
  // the I/O thread: kOk with an integer array, or a failure (timeout, no
  // connection, error reply; kRedirect for a cluster node's MOVED or ASK).
  void EvalScript(std::string key, std::vector<std::string> args,
                  Callback done) override;
  // The same, preceded by ASKING on the same connection (a cluster node's
  // ASK redirection: this request only).
  void EvalScriptAsking(std::string key, std::vector<std::string> args,
                        Callback done);
  // Any thread. Sends `argv` as one command; `done` gets the whole reply in
  // Reply::value (kOk), or a failure.
  void Command(std::vector<std::string> argv, Callback done);
  // Any thread. Runs `fn` on the I/O thread `delay` from now (never, if the
  // client stops first); `fn` must not block.
  void RunAfter(absl::Duration delay, std::function<void()> fn);

  // True while at least one connection is up (and authenticated).
  bool connected() const override { return connected_count_.load() > 0; }
  RedisLinkState link_state() const override {
    return static_cast<RedisLinkState>(link_state_.load());
  }
  // Redis' last AUTH/NOAUTH error, or why the last connect failed ("" while
  // up). Never holds a secret.
  std::string last_error() const override;
  // "host:port", for logs and the admin API.
  const std::string& address() const override { return address_; }
  const std::string& host() const { return options_.host; }
  int port() const { return options_.port; }
  // Who uses the client, named in its log lines (e.g. the global limits:
  // "route/limit, ..."). Any thread.
  void SetUsers(std::string users) override;
  const std::string& script_sha() const { return sha_; }

 private:
  struct Request;
  struct Conn;
  void Submit(std::shared_ptr<Request> req);
  void Loop();
  void Dispatch(std::shared_ptr<Request> req);
  bool Send(Conn* conn, const std::shared_ptr<Request>& req, bool full_eval);
  // Sends one command on `conn` whose reply goes to OnReply for `req`.
  bool SendArgv(Conn* conn, const std::shared_ptr<Request>& req,
                const std::vector<const char*>& argv,
                const std::vector<size_t>& lens);
  bool SendEval(Conn* conn, const std::shared_ptr<Request>& req,
                bool full_eval);
  void Connect(Conn* conn, int64_t now);
  void Dropped(Conn* conn, int64_t now);
  static void Finish(Request* req, int status, std::string error);
  static void OnReply(redisAsyncContext* ac, void* reply, void* privdata);
  static void OnConnect(const redisAsyncContext* ac, int status);
  static void OnHandshake(redisAsyncContext* ac, void* reply, void* privdata);
  // I/O thread: records (and logs on a change) what the link last saw.
  void SetLinkState(RedisLinkState state, const std::string& error);
  static void OnDisconnect(const redisAsyncContext* ac, int status);

  const RedisClientOptions options_;
  const std::string script_;
  const std::string sha_;
  const std::string address_;
  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> connected_count_{0};
  std::atomic<int> link_state_{0};

  absl::Mutex mu_;
  std::vector<std::shared_ptr<Request>> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<int64_t, std::function<void()>>> timers_
      ABSL_GUARDED_BY(mu_);
  mutable absl::Mutex state_mu_;
  std::string last_error_ ABSL_GUARDED_BY(state_mu_);
  std::string users_ ABSL_GUARDED_BY(state_mu_);

  // I/O thread only.
  std::vector<std::unique_ptr<Conn>> conns_;
  size_t next_conn_ = 0;
  std::deque<std::shared_ptr<Request>> by_deadline_;  // FIFO = deadline order
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_REDIS_CLIENT_H_
