#include "server/proxy/call_time.h"

#include <algorithm>
#include <cstdint>

#include "server/limits/clock.h"

namespace sluice {

absl::Time MonoNow() {
  return absl::UnixEpoch() + absl::Nanoseconds(RealClock::Get().NowNanos());
}

gpr_timespec AlarmAt(absl::Time at) {
  const int64_t nanos =
      std::max<int64_t>(0, absl::ToInt64Nanoseconds(at - MonoNow()));
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_nanos(nanos, GPR_TIMESPAN));
}

gpr_timespec AlarmNow() { return gpr_inf_past(GPR_CLOCK_MONOTONIC); }

absl::Time ClientDeadline(const grpc::ServerContext& ctx) {
  // raw_deadline(), not deadline(): the latter's conversion to a chrono
  // time_point (int64 nanoseconds) overflows for a grpc-timeout that ends
  // past the year 2262, e.g. "3000000H".
  const gpr_timespec raw = ctx.raw_deadline();
  if (gpr_time_cmp(raw, gpr_inf_future(raw.clock_type)) >= 0) {
    return absl::InfiniteFuture();
  }
  const gpr_timespec real = gpr_convert_clock_type(raw, GPR_CLOCK_REALTIME);
  if (gpr_time_cmp(real, gpr_inf_future(GPR_CLOCK_REALTIME)) >= 0) {
    return absl::InfiniteFuture();
  }
  return absl::FromUnixSeconds(real.tv_sec) + absl::Nanoseconds(real.tv_nsec);
}

}  // namespace sluice
