// Runs one sluice-bench load: async grpc::GenericStub calls on completion
// queues, closed loop (fixed calls in flight) or open loop (a fixed rate).
#ifndef SLUICE_CLIENT_BENCH_RUNNER_H_
#define SLUICE_CLIENT_BENCH_RUNNER_H_

#include "absl/status/statusor.h"
#include "client/bench/options.h"
#include "client/bench/report.h"

namespace sluice::bench {

// Connects min(threads, connections) worker threads' worth of channels to
// the target (one HTTP/2 connection per channel: each has its own channel
// argument and a local subchannel pool), waits up to connect_timeout for
// them, runs the load until its duration and/or call count is spent and
// every call in flight has ended (each is bounded by the per-call
// deadline), and returns what was measured.
//
// Blocking; runs its own threads and joins them before returning, so it is
// safe to call from a test or from main. Errors: InvalidArgument for bad
// options, Unavailable when no connection could be made at all.
absl::StatusOr<BenchResult> RunBench(const BenchOptions& options);
absl::StatusOr<BenchResult> RunBench(const ResolvedOptions& options);

}  // namespace sluice::bench

#endif  // SLUICE_CLIENT_BENCH_RUNNER_H_
