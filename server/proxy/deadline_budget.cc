#include "server/proxy/deadline_budget.h"

#include <algorithm>

namespace sluice {

Budget ComputeBudget(absl::Time now, absl::Time client_deadline,
                     const DeadlineSettings& policy) {
  Budget budget;
  absl::Time deadline = absl::InfiniteFuture();
  if (client_deadline != absl::InfiniteFuture()) {
    deadline = client_deadline - policy.offset;
  } else if (policy.default_timeout > absl::ZeroDuration()) {
    deadline = now + policy.default_timeout;
  }
  if (policy.max_timeout > absl::ZeroDuration()) {
    deadline = std::min(deadline, now + policy.max_timeout);
  }
  budget.upstream_deadline = deadline;
  if (deadline != absl::InfiniteFuture() &&
      deadline - now < std::max(policy.min_budget, absl::Nanoseconds(1))) {
    budget.ok = false;
  }
  return budget;
}

}  // namespace sluice
