// Everything a call needs from the configuration, frozen at accept time.
//
// Built by the DataPlane for each config (startup and every reload) and
// shared read-only by all workers through shared_ptr; a call keeps the
// snapshot it started with until it is freed, so a reload never changes a
// call in flight.
#ifndef SLUICE_SERVER_PROXY_PROXY_SNAPSHOT_H_
#define SLUICE_SERVER_PROXY_PROXY_SNAPSHOT_H_

#include <memory>
#include <vector>

#include "server/config/config.h"
#include "server/limits/limit_state.h"
#include "server/log/access_log.h"
#include "server/metrics/grpc_metrics.h"
#include "server/metrics/proxy_metrics.h"
#include "server/proxy/memory_guard.h"
#include "server/proxy/router.h"
#include "server/proxy/upstream_pool.h"

namespace sluice {

struct ProxySnapshot {
  ProxySnapshot(std::shared_ptr<const Config> c,
                std::shared_ptr<UpstreamPool> p,
                std::vector<std::vector<std::shared_ptr<LimitState>>> l,
                ProxyMetrics& metrics)
      : config(std::move(c)),
        router(*config),
        pool(std::move(p)),
        limits(std::move(l)),
        methods(metrics.grpc(), KnownMethods(*config, router), *config),
        memory_limit(EffectiveMemoryLimit(config->max_memory_bytes())) {
    for (const RouteSettings& r : config->routes()) {
      route_stats.push_back(metrics.ForRoute(&r, memory_limit > 0));
    }
    no_route_stats = metrics.ForRoute(nullptr);
  }

  std::shared_ptr<const Config> config;
  Router router;
  std::shared_ptr<UpstreamPool> pool;
  // Null when the config has no access_log section.
  std::shared_ptr<AccessLog> access_log;
  // Live limit state, parallel to config->routes()[i].limits.
  std::vector<std::vector<std::shared_ptr<LimitState>>> limits;
  std::vector<RouteStats> route_stats;  // parallel to config->routes()
  RouteStats no_route_stats;
  // go-grpc-prometheus series by method.
  MethodTable methods;
  // The memory ceiling in effect (proxy.max_memory_bytes resolved; <= 0:
  // none), for the DataPlane's MemoryGuard.
  int64_t memory_limit;

 private:
  static std::vector<MethodTable::Known> KnownMethods(const Config& c,
                                                      const Router& router) {
    std::vector<MethodTable::Known> known;
    for (const MethodInfo& m : c.methods()) {
      const int route = router.Match(m.path);
      known.push_back({m.path,
                       {m.service, m.method, m.type},
                       route < 0 ? -1 : c.routes()[route].upstream_index});
    }
    return known;
  }
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_PROXY_SNAPSHOT_H_
