// sluice-bench's settings: what the flags say, validated, plus the request
// payload they resolve to.
#ifndef SLUICE_CLIENT_BENCH_OPTIONS_H_
#define SLUICE_CLIENT_BENCH_OPTIONS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sluice::bench {

enum class CallKind { kUnary, kServerStream, kBidi };

const char* CallKindName(CallKind kind);

// What the user asked for. Plain data; filled by main from flags or by
// tests directly, then passed through Resolve.
struct BenchOptions {
  std::string target;  // HOST:PORT
  // Full method name "/package.Service/Method". Empty: the scenario's
  // method, or /grpc.testing.TestService/UnaryCall with --payload_file.
  std::string method;
  // "unary", "server_stream", "bidi"; empty: the scenario's kind, or unary.
  std::string kind;
  // "unary", "ticker", "pingpong"; empty: "unary" unless a payload is given.
  std::string scenario;
  // Raw serialized request bytes; `payload_file` is read into it.
  std::string payload_file;
  std::string payload;
  bool payload_set = false;  // `payload` given directly (tests)

  int64_t request_bytes = 100;    // scenario unary / pingpong
  int64_t response_bytes = 100;   // scenario unary / ticker / pingpong
  int64_t stream_messages = 100;  // scenario ticker: ticks per call
  int64_t pingpong_rounds = 10;   // bidi: request/response pairs per call

  int threads = 2;
  int connections = 1;
  int concurrency = 8;          // closed loop: calls in flight per connection
  double rate = 0;              // > 0: open loop, calls per second overall
  int64_t max_inflight = 1000;  // open loop: hard cap on calls in flight
  absl::Duration duration = absl::ZeroDuration();     // 0: not bounded by time
  int64_t calls = 0;                                  // 0: not bounded by count
  absl::Duration timeout = absl::Seconds(10);         // per-call deadline
  absl::Duration connect_timeout = absl::Seconds(5);  // initial connect
  // Metadata sent with every call, as given ("key:value").
  std::vector<std::string> headers;
};

// BenchOptions checked and turned into what the runner needs.
struct ResolvedOptions {
  BenchOptions options;
  CallKind kind = CallKind::kUnary;
  std::string method;
  std::string payload;  // serialized request message
  std::vector<std::pair<std::string, std::string>> metadata;
  absl::Duration duration = absl::ZeroDuration();
  bool open_loop() const { return options.rate > 0; }
};

// Validates `options` and builds the request payload (reading
// payload_file, or serializing the scenario's request). Returns
// InvalidArgument with a message naming the flag on any bad setting.
// When neither duration nor calls is set, the run lasts 10 s.
absl::StatusOr<ResolvedOptions> Resolve(const BenchOptions& options);

// "key:value" -> {key lowercased, value}; InvalidArgument when the key is
// empty, not a valid gRPC metadata key, or reserved (grpc-*, :pseudo).
absl::StatusOr<std::pair<std::string, std::string>> ParseHeader(
    const std::string& header);

}  // namespace sluice::bench

#endif  // SLUICE_CLIENT_BENCH_OPTIONS_H_
