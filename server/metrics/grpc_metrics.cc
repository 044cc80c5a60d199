#include "server/metrics/grpc_metrics.h"

#include <utility>

#include "server/common/grpc_code_name.h"

namespace sluice {
namespace {

// go-grpc-prometheus' default buckets (prometheus.DefBuckets), so
// dashboards' histogram_quantile queries give the same resolution.
const prometheus::Histogram::BucketBoundaries& Buckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return kBuckets;
}

}  // namespace

MethodSeries::MethodSeries(
    prometheus::Family<prometheus::Counter>& started,
    prometheus::Family<prometheus::Counter>& handled,
    prometheus::Family<prometheus::Counter>& msg_received,
    prometheus::Family<prometheus::Counter>& msg_sent,
    prometheus::Family<prometheus::Histogram>& handling,
    std::map<std::string, std::string> labels)
    : handled_family_(handled),
      labels_(std::move(labels)),
      started_(&started.Add(labels_)),
      msg_received_(&msg_received.Add(labels_)),
      msg_sent_(&msg_sent.Add(labels_)),
      handling_(&handling.Add(labels_, Buckets())) {}

prometheus::Counter& MethodSeries::handled(int code) {
  if (code < 0 || code >= kGrpcCodes) code = 2;  // UNKNOWN
  prometheus::Counter* c = handled_[code].load(std::memory_order_acquire);
  if (c == nullptr) {
    // Family::Add is thread-safe and returns the existing series for the
    // same labels, so two threads racing here store the same pointer.
    auto labels = labels_;
    labels["grpc_code"] = GrpcCodeGoName(code);
    c = &handled_family_.Add(labels);
    handled_[code].store(c, std::memory_order_release);
  }
  return *c;
}

GrpcMetrics::Families GrpcMetrics::Register(prometheus::Registry& registry,
                                            const std::string& side) {
  const std::string prefix = "grpc_" + side + "_";
  const std::string who = side == "server" ? "from clients, on the data port"
                                           : "from Sluice to upstreams";
  Families f;
  f.started = &prometheus::BuildCounter()
                   .Name(prefix + "started_total")
                   .Help("Total number of RPCs started " + who + ".")
                   .Register(registry);
  f.handled = &prometheus::BuildCounter()
                   .Name(prefix + "handled_total")
                   .Help("Total number of RPCs completed " + who +
                         ", regardless of success or failure.")
                   .Register(registry);
  f.msg_received =
      &prometheus::BuildCounter()
           .Name(prefix + "msg_received_total")
           .Help("Total number of stream messages received " + who + ".")
           .Register(registry);
  f.msg_sent = &prometheus::BuildCounter()
                    .Name(prefix + "msg_sent_total")
                    .Help("Total number of stream messages sent " + who + ".")
                    .Register(registry);
  f.handling =
      &prometheus::BuildHistogram()
           .Name(prefix + "handling_seconds")
           .Help("Histogram of response latency (seconds) of RPCs " + who + ".")
           .Register(registry);
  return f;
}

GrpcMetrics::GrpcMetrics(prometheus::Registry& registry)
    : server_(Register(registry, "server")),
      client_(Register(registry, "client")) {}

std::unique_ptr<MethodSeries> GrpcMetrics::Make(
    const Families& f, std::map<std::string, std::string> labels) {
  return std::make_unique<MethodSeries>(*f.started, *f.handled, *f.msg_received,
                                        *f.msg_sent, *f.handling,
                                        std::move(labels));
}

std::unique_ptr<MethodSeries> GrpcMetrics::Server(const MethodLabels& m) {
  return Make(server_, {{"grpc_type", m.type},
                        {"grpc_service", m.service},
                        {"grpc_method", m.method}});
}

std::unique_ptr<MethodSeries> GrpcMetrics::Client(const MethodLabels& m,
                                                  const std::string& upstream) {
  return Make(client_, {{"grpc_type", m.type},
                        {"grpc_service", m.service},
                        {"grpc_method", m.method},
                        {"upstream", upstream}});
}

MethodTable::MethodTable(GrpcMetrics& metrics, const std::vector<Known>& known,
                         const std::vector<std::string>& upstreams) {
  auto keep = [this](std::unique_ptr<MethodSeries> s) {
    owned_.push_back(std::move(s));
    return owned_.back().get();
  };
  for (const Known& k : known) {
    CallSeries series;
    series.unary = k.labels.type == "unary";
    series.single_request = series.unary || k.labels.type == "server_stream";
    series.server = keep(metrics.Server(k.labels));
    if (k.upstream >= 0 && k.upstream < static_cast<int>(upstreams.size())) {
      series.client = keep(metrics.Client(k.labels, upstreams[k.upstream]));
    }
    known_.emplace(k.path, series);
  }
  const MethodLabels other{"other", "other", "unknown"};
  other_server_ = keep(metrics.Server(other));
  for (const std::string& name : upstreams) {
    other_client_.push_back(keep(metrics.Client(other, name)));
  }
}

CallSeries MethodTable::Find(std::string_view path, int upstream) const {
  if (auto it = known_.find(absl::string_view(path.data(), path.size()));
      it != known_.end()) {
    return it->second;
  }
  CallSeries s;
  s.server = other_server_;
  if (upstream >= 0 && upstream < static_cast<int>(other_client_.size())) {
    s.client = other_client_[upstream];
  }
  return s;
}

}  // namespace sluice
