#include "server/metrics/grpc_metrics.h"

#include <set>
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

constexpr int kUnknown = 2;         // grpc::StatusCode::UNKNOWN
constexpr int kUnimplemented = 12;  // grpc::StatusCode::UNIMPLEMENTED

}  // namespace

MethodSeries::MethodSeries(const Families& families,
                           std::map<std::string, std::string> labels,
                           bool routed, SeriesHold* hold)
    : families_(families),
      labels_(std::move(labels)),
      hold_(hold),
      started_(hold->Add(*families.started, labels_)),
      handling_(hold->Add(*families.handling, labels_, Buckets())) {
  for (int code = 0; code < kGrpcCodes; ++code) {
    if (routed || code == kUnimplemented)
      handled_[code] = Add(*families_.handled, code);
  }
  if (routed) {
    msg_received_ = hold->Add(*families_.msg_received, labels_);
    msg_sent_ = hold->Add(*families_.msg_sent, labels_);
  }
}

prometheus::Counter* MethodSeries::Add(
    prometheus::Family<prometheus::Counter>& family, int code) {
  if (code < 0) return hold_->Add(family, labels_);
  auto labels = labels_;
  labels["grpc_code"] = GrpcCodeGoName(code);
  return hold_->Add(family, labels);
}

prometheus::Counter& MethodSeries::handled(int code) {
  if (code < 0 || code >= kGrpcCodes) code = kUnknown;
  prometheus::Counter* c = handled_[code].load(std::memory_order_acquire);
  if (c == nullptr) {
    // Family::Add is thread-safe and returns the existing series for the
    // same labels, so two threads racing here store the same pointer.
    c = Add(*families_.handled, code);
    handled_[code].store(c, std::memory_order_release);
  }
  return *c;
}

prometheus::Counter& MethodSeries::Get(std::atomic<prometheus::Counter*>& slot,
                                       int which) {
  prometheus::Counter* c = slot.load(std::memory_order_acquire);
  if (c == nullptr) {
    c = Add(which == 0 ? *families_.msg_received : *families_.msg_sent, -1);
    slot.store(c, std::memory_order_release);
  }
  return *c;
}

MethodSeries::Families GrpcMetrics::Register(prometheus::Registry& registry,
                                             const std::string& side) {
  const std::string prefix = "grpc_" + side + "_";
  const std::string who = side == "server" ? "from clients, on the data port"
                                           : "from Sluice to upstreams";
  MethodSeries::Families f;
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

GrpcMetrics::GrpcMetrics(std::shared_ptr<prometheus::Registry> registry)
    : leases_(std::make_shared<SeriesLeases>(registry)),
      server_(Register(*registry, "server")),
      client_(Register(*registry, "client")) {}

MethodTable::MethodTable(GrpcMetrics& metrics, const std::vector<Known>& known,
                         const Config& config)
    : hold_(std::make_unique<SeriesHold>(metrics.leases_)) {
  const auto& upstreams = config.upstreams();
  auto server = [&](const MethodLabels& m, bool routed) {
    owned_.push_back(std::make_unique<MethodSeries>(
        metrics.server_,
        std::map<std::string, std::string>{{"grpc_type", m.type},
                                           {"grpc_service", m.service},
                                           {"grpc_method", m.method}},
        routed, hold_.get()));
    return owned_.back().get();
  };
  auto client = [&](const MethodLabels& m, int upstream) {
    owned_.push_back(std::make_unique<MethodSeries>(
        metrics.client_,
        std::map<std::string, std::string>{
            {"grpc_type", m.type},
            {"grpc_service", m.service},
            {"grpc_method", m.method},
            {"upstream", upstreams[upstream].name}},
        /*routed=*/true, hold_.get()));
    return owned_.back().get();
  };
  for (const Known& k : known) {
    CallSeries series;
    series.unary = k.labels.type == "unary";
    series.single_request = series.unary || k.labels.type == "server_stream";
    const bool routed =
        k.upstream >= 0 && k.upstream < static_cast<int>(upstreams.size());
    series.server = server(k.labels, routed);
    if (routed) series.client = client(k.labels, k.upstream);
    known_.emplace(k.path, series);
  }
  // A method not in `known` can only be taken by a prefix route: an exact
  // route's method is always known.
  std::set<int> other_upstreams;
  for (const RouteSettings& route : config.routes()) {
    if (!route.exact) other_upstreams.insert(route.upstream_index);
  }
  const MethodLabels other{"other", "other", "unknown"};
  other_server_ = server(other, !other_upstreams.empty());
  other_client_.assign(upstreams.size(), nullptr);
  for (int u : other_upstreams) {
    if (u >= 0 && u < static_cast<int>(upstreams.size())) {
      other_client_[u] = client(other, u);
    }
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
