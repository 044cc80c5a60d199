// Channels to the upstreams, a few per upstream, picked round robin.
//
// Owned by the DataPlane; shared read-only by all workers (Pick() is
// lock-free). Each channel uses a local subchannel pool, so `channels: N`
// really opens N HTTP/2 connections per resolved address. DNS resolution
// and load balancing over addresses are gRPC's own (lb_policy).
#ifndef SLUICE_SERVER_PROXY_UPSTREAM_POOL_H_
#define SLUICE_SERVER_PROXY_UPSTREAM_POOL_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/generic/generic_stub.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "server/config/config.h"
#include "server/proxy/method_shapes.h"

namespace sluice {

class UpstreamPool {
 public:
  // Creates the channels (connecting lazily, in the background), and one
  // ShapeBoard per upstream with the metric families given (may be null).
  static absl::StatusOr<std::unique_ptr<UpstreamPool>> Create(
      const Config& config,
      prometheus::Family<prometheus::Counter>* shape_fallbacks = nullptr,
      prometheus::Family<prometheus::Gauge>* reflected_methods = nullptr);

  // True if an upstream TLS file (CA, certificate, key) now reads
  // differently from when the pool was created, or cannot be read: a
  // reload then builds a new pool, so rotated files take effect at once
  // (gRPC's watcher would otherwise pick them up within a minute). Reads
  // files: call from the control thread, never from a worker.
  bool TlsFilesChanged() const;

  // A channel of upstream `index` (index into Config::upstreams()) for a
  // new call: round robin, but a READY channel before one that is not.
  // `state` is the chosen channel's state: READY unless none of them is
  // (an IDLE one is asked to connect).
  struct Choice {
    grpc::GenericStub* stub;
    grpc::Channel* channel;
    grpc_connectivity_state state;
  };
  Choice Pick(int index);

  int size() const { return static_cast<int>(upstreams_.size()); }
  const std::string& name(int index) const { return upstreams_[index]->name; }
  // All channels of upstream `index` (for connectivity watching).
  const std::vector<std::shared_ptr<grpc::Channel>>& channels(int index) const {
    return upstreams_[index]->channels;
  }
  // Upstream `index`'s method shapes beyond the descriptor sets
  // (method_shapes.h): learned from its reflection, and fallbacks.
  const std::shared_ptr<ShapeBoard>& shapes(int index) const {
    return upstreams_[index]->shapes;
  }
  // Worker `worker`, at accept: the shape a call of `path` to upstream
  // `index` (-1: none) takes, `declared` by the descriptor sets or not.
  MethodShape ShapeFor(int index, int worker, std::string_view path,
                       MethodShape declared) const {
    if (index < 0 || index >= size()) return declared;
    return upstreams_[index]->shapes->ShapeFor(worker, path, declared);
  }

  // A call to upstream `index` lost its connection to a keepalive timeout
  // (the upstream is frozen, or the link to it): counted here for the
  // health watcher, which reads the count. Any thread.
  void NoteKeepaliveFailure(int index) {
    upstreams_[index]->keepalive_failures.fetch_add(1,
                                                    std::memory_order_relaxed);
  }
  const std::atomic<uint64_t>* keepalive_failures(int index) const {
    return &upstreams_[index]->keepalive_failures;
  }

 private:
  struct Upstream {
    std::string name;
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
    std::atomic<uint32_t> next{0};
    std::atomic<uint64_t> keepalive_failures{0};
    std::shared_ptr<ShapeBoard> shapes;
  };
  std::vector<std::unique_ptr<Upstream>> upstreams_;
  // (path, contents) of every upstream TLS file, as read by Create.
  std::vector<std::pair<std::string, std::string>> tls_files_;
};

// Whether the upstream itself sent `status`, the status of the call of
// `ctx` (its trailers arrived), rather than Sluice's own channel making it
// up (the upstream could not be reached, or its connection failed first).
bool SentByUpstream(const grpc::ClientContext& ctx, const grpc::Status& status);

// Whether `status`, one SentByUpstream() says Sluice's channel made, ended
// the call because the connection's keepalive ping went unanswered.
bool IsKeepaliveTimeout(const grpc::Status& status);

// Logs that upstream `name` (at `target`, with gRPC's `detail`) could not
// be reached: at most one line a second per process, so a flood of failing
// calls cannot flood the log. Any thread.
void LogUpstreamUnavailable(const std::string& name, const std::string& target,
                            const std::string& detail);

// "IDLE", "CONNECTING", "READY", "TRANSIENT_FAILURE" or "SHUTDOWN".
const char* ConnectivityName(grpc_connectivity_state state);

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_UPSTREAM_POOL_H_
