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
#include "grpcpp/generic/generic_stub.h"
#include "server/config/config.h"

namespace sluice {

class UpstreamPool {
 public:
  // Creates the channels (connecting lazily, in the background).
  static absl::StatusOr<std::unique_ptr<UpstreamPool>> Create(
      const Config& config);

  // True if an upstream TLS file (CA, certificate, key) now reads
  // differently from when the pool was created, or cannot be read: a
  // reload then builds a new pool, so rotated files take effect at once
  // (gRPC's watcher would otherwise pick them up within a minute). Reads
  // files: call from the control thread, never from a worker.
  bool TlsFilesChanged() const;

  // A stub of upstream `index` (index into Config::upstreams()).
  grpc::GenericStub* Pick(int index);

  int size() const { return static_cast<int>(upstreams_.size()); }
  const std::string& name(int index) const { return upstreams_[index]->name; }
  // All channels of upstream `index` (for connectivity watching).
  const std::vector<std::shared_ptr<grpc::Channel>>& channels(int index) const {
    return upstreams_[index]->channels;
  }

 private:
  struct Upstream {
    std::string name;
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
    std::atomic<uint32_t> next{0};
  };
  std::vector<std::unique_ptr<Upstream>> upstreams_;
  // (path, contents) of every upstream TLS file, as read by Create.
  std::vector<std::pair<std::string, std::string>> tls_files_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_UPSTREAM_POOL_H_
