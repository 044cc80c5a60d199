// The data port: an AsyncGenericService served by N workers, each with its
// own completion queue, forwarding every method to the upstreams.
//
// Owned by the Daemon; lives from Start() until Drain() returns. The config
// snapshot is swapped atomically (SetConfig from the control thread); each
// worker caches the current snapshot and re-reads it only when the version
// moves, so the per-call cost is one relaxed atomic load.
#ifndef SLUICE_SERVER_PROXY_DATA_PLANE_H_
#define SLUICE_SERVER_PROXY_DATA_PLANE_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/server.h"
#include "server/limits/keyed_buckets.h"
#include "server/limits/limit_registry.h"
#include "server/metrics/proxy_metrics.h"
#include "server/proxy/connection_closer.h"
#include "server/proxy/memory_guard.h"
#include "server/proxy/proxy_snapshot.h"
#include "server/proxy/reflection_fetcher.h"
#include "server/proxy/worker.h"

namespace sluice {

class DataPlane {
 public:
  // Binds the data address and starts the workers.
  static absl::StatusOr<std::unique_ptr<DataPlane>> Start(
      std::shared_ptr<const Config> config, ProxyMetrics* metrics);
  ~DataPlane();

  // Applies a new config to calls accepted from now on. Upstream channels
  // are reused when the upstream list is unchanged.
  absl::Status SetConfig(std::shared_ptr<const Config> config);

  // Stops accepting, lets calls run up to `timeout`, finishes the rest with
  // UNAVAILABLE + draining, then stops the workers. Blocks; idempotent.
  void Drain(absl::Duration timeout);
  // After the server has shut down, Drain() waits this long for the last
  // call objects (one may wait for a Redis reply) before it stops the
  // workers; never less than Redis' connect timeout + timeout + 1 s, since
  // a worker queue must outlive every completion still coming to it.
  // Tests shorten it.
  void set_drain_give_up(absl::Duration d) { drain_give_up_ = d; }
  // Call objects alive (accepted or not): 0 once Drain() has returned,
  // unless it gave up.
  int64_t call_objects_alive() const { return alive_.load(); }

  int port() const { return port_; }
  int64_t calls_in_flight() const {
    return in_flight_.load(std::memory_order_relaxed);
  }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }
  // The memory ceiling (proxy.max_memory_bytes) and whether it is reached.
  const MemoryGuard& memory_guard() const { return memory_guard_; }
  // False once the drain closes the port: accepts are not re-posted.
  bool accepting() const { return accepting_.load(std::memory_order_relaxed); }
  std::shared_ptr<const Config> config() const;
  std::shared_ptr<UpstreamPool> pool() const;
  LimitRegistry& limits() { return limits_; }
  // Early cancels (a client cancelled a call before any response reached
  // it) per client address: proxy.connections.early_cancels_per_second and
  // _burst (restart only; rate 0: off). A rapid-reset flood empties its
  // bucket; while it is empty, the address's new calls are refused at once
  // (sluice-reason early_cancels) without an upstream call. Any thread.
  static constexpr size_t kEarlyCancelPeers = 4096;
  bool early_cancels_on() const { return early_cancels_ != nullptr; }
  int64_t early_cancel_burst() const { return early_cancel_burst_; }
  KeyedTokenBuckets& early_cancels() { return *early_cancels_; }
  // Takes an early cancel of `address`, noting when (see
  // MaybeEarlyCancels). Any thread; nothing when the defence is off.
  void ChargeEarlyCancel(absl::string_view address, int64_t now_nanos);
  // False if the defence is off, or no address was charged within the
  // time a bucket takes to refill: every budget is full, no lookup needed
  // (the common case costs one atomic load).
  bool MaybeEarlyCancels(int64_t now_nanos) const {
    return early_cancels_ != nullptr &&
           now_nanos - last_early_cancel_.load(std::memory_order_relaxed) <
               early_cancel_refill_nanos_;
  }
  // A call from `grpc_peer` was refused for early cancels and reset by its
  // client anyway: that connection floods (rapid reset). Closes it (once;
  // logged), so gRPC stops creating calls for its resets. Any thread.
  void CloseFloodingConnection(absl::string_view grpc_peer);

  // Used by calls, on their worker's thread.
  grpc::AsyncGenericService* service() { return &service_; }
  std::shared_ptr<const ProxySnapshot> snapshot(int worker_index);
  void CallAccepted();
  void CallFreed();
  // Every ProxyCall object, accepted or still waiting for a call.
  void CallObjectCreated();
  void CallObjectDestroyed();

 private:
  DataPlane() = default;
  // A snapshot for `config`, reusing from `previous` (may be null) the
  // upstream channels and the access log when they did not change.
  absl::StatusOr<std::shared_ptr<const ProxySnapshot>> BuildSnapshot(
      std::shared_ptr<const Config> config,
      std::shared_ptr<const ProxySnapshot> previous);
  // Points the reflection fetcher at `snap`'s upstreams (those with
  // reflection on): a new pool is watched afresh, a kept one re-fetched.
  void WatchShapes(const ProxySnapshot& snap, const UpstreamPool* previous);
  // Sets the MemoryGuard's ceiling (and logs it when it changes).
  void ApplyMemoryLimit(int64_t limit);
  struct WorkerCache {
    uint64_t version = 0;
    std::shared_ptr<const ProxySnapshot> snapshot;
  };

  ProxyMetrics* metrics_ = nullptr;
  MemoryGuard memory_guard_;
  LimitRegistry limits_;
  std::unique_ptr<KeyedTokenBuckets> early_cancels_;  // null: off
  std::unique_ptr<ConnectionCloser> closer_;          // null: defence off
  // Method shapes from the upstreams' reflection (stopped by Drain).
  std::unique_ptr<ReflectionFetcher> reflection_;
  int64_t early_cancel_burst_ = 0;
  int64_t early_cancel_refill_nanos_ = 0;
  grpc::AsyncGenericService service_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<WorkerCache> caches_;  // one per worker, its thread only
  int port_ = 0;

  mutable absl::Mutex mu_;
  std::shared_ptr<const ProxySnapshot> current_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> version_{1};

  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> alive_{0};
  std::atomic<int64_t> last_early_cancel_{INT64_MIN / 2};  // nanos
  std::atomic<bool> draining_{false};
  std::atomic<bool> accepting_{true};
  absl::Mutex freed_mu_;
  absl::CondVar freed_cv_;  // signalled when the last call object dies
  absl::Mutex drain_mu_;
  bool drained_ ABSL_GUARDED_BY(drain_mu_) = false;
  absl::Duration drain_give_up_ = absl::Seconds(10);
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_DATA_PLANE_H_
