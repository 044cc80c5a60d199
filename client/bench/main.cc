// sluice-bench: a gRPC load generator for Sluice and its upstreams.
//
//   sluice-bench --target=127.0.0.1:8080 --connections=2 --concurrency=16
//   sluice-bench --target=127.0.0.1:8080 --duration=30s --header=x-user:alice
//   sluice-bench --target=127.0.0.1:8080 --scenario=ticker --rate=500 --json
//
// See docs/sluice-bench.md. Exit status: 0 when the run happened, 2 on bad
// flags (unknown, malformed or inconsistent), 1 when no call could be made.
// --help lists the flags (and exits 1, as absl does).
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "client/bench/options.h"
#include "client/bench/report.h"
#include "client/bench/runner.h"
#include "client/common/flag_check.h"

ABSL_FLAG(std::string, target, "", "HOST:PORT to send calls to (required)");
ABSL_FLAG(std::string, method, "",
          "full method name, e.g. /grpc.testing.TestService/UnaryCall "
          "(default: the scenario's method)");
ABSL_FLAG(std::string, kind, "",
          "unary, server_stream or bidi (ping-pong); default: the "
          "scenario's kind, or unary with --payload_file");
ABSL_FLAG(std::string, scenario, "",
          "built-in requests for the demo upstream: unary (UnaryCall), "
          "ticker (Ticker/Subscribe), pingpong (FullDuplexCall); default "
          "unary unless --payload_file is given");
ABSL_FLAG(std::string, payload_file, "",
          "file holding the raw serialized request message");
ABSL_FLAG(int64_t, request_bytes, 100,
          "scenarios unary, pingpong: request payload bytes");
ABSL_FLAG(int64_t, response_bytes, 100,
          "scenarios unary, ticker, pingpong: response payload bytes");
ABSL_FLAG(int64_t, stream_messages, 100, "scenario ticker: ticks per call");
ABSL_FLAG(int64_t, pingpong_rounds, 10,
          "bidi: request/response rounds per call");
ABSL_FLAG(int, threads, 2, "worker threads, one completion queue each");
ABSL_FLAG(int, connections, 1, "channels (separate HTTP/2 connections)");
ABSL_FLAG(int, concurrency, 8, "closed loop: calls in flight per connection");
ABSL_FLAG(double, rate, 0,
          "open loop: calls per second over all connections (0: closed "
          "loop); latency counts from each call's intended send time");
ABSL_FLAG(int64_t, max_inflight, 1000,
          "open loop: hard cap on calls in flight; sends over it are "
          "dropped and reported");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "stop starting calls after this long (default 10s when --calls "
          "is not given either)");
ABSL_FLAG(int64_t, calls, 0, "stop after this many calls (0: no limit)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(10), "per-call deadline");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(5),
          "how long to wait for the connections before giving up");
ABSL_FLAG(std::vector<std::string>, header, {},
          "metadata key:value sent with every call; repeatable");
ABSL_FLAG(bool, json, false, "print one JSON object instead of a table");

namespace {

// absl keeps only the last value of a repeated flag; --header collects
// every occurrence, so they are taken out of argv before absl parses it.
std::vector<std::string> ExtractHeaders(int* argc, char** argv) {
  std::vector<std::string> headers;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {  // the rest is positional
      for (; i < *argc; ++i) argv[out++] = argv[i];
      break;
    }
    if (absl::StartsWith(arg, "--header=") ||
        absl::StartsWith(arg, "-header=")) {
      headers.push_back(arg.substr(arg.find('=') + 1));
      continue;
    }
    if ((arg == "--header" || arg == "-header") && i + 1 < *argc) {
      headers.push_back(argv[++i]);
      continue;
    }
    argv[out++] = argv[i];
  }
  *argc = out;
  return headers;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "gRPC load generator (docs/sluice-bench.md).\n"
      "  sluice-bench --target=HOST:PORT [flags]");
  sluice::SetUsageConfig("client/bench/main.cc");
  std::vector<std::string> headers = ExtractHeaders(&argc, argv);
  // absl's parser exits 1 on a bad flag; here that is a usage error (2).
  if (auto problem = sluice::FindFlagError(argc, argv)) {
    std::cerr << "sluice-bench: " << *problem << " (--help lists the flags)"
              << std::endl;
    return 2;
  }
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::cerr << "sluice-bench: unexpected argument '" << positional[1]
              << "' (flags are --name=value)" << std::endl;
    return 2;
  }

  sluice::bench::BenchOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  options.method = absl::GetFlag(FLAGS_method);
  options.kind = absl::GetFlag(FLAGS_kind);
  options.scenario = absl::GetFlag(FLAGS_scenario);
  options.payload_file = absl::GetFlag(FLAGS_payload_file);
  options.request_bytes = absl::GetFlag(FLAGS_request_bytes);
  options.response_bytes = absl::GetFlag(FLAGS_response_bytes);
  options.stream_messages = absl::GetFlag(FLAGS_stream_messages);
  options.pingpong_rounds = absl::GetFlag(FLAGS_pingpong_rounds);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.connections = absl::GetFlag(FLAGS_connections);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.rate = absl::GetFlag(FLAGS_rate);
  options.max_inflight = absl::GetFlag(FLAGS_max_inflight);
  options.duration = absl::GetFlag(FLAGS_duration);
  options.calls = absl::GetFlag(FLAGS_calls);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  options.headers = absl::GetFlag(FLAGS_header);  // none: taken out above
  options.headers.insert(options.headers.end(), headers.begin(), headers.end());

  absl::StatusOr<sluice::bench::ResolvedOptions> resolved =
      sluice::bench::Resolve(options);
  if (!resolved.ok()) {
    std::cerr << "sluice-bench: " << resolved.status().message() << std::endl;
    return 2;
  }
  absl::StatusOr<sluice::bench::BenchResult> result =
      sluice::bench::RunBench(*resolved);
  if (!result.ok()) {
    std::cerr << "sluice-bench: " << result.status().message() << std::endl;
    return 1;
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << sluice::bench::FormatJson(*result) << std::endl;
  } else {
    std::cout << sluice::bench::FormatTable(*result) << std::flush;
  }
  if (result->calls == 0) {
    std::cerr << "sluice-bench: no call completed" << std::endl;
    return 1;
  }
  return 0;
}
