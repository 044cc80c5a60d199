#include "client/bench/report.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/grpc_code_name.h"
#include "server/common/json_string.h"

namespace sluice::bench {
namespace {

struct Quantile {
  const char* json_key;
  const char* label;
  double percent;
};

constexpr Quantile kQuantiles[] = {
    {"p50", "p50", 50},
    {"p90", "p90", 90},
    {"p99", "p99", 99},
    {"p99_9", "p99.9", 99.9},
};

double Micros(int64_t nanos) { return static_cast<double>(nanos) / 1e3; }

std::string JsonString(const std::string& s) {
  // Keys and targets may hold any bytes (sluice-reason values are metadata).
  std::string out;
  AppendJsonString(s, NonAscii::kEscapeBytes, &out);
  return out;
}

std::string JsonNumber(double value) { return absl::StrFormat("%.3f", value); }

std::string JsonCounts(const std::map<std::string, uint64_t>& counts) {
  std::string out = "{";
  bool first = true;
  for (const auto& [key, count] : counts) {
    if (!first) out += ",";
    first = false;
    absl::StrAppend(&out, JsonString(key), ":", count);
  }
  out += "}";
  return out;
}

}  // namespace

double BenchResult::calls_per_second() const {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  return seconds > 0 ? static_cast<double>(calls) / seconds : 0.0;
}

double BenchResult::messages_per_second() const {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  return seconds > 0 ? static_cast<double>(messages) / seconds : 0.0;
}

std::string StatusCodeName(int code) {
  if (const char* name = GrpcCodeName(code)) return name;
  return absl::StrCat("CODE_", code);
}

std::string FormatTable(const BenchResult& r) {
  std::string out;
  absl::StrAppendFormat(&out, "sluice-bench %s %s (%s)\n", r.target, r.method,
                        CallKindName(r.kind));
  if (r.open_loop) {
    absl::StrAppendFormat(
        &out, "  open loop: %.1f calls/s over %d connection(s), %d thread(s)\n",
        r.rate, r.connections, r.threads);
  } else {
    absl::StrAppendFormat(
        &out, "  closed loop: %d connection(s) x %d in flight, %d thread(s)\n",
        r.connections, r.concurrency, r.threads);
  }
  absl::StrAppendFormat(&out, "  %-22s %12.3f s\n", "elapsed",
                        absl::ToDoubleSeconds(r.elapsed));
  absl::StrAppendFormat(&out, "  %-22s %12d  (%.1f calls/s)\n", "calls",
                        r.calls, r.calls_per_second());
  absl::StrAppendFormat(&out, "  %-22s %12d  (%.1f msg/s)\n", "messages",
                        r.messages, r.messages_per_second());
  if (r.open_loop) {
    absl::StrAppendFormat(&out, "  %-22s %12d\n", "scheduled", r.scheduled);
    absl::StrAppendFormat(&out, "  %-22s %12d  (max_inflight reached)\n",
                          "dropped", r.dropped);
    absl::StrAppendFormat(&out, "  %-22s %12d  (max lag %.1f us)\n",
                          "late (>1ms)", r.late, Micros(r.max_send_lag_ns));
  }
  out += "  latency (us)";
  if (r.open_loop) out += ", from intended send time";
  out += "\n";
  for (const Quantile& q : kQuantiles) {
    absl::StrAppendFormat(&out, "    %-20s %12.1f\n", q.label,
                          Micros(r.latency.Percentile(q.percent)));
  }
  absl::StrAppendFormat(&out, "    %-20s %12.1f\n", "max",
                        Micros(r.latency.max()));
  absl::StrAppendFormat(&out, "    %-20s %12.1f\n", "mean",
                        r.latency.mean() / 1e3);
  if (r.latency_ok.count() != r.latency.count()) {
    absl::StrAppendFormat(
        &out, "    %-20s %12.1f / %.1f / %.1f  (p50 / p99 / max)\n",
        "OK calls only", Micros(r.latency_ok.Percentile(50)),
        Micros(r.latency_ok.Percentile(99)), Micros(r.latency_ok.max()));
  }
  out += "  status\n";
  for (const auto& [name, count] : r.status_counts) {
    absl::StrAppendFormat(&out, "    %-20s %12d\n", name, count);
  }
  if (!r.reasons.empty()) {
    out += "  sluice-reason\n";
    for (const auto& [reason, count] : r.reasons) {
      absl::StrAppendFormat(&out, "    %-20s %12d\n", reason, count);
    }
  }
  return out;
}

std::string FormatJson(const BenchResult& r) {
  std::string out = "{";
  absl::StrAppend(&out, "\"target\":", JsonString(r.target));
  absl::StrAppend(&out, ",\"method\":", JsonString(r.method));
  absl::StrAppend(&out, ",\"kind\":", JsonString(CallKindName(r.kind)));
  absl::StrAppend(&out,
                  ",\"mode\":", JsonString(r.open_loop ? "open" : "closed"));
  absl::StrAppend(&out, ",\"rate\":", JsonNumber(r.rate));
  absl::StrAppend(&out, ",\"threads\":", r.threads);
  absl::StrAppend(&out, ",\"connections\":", r.connections);
  absl::StrAppend(&out, ",\"concurrency\":", r.concurrency);
  absl::StrAppend(&out, ",\"elapsed_s\":",
                  absl::StrFormat("%.6f", absl::ToDoubleSeconds(r.elapsed)));
  absl::StrAppend(&out, ",\"calls\":", r.calls);
  absl::StrAppend(&out, ",\"calls_per_s\":", JsonNumber(r.calls_per_second()));
  absl::StrAppend(&out, ",\"messages\":", r.messages);
  absl::StrAppend(&out,
                  ",\"messages_per_s\":", JsonNumber(r.messages_per_second()));
  out += ",\"latency_us\":{";
  for (const Quantile& q : kQuantiles) {
    absl::StrAppend(&out, "\"", q.json_key,
                    "\":", JsonNumber(Micros(r.latency.Percentile(q.percent))),
                    ",");
  }
  absl::StrAppend(&out, "\"max\":", JsonNumber(Micros(r.latency.max())));
  absl::StrAppend(&out, ",\"min\":", JsonNumber(Micros(r.latency.min())));
  absl::StrAppend(&out, ",\"mean\":", JsonNumber(r.latency.mean() / 1e3));
  out += "}";
  out += ",\"latency_ok_us\":{";
  for (const Quantile& q : kQuantiles) {
    absl::StrAppend(
        &out, "\"", q.json_key,
        "\":", JsonNumber(Micros(r.latency_ok.Percentile(q.percent))), ",");
  }
  absl::StrAppend(&out, "\"max\":", JsonNumber(Micros(r.latency_ok.max())));
  out += "}";
  absl::StrAppend(&out, ",\"status\":", JsonCounts(r.status_counts));
  absl::StrAppend(&out, ",\"sluice_reason\":", JsonCounts(r.reasons));
  absl::StrAppend(&out, ",\"scheduled\":", r.scheduled);
  absl::StrAppend(&out, ",\"dropped\":", r.dropped);
  absl::StrAppend(&out, ",\"late\":", r.late);
  absl::StrAppend(
      &out, ",\"max_send_lag_us\":", JsonNumber(Micros(r.max_send_lag_ns)));
  out += "}";
  return out;
}

}  // namespace sluice::bench
