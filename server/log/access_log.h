// The access log: one JSON line per finished call.
//
// Owned by the DataPlane; Write() is called by workers when a call
// finishes. Formatting happens on the worker (no lock); the line is handed
// to a spdlog async logger whose own thread does the I/O through a bounded
// queue that drops the oldest line when full, so a slow disk never blocks
// a worker. Dropped lines are counted in `dropped` (the metric
// sluice_access_log_dropped_total).
#ifndef SLUICE_SERVER_LOG_ACCESS_LOG_H_
#define SLUICE_SERVER_LOG_ACCESS_LOG_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/support/string_ref.h"
#include "prometheus/counter.h"
#include "server/config/config.h"

namespace spdlog {
class logger;
namespace details {
class thread_pool;
}  // namespace details
}  // namespace spdlog

namespace sluice {

struct AccessRecord {
  absl::Time start;
  std::string_view peer;
  std::string_view method;
  std::string_view route;     // "" when no route matched
  std::string_view upstream;  // "" when the upstream was not called
  int grpc_code = 0;
  std::string_view reason;  // sluice-reason, "" when the upstream answered
  absl::Duration duration;
  absl::Duration queue_wait;
  int64_t msgs_in = 0;   // client -> Sluice
  int64_t msgs_out = 0;  // Sluice -> client
  int64_t bytes_in = 0;
  int64_t bytes_out = 0;
  const std::multimap<grpc::string_ref, grpc::string_ref>* metadata = nullptr;
};

class AccessLog {
 public:
  // `path` empty: standard output.
  static absl::StatusOr<std::shared_ptr<AccessLog>> Open(
      const std::string& path, prometheus::Counter* dropped);
  ~AccessLog();

  const std::string& path() const { return path_; }

  // True for a fraction `rate` of calls (per-thread generator; no lock).
  static bool Sample(double rate);

  // The JSON line for `record` (no trailing newline). Headers listed in
  // settings.headers are added; sensitive ones as "[redacted]".
  static std::string Format(const AccessRecord& record,
                            const AccessLogSettings& settings);

  void Write(const AccessRecord& record, const AccessLogSettings& settings);
  void Flush();

 private:
  AccessLog() = default;
  std::string path_;
  std::shared_ptr<spdlog::details::thread_pool> pool_;
  std::shared_ptr<spdlog::logger> logger_;
  prometheus::Counter* dropped_ = nullptr;
  std::atomic<size_t> dropped_seen_{0};
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LOG_ACCESS_LOG_H_
