// A Redis Cluster as the store of global limits: each key goes to the
// master that owns its hash slot (cluster_slot.h, {hash tags} honoured);
// MOVED updates the slot and is followed, ASK is followed once with
// ASKING; the slot map is read with CLUSTER SLOTS at start, after a MOVED,
// after a failure that may be a failover (no connection, timeout,
// CLUSTERDOWN, TRYAGAIN), every `refresh_interval`, and every 200 ms while
// the map is degraded (a master without a connection, a slot without a
// master, CLUSTER SLOTS failing). During a failover the limits of the lost
// master's slots apply their fallback (their requests fail), and find the
// promoted replica within 200 ms of its promotion.
//
// Ownership: shared like any RedisLink. Owns one RedisClient per node it
// has talked to (each with its own I/O thread and pool, AUTH on every
// connection, as for a single Redis); a node is kept until the cluster
// client is destroyed (one that left the cluster costs a reconnect attempt
// every 2 s). Threading: any thread may call every method. EvalScript
// looks up the slot's node under a reader lock and queues the request on
// it without waiting; redirections and CLUSTER SLOTS replies are handled on
// the node clients' I/O threads. Node clients are reached only under mu_,
// so the destructor (which stops them) never races a send.
#ifndef SLUICE_SERVER_LIMITS_REDIS_CLUSTER_CLIENT_H_
#define SLUICE_SERVER_LIMITS_REDIS_CLUSTER_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/limits/cluster_replies.h"
#include "server/limits/redis_client.h"
#include "server/limits/redis_link.h"

namespace sluice {

class RedisClusterClient : public RedisLink {
 public:
  // `node_options`: pool, timeouts and AUTH of every node (host and port
  // are each node's own). `script`: as RedisClient's.
  RedisClusterClient(std::vector<ClusterNode> seeds,
                     RedisClientOptions node_options, std::string script,
                     absl::Duration refresh_interval = absl::Seconds(5));
  ~RedisClusterClient() override;
  RedisClusterClient(const RedisClusterClient&) = delete;
  RedisClusterClient& operator=(const RedisClusterClient&) = delete;

  void EvalScript(std::string key, std::vector<std::string> args,
                  Callback done) override;
  // Every master that owns slots has a connection up.
  bool connected() const override;
  RedisLinkState link_state() const override;
  std::string last_error() const override;
  // "cluster host:port,host:port" (the seeds).
  const std::string& address() const override { return address_; }
  void SetUsers(std::string users) override;
  uint64_t topology_epoch() const override { return epoch_.load(); }

  // The node that serves `key` by the current slot map ("" if unknown).
  std::string NodeFor(absl::string_view key) const;
  // Masters in the current slot map.
  int masters() const;

 private:
  struct Attempt;
  // The client of `node`, created on first use. Null once stopping.
  RedisClient* NodeLocked(const ClusterNode& node)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Where a request for `slot` goes: its owner, else any node (which
  // redirects).
  RedisClient* RouteLocked(int slot) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void SendLocked(std::shared_ptr<Attempt> attempt, RedisClient* node,
                  bool asking) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void OnReply(const std::shared_ptr<Attempt>& attempt, const Reply& reply);
  // Starts a CLUSTER SLOTS unless one is out or one started within
  // 100 ms.
  void Refresh();
  void AskSlots(std::vector<ClusterNode> candidates, size_t next);
  // Returns whether the map is degraded.
  bool Install(const std::vector<SlotRange>& ranges);
  // After a refresh: the next one in 200 ms (degraded) or
  // refresh_interval, on the first seed's I/O thread (one timer at a time).
  void ArmRefresh(bool degraded);

  const std::vector<ClusterNode> seeds_;
  const RedisClientOptions node_options_;
  const std::string script_;
  const int64_t refresh_interval_nanos_;
  const std::string address_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> refreshing_{false};
  std::atomic<int64_t> last_refresh_{0};  // when the last one started
  std::atomic<bool> timer_armed_{false};
  std::atomic<uint64_t> epoch_{0};  // slot map changes

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<RedisClient>> nodes_
      ABSL_GUARDED_BY(mu_);
  std::vector<RedisClient*> slots_ ABSL_GUARDED_BY(mu_);  // null: unknown
  std::vector<RedisClient*> masters_ ABSL_GUARDED_BY(mu_);
  std::string map_text_ ABSL_GUARDED_BY(mu_);  // logged when it changes
  std::string users_ ABSL_GUARDED_BY(mu_);
  std::string refresh_error_ ABSL_GUARDED_BY(mu_);
  std::atomic<size_t> next_any_{0};  // round robin before a map is known
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_REDIS_CLUSTER_CLIENT_H_
