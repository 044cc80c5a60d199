// What the demo upstream saw of one incoming call: the method, the deadline
// and the client metadata. Tests read these to check what a proxy forwarded.
#ifndef SLUICE_SERVER_DEMO_CALL_RECORD_H_
#define SLUICE_SERVER_DEMO_CALL_RECORD_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"

namespace sluice::demo {

// A plain value copied out of a ServerContext when a call starts. The
// services keep the last one per method; readers get copies, so a
// CallRecord is owned by whoever holds it and used by one thread at a time.
struct CallRecord {
  // Short method name, e.g. "UnaryCall" or "Subscribe".
  std::string method;
  // When the handler ran, by the upstream's wall clock.
  absl::Time received = absl::InfinitePast();
  // The call's deadline as the server saw it; absl::InfiniteFuture() when
  // the client sent none.
  absl::Time deadline = absl::InfiniteFuture();
  // The transport peer, e.g. "ipv4:127.0.0.1:41234".
  std::string peer;
  // Every client metadata entry (keys lower case, binary values decoded),
  // in the order gRPC delivered them. Includes gRPC's own, e.g. user-agent.
  std::vector<std::pair<std::string, std::string>> metadata;

  // The time left when the call arrived; absl::InfiniteDuration() if none.
  absl::Duration budget() const { return deadline - received; }
  // All values for `key` (lower case), in order.
  std::vector<std::string> Values(absl::string_view key) const;
  // The first value for `key`, if any.
  std::optional<std::string> Value(absl::string_view key) const;
};

// Copies the method name, deadline, peer and client metadata of `context`.
CallRecord CaptureCall(absl::string_view method,
                       const grpc::ServerContextBase& context);

}  // namespace sluice::demo

#endif  // SLUICE_SERVER_DEMO_CALL_RECORD_H_
