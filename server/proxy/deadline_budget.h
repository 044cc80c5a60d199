// Deadline budget arithmetic for one call (pure functions, no clock of
// their own: the caller passes "now").
#ifndef SLUICE_SERVER_PROXY_DEADLINE_BUDGET_H_
#define SLUICE_SERVER_PROXY_DEADLINE_BUDGET_H_

#include "absl/time/time.h"
#include "server/config/config.h"

namespace sluice {

struct Budget {
  // False: too little time is left; answer DEADLINE_EXCEEDED with
  // `sluice-reason: deadline_budget` without calling the upstream.
  bool ok = true;
  // The deadline to give the upstream call; absl::InfiniteFuture() if none.
  absl::Time upstream_deadline = absl::InfiniteFuture();
};

// client_deadline: the client's deadline (InfiniteFuture if it sent none).
// The upstream gets: min(client_deadline - offset, now + max_timeout), or
// now + default_timeout when the client sent none (also clamped to max).
// Time already spent inside Sluice is accounted for because `now` is read
// when the upstream call is about to start.
Budget ComputeBudget(absl::Time now, absl::Time client_deadline,
                     const DeadlineSettings& policy);

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_DEADLINE_BUDGET_H_
