// What global limits need of Redis, whether one server (RedisClient) or a
// Redis Cluster (RedisClusterClient): run the GCRA script on one key without
// blocking, and say how the link is for logs, metrics, readiness and the
// admin API.
//
// Ownership: shared (shared_ptr) by the GlobalRateLimiters that use it and
// the LimitRegistry. Threading: every method may be called from any thread;
// EvalScript's callback runs exactly once on an I/O thread of the
// implementation and must not block.
#ifndef SLUICE_SERVER_LIMITS_REDIS_LINK_H_
#define SLUICE_SERVER_LIMITS_REDIS_LINK_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sluice {

// What the link's connections last saw.
enum class RedisLinkState {
  kConnecting = 0,   // no attempt has finished yet
  kUp = 1,           // at least one connection is up and authenticated
  kAuthFailed = 2,   // AUTH refused, or Redis wants AUTH and none is set
  kUnreachable = 3,  // no connection: refused, timed out, lost
};
const char* RedisLinkStateName(RedisLinkState state);

// One Redis reply, as much of it as Sluice reads: any nesting of arrays,
// integers and strings (bulk, status, error).
struct RedisValue {
  enum Type { kNil, kInteger, kString, kStatus, kError, kArray };
  Type type = kNil;
  int64_t integer = 0;
  std::string str;
  std::vector<RedisValue> elements;
};

class RedisLink {
 public:
  struct Reply {
    // kRedirect: a cluster node answered MOVED or ASK (`error` holds it);
    // RedisClusterClient follows it, so its callers never see one.
    enum Status { kOk, kTimeout, kConnection, kError, kAuth, kRedirect };
    Status status = kOk;
    std::vector<int64_t> ints;  // an integer array reply, in order
    std::string error;          // kError: Redis' message; others: ours
    RedisValue value;           // RedisClient::Command's whole reply
  };
  using Callback = std::function<void(const Reply&)>;

  virtual ~RedisLink() = default;

  // Runs the script with one key and `args`; `done` runs once on an I/O
  // thread: kOk with an integer array, or a failure (timeout, no
  // connection, error reply).
  virtual void EvalScript(std::string key, std::vector<std::string> args,
                          Callback done) = 0;
  // True while the link can serve every key: a connection is up (and
  // authenticated); for a cluster, to every master that owns slots.
  virtual bool connected() const = 0;
  virtual RedisLinkState link_state() const = 0;
  // The last AUTH error or why the last connect failed ("" while up).
  // Never holds a secret.
  virtual std::string last_error() const = 0;
  // For logs and the admin API: "host:port", or "cluster host:port,...".
  virtual const std::string& address() const = 0;
  // Who uses the link, named in its log lines (e.g. the global limits:
  // "route/limit, ...").
  virtual void SetUsers(std::string users) = 0;
  // Grows each time the set of servers behind the link changes (a cluster's
  // slot map); constant for one server. A limit in fallback probes at once
  // when it changes: a failover's promoted replica is found without
  // waiting out the probe backoff.
  virtual uint64_t topology_epoch() const { return 0; }
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_REDIS_LINK_H_
