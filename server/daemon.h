// The Sluice daemon: data plane, admin server, metrics exposer and the
// control logic (reload, drain) that ties them together.
//
// Owned by main(). Run() blocks the main thread until a drain is requested
// (SIGTERM/SIGINT or the admin API), then drains and returns. Reload and
// drain requests may come from any thread (the signal thread, admin
// threads); they are serialized by control_mu_.
#ifndef SLUICE_SERVER_DAEMON_H_
#define SLUICE_SERVER_DAEMON_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "server/admin/admin_backend.h"
#include "server/admin/admin_server.h"
#include "server/admin/upstream_health.h"
#include "server/config/config.h"
#include "server/metrics/limit_collector.h"
#include "server/metrics/proxy_metrics.h"
#include "server/metrics/state_collector.h"
#include "server/proxy/data_plane.h"

namespace sluice {

class Daemon : public AdminBackend {
 public:
  // Loads (or re-loads) the configuration: the file plus flag overrides.
  using Loader = std::function<absl::StatusOr<std::shared_ptr<const Config>>()>;

  static absl::StatusOr<std::unique_ptr<Daemon>> Start(
      Loader loader, const std::string& ready_file);
  ~Daemon() override;

  // Blocks until a drain is requested, drains, and returns.
  void Run();

  // Re-reads the configuration; a bad one is logged and the old one kept.
  // A good one is applied with the running values of its restart-only
  // settings (Config::WithRestartOnlyOf), each changed one named in a
  // warning: CurrentConfig() and Status() report what is in effect.
  absl::Status Reload();

  // AdminBackend.
  sluice::admin::v1::GetStatusResponse Status() override;
  std::shared_ptr<const Config> CurrentConfig() override;
  bool RequestDrain() override;
  LimitRegistry* Limits() override { return &data_plane_->limits(); }

 private:
  Daemon() = default;
  absl::Status WriteReadyFile(const std::string& path);
  // (Re)starts the upstream health watcher on the current channels.
  void WatchUpstreams() ABSL_EXCLUSIVE_LOCKS_REQUIRED(control_mu_);
  // Readiness (health service "") = every required upstream serving (the
  // UpstreamHealth report) and, with redis.not_ready_in_fallback, no global
  // limit in fallback and a Redis connection up. Either part may change;
  // the other keeps its last value.
  void SetReadiness(std::optional<bool> upstreams_ready,
                    std::optional<bool> redis_blocks);
  // With redis.not_ready_in_fallback: true while a global limit is in its
  // fallback or its Redis client has no connection up.
  bool RedisBlocksReadiness();
  // Polls RedisBlocksReadiness every 100 ms until stop_readiness_.
  void WatchRedisReadiness();

  Loader loader_;
  absl::Time started_at_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<ProxyMetrics> metrics_;
  prometheus::Counter* reloads_ok_ = nullptr;
  prometheus::Counter* reloads_failed_ = nullptr;
  prometheus::Family<prometheus::Gauge>* config_info_ = nullptr;
  prometheus::Gauge* config_hash_ = nullptr;  // guarded by control_mu_
  prometheus::Gauge* last_reload_ = nullptr;
  std::unique_ptr<DataPlane> data_plane_;
  std::shared_ptr<LimitCollector> limit_collector_;
  std::shared_ptr<StateCollector> state_collector_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<UpstreamHealth> upstream_health_;
  std::shared_ptr<UpstreamPool> watched_pool_;
  std::string watched_settings_;            // upstream health settings watched
  std::atomic<bool> health_frozen_{false};  // draining: stays NOT_SERVING
  absl::Mutex ready_mu_;
  bool upstreams_ready_ ABSL_GUARDED_BY(ready_mu_) = true;
  bool redis_blocks_ ABSL_GUARDED_BY(ready_mu_) = false;
  absl::Notification stop_readiness_;
  std::thread readiness_thread_;
  std::string data_address_;
  std::string admin_address_;
  std::string metrics_address_;
  std::string health_address_;  // empty: listeners.health is off

  absl::Mutex control_mu_;
  bool drain_requested_ ABSL_GUARDED_BY(control_mu_) = false;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_DAEMON_H_
