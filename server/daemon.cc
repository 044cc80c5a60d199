#include "server/daemon.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "prometheus/gauge.h"
#include "server/common/heap_trim.h"
#include "server/common/resident_bytes.h"
#include "server/config/listen_probe.h"
#include "server/version.h"
#include "spdlog/spdlog.h"

namespace sluice {
namespace {

// How often the main thread offers malloc's free memory back to the
// kernel, and how much free memory makes it worth it (docs/security.md,
// "Connections": 2,000 closed idle connections leave ~25 MiB free).
constexpr absl::Duration kHeapTrimInterval = absl::Seconds(1);
constexpr size_t kHeapTrimThreshold = 8 << 20;

// "0.0.0.0:8080" + 5555 -> "0.0.0.0:5555"; "[::1]:0" + 7 -> "[::1]:7".
std::string WithPort(const std::string& address, int port) {
  size_t colon = address.rfind(':');
  return absl::StrCat(address.substr(0, colon), ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(
    Loader loader, const std::string& ready_file) {
  auto config = loader();
  if (!config.ok()) return config.status();
  // Every listener another process holds, each on its line, before any
  // one starts.
  {
    std::vector<std::string> busy;
    for (const auto& [field, address] :
         {std::pair{"listeners.data", (*config)->data_address()},
          std::pair{"listeners.admin", (*config)->admin_address()},
          std::pair{"listeners.metrics", (*config)->metrics_address()},
          std::pair{"listeners.health", (*config)->health_address()}}) {
      if (address.empty()) continue;  // listeners.health off
      absl::Status can_listen = CheckListener(field, address);
      if (!can_listen.ok()) busy.push_back(std::string(can_listen.message()));
    }
    if (!busy.empty()) {
      return absl::UnavailableError(absl::StrJoin(busy, "\n"));
    }
  }
  std::unique_ptr<Daemon> d(new Daemon());
  d->loader_ = std::move(loader);
  d->started_at_ = absl::Now();
  d->registry_ = std::make_shared<prometheus::Registry>();
  d->metrics_ = std::make_unique<ProxyMetrics>(d->registry_);
  auto& reloads = prometheus::BuildCounter()
                      .Name("sluice_config_reloads_total")
                      .Help("Configuration reloads, by result.")
                      .Register(*d->registry_);
  d->reloads_ok_ = &reloads.Add({{"result", "ok"}});
  d->reloads_failed_ = &reloads.Add({{"result", "failed"}});
  d->config_info_ = &prometheus::BuildGauge()
                         .Name("sluice_config_info")
                         .Help(
                             "Always 1; the hash label names the config "
                             "in effect (as sluicectl status shows it).")
                         .Register(*d->registry_);
  d->config_hash_ = &d->config_info_->Add({{"hash", (*config)->hash()}});
  d->config_hash_->Set(1);
  d->last_reload_ =
      &prometheus::BuildGauge()
           .Name("sluice_config_last_reload_success_timestamp_seconds")
           .Help(
               "Unix time of the last successful config load (start-up "
               "or reload).")
           .Register(*d->registry_)
           .Add({});
  d->last_reload_->SetToCurrentTime();
  prometheus::BuildGauge()
      .Name("sluice_build_info")
      .Help("Always 1; the labels tell the build.")
      .Register(*d->registry_)
      .Add({{"version", std::string(kSluiceVersion)}})
      .Set(1);

  const Config& c = **config;
  try {
    d->exposer_ = std::make_unique<prometheus::Exposer>(c.metrics_address());
  } catch (const std::exception&) {
    // civetweb says only "null context when constructing CivetServer".
    return ListenerFailed("listeners.metrics", c.metrics_address(),
                          "the HTTP server could not start");
  }
  d->exposer_->RegisterCollectable(d->registry_);
  auto ports = d->exposer_->GetListeningPorts();
  d->metrics_address_ =
      WithPort(c.metrics_address(), ports.empty() ? 0 : ports[0]);

  auto plane = DataPlane::Start(*config, d->metrics_.get());
  if (!plane.ok()) return plane.status();
  d->data_plane_ = std::move(*plane);
  d->data_address_ = WithPort(c.data_address(), d->data_plane_->port());
  d->limit_collector_ =
      std::make_shared<LimitCollector>(&d->data_plane_->limits());
  d->exposer_->RegisterCollectable(d->limit_collector_);

  auto admin =
      AdminServer::Start(c.admin_address(), d.get(), c.health_address());
  if (!admin.ok()) return admin.status();
  d->admin_ = std::move(*admin);
  Daemon* self = d.get();
  d->state_collector_ =
      std::make_shared<StateCollector>(StateCollector::Sources{
          [self] {
            // Readiness and the upstreams of the config in effect (not the
            // "liveness" service, nor upstreams a reload removed).
            std::shared_ptr<const Config> config = self->data_plane_->config();
            std::vector<std::pair<std::string, bool>> out;
            for (auto& [service, serving] : self->admin_->Serving()) {
              bool keep = service.empty();
              for (const UpstreamSettings& u : config->upstreams()) {
                keep = keep || u.name == service;
              }
              if (keep) out.emplace_back(service, serving);
            }
            return out;
          },
          [] { return static_cast<int64_t>(ResidentBytes()); },
          [self] { return self->data_plane_->memory_guard().limit(); }});
  d->exposer_->RegisterCollectable(d->state_collector_);
  d->admin_address_ = WithPort(c.admin_address(), d->admin_->port());
  if (!c.health_address().empty()) {
    d->health_address_ = WithPort(c.health_address(), d->admin_->health_port());
  }
  {
    absl::MutexLock lock(&d->control_mu_);
    d->WatchUpstreams();
  }
  d->readiness_thread_ =
      std::thread([dp = d.get()] { dp->WatchRedisReadiness(); });

  spdlog::info(
      "sluice {} serving data={} admin={} metrics={}{} workers={} "
      "config={} ({})",
      kSluiceVersion, d->data_address_, d->admin_address_, d->metrics_address_,
      d->health_address_.empty() ? "" : " health=" + d->health_address_,
      c.workers(), c.source(), c.hash());
  if (!ready_file.empty()) {
    auto status = d->WriteReadyFile(ready_file);
    if (!status.ok()) return status;
  }
  return d;
}

void Daemon::WatchUpstreams() {
  std::shared_ptr<UpstreamPool> pool = data_plane_->pool();
  std::shared_ptr<const Config> config = data_plane_->config();
  // What the watcher depends on besides the channels.
  std::string settings;
  for (const UpstreamSettings& u : config->upstreams()) {
    absl::StrAppend(&settings, u.name, "|", u.required, "|", u.health_check,
                    "|", u.health_service, "|",
                    absl::FormatDuration(u.health_interval), "|",
                    absl::FormatDuration(u.health_timeout), ";");
  }
  if (pool == watched_pool_ && settings == watched_settings_ &&
      upstream_health_ != nullptr) {
    return;
  }
  watched_settings_ = settings;
  // Upstreams found frozen stay so across a reload that keeps their
  // channels (only the health settings changed): a stopped app would
  // otherwise look READY again until a call met another keepalive timeout.
  std::vector<std::string> frozen;
  if (upstream_health_ != nullptr) {
    upstream_health_->Stop();
    if (pool == watched_pool_) frozen = upstream_health_->FrozenUpstreams();
  }
  std::vector<UpstreamHealth::Upstream> upstreams;
  for (int i = 0; i < pool->size(); ++i) {
    const UpstreamSettings& u = config->upstreams()[i];
    upstreams.push_back({pool->name(i), u.required, pool->channels(i),
                         u.health_check, u.health_service, u.health_interval,
                         u.health_timeout, pool->keepalive_failures(i),
                         std::find(frozen.begin(), frozen.end(),
                                   pool->name(i)) != frozen.end()});
  }
  watched_pool_ = pool;
  upstream_health_ = std::make_unique<UpstreamHealth>(
      std::move(upstreams), [this](const std::string& service, bool serving) {
        if (service.empty()) {
          SetReadiness(serving, std::nullopt);
          return;
        }
        {
          // Under ready_mu_, like readiness: a drain that froze health in
          // between wins (its NOT_SERVING is not overwritten).
          absl::MutexLock lock(&ready_mu_);
          if (health_frozen_.load()) return;
          admin_->SetServing(service, serving);
        }
        spdlog::info("upstream \"{}\" is {}", service,
                     serving ? "serving" : "not serving");
      });
}

void Daemon::SetReadiness(std::optional<bool> upstreams_ready,
                          std::optional<bool> redis_blocks) {
  absl::MutexLock lock(&ready_mu_);
  bool redis_changed = false;
  if (upstreams_ready.has_value()) upstreams_ready_ = *upstreams_ready;
  if (redis_blocks.has_value() && *redis_blocks != redis_blocks_) {
    redis_blocks_ = *redis_blocks;
    redis_changed = true;
  }
  if (health_frozen_.load()) return;
  if (!upstreams_ready.has_value() && !redis_changed) return;
  if (redis_changed) {
    if (redis_blocks_) {
      spdlog::warn(
          "readiness NOT_SERVING: a global limit is in its fallback or Redis "
          "is not connected (redis.not_ready_in_fallback)");
    } else {
      spdlog::info("readiness: every global limit reaches Redis again");
    }
  }
  admin_->SetServing("", upstreams_ready_ && !redis_blocks_);
}

bool Daemon::RedisBlocksReadiness() {
  std::shared_ptr<const Config> config = data_plane_->config();
  if (!config->redis().enabled || !config->redis().not_ready_in_fallback) {
    return false;
  }
  for (const auto& state : data_plane_->limits().All()) {
    const GlobalRateLimiter* g = state->global();
    if (g == nullptr) continue;
    if (g->fallback_active() || !g->redis().connected()) return true;
  }
  return false;
}

void Daemon::WatchRedisReadiness() {
  do {
    SetReadiness(std::nullopt, RedisBlocksReadiness());
  } while (
      !stop_readiness_.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
}

Daemon::~Daemon() {
  if (readiness_thread_.joinable()) {
    stop_readiness_.Notify();
    readiness_thread_.join();
  }
  if (upstream_health_ != nullptr) upstream_health_->Stop();
  // The exposer may be mid-scrape of the limits: stop it first.
  if (exposer_ != nullptr && limit_collector_ != nullptr) {
    exposer_->RemoveCollectable(limit_collector_);
  }
  if (exposer_ != nullptr && state_collector_ != nullptr) {
    exposer_->RemoveCollectable(state_collector_);
  }
  if (data_plane_ != nullptr) data_plane_->Drain(absl::ZeroDuration());
  if (admin_ != nullptr) admin_->Shutdown();
}

absl::Status Daemon::WriteReadyFile(const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    // "health" only when listeners.health is set.
    out << absl::StrFormat(
        "{\"data\":\"%s\",\"admin\":\"%s\",\"metrics\":\"%s\",%s"
        "\"pid\":%d}\n",
        data_address_, admin_address_, metrics_address_,
        health_address_.empty()
            ? ""
            : absl::StrFormat("\"health\":\"%s\",", health_address_),
        getpid());
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp));
  }
  return absl::OkStatus();
}

void Daemon::Run() {
  {
    absl::MutexLock lock(&control_mu_);
    // Between checks, give back the heap a burst freed (heap_trim.h).
    HeapTrimmer trimmer(kHeapTrimThreshold);
    while (!control_mu_.AwaitWithTimeout(absl::Condition(&drain_requested_),
                                         kHeapTrimInterval)) {
      control_mu_.Unlock();
      const HeapTrim trim = trimmer.MaybeTrim();
      if (trim.trimmed) {
        spdlog::debug(
            "heap trim: RSS {} MiB -> {} MiB ({} MiB resident but free, {} "
            "MiB free in malloc's arenas), took {}",
            trim.rss_before >> 20, trim.rss_after >> 20,
            trim.resident_free >> 20, trim.free_bytes >> 20,
            absl::FormatDuration(trim.took));
      }
      control_mu_.Lock();
    }
  }
  std::shared_ptr<const Config> config = data_plane_->config();
  spdlog::info(
      "draining: health NOT_SERVING, refusing new calls, {} in "
      "flight, drain_timeout {}",
      data_plane_->calls_in_flight(),
      absl::FormatDuration(config->drain_timeout()));
  {
    absl::MutexLock lock(&ready_mu_);  // no readiness update in between
    health_frozen_.store(true);
  }
  admin_->SetServing("", false);
  for (const UpstreamSettings& u : config->upstreams()) {
    admin_->SetServing(u.name, false);
  }
  data_plane_->Drain(config->drain_timeout());
  spdlog::info("drained; stopping");
  admin_->Shutdown();
}

absl::Status Daemon::Reload() {
  absl::MutexLock lock(&control_mu_);
  auto config = loader_();
  if (!config.ok()) {
    reloads_failed_->Increment();
    spdlog::error("config reload failed; keeping the old config:\n{}",
                  std::string(config.status().message()));
    return config.status();
  }
  std::shared_ptr<const Config> old = data_plane_->config();
  // The restart-only settings stay those the process runs with, so what
  // status, GetConfig and sluice_config_info report is what is in effect.
  const std::vector<SettingChange> fixed = (*config)->RestartOnlyChanges(*old);
  if (!fixed.empty()) {
    auto effective = (*config)->WithRestartOnlyOf(*old);
    if (!effective.ok()) {
      reloads_failed_->Increment();
      spdlog::error("config reload failed; keeping the old config: {}",
                    std::string(effective.status().message()));
      return effective.status();
    }
    std::vector<std::string> changes;
    for (const SettingChange& change : fixed) {
      changes.push_back(absl::StrCat(change.field, " (", change.from, " -> ",
                                     change.to, ")"));
    }
    spdlog::warn(
        "config reload: {} changed in the file, but listener, worker, "
        "data-port server and tls settings take effect only at restart: "
        "the running values stay in effect (rotated tls files are picked up "
        "by themselves)",
        absl::StrJoin(changes, ", "));
    config = *std::move(effective);
  }
  auto status = data_plane_->SetConfig(*config);
  if (!status.ok()) {
    reloads_failed_->Increment();
    spdlog::error("config reload failed; keeping the old config: {}",
                  std::string(status.message()));
    return status;
  }
  reloads_ok_->Increment();
  last_reload_->SetToCurrentTime();
  if ((*config)->hash() != old->hash()) {
    config_info_->Remove(config_hash_);
    config_hash_ = &config_info_->Add({{"hash", (*config)->hash()}});
    config_hash_->Set(1);
  }
  WatchUpstreams();
  spdlog::info("config reloaded from {} ({} -> {})", (*config)->source(),
               old->hash(), (*config)->hash());
  return absl::OkStatus();
}

sluice::admin::v1::GetStatusResponse Daemon::Status() {
  sluice::admin::v1::GetStatusResponse r;
  std::shared_ptr<const Config> config = data_plane_->config();
  r.set_version(std::string(kSluiceVersion));
  r.set_uptime_seconds(absl::ToDoubleSeconds(absl::Now() - started_at_));
  r.set_config_hash(config->hash());
  r.set_workers(config->workers());
  r.set_calls_in_flight(data_plane_->calls_in_flight());
  r.set_draining(data_plane_->draining());
  r.set_data_address(data_address_);
  r.set_admin_address(admin_address_);
  r.set_metrics_address(metrics_address_);
  r.set_health_address(health_address_);
  return r;
}

std::shared_ptr<const Config> Daemon::CurrentConfig() {
  return data_plane_->config();
}

bool Daemon::RequestDrain() {
  absl::MutexLock lock(&control_mu_);
  if (drain_requested_) return false;
  drain_requested_ = true;
  return true;
}

}  // namespace sluice
