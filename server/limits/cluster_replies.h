// The two Redis Cluster answers RedisClusterClient reads: CLUSTER SLOTS
// (which master serves which slots) and the MOVED / ASK redirections. Pure
// parsing of values already read; any thread.
#ifndef SLUICE_SERVER_LIMITS_CLUSTER_REPLIES_H_
#define SLUICE_SERVER_LIMITS_CLUSTER_REPLIES_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/limits/redis_link.h"

namespace sluice {

struct ClusterNode {
  std::string host;
  int port = 0;
  // "host:port", IPv6 hosts in brackets: the node's name in Sluice.
  std::string Name() const;
  bool operator==(const ClusterNode& o) const {
    return host == o.host && port == o.port;
  }
};

// Slots [first, last] are served by `master`.
struct SlotRange {
  int first = 0;
  int last = 0;
  ClusterNode master;
};

// CLUSTER SLOTS' reply: [[first, last, [host, port, id...], replicas...]...].
// A master with an empty host ("" or "?": Redis does not know its own
// address) is `asked`, the node the command went to. False (and *error
// says why) on any other shape.
bool ParseClusterSlots(const RedisValue& reply, const ClusterNode& asked,
                       std::vector<SlotRange>* out, std::string* error);

// "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>".
struct Redirect {
  bool ask = false;  // ASK: this request only, after ASKING
  int slot = 0;
  ClusterNode to;
};
bool ParseRedirect(absl::string_view message, Redirect* out);

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_CLUSTER_REPLIES_H_
