// Whether a listener address can be listened on, and why not, in one line.
//
// gRPC reports a port it cannot bind as a multi-line error dump on stderr,
// and prometheus-cpp's Exposer (civetweb) as "null context when
// constructing CivetServer": neither names the OS's reason. Binding a
// socket first, the way their listeners do, learns it before either runs.
//
// Stateless free functions; any thread. Used at start-up only.
#ifndef SLUICE_SERVER_CONFIG_LISTEN_PROBE_H_
#define SLUICE_SERVER_CONFIG_LISTEN_PROBE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sluice {

// OK if this process can listen on `address` ("host:port", "[v6]:port", as
// listeners.* hold it) now: a TCP socket is bound there as gRPC and
// civetweb bind theirs (SO_REUSEADDR, not SO_REUSEPORT, IPv6 sockets
// dual-stack) and closed again. Every address the host resolves to must be
// free: one that another process holds is refused even if others are
// free. Port 0 always can. Otherwise Unavailable with the one line
//   "<field>: cannot listen on <address>: <reason>"
// where reason is the OS's in lower case ("address already in use",
// "permission denied", "cannot assign requested address") or the
// resolver's.
absl::Status CheckListener(absl::string_view field, const std::string& address);

// The error of listener `field` whose server failed to bind `address`
// after CheckListener passed (another process took the port meanwhile):
// CheckListener's line found again now, or, if the port is free again,
// "<field>: cannot listen on <address>: <what>".
absl::Status ListenerFailed(absl::string_view field, const std::string& address,
                            absl::string_view what);

}  // namespace sluice

#endif  // SLUICE_SERVER_CONFIG_LISTEN_PROBE_H_
