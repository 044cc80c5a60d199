#include "server/admin/upstream_health.h"

#include <algorithm>
#include <chrono>

#include "absl/time/clock.h"

namespace sluice {
namespace {

// The longest a tag stays out, so Stop() returns within about this long.
constexpr absl::Duration kMaxWait = absl::Seconds(1);

}  // namespace

UpstreamHealth::UpstreamHealth(std::vector<Upstream> upstreams, Report report)
    : upstreams_(std::move(upstreams)), report_(std::move(report)) {
  serving_.assign(upstreams_.size(), -1);
  probe_of_.assign(upstreams_.size(), nullptr);
  for (size_t u = 0; u < upstreams_.size(); ++u) {
    for (size_t c = 0; c < upstreams_[u].channels.size(); ++c) {
      auto w = std::make_unique<Watch>();
      w->kind = Tag::kWatch;
      w->upstream = static_cast<int>(u);
      w->channel = static_cast<int>(c);
      w->last = upstreams_[u].channels[c]->GetState(/*try_to_connect=*/true);
      watches_.push_back(std::move(w));
    }
    if (upstreams_[u].health_check && !upstreams_[u].channels.empty()) {
      auto p = std::make_unique<Probe>();
      p->upstream = static_cast<int>(u);
      p->stub =
          grpc::health::v1::Health::NewStub(upstreams_[u].channels.front());
      probe_of_[u] = p.get();
      probes_.push_back(std::move(p));
    }
  }
  Publish(/*force=*/true);
  for (auto& w : watches_) Arm(w.get());
  for (auto& p : probes_) StartCheck(p.get());
  thread_ = std::thread([this] { Run(); });
}

UpstreamHealth::~UpstreamHealth() { Stop(); }

void UpstreamHealth::Stop() {
  stopping_.store(true);
  if (thread_.joinable()) thread_.join();
}

void UpstreamHealth::Arm(Watch* w) {
  upstreams_[w->upstream].channels[w->channel]->NotifyOnStateChange(
      w->last, absl::ToChronoTime(absl::Now() + kMaxWait), &cq_,
      static_cast<Tag*>(w));
}

void UpstreamHealth::StartCheck(Probe* p) {
  const Upstream& u = upstreams_[p->upstream];
  p->ctx = std::make_unique<grpc::ClientContext>();
  p->ctx->set_deadline(absl::ToChronoTime(absl::Now() + u.health_timeout));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(u.health_service);
  p->response.Clear();
  p->rpc = p->stub->AsyncCheck(p->ctx.get(), request, &cq_);
  p->rpc->Finish(&p->response, &p->status, static_cast<Tag*>(&p->done));
  p->due = absl::Now() + u.health_interval;
}

void UpstreamHealth::Run() {
  size_t armed = watches_.size() + probes_.size();
  void* raw;
  bool ok;
  while (armed > 0 && cq_.Next(&raw, &ok)) {
    auto* tag = static_cast<Tag*>(raw);
    if (stopping_.load()) {
      --armed;
      continue;
    }
    if (tag->kind == Tag::kWatch) {
      // ok: the state changed; !ok: the deadline passed. Either way read
      // it again (and ask an idle channel to connect) and re-arm.
      auto* w = static_cast<Watch*>(tag);
      const grpc_connectivity_state before = w->last;
      w->last = upstreams_[w->upstream].channels[w->channel]->GetState(true);
      if (before != GRPC_CHANNEL_READY && w->last == GRPC_CHANNEL_READY) {
        OnConnected(w->upstream);
      }
      Publish(/*force=*/false);
      Arm(w);
      continue;
    }
    Probe* p = static_cast<ProbeTag*>(tag)->probe;
    if (tag->kind == Tag::kCheckDone) {
      p->serving =
          p->status.ok() && p->response.status() ==
                                grpc::health::v1::HealthCheckResponse::SERVING;
      Publish(/*force=*/false);
    }
    // Wait for the next check in steps of at most kMaxWait, so Stop() is
    // prompt without cancelling an alarm from another thread.
    p->waiting = false;
    const absl::Time now = absl::Now();
    if (now >= p->due) {
      StartCheck(p);
    } else {
      p->waiting = true;
      p->alarm.Set(&cq_, absl::ToChronoTime(std::min(p->due, now + kMaxWait)),
                   static_cast<Tag*>(&p->next));
    }
  }
  cq_.Shutdown();
  while (cq_.Next(&raw, &ok)) {
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
  if (p == nullptr) return;
  p->due = absl::Now();
  if (p->waiting) p->alarm.Cancel();  // its tag comes back: StartCheck
}

void UpstreamHealth::Publish(bool force) {
  std::vector<int> ready(upstreams_.size(), 0);
  for (const auto& w : watches_) {
    if (w->last == GRPC_CHANNEL_READY) ready[w->upstream] = 1;
  }
  for (size_t u = 0; u < upstreams_.size(); ++u) {
    if (probe_of_[u] != nullptr && !probe_of_[u]->serving) ready[u] = 0;
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
