#include "server/limits/redis_client.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "server/limits/clock.h"
#include "spdlog/spdlog.h"

namespace sluice {
namespace {

constexpr int64_t kMinBackoffNanos = 100'000'000;    // 100 ms
constexpr int64_t kMaxBackoffNanos = 2'000'000'000;  // 2 s

std::string Sha1Hex(const std::string& text) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(),
       digest);
  return absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(digest), SHA_DIGEST_LENGTH));
}

int64_t Now() { return RealClock::Get().NowNanos(); }

// Redis' answers meaning "AUTH is wrong or missing" (NOAUTH; WRONGPASS from
// Redis 6; "ERR invalid password" before it).
bool IsAuthError(const std::string& message) {
  return absl::StartsWith(message, "NOAUTH") ||
         absl::StartsWith(message, "WRONGPASS") ||
         absl::StartsWith(message, "ERR invalid password") ||
         absl::StartsWith(message, "ERR invalid username-password");
}

// A cluster node's redirection: MOVED (the slot lives elsewhere now) or
// ASK (this one key is being migrated).
bool IsRedirect(const std::string& message) {
  return absl::StartsWith(message, "MOVED ") ||
         absl::StartsWith(message, "ASK ");
}

RedisValue ToValue(const redisReply* r) {
  RedisValue v;
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      v.type = RedisValue::kInteger;
      v.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      v.type = RedisValue::kString;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      v.type = RedisValue::kStatus;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      v.type = RedisValue::kError;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      v.type = RedisValue::kArray;
      for (size_t i = 0; i < r->elements; ++i) {
        v.elements.push_back(ToValue(r->element[i]));
      }
      break;
    default:
      v.type = RedisValue::kNil;
      break;
  }
  return v;
}

}  // namespace

const char* RedisStats::KindName(int kind) {
  switch (kind) {
    case kTimeout:
      return "timeout";
    case kConnection:
      return "connection";
    case kAuth:
      return "auth";
    default:
      return "reply";
  }
}

RedisStats& RedisStats::Get() {
  static RedisStats* stats = new RedisStats();
  return *stats;
}

void RedisStats::ObserveLatency(int64_t nanos) {
  const double seconds = static_cast<double>(nanos) / 1e9;
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets[i].fetch_add(1, std::memory_order_relaxed);
  count.fetch_add(1, std::memory_order_relaxed);
  sum_nanos.fetch_add(nanos, std::memory_order_relaxed);
}

struct RedisClient::Request {
  std::string key;
  std::vector<std::string> args;
  Callback done;
  int64_t started = 0;
  int64_t deadline = 0;
  bool finished = false;
  bool retried = false;              // re-sent as EVAL after NOSCRIPT
  bool asking = false;               // ASKING first (a cluster node's ASK)
  std::vector<std::string> command;  // Command(): sent as is
  RedisClient* client = nullptr;
};

struct RedisClient::Conn {
  RedisClient* client = nullptr;
  redisAsyncContext* ac = nullptr;
  bool connected = false;
  bool want_read = false;
  bool want_write = false;
  int64_t connect_deadline = 0;
  int64_t next_attempt = 0;
  int64_t backoff = kMinBackoffNanos;
};

RedisClient::RedisClient(RedisClientOptions options, std::string script)
    : options_(std::move(options)),
      script_(std::move(script)),
      sha_(Sha1Hex(script_)),
      address_(absl::StrContains(options_.host, ':')
                   ? absl::StrCat("[", options_.host, "]:", options_.port)
                   : absl::StrCat(options_.host, ":", options_.port)) {
  {
    absl::MutexLock lock(&state_mu_);
    users_ = options_.users;
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  for (int i = 0; i < std::max(1, options_.pool_size); ++i) {
    auto conn = std::make_unique<Conn>();
    conn->client = this;
    conns_.push_back(std::move(conn));
  }
  thread_ = std::thread([this] { Loop(); });
}

RedisClient::~RedisClient() {
  stop_.store(true);
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  thread_.join();
  close(wake_fd_);
}

void RedisClient::EvalScript(std::string key, std::vector<std::string> args,
                             Callback done) {
  auto req = std::make_shared<Request>();
  req->key = std::move(key);
  req->args = std::move(args);
  req->done = std::move(done);
  Submit(std::move(req));
}

void RedisClient::EvalScriptAsking(std::string key,
                                   std::vector<std::string> args,
                                   Callback done) {
  auto req = std::make_shared<Request>();
  req->key = std::move(key);
  req->args = std::move(args);
  req->done = std::move(done);
  req->asking = true;
  Submit(std::move(req));
}

void RedisClient::Command(std::vector<std::string> argv, Callback done) {
  auto req = std::make_shared<Request>();
  req->command = std::move(argv);
  req->done = std::move(done);
  Submit(std::move(req));
}

void RedisClient::RunAfter(absl::Duration delay, std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    timers_.emplace_back(Now() + absl::ToInt64Nanoseconds(delay),
                         std::move(fn));
  }
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
}

void RedisClient::Submit(std::shared_ptr<Request> req) {
  req->client = this;
  {
    absl::MutexLock lock(&mu_);
    submitted_.push_back(std::move(req));
  }
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
}

void RedisClient::Finish(Request* req, int status, std::string error) {
  if (req->finished) return;
  req->finished = true;
  Reply reply;
  reply.status = static_cast<Reply::Status>(status);
  reply.error = std::move(error);
  RedisStats& stats = RedisStats::Get();
  switch (reply.status) {
    case Reply::kTimeout:
      stats.CountError(RedisStats::kTimeout);
      break;
    case Reply::kConnection:
      stats.CountError(RedisStats::kConnection);
      break;
    case Reply::kAuth:
      stats.CountError(RedisStats::kAuth);
      break;
    case Reply::kError:
      stats.CountError(RedisStats::kReply);
      stats.ObserveLatency(Now() - req->started);
      break;
    case Reply::kRedirect:
      stats.ObserveLatency(Now() - req->started);
      break;
    case Reply::kOk:
      break;
  }
  Callback done = std::move(req->done);
  done(reply);
}

void RedisClient::OnReply(redisAsyncContext* ac, void* r, void* privdata) {
  auto* holder = static_cast<std::shared_ptr<Request>*>(privdata);
  std::shared_ptr<Request> req = std::move(*holder);
  delete holder;
  auto* reply = static_cast<redisReply*>(r);
  if (reply == nullptr) {
    Finish(req.get(), Reply::kConnection, "redis connection lost");
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    const std::string message(reply->str, reply->len);
    if (absl::StartsWith(message, "NOSCRIPT") && req->command.empty() &&
        !req->retried && !req->finished) {
      req->retried = true;
      auto* conn = static_cast<Conn*>(ac->data);
      if (conn->client->Send(conn, req, /*full_eval=*/true)) return;
      Finish(req.get(), Reply::kConnection, "redis connection lost");
      return;
    }
    if (IsAuthError(message)) {
      // Redis wants AUTH again (restarted with a password, ACL changed):
      // drop the connection; the reconnect authenticates first.
      auto* conn = static_cast<Conn*>(ac->data);
      conn->client->SetLinkState(RedisLinkState::kAuthFailed, message);
      if (!(ac->c.flags & REDIS_DISCONNECTING)) redisAsyncDisconnect(ac);
      Finish(req.get(), Reply::kAuth,
             absl::StrCat("redis authentication failed: ", message));
      return;
    }
    Finish(req.get(), IsRedirect(message) ? Reply::kRedirect : Reply::kError,
           message);
    return;
  }
  if (req->finished) return;  // timed out already
  Reply out;
  if (!req->command.empty()) {
    out.value = ToValue(reply);
  } else if (reply->type == REDIS_REPLY_ARRAY) {
    for (size_t i = 0; i < reply->elements; ++i) {
      const redisReply* e = reply->element[i];
      out.ints.push_back(e->type == REDIS_REPLY_INTEGER ? e->integer : 0);
    }
  } else if (reply->type == REDIS_REPLY_INTEGER) {
    out.ints.push_back(reply->integer);
  }
  req->finished = true;
  RedisStats::Get().ObserveLatency(Now() - req->started);
  Callback done = std::move(req->done);
  done(out);
}

bool RedisClient::Send(Conn* conn, const std::shared_ptr<Request>& req,
                       bool full_eval) {
  if (conn->ac == nullptr || !conn->connected) return false;
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  auto add = [&](const std::string& s) {
    argv.push_back(s.data());
    lens.push_back(s.size());
  };
  if (!req->command.empty()) {
    for (const std::string& a : req->command) add(a);
  } else {
    if (req->asking) {
      // The node serves the migrating key only to a request right after
      // ASKING on the same connection; hiredis keeps the order.
      static const char* kAsking[] = {"ASKING"};
      static const size_t kAskingLen[] = {6};
      if (redisAsyncCommandArgv(conn->ac, nullptr, nullptr, 1, kAsking,
                                kAskingLen) != REDIS_OK) {
        return false;
      }
    }
    return SendEval(conn, req, full_eval);
  }
  return SendArgv(conn, req, argv, lens);
}

bool RedisClient::SendArgv(Conn* conn, const std::shared_ptr<Request>& req,
                           const std::vector<const char*>& argv,
                           const std::vector<size_t>& lens) {
  // The reply callback owns one reference to the request until it runs.
  auto* holder = new std::shared_ptr<Request>(req);
  if (redisAsyncCommandArgv(conn->ac, &RedisClient::OnReply, holder,
                            static_cast<int>(argv.size()),
                            const_cast<const char**>(argv.data()),
                            lens.data()) != REDIS_OK) {
    delete holder;
    return false;
  }
  return true;
}

bool RedisClient::SendEval(Conn* conn, const std::shared_ptr<Request>& req,
                           bool full_eval) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  const std::string numkeys = "1";
  auto add = [&](const std::string& s) {
    argv.push_back(s.data());
    lens.push_back(s.size());
  };
  const std::string cmd = full_eval ? "EVAL" : "EVALSHA";
  add(cmd);
  add(full_eval ? script_ : sha_);
  add(numkeys);
  add(req->key);
  for (const std::string& a : req->args) add(a);
  return SendArgv(conn, req, argv, lens);
}

void RedisClient::Dispatch(std::shared_ptr<Request> req) {
  req->started = Now();
  req->deadline = req->started + absl::ToInt64Nanoseconds(options_.timeout);
  for (size_t tries = 0; tries < conns_.size(); ++tries) {
    Conn* conn = conns_[next_conn_++ % conns_.size()].get();
    if (Send(conn, req, /*full_eval=*/false)) {
      by_deadline_.push_back(std::move(req));
      return;
    }
  }
  if (link_state() == RedisLinkState::kAuthFailed) {
    Finish(req.get(), Reply::kAuth,
           absl::StrCat("redis authentication failed: ", last_error()));
    return;
  }
  Finish(req.get(), Reply::kConnection, "redis not connected");
}

std::string RedisClient::last_error() const {
  absl::MutexLock lock(&state_mu_);
  return last_error_;
}

void RedisClient::SetUsers(std::string users) {
  absl::MutexLock lock(&state_mu_);
  users_ = std::move(users);
}

void RedisClient::SetLinkState(RedisLinkState state, const std::string& error) {
  std::string users;
  {
    absl::MutexLock lock(&state_mu_);
    last_error_ = error;
    users = users_;
  }
  const int before = link_state_.exchange(static_cast<int>(state));
  if (before == static_cast<int>(state)) return;
  const std::string who =
      users.empty() ? "" : absl::StrCat(" (global limits ", users, ")");
  switch (state) {
    case RedisLinkState::kAuthFailed:
      spdlog::error(
          "redis {}{}: authentication failed: {}; global limits apply their "
          "fallback until AUTH succeeds (check redis.password_file and "
          "redis.username_file, then reload)",
          address_, who, error);
      break;
    case RedisLinkState::kUnreachable:
      spdlog::warn("redis {}{}: unreachable: {}", address_, who, error);
      break;
    case RedisLinkState::kUp:
      spdlog::info("redis {}{}: connected{}", address_, who,
                   options_.password.empty() ? "" : " and authenticated");
      break;
    case RedisLinkState::kConnecting:
      break;
  }
}

void RedisClient::OnConnect(const redisAsyncContext* ac, int status) {
  auto* conn = static_cast<Conn*>(ac->data);
  if (status != REDIS_OK) {
    if (conn->client->connected_count_.load() == 0) {
      conn->client->SetLinkState(
          RedisLinkState::kUnreachable,
          ac->errstr[0] != '\0' ? std::string(ac->errstr) : "connect failed");
    }
    // hiredis frees the context after this callback.
    conn->ac = nullptr;
    conn->want_read = conn->want_write = false;
    conn->client->Dropped(conn, Now());
    return;
  }
  // Before anything else: AUTH (or a PING, which tells whether Redis wants
  // AUTH). The connection counts as up only once it is answered.
  RedisClient* client = conn->client;
  const RedisClientOptions& o = client->options_;
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  auto add = [&](const std::string& s) {
    argv.push_back(s.data());
    lens.push_back(s.size());
  };
  static const std::string kAuthCmd = "AUTH";
  static const std::string kPingCmd = "PING";
  if (o.password.empty()) {
    add(kPingCmd);
  } else {
    add(kAuthCmd);
    if (!o.username.empty()) add(o.username);
    add(o.password);
  }
  auto* mutable_ac = const_cast<redisAsyncContext*>(ac);
  if (redisAsyncCommandArgv(mutable_ac, &RedisClient::OnHandshake, nullptr,
                            static_cast<int>(argv.size()), argv.data(),
                            lens.data()) != REDIS_OK) {
    redisAsyncDisconnect(mutable_ac);
  }
}

void RedisClient::OnHandshake(redisAsyncContext* ac, void* r,
                              void* /*privdata*/) {
  auto* conn = static_cast<Conn*>(ac->data);
  auto* reply = static_cast<redisReply*>(r);
  if (reply == nullptr || conn == nullptr || conn->ac != ac) return;
  RedisClient* client = conn->client;
  if (reply->type == REDIS_REPLY_ERROR) {
    const std::string message(reply->str, reply->len);
    // Any refusal of our AUTH (wrong password or user, or AUTH sent to a
    // Redis without one), or NOAUTH to the PING: an authentication failure.
    if (!client->options_.password.empty() || IsAuthError(message)) {
      RedisStats::Get().CountError(RedisStats::kAuth);
      client->SetLinkState(RedisLinkState::kAuthFailed, message);
    } else if (client->connected_count_.load() == 0) {
      client->SetLinkState(RedisLinkState::kUnreachable, message);
    }
    if (!(ac->c.flags & REDIS_DISCONNECTING)) redisAsyncDisconnect(ac);
    return;
  }
  conn->connected = true;
  conn->backoff = kMinBackoffNanos;
  client->connected_count_.fetch_add(1);
  client->SetLinkState(RedisLinkState::kUp, "");
  if (client->options_.on_connected) client->options_.on_connected();
  // Load the script once per connection; EVALSHA finds it from then on.
  const char* argv[] = {"SCRIPT", "LOAD", client->script_.c_str()};
  const size_t lens[] = {6, 4, client->script_.size()};
  redisAsyncCommandArgv(ac, nullptr, nullptr, 3, argv, lens);
}

void RedisClient::OnDisconnect(const redisAsyncContext* ac, int /*status*/) {
  auto* conn = static_cast<Conn*>(ac->data);
  // Freed by us on a connect (or AUTH) timeout: already handled.
  if (conn->ac != ac) return;
  conn->ac = nullptr;
  conn->want_read = conn->want_write = false;
  conn->client->Dropped(conn, Now());
}

void RedisClient::Dropped(Conn* conn, int64_t now) {
  if (conn->connected) {
    conn->connected = false;
    if (connected_count_.fetch_sub(1) == 1 &&
        link_state() == RedisLinkState::kUp && !stop_.load()) {
      SetLinkState(RedisLinkState::kUnreachable, "connection lost");
    }
  }
  conn->next_attempt = now + conn->backoff;
  conn->backoff = std::min(conn->backoff * 2, kMaxBackoffNanos);
}

void RedisClient::Connect(Conn* conn, int64_t now) {
  redisAsyncContext* ac =
      redisAsyncConnect(options_.host.c_str(), options_.port);
  if (ac == nullptr || ac->err) {
    if (ac != nullptr) redisAsyncFree(ac);
    Dropped(conn, now);
    return;
  }
  conn->ac = ac;
  conn->connect_deadline =
      now + absl::ToInt64Nanoseconds(options_.connect_timeout);
  ac->data = conn;
  ac->ev.data = conn;
  ac->ev.addRead = [](void* p) { static_cast<Conn*>(p)->want_read = true; };
  ac->ev.delRead = [](void* p) { static_cast<Conn*>(p)->want_read = false; };
  ac->ev.addWrite = [](void* p) { static_cast<Conn*>(p)->want_write = true; };
  ac->ev.delWrite = [](void* p) { static_cast<Conn*>(p)->want_write = false; };
  ac->ev.cleanup = [](void* p) {
    auto* c = static_cast<Conn*>(p);
    c->want_read = c->want_write = false;
  };
  redisAsyncSetConnectCallback(ac, &RedisClient::OnConnect);
  redisAsyncSetDisconnectCallback(ac, &RedisClient::OnDisconnect);
  // hiredis asks for writability to learn that the connect finished.
  conn->want_write = true;
}

void RedisClient::Loop() {
  std::vector<pollfd> fds;
  std::vector<Conn*> fd_conns;
  while (!stop_.load()) {
    int64_t now = Now();
    // Connections: start, or give up on a connect that takes too long.
    int64_t wake_at = now + 1'000'000'000;
    // Timers due run now (outside the lock: they may submit requests).
    std::vector<std::function<void()>> due;
    {
      absl::MutexLock lock(&mu_);
      for (size_t i = 0; i < timers_.size();) {
        if (timers_[i].first <= now) {
          due.push_back(std::move(timers_[i].second));
          timers_[i] = std::move(timers_.back());
          timers_.pop_back();
        } else {
          wake_at = std::min(wake_at, timers_[i].first);
          ++i;
        }
      }
    }
    for (auto& fn : due) fn();
    for (auto& c : conns_) {
      Conn* conn = c.get();
      if (conn->ac == nullptr) {
        if (now >= conn->next_attempt) Connect(conn, now);
        if (conn->ac == nullptr) {
          wake_at = std::min(wake_at, conn->next_attempt);
          continue;
        }
      }
      if (!conn->connected) {
        if (now >= conn->connect_deadline) {
          redisAsyncContext* ac = conn->ac;
          conn->ac = nullptr;
          // Pending callbacks (the AUTH) run with a null reply; the
          // disconnect callback, if any, sees conn->ac != ac.
          redisAsyncFree(ac);
          if (connected_count_.load() == 0) {
            SetLinkState(RedisLinkState::kUnreachable,
                         "connect or AUTH timed out");
          }
          Dropped(conn, now);
          wake_at = std::min(wake_at, conn->next_attempt);
        } else {
          wake_at = std::min(wake_at, conn->connect_deadline);
        }
      }
    }
    // Requests past their timeout fail now; a late reply is dropped.
    while (!by_deadline_.empty() && (by_deadline_.front()->finished ||
                                     by_deadline_.front()->deadline <= now)) {
      std::shared_ptr<Request> req = std::move(by_deadline_.front());
      by_deadline_.pop_front();
      Finish(req.get(), Reply::kTimeout, "redis timeout");
    }
    if (!by_deadline_.empty()) {
      wake_at = std::min(wake_at, by_deadline_.front()->deadline);
    }

    fds.clear();
    fd_conns.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fd_conns.push_back(nullptr);
    for (auto& c : conns_) {
      Conn* conn = c.get();
      if (conn->ac == nullptr) continue;
      short events = 0;
      if (conn->want_read) events |= POLLIN;
      if (conn->want_write) events |= POLLOUT;
      if (events == 0) continue;
      fds.push_back({conn->ac->c.fd, events, 0});
      fd_conns.push_back(conn);
    }
    const int64_t wait_nanos = std::max<int64_t>(0, wake_at - now);
    const int timeout_ms = static_cast<int>(
        std::min<int64_t>((wait_nanos + 999'999) / 1'000'000, 1000));
    const int n = poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0) continue;  // EINTR
    if (fds[0].revents & POLLIN) {
      uint64_t count;
      (void)!read(wake_fd_, &count, sizeof(count));
      std::vector<std::shared_ptr<Request>> batch;
      {
        absl::MutexLock lock(&mu_);
        batch.swap(submitted_);
      }
      for (auto& req : batch) Dispatch(std::move(req));
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      Conn* conn = fd_conns[i];
      const short rev = fds[i].revents;
      if (rev == 0) continue;
      if (conn->ac != nullptr && (rev & (POLLIN | POLLERR | POLLHUP))) {
        redisAsyncHandleRead(conn->ac);
      }
      if (conn->ac != nullptr && (rev & POLLOUT)) {
        redisAsyncHandleWrite(conn->ac);
      }
    }
  }
  // Shutting down: every request still out gets its callback.
  for (auto& c : conns_) {
    if (c->ac != nullptr) {
      redisAsyncContext* ac = c->ac;
      redisAsyncFree(ac);  // pending callbacks run with a null reply
      c->ac = nullptr;
    }
  }
  std::vector<std::shared_ptr<Request>> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(submitted_);
  }
  for (auto& req : batch) {
    Finish(req.get(), Reply::kConnection, "redis client stopped");
  }
  for (auto& req : by_deadline_) {
    Finish(req.get(), Reply::kConnection, "redis client stopped");
  }
}

}  // namespace sluice
