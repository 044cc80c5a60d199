// The clocks of a proxied call.
//
// A call's own timers (pacing, the idle timeout, queue waits, the stuck
// write, connect waits) run on the monotonic clock: a wall-clock step must
// neither stall nor cut them. A monotonic time is the steady clock's
// reading placed on absl's time line; only differences between two of them
// mean anything. Deadlines a client sends are wall-clock times. Free
// functions, no state; any thread.
#ifndef SLUICE_SERVER_PROXY_CALL_TIME_H_
#define SLUICE_SERVER_PROXY_CALL_TIME_H_

#include "absl/time/time.h"
#include "grpc/support/time.h"
#include "grpcpp/server_context.h"

namespace sluice {

// Now, on the monotonic clock.
absl::Time MonoNow();

// The grpc::Alarm deadline (gRPC's monotonic clock) for monotonic time `at`.
gpr_timespec AlarmAt(absl::Time at);

// An alarm deadline that has passed: the event is delivered at once.
gpr_timespec AlarmNow();

// The client's deadline on the wall clock (InfiniteFuture when none).
absl::Time ClientDeadline(const grpc::ServerContext& ctx);

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_CALL_TIME_H_
