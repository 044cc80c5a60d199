#include "server/metrics/proxy_metrics.h"

#include <string>

#include "server/common/grpc_code_name.h"
#include "server/metrics/series_plan.h"

namespace sluice {

ProxyMetrics::ProxyMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)),
      leases_(std::make_shared<SeriesLeases>(registry_)),
      handled_(prometheus::BuildCounter()
                   .Name("sluice_calls_handled_total")
                   .Help("Calls finished on the data port, by route and gRPC "
                         "status code sent to the client.")
                   .Register(*registry_)),
      rejected_(prometheus::BuildCounter()
                    .Name("sluice_rejections_total")
                    .Help("Calls Sluice itself ended, by route, limit "
                          "(\"\" when no limit is involved) and "
                          "sluice-reason.")
                    .Register(*registry_)),
      msg_received_(prometheus::BuildCounter()
                        .Name("sluice_msg_received_total")
                        .Help("Messages received from clients, by route.")
                        .Register(*registry_)),
      msg_sent_(prometheus::BuildCounter()
                    .Name("sluice_msg_sent_total")
                    .Help("Messages sent to clients, by route.")
                    .Register(*registry_)),
      client_cancels_(prometheus::BuildCounter()
                          .Name("sluice_client_cancels_total")
                          .Help("Calls cancelled by the client (or its "
                                "disconnect); the upstream call was "
                                "cancelled too.")
                          .Register(*registry_)),
      open_calls_(prometheus::BuildGauge()
                      .Name("sluice_route_open_calls")
                      .Help("Calls open on the data port, by route.")
                      .Register(*registry_)),
      handling_seconds_(prometheus::BuildHistogram()
                            .Name("sluice_call_duration_seconds")
                            .Help("Call duration from accept to finish, by "
                                  "route.")
                            .Register(*registry_)),
      queue_wait_(prometheus::BuildHistogram()
                      .Name("sluice_queue_wait_seconds")
                      .Help("Time calls waited in a concurrency limit's "
                            "queue (granted, timed out or cancelled), by "
                            "route and limit.")
                      .Register(*registry_)),
      paced_seconds_(prometheus::BuildCounter()
                         .Name("sluice_stream_paced_seconds_total")
                         .Help("Time streams' reads were held back by a "
                               "`messages` limit in pace mode, by route and "
                               "direction (to_upstream, to_client).")
                         .Register(*registry_)),
      backpressure_seconds_(
          prometheus::BuildCounter()
              .Name("sluice_stream_backpressure_seconds_total")
              .Help("Time streams' reads were held back because the "
                    "receiving side had not taken the messages already "
                    "in hand (stream_window full), by route and direction.")
              .Register(*registry_)),
      grpc_(registry_),
      calls_in_flight_(&prometheus::BuildGauge()
                            .Name("sluice_calls_in_flight")
                            .Help("Calls accepted on the data port and not "
                                  "yet freed.")
                            .Register(*registry_)
                            .Add({})),
      flood_connections_closed_(
          prometheus::BuildCounter()
              .Name("sluice_flood_connections_closed_total")
              .Help("Client connections closed by Sluice because they went "
                    "on resetting calls that were refused for early cancels "
                    "(a rapid-reset flood).")
              .Register(*registry_)),
      access_log_dropped_(prometheus::BuildCounter()
                              .Name("sluice_access_log_dropped_total")
                              .Help("Access-log lines dropped because the "
                                    "log's queue was full.")
                              .Register(*registry_)),
      shape_fallbacks_(
          prometheus::BuildCounter()
              .Name("sluice_method_shape_fallbacks_total")
              .Help("Methods whose calls broke the shape their descriptor "
                    "or the upstream's reflection declares (a second "
                    "request or response on a one-message side): their "
                    "calls take the general path from then on.")
              .Register(*registry_)),
      reflected_methods_(
          prometheus::BuildGauge()
              .Name("sluice_upstream_reflected_methods")
              .Help("Methods whose shape the upstream's server reflection "
                    "last gave (0: none, or reflection off or not served).")
              .Register(*registry_)) {}

RouteStats ProxyMetrics::ForRoute(const RouteSettings* settings,
                                  bool overload_possible) {
  const std::string route = settings == nullptr ? "none" : settings->name;
  RouteStats s;
  s.hold = std::make_shared<SeriesHold>(leases_);
  SeriesHold& hold = *s.hold;
  prometheus::Counter* const sink = &hold.sink();
  const RouteSeriesPlan plan =
      settings == nullptr ? RouteSeriesPlan() : PlanRouteSeries(*settings);
  // A call no route took always ends UNIMPLEMENTED, right at accept; a
  // routed one can end with any code (the upstream's own).
  constexpr int kUnimplemented = 12;
  for (int code = 0; code < kGrpcCodes; ++code) {
    s.handled[code] =
        settings != nullptr || code == kUnimplemented
            ? hold.Add(handled_,
                       {{"route", route}, {"grpc_code", GrpcCodeGoName(code)}})
            : sink;
  }
  auto reason_series = [&](const std::string& limit, Reason reason) {
    return hold.Add(rejected_, {{"route", route},
                                {"limit", limit},
                                {"reason", std::string(ReasonName(reason))}});
  };
  if (settings == nullptr) {
    s.rejected[static_cast<int>(Reason::kNoRoute)] =
        reason_series("", Reason::kNoRoute);
  } else {
    // header_too_large: the edge check runs on every routed call;
    // upstream_unavailable: every route has an upstream that can be down;
    // early_cancels: any client may flood.
    for (Reason reason :
         {Reason::kDeadlineBudget, Reason::kDraining, Reason::kHeaderTooLarge,
          Reason::kUpstreamUnavailable, Reason::kEarlyCancels}) {
      s.rejected[static_cast<int>(reason)] = reason_series("", reason);
    }
    if (plan.idle_timeout) {
      s.rejected[static_cast<int>(Reason::kIdleTimeout)] =
          reason_series("", Reason::kIdleTimeout);
    }
    if (overload_possible) {
      s.rejected[static_cast<int>(Reason::kOverloaded)] =
          reason_series("", Reason::kOverloaded);
    }
  }
  static const prometheus::Histogram::BucketBoundaries kQueueBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  if (settings != nullptr) {
    for (size_t i = 0; i < settings->limits.size(); ++i) {
      const LimitSettings& limit = settings->limits[i];
      const LimitSeriesPlan& lp = plan.limits[i];
      RouteStats::ReasonCounters counters{};
      const std::pair<Reason, bool> reasons[] = {
          {Reason::kRateLimited, lp.rate_limited},
          {Reason::kConcurrencyLimited, lp.concurrency_limited},
          {Reason::kQueueTimeout, lp.queue_timeout},
          {Reason::kStreamRate, lp.stream_rate}};
      for (const auto& [reason, possible] : reasons) {
        if (possible) {
          counters[static_cast<int>(reason)] =
              reason_series(limit.name, reason);
        }
      }
      s.limit_rejected.push_back(counters);
      s.queue_wait.push_back(
          lp.queue_wait
              ? hold.Add(queue_wait_, {{"route", route}, {"limit", limit.name}},
                         kQueueBuckets)
              : nullptr);
    }
  }
  const char* const kDirections[2] = {"to_upstream", "to_client"};
  const bool paced[2] = {plan.paced_to_upstream, plan.paced_to_client};
  for (int d = 0; d < 2; ++d) {
    const prometheus::Labels labels = {{"route", route},
                                       {"direction", kDirections[d]}};
    s.paced_seconds[d] = paced[d] ? hold.Add(paced_seconds_, labels) : sink;
    // Any routed call has two pumps a slow side can hold back.
    s.backpressure_seconds[d] =
        settings != nullptr ? hold.Add(backpressure_seconds_, labels) : sink;
  }
  // A call no route took ends before reading or sending any message, and
  // before the client could cancel it.
  if (settings != nullptr) {
    s.msg_received = hold.Add(msg_received_, {{"route", route}});
    s.msg_sent = hold.Add(msg_sent_, {{"route", route}});
    s.client_cancels = hold.Add(client_cancels_, {{"route", route}});
  } else {
    s.msg_received = s.msg_sent = s.client_cancels = sink;
  }
  s.open_calls = hold.Add(open_calls_, {{"route", route}});
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
      0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
  s.handling_seconds =
      hold.Add(handling_seconds_, {{"route", route}}, kBuckets);
  return s;
}

}  // namespace sluice
