#include "server/limits/redis_cluster_client.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/limits/clock.h"
#include "server/limits/cluster_slot.h"
#include "spdlog/spdlog.h"

namespace sluice {
namespace {

constexpr int kMaxRedirects = 5;
constexpr int64_t kMinRefreshGapNanos = 100'000'000;  // 100 ms
constexpr absl::Duration kDegradedRefresh = absl::Milliseconds(200);

int64_t Now() { return RealClock::Get().NowNanos(); }

// Failures after which the slot map may be stale: the node is gone, slow
// (being failed over) or says the cluster is not serving the slot.
bool MayBeFailover(const RedisLink::Reply& reply) {
  switch (reply.status) {
    case RedisLink::Reply::kConnection:
    case RedisLink::Reply::kTimeout:
      return true;
    case RedisLink::Reply::kError:
      return absl::StartsWith(reply.error, "CLUSTERDOWN") ||
             absl::StartsWith(reply.error, "TRYAGAIN") ||
             absl::StartsWith(reply.error, "READONLY") ||
             absl::StartsWith(reply.error, "LOADING");
    default:
      return false;
  }
}

std::string SeedList(const std::vector<ClusterNode>& seeds) {
  std::vector<std::string> names;
  for (const ClusterNode& n : seeds) names.push_back(n.Name());
  return absl::StrCat("cluster ", absl::StrJoin(names, ","));
}

}  // namespace

struct RedisClusterClient::Attempt {
  std::string key;
  int slot = 0;
  std::vector<std::string> args;
  Callback done;
  int redirects = 0;
};

RedisClusterClient::RedisClusterClient(std::vector<ClusterNode> seeds,
                                       RedisClientOptions node_options,
                                       std::string script,
                                       absl::Duration refresh_interval)
    : seeds_(std::move(seeds)),
      node_options_(std::move(node_options)),
      script_(std::move(script)),
      refresh_interval_nanos_(absl::ToInt64Nanoseconds(refresh_interval)),
      address_(SeedList(seeds_)) {
  {
    absl::MutexLock lock(&mu_);
    slots_.assign(kClusterSlots, nullptr);
    users_ = node_options_.users;
    for (const ClusterNode& seed : seeds_) NodeLocked(seed);
  }
  Refresh();
}

RedisClusterClient::~RedisClusterClient() {
  absl::flat_hash_map<std::string, std::unique_ptr<RedisClient>> nodes;
  {
    absl::MutexLock lock(&mu_);
    stopping_.store(true);
    slots_.assign(kClusterSlots, nullptr);
    masters_.clear();
    nodes.swap(nodes_);
  }
  // Each node's requests still out get their callbacks now, on its own
  // thread; OnReply and the refresh see stopping_ and touch nothing else.
  nodes.clear();
}

RedisClient* RedisClusterClient::NodeLocked(const ClusterNode& node) {
  if (stopping_.load()) return nullptr;
  const std::string name = node.Name();
  auto it = nodes_.find(name);
  if (it != nodes_.end()) return it->second.get();
  RedisClientOptions options = node_options_;
  options.host = node.host;
  options.port = node.port;
  // A node that comes up (at start, or a promoted replica) may be the
  // first this client can ask for the slot map.
  options.on_connected = [this] { Refresh(); };
  options.users = users_;
  auto client = std::make_unique<RedisClient>(options, script_);
  RedisClient* raw = client.get();
  nodes_.emplace(name, std::move(client));
  return raw;
}

RedisClient* RedisClusterClient::RouteLocked(int slot) {
  if (stopping_.load()) return nullptr;
  if (RedisClient* owner = slots_[slot]; owner != nullptr) return owner;
  // No map yet (or the slot is not served): any node answers with a MOVED,
  // or CLUSTERDOWN. Prefer one that is connected.
  std::vector<RedisClient*> all;
  for (const auto& [name, client] : nodes_) all.push_back(client.get());
  if (all.empty()) return nullptr;
  const size_t start = next_any_.fetch_add(1);
  for (size_t i = 0; i < all.size(); ++i) {
    RedisClient* c = all[(start + i) % all.size()];
    if (c->connected()) return c;
  }
  return all[start % all.size()];
}

void RedisClusterClient::SendLocked(std::shared_ptr<Attempt> attempt,
                                    RedisClient* node, bool asking) {
  auto callback = [this, attempt](const Reply& reply) {
    OnReply(attempt, reply);
  };
  if (asking) {
    node->EvalScriptAsking(attempt->key, attempt->args, std::move(callback));
  } else {
    node->EvalScript(attempt->key, attempt->args, std::move(callback));
  }
}

void RedisClusterClient::EvalScript(std::string key,
                                    std::vector<std::string> args,
                                    Callback done) {
  auto attempt = std::make_shared<Attempt>();
  attempt->slot = KeySlot(key);
  attempt->key = std::move(key);
  attempt->args = std::move(args);
  attempt->done = std::move(done);
  absl::ReaderMutexLock lock(&mu_);
  RedisClient* node = RouteLocked(attempt->slot);
  if (node == nullptr) {
    Reply reply;
    reply.status = Reply::kConnection;
    reply.error = "redis cluster client stopped";
    attempt->done(reply);
    return;
  }
  SendLocked(std::move(attempt), node, /*asking=*/false);
}

void RedisClusterClient::OnReply(const std::shared_ptr<Attempt>& attempt,
                                 const Reply& reply) {
  if (stopping_.load()) {
    Reply out = reply;
    if (out.status == Reply::kRedirect) {
      out.status = Reply::kConnection;
      out.error = "redis cluster client stopped";
    }
    attempt->done(out);
    return;
  }
  if (reply.status != Reply::kRedirect) {
    if (MayBeFailover(reply)) Refresh();
    attempt->done(reply);
    return;
  }
  Redirect redirect;
  Reply failed;
  failed.status = Reply::kError;
  if (!ParseRedirect(reply.error, &redirect)) {
    failed.error =
        absl::StrCat("redis cluster: unreadable redirection: ", reply.error);
    attempt->done(failed);
    return;
  }
  if (++attempt->redirects > kMaxRedirects) {
    failed.error =
        absl::StrCat("redis cluster: more than ", kMaxRedirects,
                     " redirections for one key; last: ", reply.error);
    Refresh();
    attempt->done(failed);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    RedisClient* node = NodeLocked(redirect.to);
    if (node != nullptr) {
      RedisStats::Get().redirects[redirect.ask ? 1 : 0].fetch_add(1);
      // MOVED: the slot lives there from now on; ASK: this request only.
      if (!redirect.ask) slots_[redirect.slot] = node;
      SendLocked(attempt, node, /*asking=*/redirect.ask);
    }
    if (node != nullptr && redirect.ask) return;
    if (node == nullptr) {
      failed.status = Reply::kConnection;
      failed.error = "redis cluster client stopped";
    }
  }
  if (failed.status == Reply::kConnection) {
    attempt->done(failed);
    return;
  }
  Refresh();  // after a MOVED, more slots have probably moved
}

void RedisClusterClient::Refresh() {
  if (stopping_.load()) return;
  const int64_t now = Now();
  if (now - last_refresh_.load() < kMinRefreshGapNanos) return;
  bool expected = false;
  if (!refreshing_.compare_exchange_strong(expected, true)) return;
  last_refresh_.store(now);
  // Ask the masters of the current map first, then the seeds, then every
  // other node known.
  std::vector<ClusterNode> candidates;
  absl::flat_hash_set<std::string> seen;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (RedisClient* m : masters_) {
      if (seen.insert(m->address()).second) {
        candidates.push_back(ClusterNode{m->host(), m->port()});
      }
    }
    for (const ClusterNode& s : seeds_) {
      if (seen.insert(s.Name()).second) candidates.push_back(s);
    }
    for (const auto& [name, client] : nodes_) {
      if (seen.insert(name).second) {
        candidates.push_back(ClusterNode{client->host(), client->port()});
      }
    }
  }
  AskSlots(std::move(candidates), 0);
}

void RedisClusterClient::AskSlots(std::vector<ClusterNode> candidates,
                                  size_t next) {
  if (stopping_.load()) {
    refreshing_.store(false);
    return;
  }
  absl::ReleasableMutexLock lock(&mu_);
  // Skip nodes with no connection up: their request would fail at once.
  RedisClient* node = nullptr;
  while (next < candidates.size()) {
    node = NodeLocked(candidates[next]);
    if (node != nullptr && node->connected()) break;
    node = nullptr;
    ++next;
  }
  if (node == nullptr) {
    lock.Release();
    // None up (or every one failed): the next node to come up asks
    // (on_connected), however soon, and the timer tries again.
    last_refresh_.store(0);
    refreshing_.store(false);
    ArmRefresh(/*degraded=*/true);
    return;
  }
  const ClusterNode asked = candidates[next];
  node->Command({"CLUSTER", "SLOTS"},
                [this, candidates = std::move(candidates), next,
                 asked](const Reply& reply) mutable {
                  if (stopping_.load()) {
                    refreshing_.store(false);
                    return;
                  }
                  std::vector<SlotRange> ranges;
                  std::string error;
                  if (reply.status == Reply::kOk &&
                      ParseClusterSlots(reply.value, asked, &ranges, &error) &&
                      !ranges.empty()) {
                    const bool degraded = Install(ranges);
                    refreshing_.store(false);
                    ArmRefresh(degraded);
                    return;
                  }
                  if (reply.status != Reply::kOk) {
                    error = reply.error;
                  } else if (error.empty()) {
                    error = "CLUSTER SLOTS: no slot is served";
                  }
                  {
                    absl::MutexLock lock(&mu_);
                    if (refresh_error_ != error) {
                      spdlog::warn("redis {}: CLUSTER SLOTS from {} failed: {}",
                                   address_, asked.Name(), error);
                    }
                    refresh_error_ = error;
                  }
                  AskSlots(std::move(candidates), next + 1);
                });
}

void RedisClusterClient::ArmRefresh(bool degraded) {
  bool expected = false;
  if (!timer_armed_.compare_exchange_strong(expected, true)) return;
  absl::ReaderMutexLock lock(&mu_);
  if (stopping_.load() || seeds_.empty()) return;
  auto it = nodes_.find(seeds_.front().Name());
  if (it == nodes_.end()) return;
  it->second->RunAfter(
      degraded ? kDegradedRefresh : absl::Nanoseconds(refresh_interval_nanos_),
      [this] {
        timer_armed_.store(false);
        if (stopping_.load()) return;
        Refresh();
        // Throttled or already running: that refresh arms the next one;
        // else make sure one is armed.
        if (!refreshing_.load()) ArmRefresh(/*degraded=*/true);
      });
}

bool RedisClusterClient::Install(const std::vector<SlotRange>& ranges) {
  absl::MutexLock lock(&mu_);
  if (stopping_.load()) return false;
  std::vector<RedisClient*> slots(kClusterSlots, nullptr);
  std::vector<RedisClient*> masters;
  std::vector<std::string> text;
  int served = 0;
  for (const SlotRange& r : ranges) {
    RedisClient* node = NodeLocked(r.master);
    if (node == nullptr) return false;
    for (int s = r.first; s <= r.last; ++s) slots[s] = node;
    served += r.last - r.first + 1;
    if (std::find(masters.begin(), masters.end(), node) == masters.end()) {
      masters.push_back(node);
    }
    text.push_back(absl::StrCat(r.first, "-", r.last, " ", r.master.Name()));
  }
  std::sort(text.begin(), text.end());
  slots_ = std::move(slots);
  masters_ = std::move(masters);
  refresh_error_.clear();
  std::string map_text = absl::StrJoin(text, ", ");
  if (map_text != map_text_) {
    map_text_ = std::move(map_text);
    epoch_.fetch_add(1);
    spdlog::info("redis {}: {} masters serve {} of {} slots: {}", address_,
                 masters_.size(), served, kClusterSlots, map_text_);
  }
  bool degraded = served < kClusterSlots;
  for (RedisClient* m : masters_) degraded = degraded || !m->connected();
  return degraded;
}

bool RedisClusterClient::connected() const {
  absl::ReaderMutexLock lock(&mu_);
  if (masters_.empty()) return false;
  for (RedisClient* m : masters_) {
    if (!m->connected()) return false;
  }
  return true;
}

RedisLinkState RedisClusterClient::link_state() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<RedisClient*> nodes = masters_;
  if (nodes.empty()) {
    for (const auto& [name, client] : nodes_) nodes.push_back(client.get());
  }
  bool all_up = !nodes.empty();
  bool any_unreachable = false;
  for (RedisClient* n : nodes) {
    const RedisLinkState s = n->link_state();
    if (s == RedisLinkState::kAuthFailed) return s;
    if (s != RedisLinkState::kUp) all_up = false;
    if (s == RedisLinkState::kUnreachable) any_unreachable = true;
  }
  if (masters_.empty()) {
    // No slot map yet: connected but CLUSTER SLOTS failed (not a cluster?)
    // reads as unreachable, with the reason in last_error().
    if (!refresh_error_.empty() || any_unreachable) {
      return RedisLinkState::kUnreachable;
    }
    return RedisLinkState::kConnecting;
  }
  if (all_up) return RedisLinkState::kUp;
  return any_unreachable ? RedisLinkState::kUnreachable
                         : RedisLinkState::kConnecting;
}

std::string RedisClusterClient::last_error() const {
  absl::ReaderMutexLock lock(&mu_);
  for (RedisClient* m : masters_) {
    std::string e = m->last_error();
    if (!e.empty()) return absl::StrCat(m->address(), ": ", e);
  }
  if (!refresh_error_.empty()) return refresh_error_;
  if (masters_.empty()) {
    for (const auto& [name, client] : nodes_) {
      std::string e = client->last_error();
      if (!e.empty()) return absl::StrCat(name, ": ", e);
    }
  }
  return "";
}

void RedisClusterClient::SetUsers(std::string users) {
  absl::MutexLock lock(&mu_);
  users_ = std::move(users);
  for (auto& [name, client] : nodes_) client->SetUsers(users_);
}

std::string RedisClusterClient::NodeFor(absl::string_view key) const {
  absl::ReaderMutexLock lock(&mu_);
  RedisClient* owner = slots_[KeySlot(key)];
  return owner == nullptr ? "" : owner->address();
}

int RedisClusterClient::masters() const {
  absl::ReaderMutexLock lock(&mu_);
  return static_cast<int>(masters_.size());
}

}  // namespace sluice
