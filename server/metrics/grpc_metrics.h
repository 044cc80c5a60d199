// The go-grpc-prometheus metrics, so existing gRPC dashboards work on
// Sluice: grpc_server_* for calls from clients, grpc_client_* (with an
// `upstream` label) for the calls Sluice makes to upstreams.
//
// GrpcMetrics owns the metric families and lives as long as the daemon.
// MethodSeries is one method's series on one side (server, or client
// toward one upstream); its pointers stay valid as long as GrpcMetrics.
// MethodTable maps method names to series for one config snapshot and is
// immutable once built. All of them are safe to use from any thread.
#ifndef SLUICE_SERVER_METRICS_GRPC_METRICS_H_
#define SLUICE_SERVER_METRICS_GRPC_METRICS_H_

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace sluice {

inline constexpr int kGrpcCodes = 17;

// One side's series for one method.
class MethodSeries {
 public:
  MethodSeries(prometheus::Family<prometheus::Counter>& started,
               prometheus::Family<prometheus::Counter>& handled,
               prometheus::Family<prometheus::Counter>& msg_received,
               prometheus::Family<prometheus::Counter>& msg_sent,
               prometheus::Family<prometheus::Histogram>& handling,
               std::map<std::string, std::string> labels);

  prometheus::Counter& started() { return *started_; }
  // Created on first use, so codes never seen add no series.
  prometheus::Counter& handled(int code);
  prometheus::Counter& msg_received() { return *msg_received_; }
  prometheus::Counter& msg_sent() { return *msg_sent_; }
  prometheus::Histogram& handling_seconds() { return *handling_; }

 private:
  prometheus::Family<prometheus::Counter>& handled_family_;
  const std::map<std::string, std::string> labels_;
  prometheus::Counter* started_;
  std::array<std::atomic<prometheus::Counter*>, kGrpcCodes> handled_{};
  prometheus::Counter* msg_received_;
  prometheus::Counter* msg_sent_;
  prometheus::Histogram* handling_;
};

// The method a call names, as labels: known methods keep theirs, any
// other collapses to service "other", method "other", type "unknown".
struct MethodLabels {
  std::string service;
  std::string method;
  std::string type;
};

class GrpcMetrics {
 public:
  explicit GrpcMetrics(prometheus::Registry& registry);

  std::unique_ptr<MethodSeries> Server(const MethodLabels& m);
  std::unique_ptr<MethodSeries> Client(const MethodLabels& m,
                                       const std::string& upstream);

 private:
  struct Families {
    prometheus::Family<prometheus::Counter>* started;
    prometheus::Family<prometheus::Counter>* handled;
    prometheus::Family<prometheus::Counter>* msg_received;
    prometheus::Family<prometheus::Counter>* msg_sent;
    prometheus::Family<prometheus::Histogram>* handling;
  };
  static Families Register(prometheus::Registry& registry,
                           const std::string& side);
  std::unique_ptr<MethodSeries> Make(const Families& f,
                                     std::map<std::string, std::string> l);

  Families server_;
  Families client_;
};

// A call's two sides; `client` is null when the call has no upstream.
// The shape flags come from the method's descriptor (false when unknown):
// the data path uses them to send fewer, fuller batches.
struct CallSeries {
  MethodSeries* server = nullptr;
  MethodSeries* client = nullptr;
  bool unary = false;           // one request, one response
  bool single_request = false;  // one request (unary or server_stream)
};

// Method name -> series, for one config snapshot.
class MethodTable {
 public:
  struct Known {
    std::string path;  // "/pkg.Service/Method"
    MethodLabels labels;
    int upstream = -1;  // index of the upstream its route uses, or -1
  };
  // `upstreams`: names by index. Every method not in `known` counts as
  // "other", toward the upstream of the route that took it.
  MethodTable(GrpcMetrics& metrics, const std::vector<Known>& known,
              const std::vector<std::string>& upstreams);

  // `upstream`: the index of the upstream of the route that took the call,
  // or -1 when no route did (used for methods not in the table).
  CallSeries Find(std::string_view path, int upstream) const;

 private:
  std::vector<std::unique_ptr<MethodSeries>> owned_;
  absl::flat_hash_map<std::string, CallSeries> known_;
  MethodSeries* other_server_ = nullptr;
  std::vector<MethodSeries*> other_client_;  // by upstream index
};

}  // namespace sluice

#endif  // SLUICE_SERVER_METRICS_GRPC_METRICS_H_
