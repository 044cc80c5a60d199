// Why Sluice itself ended a call: the value of the `sluice-reason` trailer.
#ifndef SLUICE_SERVER_METRICS_REASON_H_
#define SLUICE_SERVER_METRICS_REASON_H_

#include <string_view>

namespace sluice {

enum class Reason {
  kNoRoute,
  kRateLimited,
  kConcurrencyLimited,
  kQueueTimeout,
  kDeadlineBudget,
  kStreamRate,
  kIdleTimeout,
  kDraining,
  // The request's headers are over proxy.max_header_list_bytes or
  // proxy.max_header_count: refused before anything was forwarded.
  kHeaderTooLarge,
  // The upstream could not be reached: not connected within connect_wait,
  // or its connection failed before it answered.
  kUpstreamUnavailable,
  // Sluice's resident memory is at proxy.max_memory_bytes: new calls are
  // refused until it falls.
  kOverloaded,
  // The client's address cancelled more calls before their response than
  // its early-cancel budget allows (a rapid-reset flood): its new calls are
  // refused at once, without an upstream call.
  kEarlyCancels,
  kCount,  // not a reason: the number of reasons
};

inline constexpr std::string_view kReasonTrailer = "sluice-reason";

inline std::string_view ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kNoRoute:
      return "no_route";
    case Reason::kRateLimited:
      return "rate_limited";
    case Reason::kConcurrencyLimited:
      return "concurrency_limited";
    case Reason::kQueueTimeout:
      return "queue_timeout";
    case Reason::kDeadlineBudget:
      return "deadline_budget";
    case Reason::kStreamRate:
      return "stream_rate";
    case Reason::kIdleTimeout:
      return "idle_timeout";
    case Reason::kDraining:
      return "draining";
    case Reason::kHeaderTooLarge:
      return "header_too_large";
    case Reason::kUpstreamUnavailable:
      return "upstream_unavailable";
    case Reason::kOverloaded:
      return "overloaded";
    case Reason::kEarlyCancels:
      return "early_cancels";
    case Reason::kCount:
      break;
  }
  return "unknown";
}

}  // namespace sluice

#endif  // SLUICE_SERVER_METRICS_REASON_H_
