#include "server/limits/cluster_replies.h"

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/limits/cluster_slot.h"

namespace sluice {
namespace {

bool ValidPort(int64_t port) { return port > 0 && port < 65536; }

bool ValidSlot(int64_t slot) { return slot >= 0 && slot < kClusterSlots; }

}  // namespace

std::string ClusterNode::Name() const {
  return absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port)
                                      : absl::StrCat(host, ":", port);
}

bool ParseClusterSlots(const RedisValue& reply, const ClusterNode& asked,
                       std::vector<SlotRange>* out, std::string* error) {
  out->clear();
  if (reply.type != RedisValue::kArray) {
    *error = "CLUSTER SLOTS: not an array";
    return false;
  }
  for (const RedisValue& range : reply.elements) {
    if (range.type != RedisValue::kArray || range.elements.size() < 3 ||
        range.elements[0].type != RedisValue::kInteger ||
        range.elements[1].type != RedisValue::kInteger ||
        range.elements[2].type != RedisValue::kArray ||
        range.elements[2].elements.size() < 2) {
      *error = "CLUSTER SLOTS: a range is not [first, last, [host, port...]]";
      return false;
    }
    const RedisValue& master = range.elements[2];
    if (master.elements[0].type != RedisValue::kString ||
        master.elements[1].type != RedisValue::kInteger) {
      *error = "CLUSTER SLOTS: a master is not [host, port...]";
      return false;
    }
    SlotRange r;
    r.first = static_cast<int>(range.elements[0].integer);
    r.last = static_cast<int>(range.elements[1].integer);
    if (!ValidSlot(range.elements[0].integer) ||
        !ValidSlot(range.elements[1].integer) || r.first > r.last) {
      *error = absl::StrCat("CLUSTER SLOTS: bad slot range ",
                            range.elements[0].integer, "-",
                            range.elements[1].integer);
      return false;
    }
    if (!ValidPort(master.elements[1].integer)) {
      *error =
          absl::StrCat("CLUSTER SLOTS: bad port ", master.elements[1].integer);
      return false;
    }
    r.master.host = master.elements[0].str;
    if (r.master.host.empty() || r.master.host == "?") {
      r.master.host = asked.host;
    }
    r.master.port = static_cast<int>(master.elements[1].integer);
    out->push_back(std::move(r));
  }
  return true;
}

bool ParseRedirect(absl::string_view message, Redirect* out) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(message, ' ', absl::SkipEmpty());
  if (parts.size() != 3) return false;
  if (parts[0] == "MOVED") {
    out->ask = false;
  } else if (parts[0] == "ASK") {
    out->ask = true;
  } else {
    return false;
  }
  int64_t slot = 0;
  if (!absl::SimpleAtoi(parts[1], &slot) || !ValidSlot(slot)) return false;
  const absl::string_view address = parts[2];
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  int64_t port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || !ValidPort(port)) {
    return false;
  }
  absl::string_view host = address.substr(0, colon);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  out->slot = static_cast<int>(slot);
  out->to.host = std::string(host);
  out->to.port = static_cast<int>(port);
  return true;
}

}  // namespace sluice
