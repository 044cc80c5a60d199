// Which series a configuration makes possible: the one place that decides
// it, for ProxyMetrics (rejections, queue wait, paced time) and the
// LimitCollector (decisions, limiter gauges). A series exists exactly when
// its plan says so, from start-up (or from the reload that makes it
// possible) at 0; docs/metrics.md, "Which series exist", is this file in
// words. Pure functions of the validated config; any thread.
//
// The conditions follow the data path (server/proxy/proxy_call.cc):
// - a rate is charged per call: admitted, or rejected (rate_limited), or
//   with dry_run counted as dry_run_rejected and let through;
// - a concurrency limit admits, queues (a queue the admin API may enlarge
//   at run time, so even `queue: 0` can queue), rejects when the queue is
//   full (concurrency_limited) or a waiter's time is up (queue_timeout);
//   with dry_run it only tries a permit: admitted or dry_run_rejected;
// - a message limit in `mode: reject` ends the stream (stream_rate,
//   rejected); in `mode: pace` it only holds reads back (paced time), and
//   counts no decision; with dry_run neither: dry_run_rejected only.
#ifndef SLUICE_SERVER_METRICS_SERIES_PLAN_H_
#define SLUICE_SERVER_METRICS_SERIES_PLAN_H_

#include <vector>

#include "server/config/config.h"

namespace sluice {

struct LimitSeriesPlan {
  // sluice_rejections_total{route, limit, reason}
  bool rate_limited = false;
  bool concurrency_limited = false;
  bool queue_timeout = false;
  bool stream_rate = false;
  // sluice_limit_decisions_total{route, limit, decision}
  bool admitted = false;
  bool rejected = false;
  bool dry_run_rejected = false;
  bool queued = false;
  // sluice_limit_permits_in_use, sluice_limit_queue_depth,
  // sluice_queue_wait_seconds, sluice_limit_keys,
  // sluice_limit_fallback_active {route, limit}
  bool permits_in_use = false;
  bool queue_depth = false;
  bool queue_wait = false;
  bool keys = false;
  bool fallback_active = false;
  // sluice_limit_queue_keys, sluice_limit_key_queue_full_total (a
  // concurrency part with a key: fair queuing)
  bool queue_keys = false;
  // sluice_adaptive_limit, sluice_adaptive_limit_gradient,
  // sluice_adaptive_limit_rtt_seconds{window},
  // sluice_adaptive_limit_samples_total{dropped},
  // sluice_adaptive_limit_probes_total (concurrency.adaptive)
  bool adaptive = false;
  // Whether the limit holds reads back (sluice_stream_paced_seconds_total
  // of its route, by direction).
  bool paces_to_client = false;
  bool paces_to_upstream = false;
};

LimitSeriesPlan PlanLimitSeries(const LimitSettings& limit);

struct RouteSeriesPlan {
  // sluice_rejections_total{route, limit="", reason="idle_timeout"}
  // (deadline_budget, draining and header_too_large are possible on every
  // route, no_route on none).
  bool idle_timeout = false;
  // sluice_stream_paced_seconds_total{route, direction}
  bool paced_to_client = false;
  bool paced_to_upstream = false;
  std::vector<LimitSeriesPlan> limits;  // parallel to route.limits
};

RouteSeriesPlan PlanRouteSeries(const RouteSettings& route);

}  // namespace sluice

#endif  // SLUICE_SERVER_METRICS_SERIES_PLAN_H_
