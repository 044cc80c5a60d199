#include "server/admin/upstream_health.h"

#include <algorithm>
#include <chrono>

#include "absl/time/clock.h"

namespace sluice {
namespace {

// The longest a tag stays out, so Stop() returns within about this long.
constexpr absl::Duration kMaxWait = absl::Seconds(1);

// How often a frozen upstream without a health_check is asked again.
constexpr absl::Duration kFrozenRecheck = absl::Seconds(1);

}  // namespace

UpstreamHealth::UpstreamHealth(std::vector<Upstream> upstreams, Report report)
    : upstreams_(std::move(upstreams)), report_(std::move(report)) {
  serving_.assign(upstreams_.size(), -1);
  probe_of_.assign(upstreams_.size(), nullptr);
  frozen_.assign(upstreams_.size(), false);
  failures_seen_.assign(upstreams_.size(), 0);
  for (size_t u = 0; u < upstreams_.size(); ++u) {
    if (upstreams_[u].keepalive_failures != nullptr) {
      failures_seen_[u] = upstreams_[u].keepalive_failures->load();
    }
    frozen_[u] = upstreams_[u].frozen;
    for (size_t c = 0; c < upstreams_[u].channels.size(); ++c) {
      auto w = std::make_unique<Watch>();
      w->kind = Tag::kWatch;
      w->upstream = static_cast<int>(u);
      w->channel = static_cast<int>(c);
      w->last = upstreams_[u].channels[c]->GetState(/*try_to_connect=*/true);
      watches_.push_back(std::move(w));
    }
    if (!upstreams_[u].channels.empty()) {
      auto p = std::make_unique<Probe>();
      p->upstream = static_cast<int>(u);
      p->health_check = upstreams_[u].health_check;
      p->stub =
          grpc::health::v1::Health::NewStub(upstreams_[u].channels.front());
      probe_of_[u] = p.get();
      probes_.push_back(std::move(p));
    }
  }
  Publish(/*force=*/true);
  for (auto& w : watches_) Arm(w.get());
  for (auto& p : probes_) {
    if (p->health_check || frozen_[p->upstream]) StartCheck(p.get());
  }
  thread_ = std::thread([this] { Run(); });
}

UpstreamHealth::~UpstreamHealth() { Stop(); }

void UpstreamHealth::Stop() {
  stopping_.store(true);
  if (thread_.joinable()) thread_.join();
}

std::vector<std::string> UpstreamHealth::FrozenUpstreams() const {
  std::vector<std::string> names;
  for (size_t u = 0; u < upstreams_.size(); ++u) {
    if (frozen_[u]) names.push_back(upstreams_[u].name);
  }
  return names;
}

void UpstreamHealth::Arm(Watch* w) {
  ++outstanding_;
  upstreams_[w->upstream].channels[w->channel]->NotifyOnStateChange(
      w->last, absl::ToChronoTime(absl::Now() + kMaxWait), &cq_,
      static_cast<Tag*>(w));
}

void UpstreamHealth::StartCheck(Probe* p) {
  const Upstream& u = upstreams_[p->upstream];
  ++outstanding_;
  p->busy = true;
  p->ctx = std::make_unique<grpc::ClientContext>();
  p->ctx->set_deadline(absl::ToChronoTime(absl::Now() + u.health_timeout));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(u.health_service);
  p->response.Clear();
  p->rpc = p->stub->AsyncCheck(p->ctx.get(), request, &cq_);
  p->rpc->Finish(&p->response, &p->status, static_cast<Tag*>(&p->done));
  p->due = absl::Now() + (p->health_check ? u.health_interval : kFrozenRecheck);
}

void UpstreamHealth::Run() {
  void* raw;
  bool ok;
  while (outstanding_ > 0 && cq_.Next(&raw, &ok)) {
    --outstanding_;
    auto* tag = static_cast<Tag*>(raw);
    if (stopping_.load()) continue;
    if (tag->kind == Tag::kWatch) {
      // ok: the state changed; !ok: the deadline passed. Either way read
      // it again (and ask an idle channel to connect) and re-arm.
      auto* w = static_cast<Watch*>(tag);
      const grpc_connectivity_state before = w->last;
      w->last = upstreams_[w->upstream].channels[w->channel]->GetState(true);
      if (before != GRPC_CHANNEL_READY && w->last == GRPC_CHANNEL_READY) {
        OnConnected(w->upstream);
      }
      ReadKeepaliveFailures(w->upstream);
      Publish(/*force=*/false);
      Arm(w);
      continue;
    }
    Probe* p = static_cast<ProbeTag*>(tag)->probe;
    p->busy = false;
    p->waiting = false;
    if (tag->kind == Tag::kCheckDone) OnCheckDone(p);
    Schedule(p);
  }
  cq_.Shutdown();
  while (cq_.Next(&raw, &ok)) {
  }
}

void UpstreamHealth::OnCheckDone(Probe* p) {
  const int u = p->upstream;
  bool answered;
  if (p->health_check) {
    p->serving =
        p->status.ok() &&
        p->response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    answered = p->serving;
  } else {
    // Any answer from the process; these two are the channel's own (no
    // connection, or no answer in time).
    const grpc::StatusCode code = p->status.error_code();
    answered = code != grpc::StatusCode::UNAVAILABLE &&
               code != grpc::StatusCode::DEADLINE_EXCEEDED;
  }
  if (answered && frozen_[u]) frozen_[u] = false;
  Publish(/*force=*/false);
}

void UpstreamHealth::Schedule(Probe* p) {
  if (!p->health_check && !frozen_[p->upstream]) return;  // not needed now
  // Wait for the next check in steps of at most kMaxWait, so Stop() is
  // prompt without cancelling an alarm from another thread.
  const absl::Time now = absl::Now();
  if (now >= p->due) {
    StartCheck(p);
  } else {
    ++outstanding_;
    p->busy = true;
    p->waiting = true;
    p->alarm.Set(&cq_, absl::ToChronoTime(std::min(p->due, now + kMaxWait)),
                 static_cast<Tag*>(&p->next));
  }
}

void UpstreamHealth::ReadKeepaliveFailures(int upstream) {
  const std::atomic<uint64_t>* count = upstreams_[upstream].keepalive_failures;
  if (count == nullptr) return;
  const uint64_t now = count->load(std::memory_order_relaxed);
  if (now == failures_seen_[upstream]) return;
  failures_seen_[upstream] = now;
  frozen_[upstream] = true;
  if (probe_of_[upstream] != nullptr) CheckSoon(probe_of_[upstream]);
}

void UpstreamHealth::CheckSoon(Probe* p) {
  p->due = absl::Now();
  if (p->waiting) {
    p->alarm.Cancel();  // its tag comes back: Schedule starts the Check
  } else if (!p->busy) {
    StartCheck(p);
  }
}

void UpstreamHealth::OnConnected(int upstream) {
  // The upstream is back: its other channels try again now rather than
  // when their backoff ends, so no call meets one still backing off.
  for (const auto& w : watches_) {
    if (w->upstream == upstream && w->last != GRPC_CHANNEL_READY) {
      grpc::experimental::ChannelResetConnectionBackoff(
          upstreams_[upstream].channels[w->channel].get());
    }
  }
  // And its health is checked now, not at the next interval. A Check in
  // flight (sent before the connection) is left to finish; then the next
  // one is due at once.
  Probe* p = probe_of_[upstream];
  if (p == nullptr || (!p->health_check && !frozen_[upstream])) return;
  CheckSoon(p);
}

void UpstreamHealth::Publish(bool force) {
  std::vector<int> ready(upstreams_.size(), 0);
  for (const auto& w : watches_) {
    if (w->last == GRPC_CHANNEL_READY) ready[w->upstream] = 1;
  }
  for (size_t u = 0; u < upstreams_.size(); ++u) {
    const Probe* p = probe_of_[u];
    if (p != nullptr && p->health_check && !p->serving) ready[u] = 0;
    if (frozen_[u]) ready[u] = 0;
  }
  bool overall = true;
  for (size_t u = 0; u < upstreams_.size(); ++u) {
    if (force || ready[u] != serving_[u]) {
      serving_[u] = ready[u];
      report_(upstreams_[u].name, ready[u] == 1);
    }
    if (upstreams_[u].required && !ready[u]) overall = false;
  }
  if (force || overall_ != static_cast<int>(overall)) {
    overall_ = overall;
    report_("", overall);
  }
}

}  // namespace sluice
