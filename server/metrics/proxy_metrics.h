// Prometheus metrics of the data path (docs/metrics.md lists them all).
//
// ProxyMetrics owns the metric families (registered once in a registry it
// shares with the exposer) and lives as long as the daemon. RouteStats is a
// bundle of references to one route's series, resolved when a config
// snapshot is built, so the hot path only touches atomics: no map lookups,
// no locks. A RouteStats holds its series (SeriesHold): they exist, from 0,
// while a snapshot whose configuration makes them possible is alive
// (series_plan.h says which). All methods are thread-safe.
#ifndef SLUICE_SERVER_METRICS_PROXY_METRICS_H_
#define SLUICE_SERVER_METRICS_PROXY_METRICS_H_

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/config/config.h"
#include "server/metrics/grpc_metrics.h"
#include "server/metrics/reason.h"
#include "server/metrics/series_lease.h"

namespace sluice {

// Directions of a stream, as the `direction` label says them.
enum Direction { kToUpstream = 0, kToClient = 1 };

// One route's series. Plain pointers into families owned by ProxyMetrics.
// The null-checked slots (rejected, limit_rejected, queue_wait) are null
// where the configuration makes the series impossible; the others then
// point at a counter no family exports (hold->sink()), so they are never
// null.
struct RouteStats {
  using ReasonCounters =
      std::array<prometheus::Counter*, static_cast<int>(Reason::kCount)>;
  std::array<prometheus::Counter*, kGrpcCodes> handled{};
  // Reasons not tied to a limit (limit=""); null for the limit reasons.
  ReasonCounters rejected{};
  // Parallel to the route's limits: the limit reasons (rate_limited,
  // concurrency_limited, queue_timeout, stream_rate) with limit=<name>.
  std::vector<ReasonCounters> limit_rejected;
  // Parallel to the route's limits: time in the concurrency queue (null
  // for limits without concurrency).
  std::vector<prometheus::Histogram*> queue_wait;
  // By Direction: seconds a stream's reads were held back.
  std::array<prometheus::Counter*, 2> paced_seconds{};
  std::array<prometheus::Counter*, 2> backpressure_seconds{};
  prometheus::Counter* msg_received = nullptr;  // client -> Sluice
  prometheus::Counter* msg_sent = nullptr;      // Sluice -> client
  prometheus::Counter* client_cancels = nullptr;
  prometheus::Gauge* open_calls = nullptr;
  prometheus::Histogram* handling_seconds = nullptr;
  // Keeps the series above while this RouteStats (or a copy) lives.
  std::shared_ptr<SeriesHold> hold;
};

class ProxyMetrics {
 public:
  explicit ProxyMetrics(std::shared_ptr<prometheus::Registry> registry);

  // Series for a route (null: calls no route matched, route="none"), at 0
  // if new: those the route's settings make possible (series_plan.h);
  // `overload_possible`: a memory ceiling is in effect (reason overloaded).
  RouteStats ForRoute(const RouteSettings* route,
                      bool overload_possible = false);
  GrpcMetrics& grpc() { return grpc_; }

  prometheus::Gauge& calls_in_flight() { return *calls_in_flight_; }
  // sluice_flood_connections_closed_total: client connections Sluice
  // closed because they went on resetting calls refused for early cancels.
  // Created (at 0) by the first call: the data plane's start when the
  // early-cancel defence is on.
  prometheus::Counter& flood_connections_closed() {
    return flood_connections_closed_.Add({});
  }
  // The counter of an access log's dropped lines: created (at 0) by the
  // first call, i.e. when a configuration first has an access_log, so a
  // daemon that never logs exports no such series.
  prometheus::Counter& access_log_dropped() {
    return access_log_dropped_.Add({});
  }
  const std::shared_ptr<prometheus::Registry>& registry() { return registry_; }
  // Shapes learned from upstreams' server reflection (method_shapes.h):
  // sluice_method_shape_fallbacks_total{upstream,method}, a method that
  // broke its declared shape at run time and takes the general path from
  // then on; sluice_upstream_reflected_methods{upstream}, the methods whose
  // shape the upstream's reflection last gave.
  prometheus::Family<prometheus::Counter>& shape_fallbacks() {
    return shape_fallbacks_;
  }
  prometheus::Family<prometheus::Gauge>& reflected_methods() {
    return reflected_methods_;
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<SeriesLeases> leases_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Family<prometheus::Counter>& msg_received_;
  prometheus::Family<prometheus::Counter>& msg_sent_;
  prometheus::Family<prometheus::Counter>& client_cancels_;
  prometheus::Family<prometheus::Gauge>& open_calls_;
  prometheus::Family<prometheus::Histogram>& handling_seconds_;
  prometheus::Family<prometheus::Histogram>& queue_wait_;
  prometheus::Family<prometheus::Counter>& paced_seconds_;
  prometheus::Family<prometheus::Counter>& backpressure_seconds_;
  GrpcMetrics grpc_;
  prometheus::Gauge* calls_in_flight_;
  prometheus::Family<prometheus::Counter>& flood_connections_closed_;
  prometheus::Family<prometheus::Counter>& access_log_dropped_;
  prometheus::Family<prometheus::Counter>& shape_fallbacks_;
  prometheus::Family<prometheus::Gauge>& reflected_methods_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_METRICS_PROXY_METRICS_H_
