#include "server/log/access_log.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/grpc_code_name.h"
#include "server/common/json_string.h"
#include "spdlog/async.h"
#include "spdlog/async_logger.h"
#include "spdlog/sinks/basic_file_sink.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace sluice {
namespace {

constexpr size_t kQueueLines = 8192;

// Appends `s` as a JSON string literal; any bytes give valid JSON.
void AppendJson(std::string* out, std::string_view s) {
  AppendJsonString(s, NonAscii::kEscapeBytes, out);
}

void AppendField(std::string* out, std::string_view name,
                 std::string_view value) {
  out->push_back(',');
  AppendJson(out, name);
  out->push_back(':');
  AppendJson(out, value);
}

}  // namespace

absl::StatusOr<std::shared_ptr<AccessLog>> AccessLog::Open(
    const std::string& path, prometheus::Counter* dropped) {
  std::shared_ptr<AccessLog> log(new AccessLog());
  log->path_ = path;
  log->dropped_ = dropped;
  spdlog::sink_ptr sink;
  try {
    if (path.empty()) {
      sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
    } else {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "access_log.path: cannot open \"", path, "\": ", e.what()));
  }
  log->pool_ = std::make_shared<spdlog::details::thread_pool>(kQueueLines, 1);
  log->logger_ = std::make_shared<spdlog::async_logger>(
      "access", std::move(sink), log->pool_,
      spdlog::async_overflow_policy::overrun_oldest);
  log->logger_->set_pattern("%v");
  log->logger_->set_level(spdlog::level::info);
  log->logger_->flush_on(spdlog::level::info);
  return log;
}

AccessLog::~AccessLog() {
  if (logger_ != nullptr) logger_->flush();
}

bool AccessLog::Sample(double rate) {
  if (rate >= 1.0) return true;
  if (rate <= 0.0) return false;
  thread_local std::minstd_rand rng(std::random_device{}());
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng) < rate;
}

std::string AccessLog::Format(const AccessRecord& r,
                              const AccessLogSettings& settings) {
  std::string out = "{\"time\":";
  AppendJson(&out, absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", r.start,
                                    absl::UTCTimeZone()));
  AppendField(&out, "peer", r.peer);
  AppendField(&out, "method", r.method);
  AppendField(&out, "route", r.route);
  AppendField(&out, "upstream", r.upstream);
  const int code = r.grpc_code;
  AppendField(&out, "grpc_status",
              GrpcCodeName(code) != nullptr ? GrpcCodeName(code) : "UNKNOWN");
  absl::StrAppend(&out, ",\"grpc_code\":", code);
  AppendField(&out, "sluice_reason", r.reason);
  absl::StrAppendFormat(&out,
                        ",\"duration_ms\":%.3f,\"queue_wait_ms\":%.3f"
                        ",\"msgs_in\":%d,\"msgs_out\":%d"
                        ",\"bytes_in\":%d,\"bytes_out\":%d",
                        absl::ToDoubleMilliseconds(r.duration),
                        absl::ToDoubleMilliseconds(r.queue_wait), r.msgs_in,
                        r.msgs_out, r.bytes_in, r.bytes_out);
  if (!settings.headers.empty() && r.metadata != nullptr) {
    out.append(",\"headers\":{");
    bool first = true;
    for (const std::string& name : settings.headers) {
      auto it = r.metadata->find(grpc::string_ref(name));
      if (it == r.metadata->end()) continue;
      if (!first) out.push_back(',');
      first = false;
      AppendJson(&out, name);
      out.push_back(':');
      const bool sensitive =
          std::find(settings.sensitive_headers.begin(),
                    settings.sensitive_headers.end(),
                    name) != settings.sensitive_headers.end();
      AppendJson(&out, sensitive ? std::string_view("[redacted]")
                                 : std::string_view(it->second.data(),
                                                    it->second.size()));
    }
    out.push_back('}');
  }
  out.push_back('}');
  return out;
}

void AccessLog::Write(const AccessRecord& record,
                      const AccessLogSettings& settings) {
  logger_->info(Format(record, settings));
  // Export drops: the pool counts lines it overwrote.
  const size_t overruns = pool_->overrun_counter();
  size_t seen = dropped_seen_.load(std::memory_order_relaxed);
  if (overruns > seen && dropped_ != nullptr &&
      dropped_seen_.compare_exchange_strong(seen, overruns)) {
    dropped_->Increment(static_cast<double>(overruns - seen));
  }
}

void AccessLog::Flush() { logger_->flush(); }

}  // namespace sluice
