// The go-grpc-prometheus metrics, so existing gRPC dashboards work on
// Sluice: grpc_server_* for calls from clients, grpc_client_* (with an
// `upstream` label) for the calls Sluice makes to upstreams.
//
// GrpcMetrics owns the metric families and lives as long as the daemon.
// MethodSeries is one method's series on one side (server, or client
// toward one upstream). MethodTable maps method names to series for one
// config snapshot, is immutable once built, and holds its series (a
// SeriesHold): they exist, at 0 from the moment the table is built, while
// a table whose configuration makes them possible is alive, as
// go-grpc-prometheus' InitializeMetrics does for a server's methods.
// All of them are safe to use from any thread.
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
#include "server/config/config.h"
#include "server/metrics/series_lease.h"

namespace sluice {

inline constexpr int kGrpcCodes = 17;

// One side's series for one method. Owned by a MethodTable.
class MethodSeries {
 public:
  struct Families {
    prometheus::Family<prometheus::Counter>* started;
    prometheus::Family<prometheus::Counter>* handled;
    prometheus::Family<prometheus::Counter>* msg_received;
    prometheus::Family<prometheus::Counter>* msg_sent;
    prometheus::Family<prometheus::Histogram>* handling;
  };
  // `routed`: calls of the method can reach an upstream, so they can end
  // with any code and move messages. Otherwise they all end Unimplemented
  // (no route) before any message is read: only started, handled
  // {Unimplemented} and the histogram exist.
  MethodSeries(const Families& families,
               std::map<std::string, std::string> labels, bool routed,
               SeriesHold* hold);

  prometheus::Counter& started() { return *started_; }
  prometheus::Counter& handled(int code);
  prometheus::Counter& msg_received() { return Get(msg_received_, 0); }
  prometheus::Counter& msg_sent() { return Get(msg_sent_, 1); }
  prometheus::Histogram& handling_seconds() { return *handling_; }

 private:
  // A series the configuration made impossible is added on first use
  // (never, if the plan is right), so a count is never lost.
  prometheus::Counter& Get(std::atomic<prometheus::Counter*>& slot, int which);
  prometheus::Counter* Add(prometheus::Family<prometheus::Counter>& family,
                           int code);

  const Families families_;
  const std::map<std::string, std::string> labels_;
  SeriesHold* const hold_;
  prometheus::Counter* started_;
  std::array<std::atomic<prometheus::Counter*>, kGrpcCodes> handled_{};
  std::atomic<prometheus::Counter*> msg_received_{nullptr};
  std::atomic<prometheus::Counter*> msg_sent_{nullptr};
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
  explicit GrpcMetrics(std::shared_ptr<prometheus::Registry> registry);

 private:
  friend class MethodTable;
  static MethodSeries::Families Register(prometheus::Registry& registry,
                                         const std::string& side);

  const std::shared_ptr<SeriesLeases> leases_;
  const MethodSeries::Families server_;
  const MethodSeries::Families client_;
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
  // `known`: the config's methods (Config::methods()), each with the
  // upstream of the route that takes it. Every other method counts as
  // "other": on the server side always (a call may name anything), toward
  // an upstream only when a prefix route uses it (exact routes' methods
  // are all known).
  MethodTable(GrpcMetrics& metrics, const std::vector<Known>& known,
              const Config& config);

  // `upstream`: the index of the upstream of the route that took the call,
  // or -1 when no route did (used for methods not in the table).
  CallSeries Find(std::string_view path, int upstream) const;

 private:
  std::unique_ptr<SeriesHold> hold_;  // before the series it holds
  std::vector<std::unique_ptr<MethodSeries>> owned_;
  absl::flat_hash_map<std::string, CallSeries> known_;
  MethodSeries* other_server_ = nullptr;
  std::vector<MethodSeries*> other_client_;  // by upstream index; may be null
};

}  // namespace sluice

#endif  // SLUICE_SERVER_METRICS_GRPC_METRICS_H_
