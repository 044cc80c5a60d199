// Cancellation latency (issue #5, scenario 8): how long after a client
// cancels a stream the upstream's handler sees the cancel, directly and
// through Sluice. The demo upstream and Sluice's data plane run in this
// process on 127.0.0.1 (port 0); each sample opens an idle Ticker stream,
// waits until the upstream runs it, cancels it and times the upstream's
// OnCancel. Prints percentiles; asserts nothing.
//
//   bazel run -c opt //bench/micro:cancel_latency -- --samples=1000
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "prometheus/registry.h"
#include "server/config/config.h"
#include "server/demo/demo_upstream.h"
#include "server/metrics/proxy_metrics.h"
#include "server/proxy/data_plane.h"
#include "sluice/demo/v1/ticker.grpc.pb.h"

ABSL_FLAG(int, samples, 1000, "Cancelled streams per path.");
ABSL_FLAG(int, workers, 1, "Sluice worker threads.");

namespace sluice {
namespace {

using demo::CallStats;
using demo::DemoUpstream;
using demo::MethodStats;

// Microseconds from TryCancel to the upstream's OnCancel, per sample.
std::vector<double> Measure(const std::string& target, DemoUpstream& upstream,
                            int samples) {
  auto channel =
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = sluice::demo::v1::Ticker::NewStub(channel);
  const CallStats& stats = upstream.ticker_service().stats();
  std::vector<double> micros;
  for (int i = 0; i < samples + 10; ++i) {  // the first 10 warm up
    const MethodStats before = stats.Get("Subscribe");
    grpc::ClientContext ctx;
    sluice::demo::v1::SubscribeRequest request;
    request.set_count(1);
    request.set_interval_ms(60000);  // idle: the one tick is a minute away
    auto reader = stub->Subscribe(&ctx, request);
    if (!stats.Await(
            "Subscribe",
            [&](const MethodStats& s) { return s.started > before.started; },
            absl::Seconds(10))) {
      std::fprintf(stderr, "cancel_latency: the stream did not start\n");
      std::exit(1);
    }
    const absl::Time t0 = absl::Now();
    ctx.TryCancel();
    if (!stats.Await(
            "Subscribe",
            [&](const MethodStats& s) {
              return s.cancelled > before.cancelled;
            },
            absl::Seconds(10))) {
      std::fprintf(stderr, "cancel_latency: the upstream saw no cancel\n");
      std::exit(1);
    }
    const absl::Duration d = absl::Now() - t0;
    reader->Finish().IgnoreError();
    if (i >= 10) micros.push_back(absl::ToDoubleMicroseconds(d));
  }
  std::sort(micros.begin(), micros.end());
  return micros;
}

double Pct(const std::vector<double>& v, double p) {
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100 * v.size()))];
}

void Print(const char* name, const std::vector<double>& v) {
  std::printf("| %s | %zu | %.0f | %.0f | %.0f | %.0f |\n", name, v.size(),
              Pct(v, 50), Pct(v, 90), Pct(v, 99), v.back());
}

int Main() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  DemoUpstream upstream;
  if (auto port = upstream.Start("127.0.0.1:0"); !port.ok()) {
    std::fprintf(stderr, "cancel_latency: %s\n",
                 std::string(port.status().message()).c_str());
    return 1;
  }
  const std::string yaml = absl::StrCat(
      "listeners: {data: \"127.0.0.1:0\", admin: \"127.0.0.1:0\", metrics: "
      "\"127.0.0.1:0\"}\nworkers: ",
      absl::GetFlag(FLAGS_workers), "\nupstreams: [{name: demo, target: \"",
      upstream.address(),
      "\"}]\nroutes: [{name: all, match: {prefix: /}, upstream: demo}]\n");
  auto config = ParseConfigYaml(yaml, "cancel_latency");
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(config.status().message()).c_str());
    return 1;
  }
  ProxyMetrics metrics(std::make_shared<prometheus::Registry>());
  auto plane = DataPlane::Start(*config, &metrics);
  if (!plane.ok()) {
    std::fprintf(stderr, "%s\n", std::string(plane.status().message()).c_str());
    return 1;
  }
  const int samples = absl::GetFlag(FLAGS_samples);
  const auto direct = Measure(upstream.address(), upstream, samples);
  const auto proxied =
      Measure(absl::StrCat("127.0.0.1:", (*plane)->port()), upstream, samples);
  std::printf(
      "| path | samples | p50 µs | p90 µs | p99 µs | max µs |\n"
      "|---|---|---|---|---|---|\n");
  Print("direct", direct);
  Print("through Sluice", proxied);
  std::printf("\nadded by Sluice at p50: %.0f µs\n",
              Pct(proxied, 50) - Pct(direct, 50));
  (*plane)->Drain(absl::ZeroDuration());
  upstream.Shutdown(absl::Seconds(1));
  return 0;
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return sluice::Main();
}
