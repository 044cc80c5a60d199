#include "server/admin/upstream_health.h"

#include <chrono>

namespace sluice {

UpstreamHealth::UpstreamHealth(std::vector<Upstream> upstreams, Report report)
    : upstreams_(std::move(upstreams)), report_(std::move(report)) {
  serving_.assign(upstreams_.size(), -1);
  for (size_t u = 0; u < upstreams_.size(); ++u) {
    for (size_t c = 0; c < upstreams_[u].channels.size(); ++c) {
      auto w = std::make_unique<Watch>();
      w->upstream = static_cast<int>(u);
      w->channel = static_cast<int>(c);
      w->last = upstreams_[u].channels[c]->GetState(/*try_to_connect=*/true);
      watches_.push_back(std::move(w));
    }
  }
  Publish(/*force=*/true);
  for (auto& w : watches_) Arm(w.get());
  thread_ = std::thread([this] { Run(); });
}

UpstreamHealth::~UpstreamHealth() { Stop(); }

void UpstreamHealth::Stop() {
  stopping_.store(true);
  if (thread_.joinable()) thread_.join();
}

void UpstreamHealth::Arm(Watch* w) {
  upstreams_[w->upstream].channels[w->channel]->NotifyOnStateChange(
      w->last, std::chrono::system_clock::now() + std::chrono::seconds(1), &cq_,
      w);
}

void UpstreamHealth::Run() {
  size_t armed = watches_.size();
  void* tag;
  bool ok;
  while (armed > 0 && cq_.Next(&tag, &ok)) {
    auto* w = static_cast<Watch*>(tag);
    if (stopping_.load()) {
      --armed;
      continue;
    }
    // ok: the state changed; !ok: the 1 s deadline passed. Either way read
    // it again (and ask an idle channel to connect) and re-arm.
    w->last = upstreams_[w->upstream].channels[w->channel]->GetState(true);
    Publish(/*force=*/false);
    Arm(w);
  }
  cq_.Shutdown();
  while (cq_.Next(&tag, &ok)) {
  }
}

void UpstreamHealth::Publish(bool force) {
  std::vector<int> ready(upstreams_.size(), 0);
  for (const auto& w : watches_) {
    if (w->last == GRPC_CHANNEL_READY) ready[w->upstream] = 1;
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
