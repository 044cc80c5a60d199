// What a sluice-bench run measured, and its two renderings: a readable
// table and one JSON object.
#ifndef SLUICE_CLIENT_BENCH_REPORT_H_
#define SLUICE_CLIENT_BENCH_REPORT_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/time/time.h"
#include "client/bench/histogram.h"
#include "client/bench/options.h"

namespace sluice::bench {

// Plain data, built by the runner once every worker thread has ended.
struct BenchResult {
  std::string target;
  std::string method;
  CallKind kind = CallKind::kUnary;
  bool open_loop = false;
  double rate = 0;  // open loop: the asked-for calls/s
  int threads = 0;
  int connections = 0;
  int concurrency = 0;

  // From the first send to the last completion.
  absl::Duration elapsed = absl::ZeroDuration();
  uint64_t calls = 0;     // calls completed (any status)
  uint64_t messages = 0;  // response messages received
  // Nanoseconds; open loop: from each call's intended send time.
  Histogram latency;
  Histogram latency_ok;  // the same, OK calls only (e.g. admitted ones)
  std::map<std::string, uint64_t> status_counts;  // by status code name
  std::map<std::string, uint64_t> reasons;        // sluice-reason values

  // Open loop only.
  uint64_t scheduled = 0;  // sends whose intended time came
  uint64_t dropped = 0;    // not sent: --max_inflight calls were in flight
  uint64_t late = 0;       // sent more than 1 ms after the intended time
  int64_t max_send_lag_ns = 0;

  double calls_per_second() const;
  double messages_per_second() const;
};

// "OK", "RESOURCE_EXHAUSTED", ...; "CODE_<n>" for codes outside 0..16.
std::string StatusCodeName(int code);

// A multi-line table for people.
std::string FormatTable(const BenchResult& result);
// One JSON object on one line (no trailing newline). Latencies in
// microseconds, rates per second.
std::string FormatJson(const BenchResult& result);

}  // namespace sluice::bench

#endif  // SLUICE_CLIENT_BENCH_REPORT_H_
