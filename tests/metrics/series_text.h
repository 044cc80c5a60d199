// Shared by the metrics tests: the series a scrape holds, one sorted line
// each, `name{label="value",...} value` (labels in name order; a histogram
// is one line with its sample count), so a test compares the exact set a
// configuration exports. And configs parsed as the daemon parses them.
#ifndef SLUICE_TESTS_METRICS_SERIES_TEXT_H_
#define SLUICE_TESTS_METRICS_SERIES_TEXT_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "prometheus/metric_family.h"
#include "server/config/config.h"

namespace sluice {

// Series whose metric name starts with `prefix`.
inline std::vector<std::string> SeriesText(
    const std::vector<prometheus::MetricFamily>& families,
    std::string_view prefix = "") {
  std::vector<std::string> out;
  for (const prometheus::MetricFamily& f : families) {
    if (!std::string_view(f.name).starts_with(prefix)) continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      auto labels = m.label;
      std::sort(labels.begin(), labels.end());
      std::vector<std::string> parts;
      for (const auto& l : labels) {
        parts.push_back(absl::StrCat(l.name, "=\"", l.value, "\""));
      }
      double value = 0;
      switch (f.type) {
        case prometheus::MetricType::Counter:
          value = m.counter.value;
          break;
        case prometheus::MetricType::Gauge:
          value = m.gauge.value;
          break;
        case prometheus::MetricType::Histogram:
          value = static_cast<double>(m.histogram.sample_count);
          break;
        default:
          break;
      }
      out.push_back(
          absl::StrCat(f.name, "{", absl::StrJoin(parts, ","), "} ", value));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// `name{labels}` entries as the sorted lines SeriesText gives for them at 0.
inline std::vector<std::string> AtZero(std::vector<std::string> series) {
  for (std::string& s : series) s += " 0";
  std::sort(series.begin(), series.end());
  return series;
}

// The 17 values of the grpc_code label (Go's names of the codes).
inline std::vector<std::string> AllGoCodes() {
  return {"Aborted",
          "AlreadyExists",
          "Canceled",
          "DataLoss",
          "DeadlineExceeded",
          "FailedPrecondition",
          "Internal",
          "InvalidArgument",
          "NotFound",
          "OK",
          "OutOfRange",
          "PermissionDenied",
          "ResourceExhausted",
          "Unauthenticated",
          "Unavailable",
          "Unimplemented",
          "Unknown"};
}

inline std::shared_ptr<const Config> MustParse(const std::string& yaml) {
  absl::StatusOr<std::shared_ptr<const Config>> config =
      ParseConfigYaml(yaml, "test.yaml");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : nullptr;
}

}  // namespace sluice

#endif  // SLUICE_TESTS_METRICS_SERIES_TEXT_H_
