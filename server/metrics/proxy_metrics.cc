#include "server/metrics/proxy_metrics.h"

#include <string>

#include "server/common/grpc_code_name.h"

namespace sluice {

bool IsLimitReason(Reason reason) {
  return reason == Reason::kRateLimited ||
         reason == Reason::kConcurrencyLimited ||
         reason == Reason::kQueueTimeout || reason == Reason::kStreamRate;
}

ProxyMetrics::ProxyMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)),
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
      grpc_(*registry_),
      calls_in_flight_(&prometheus::BuildGauge()
                            .Name("sluice_calls_in_flight")
                            .Help("Calls accepted on the data port and not "
                                  "yet freed.")
                            .Register(*registry_)
                            .Add({})),
      access_log_dropped_(&prometheus::BuildCounter()
                               .Name("sluice_access_log_dropped_total")
                               .Help("Access-log lines dropped because the "
                                     "log's queue was full.")
                               .Register(*registry_)
                               .Add({})) {}

RouteStats ProxyMetrics::ForRoute(const RouteSettings* settings) {
  const std::string route = settings == nullptr ? "none" : settings->name;
  RouteStats s;
  for (int code = 0; code < kGrpcCodes; ++code) {
    s.handled[code] =
        &handled_.Add({{"route", route}, {"grpc_code", GrpcCodeGoName(code)}});
  }
  for (int r = 0; r < static_cast<int>(Reason::kCount); ++r) {
    const auto reason = static_cast<Reason>(r);
    if (IsLimitReason(reason)) continue;
    s.rejected[r] =
        &rejected_.Add({{"route", route},
                        {"limit", ""},
                        {"reason", std::string(ReasonName(reason))}});
  }
  static const prometheus::Histogram::BucketBoundaries kQueueBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  if (settings != nullptr) {
    for (const LimitSettings& limit : settings->limits) {
      RouteStats::ReasonCounters counters{};
      for (int r = 0; r < static_cast<int>(Reason::kCount); ++r) {
        const auto reason = static_cast<Reason>(r);
        if (!IsLimitReason(reason)) continue;
        counters[r] =
            &rejected_.Add({{"route", route},
                            {"limit", limit.name},
                            {"reason", std::string(ReasonName(reason))}});
      }
      s.limit_rejected.push_back(counters);
      s.queue_wait.push_back(
          limit.concurrency_max > 0
              ? &queue_wait_.Add({{"route", route}, {"limit", limit.name}},
                                 kQueueBuckets)
              : nullptr);
    }
  }
  const char* const kDirections[2] = {"to_upstream", "to_client"};
  for (int d = 0; d < 2; ++d) {
    s.paced_seconds[d] =
        &paced_seconds_.Add({{"route", route}, {"direction", kDirections[d]}});
    s.backpressure_seconds[d] = &backpressure_seconds_.Add(
        {{"route", route}, {"direction", kDirections[d]}});
  }
  s.msg_received = &msg_received_.Add({{"route", route}});
  s.msg_sent = &msg_sent_.Add({{"route", route}});
  s.client_cancels = &client_cancels_.Add({{"route", route}});
  s.open_calls = &open_calls_.Add({{"route", route}});
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
      0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
  s.handling_seconds = &handling_seconds_.Add({{"route", route}}, kBuckets);
  return s;
}

}  // namespace sluice
