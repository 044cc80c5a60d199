// Closes one client's TCP connection to the data port from outside gRPC.
//
// gRPC 1.51's C++ API has no way to close a server connection, yet a
// connection that floods Sluice with rapid resets (HEADERS + RST_STREAM,
// CVE-2023-44487) must be closed: gRPC creates a call for every reset
// stream, so the memory grows with the flood until the client stops
// (docs/security.md). The one handle Sluice has is the call's peer string
// ("ipv4:10.0.0.7:41234"): it names the connection's remote address and
// port, which together with the data port's local port name exactly one
// TCP socket of this process. ConnectionCloser finds that socket among the
// process's descriptors and shuts it down (both directions); gRPC then reads
// end-of-stream, closes the connection and fails its streams, as if the
// client had gone. It never closes a descriptor: gRPC still owns it. Each
// candidate is examined through a private duplicate (dup), so a descriptor
// that gRPC closes and the kernel reuses meanwhile is never mistaken for
// the one sought. Works for TLS and plain-text ports alike (it acts below
// TLS).
//
// Finding the socket means reading /proc/self/fd and asking each socket
// for its addresses (~2-3 us a descriptor). One scan records every
// connection of the data port, so the next flooding connections are found
// in that table; a connection not in it triggers a new scan, at most one
// per 100 ms, so even an attacker who opens a new flooding connection
// each time cannot make Sluice spend more than a few percent of a core
// searching (a connection not closed then is closed on its next refused
// reset).
//
// Threading: Close may be called from any thread; one caller scans at a
// time (the others return at once and retry on a later reset).
#ifndef SLUICE_SERVER_PROXY_CONNECTION_CLOSER_H_
#define SLUICE_SERVER_PROXY_CONNECTION_CLOSER_H_

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace sluice {

// A TCP endpoint parsed from gRPC's peer string ("ipv4:A:P",
// "ipv6:[A]:P"); nullopt for anything else (unix sockets, garbage).
struct TcpEndpoint {
  sockaddr_storage address{};
  socklen_t length = 0;
};
std::optional<TcpEndpoint> ParseGrpcPeer(absl::string_view peer);

// `address` as "A:P" / "[A]:P", IPv4-mapped IPv6 addresses as IPv4: the key
// under which a connection is found whichever way either side printed it.
std::string EndpointKey(const sockaddr_storage& address);

class ConnectionCloser {
 public:
  // `local_port`: the data port (its connections are the only ones
  // closed). `now_nanos`: a monotonic clock (tests inject one).
  explicit ConnectionCloser(int local_port,
                            std::function<int64_t()> now_nanos = SteadyNanos);

  // Closes the connection `grpc_peer` names; true if this call closed it,
  // false if it was not TCP, already closed by an earlier call, or not
  // found now (not in the table and a scan ran less than 100 ms ago, or
  // another thread is scanning).
  bool Close(absl::string_view grpc_peer);

 private:
  static int64_t SteadyNanos();
  static constexpr int64_t kMinRescanNanos = 100'000'000;  // 100 ms
  // Connections closed and scanned ones remembered at most (then cleared).
  static constexpr size_t kRemembered = 1 << 16;

  // Shuts the socket behind `fd` down if it is still the connection to
  // `key` on the data port (checked on a private duplicate).
  bool ShutdownIfStill(int fd, const std::string& key) const;
  // Every connection of the data port now: key -> descriptor.
  absl::flat_hash_map<std::string, int> Scan() const;

  const int local_port_;
  const std::function<int64_t()> now_nanos_;
  absl::Mutex mu_;
  absl::flat_hash_set<std::string> closed_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> fds_ ABSL_GUARDED_BY(mu_);
  int64_t last_scan_nanos_ ABSL_GUARDED_BY(mu_) = -kMinRescanNanos;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_CONNECTION_CLOSER_H_
