#include "server/metrics/series_plan.h"

namespace sluice {

LimitSeriesPlan PlanLimitSeries(const LimitSettings& limit) {
  const bool rate = limit.rate_count > 0;
  const bool concurrency = limit.concurrency_max > 0;
  const bool messages = limit.messages_per_second > 0;
  const bool pace = messages && !limit.messages_reject;
  const bool dry = limit.dry_run;
  LimitSeriesPlan p;
  p.rate_limited = rate && !dry;
  p.concurrency_limited = concurrency && !dry;
  p.queue_timeout = concurrency && !dry;
  p.stream_rate = messages && limit.messages_reject && !dry;
  p.admitted = rate || concurrency;
  p.rejected = p.rate_limited || p.concurrency_limited || p.stream_rate;
  p.dry_run_rejected = dry;  // every limit has a rate, concurrency or messages
  p.queued = concurrency && !dry;
  p.permits_in_use = concurrency;
  p.queue_depth = concurrency && !dry;
  p.queue_wait = concurrency && !dry;
  // A global limit's buckets are in Redis (its local fallback keeps its own);
  // the limit's local keyed buckets are never used.
  p.keys = rate && !limit.key.empty() && !limit.global;
  p.fallback_active = rate && limit.global;
  // A dry-run limit never queues, so it has no per-key queues to show.
  p.queue_keys = concurrency && !limit.concurrency_key.empty() && !dry;
  p.adaptive = concurrency && limit.concurrency_adaptive;
  p.paces_to_client = pace && !dry;
  p.paces_to_upstream = pace && !dry && limit.messages_client_to_upstream;
  return p;
}

RouteSeriesPlan PlanRouteSeries(const RouteSettings& route) {
  RouteSeriesPlan p;
  p.idle_timeout = route.deadline.stream_idle_timeout > absl::ZeroDuration();
  for (const LimitSettings& limit : route.limits) {
    p.limits.push_back(PlanLimitSeries(limit));
    p.paced_to_client |= p.limits.back().paces_to_client;
    p.paced_to_upstream |= p.limits.back().paces_to_upstream;
  }
  return p;
}

}  // namespace sluice
