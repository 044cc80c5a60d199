#include "server/metrics/proxy_metrics.h"

#include <string>

namespace sluice {
namespace {

const char* const kCodeNames[kGrpcCodeCount] = {
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
};

}  // namespace

ProxyMetrics::ProxyMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)),
      handled_(prometheus::BuildCounter()
                   .Name("sluice_calls_handled_total")
                   .Help("Calls finished on the data port, by route and gRPC "
                         "status code sent to the client.")
                   .Register(*registry_)),
      rejected_(prometheus::BuildCounter()
                    .Name("sluice_rejections_total")
                    .Help("Calls Sluice itself ended, by route and "
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

RouteStats ProxyMetrics::ForRoute(const std::string& route_name) {
  const std::string route = route_name.empty() ? "none" : route_name;
  RouteStats s;
  for (int code = 0; code < kGrpcCodeCount; ++code) {
    s.handled[code] =
        &handled_.Add({{"route", route}, {"grpc_code", kCodeNames[code]}});
  }
  for (int r = 0; r < static_cast<int>(Reason::kCount); ++r) {
    s.rejected[r] = &rejected_.Add(
        {{"route", route},
         {"reason", std::string(ReasonName(static_cast<Reason>(r)))}});
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
