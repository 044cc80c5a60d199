#include "server/proxy/data_plane.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/health_check_service_server_builder_option.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/config/listen_probe.h"
#include "server/proxy/header_limits.h"
#include "server/proxy/proxy_call.h"
#include "server/proxy/server_credentials.h"
#include "spdlog/spdlog.h"

namespace sluice {
namespace {

constexpr absl::string_view kDataField = "listeners.data";

// Accepts kept posted per worker, so a burst of new calls does not wait for
// the worker to re-arm one accept at a time.
constexpr int kAcceptsPerWorker = 64;

// How long a drain keeps answering new calls itself before it closes the
// port (GOAWAY).
constexpr absl::Duration kRefuseWindow = absl::Milliseconds(500);

bool SameUpstreams(const Config& a, const Config& b) {
  if (a.upstreams().size() != b.upstreams().size()) return false;
  for (size_t i = 0; i < a.upstreams().size(); ++i) {
    const UpstreamSettings& x = a.upstreams()[i];
    const UpstreamSettings& y = b.upstreams()[i];
    if (x.name != y.name || x.target != y.target || x.channels != y.channels ||
        x.lb_policy != y.lb_policy || x.keepalive_time != y.keepalive_time ||
        x.keepalive_timeout != y.keepalive_timeout ||
        x.keepalive_permit_without_calls != y.keepalive_permit_without_calls ||
        x.max_message_bytes != y.max_message_bytes || x.tls != y.tls ||
        x.tls_ca_file != y.tls_ca_file || x.tls_cert_file != y.tls_cert_file ||
        x.tls_key_file != y.tls_key_file ||
        x.tls_server_name != y.tls_server_name ||
        x.reconnect_initial_backoff != y.reconnect_initial_backoff ||
        x.reconnect_max_backoff != y.reconnect_max_backoff ||
        x.connect_timeout != y.connect_timeout ||
        x.reflection != y.reflection) {
      return false;
    }
  }
  return true;
}

// A rebuilt pool keeps the shape fallbacks (method_shapes.h) of every
// upstream that has the same name and target as before: the server behind
// it is the same, and its methods broke their declared shapes there.
void InheritFallbacks(const ProxySnapshot& previous, const Config& config,
                      UpstreamPool& pool) {
  const auto& before = previous.config->upstreams();
  const auto& now = config.upstreams();
  for (size_t i = 0; i < now.size(); ++i) {
    for (size_t j = 0; j < before.size(); ++j) {
      if (before[j].name == now[i].name && before[j].target == now[i].target) {
        pool.shapes(static_cast<int>(i))
            ->InheritFallbacks(*previous.pool->shapes(static_cast<int>(j)));
        break;
      }
    }
  }
}

// Removes the builder plugins registered process-wide (server reflection):
// on the data port, reflection and health requests are proxied to the
// upstream like any other method, so grpcurl sees the upstream's services.
class NoPluginsOption : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->clear();
  }
};

// gRPC takes milliseconds as an int; "off" is INT_MAX (its own default for
// idle, age and grace).
int Millis(absl::Duration d) {
  if (d == absl::ZeroDuration()) return std::numeric_limits<int>::max();
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d),
                                            std::numeric_limits<int>::max()));
}

// proxy.connections as the data port's server arguments (docs/security.md,
// "Connections": what each one does, measured with gRPC 1.51).
void AddConnectionArguments(const ConnectionSettings& c,
                            grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                              Millis(c.max_idle));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                              Millis(c.max_age));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                              Millis(c.max_age_grace));
  builder->AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                              Millis(c.handshake_timeout));
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      Millis(c.min_ping_interval));
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES,
                              c.max_ping_strikes);
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataPlane>> DataPlane::Start(
    std::shared_ptr<const Config> config, ProxyMetrics* metrics) {
  std::unique_ptr<DataPlane> plane(new DataPlane());
  plane->metrics_ = metrics;
  auto snap = plane->BuildSnapshot(config, nullptr);
  if (!snap.ok()) return snap.status();
  plane->ApplyMemoryLimit((*snap)->memory_limit);
  // The early-cancel budget (restart only: a reload keeps it).
  const ConnectionSettings& conn = config->connections();
  if (conn.early_cancels_per_second > 0) {
    const double rate = static_cast<double>(conn.early_cancels_per_second);
    plane->early_cancel_burst_ = conn.early_cancels_burst;
    plane->early_cancel_refill_nanos_ =
        static_cast<int64_t>(static_cast<double>(conn.early_cancels_burst) /
                             rate * 1e9) +
        1;
    plane->early_cancels_ = std::make_unique<KeyedTokenBuckets>(
        TokenBucket::Config::PerSecond(rate, conn.early_cancels_burst),
        kEarlyCancelPeers);
  }
  plane->reflection_ = std::make_unique<ReflectionFetcher>();
  plane->WatchShapes(**snap, nullptr);
  {
    absl::MutexLock lock(&plane->mu_);
    plane->current_ = std::move(*snap);
  }

  // Asked first: gRPC's own report of a port it cannot bind is a
  // multi-line dump without the reason.
  if (absl::Status can_listen =
          CheckListener(kDataField, config->data_address());
      !can_listen.ok()) {
    return can_listen;
  }
  grpc::ServerBuilder builder;
  auto credentials = DataPortServerCredentials(config->tls());
  if (!credentials.ok()) return credentials.status();
  builder.AddListeningPort(config->data_address(), *credentials, &plane->port_);
  builder.RegisterAsyncGenericService(&plane->service_);
  builder.SetMaxReceiveMessageSize(config->max_receive_message_bytes());
  builder.SetMaxSendMessageSize(config->max_receive_message_bytes());
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             config->max_concurrent_streams());
  // The second tier of the header limits (header_limits.h): far above
  // proxy.max_header_list_bytes, which refuses one call cleanly.
  builder.AddChannelArgument(
      GRPC_ARG_MAX_METADATA_SIZE,
      TransportMetadataLimit(config->max_header_list_bytes()));
  // Not gRPC's default SO_REUSEPORT: a port another process holds is
  // refused, not shared with it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE,
                             config->bdp_probe() ? 1 : 0);
  AddConnectionArguments(config->connections(), &builder);
  // The data port answers every method through the generic service: no
  // built-in health service and no reflection here.
  builder.SetOption(
      std::make_unique<grpc::HealthCheckServiceServerBuilderOption>(nullptr));
  builder.SetOption(std::make_unique<NoPluginsOption>());
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;
  for (int i = 0; i < config->workers(); ++i) {
    cqs.push_back(builder.AddCompletionQueue());
  }
  plane->server_ = builder.BuildAndStart();
  if (plane->server_ == nullptr || plane->port_ == 0) {
    if (plane->server_ != nullptr) plane->server_->Shutdown();
    for (auto& cq : cqs) {
      cq->Shutdown();
      void* tag;
      bool ok;
      while (cq->Next(&tag, &ok)) {
      }
    }
    return ListenerFailed(kDataField, config->data_address(),
                          "gRPC could not bind it");
  }
  if (plane->early_cancels_ != nullptr) {
    plane->closer_ = std::make_unique<ConnectionCloser>(plane->port_);
    // At 0 from the start, so the first closure is an increase.
    plane->metrics_->flood_connections_closed();
  }
  plane->caches_.resize(cqs.size());
  for (size_t i = 0; i < cqs.size(); ++i) {
    plane->workers_.push_back(std::make_unique<Worker>(
        static_cast<int>(i), plane.get(), std::move(cqs[i])));
  }
  for (auto& w : plane->workers_) w->Start(kAcceptsPerWorker);
  return plane;
}

DataPlane::~DataPlane() {
  if (server_ != nullptr) Drain(absl::ZeroDuration());
}

absl::StatusOr<std::shared_ptr<const ProxySnapshot>> DataPlane::BuildSnapshot(
    std::shared_ptr<const Config> config,
    std::shared_ptr<const ProxySnapshot> previous) {
  // Keep what did not change: the upstream channels (and their
  // connections) and the access-log file.
  std::shared_ptr<UpstreamPool> pool;
  if (previous != nullptr && SameUpstreams(*previous->config, *config) &&
      !previous->pool->TlsFilesChanged()) {
    pool = previous->pool;
  } else {
    auto created = UpstreamPool::Create(*config, &metrics_->shape_fallbacks(),
                                        &metrics_->reflected_methods());
    if (!created.ok()) return created.status();
    pool = std::shared_ptr<UpstreamPool>(std::move(*created));
    if (previous != nullptr) InheritFallbacks(*previous, *config, *pool);
  }
  std::shared_ptr<AccessLog> access_log;
  if (config->access_log().enabled) {
    if (previous != nullptr && previous->access_log != nullptr &&
        previous->access_log->path() == config->access_log().path) {
      access_log = previous->access_log;
    } else {
      auto log = AccessLog::Open(config->access_log().path,
                                 &metrics_->access_log_dropped());
      if (!log.ok()) return log.status();
      access_log = *log;
    }
  }
  auto limits = limits_.Bind(*config);
  auto snap = std::make_shared<ProxySnapshot>(
      std::move(config), std::move(pool), std::move(limits), *metrics_);
  snap->access_log = std::move(access_log);
  return snap;
}

absl::Status DataPlane::SetConfig(std::shared_ptr<const Config> config) {
  std::shared_ptr<const ProxySnapshot> previous;
  {
    absl::MutexLock lock(&mu_);
    previous = current_;
  }
  auto snap = BuildSnapshot(std::move(config), previous);
  if (!snap.ok()) return snap.status();
  ApplyMemoryLimit((*snap)->memory_limit);
  WatchShapes(**snap, previous == nullptr ? nullptr : previous->pool.get());
  std::shared_ptr<const ProxySnapshot> old;  // freed after the unlock
  {
    absl::MutexLock lock(&mu_);
    old = std::exchange(current_, std::move(*snap));
    version_.fetch_add(1, std::memory_order_release);
  }
  return absl::OkStatus();
}

void DataPlane::WatchShapes(const ProxySnapshot& snap,
                            const UpstreamPool* previous) {
  if (reflection_ == nullptr) return;
  if (snap.pool.get() == previous) {
    reflection_->RefreshAll();
    return;
  }
  std::vector<ReflectionFetcher::Target> targets;
  const auto& upstreams = snap.config->upstreams();
  for (int i = 0; i < snap.pool->size(); ++i) {
    if (!upstreams[i].reflection) continue;
    targets.push_back(
        {upstreams[i].name, snap.pool->channels(i), snap.pool->shapes(i)});
  }
  reflection_->Watch(std::move(targets));
}

void DataPlane::ApplyMemoryLimit(int64_t limit) {
  if (limit == memory_guard_.limit()) return;
  memory_guard_.SetLimit(limit);
  if (limit > 0) {
    spdlog::info(
        "memory ceiling {} MiB (proxy.max_memory_bytes): new calls "
        "are refused with overloaded at it",
        limit >> 20);
  } else {
    spdlog::info("no memory ceiling (proxy.max_memory_bytes)");
  }
}

std::shared_ptr<const Config> DataPlane::config() const {
  absl::MutexLock lock(&mu_);
  return current_->config;
}

std::shared_ptr<UpstreamPool> DataPlane::pool() const {
  absl::MutexLock lock(&mu_);
  return current_->pool;
}

std::shared_ptr<const ProxySnapshot> DataPlane::snapshot(int worker_index) {
  WorkerCache& cache = caches_[worker_index];
  uint64_t v = version_.load(std::memory_order_acquire);
  if (cache.version != v) {
    // The worker's old snapshot may be the last reference: freeing it
    // removes its metric series (locks of the exposer's families), which
    // must not happen under mu_, the lock every worker needs.
    std::shared_ptr<const ProxySnapshot> old;
    {
      absl::MutexLock lock(&mu_);
      old = std::exchange(cache.snapshot, current_);
      cache.version = v;
    }
  }
  return cache.snapshot;
}

void DataPlane::CallAccepted() {
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  metrics_->calls_in_flight().Increment();
}

void DataPlane::CallFreed() {
  metrics_->calls_in_flight().Decrement();
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
}

void DataPlane::CallObjectCreated() {
  alive_.fetch_add(1, std::memory_order_relaxed);
}

void DataPlane::ChargeEarlyCancel(absl::string_view address,
                                  int64_t now_nanos) {
  if (early_cancels_ == nullptr) return;
  last_early_cancel_.store(now_nanos, std::memory_order_relaxed);
  early_cancels_->TryTake(address, now_nanos);
}

void DataPlane::CloseFloodingConnection(absl::string_view grpc_peer) {
  if (closer_ == nullptr || !closer_->Close(grpc_peer)) return;
  metrics_->flood_connections_closed().Increment();
  spdlog::warn(
      "closed the connection from {}: its calls were refused for early "
      "cancels (rapid reset) and it reset them anyway",
      std::string(grpc_peer));
}

void DataPlane::CallObjectDestroyed() {
  if (alive_.fetch_sub(1, std::memory_order_acq_rel) == 1 && draining_.load()) {
    absl::MutexLock lock(&freed_mu_);
    freed_cv_.SignalAll();
  }
}

void DataPlane::Drain(absl::Duration timeout) {
  absl::MutexLock drain_lock(&drain_mu_);
  if (drained_) return;
  drained_ = true;
  draining_.store(true);
  const absl::Time force_at = absl::Now() + timeout;
  for (auto& w : workers_) w->ScheduleForceDrain(force_at);
  // For a short window, keep accepting so that calls racing the drain get
  // a clear UNAVAILABLE + `sluice-reason: draining` (which clients retry
  // elsewhere) instead of being cancelled by the transport; health is
  // NOT_SERVING already, so load balancers stop sending meanwhile.
  if (in_flight_.load() > 0 || timeout > absl::ZeroDuration()) {
    absl::SleepFor(std::min(kRefuseWindow, timeout));
  }
  accepting_.store(false);
  if (reflection_ != nullptr) reflection_->Stop();
  // Stops accepting at once; waits for live calls until the deadline (the
  // workers finish them with UNAVAILABLE at force_at), then cancels any
  // left.
  server_->Shutdown(absl::ToChronoTime(force_at + absl::Seconds(2)));
  for (auto& w : workers_) w->CancelForceDrain();
  // Calls (and accepts whose completion is still queued) may still post
  // operations; no queue may shut down while any call object is alive.
  {
    // A call waiting for Redis holds its object until the reply (or the
    // Redis timeout) comes back through its worker's queue: never stop the
    // queues before that (issue 15, bug 3).
    absl::Duration bound = drain_give_up_;
    {
      absl::MutexLock lock(&mu_);
      const RedisSettings& redis = current_->config->redis();
      if (redis.enabled) {
        bound = std::max(
            bound, redis.connect_timeout + redis.timeout + absl::Seconds(1));
      }
    }
    const absl::Time give_up = absl::Now() + bound;
    absl::MutexLock lock(&freed_mu_);
    while (alive_.load() > 0 && absl::Now() < give_up) {
      freed_cv_.WaitWithDeadline(&freed_mu_, give_up);
    }
  }
  for (auto& w : workers_) w->ShutdownQueue();
  for (auto& w : workers_) w->Join();
  workers_.clear();
}

}  // namespace sluice
