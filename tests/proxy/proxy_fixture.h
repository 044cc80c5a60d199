// Test fixture: the demo upstream and Sluice's data plane in this process,
// both on 127.0.0.1 port 0, plus stubs that talk to the proxy.
#ifndef SLUICE_TESTS_PROXY_PROXY_FIXTURE_H_
#define SLUICE_TESTS_PROXY_PROXY_FIXTURE_H_

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpc/testing/test.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "server/config/config.h"
#include "server/demo/demo_upstream.h"
#include "server/metrics/proxy_metrics.h"
#include "server/proxy/data_plane.h"
#include "sluice/demo/v1/ticker.grpc.pb.h"

namespace sluice {

// Fails a test that hangs, fast: if the test has not finished `limit` after
// it started, prints its name and aborts the process (a regression that
// leaves a call without a deadline open fails in seconds, not at Bazel's
// test timeout). Owned by the fixture; its thread lives for one test.
class TestWatchdog {
 public:
  explicit TestWatchdog(absl::Duration limit)
      : thread_([this, limit] {
          absl::MutexLock lock(&mu_);
          if (!mu_.AwaitWithTimeout(absl::Condition(&done_), limit)) {
            const auto* info =
                ::testing::UnitTest::GetInstance()->current_test_info();
            std::fprintf(stderr, "watchdog: %s.%s still running after %s\n",
                         info ? info->test_suite_name() : "?",
                         info ? info->name() : "?",
                         absl::FormatDuration(limit).c_str());
            std::abort();
          }
        }) {}
  ~TestWatchdog() {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    thread_.join();
  }

 private:
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

class ProxyFixture : public ::testing::Test {
 protected:
  // Routes for the config; `$UP` is replaced by the upstream's address.
  virtual std::string RoutesYaml() {
    return R"(
routes:
  - name: all
    match: {prefix: "/"}
    upstream: demo
)";
  }
  virtual std::string ProxyYaml() { return ""; }
  // upstreams[0].reflection: off here, so that a test's Generic half keeps
  // the general path (the demo upstream serves reflection);
  // reflection_shapes_test turns it on.
  virtual bool UpstreamReflection() { return false; }

  void SetUp() override {
    // No test here takes more than a few seconds when the proxy works
    // (a minute under TSan, which runs it ~10x slower).
    watchdog_ = std::make_unique<TestWatchdog>(
        std::getenv("SLUICE_SANITIZER") != nullptr ? absl::Seconds(300)
                                                   : absl::Seconds(90));
    auto port = upstream_.Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok()) << port.status();
    std::string yaml = absl::StrCat(R"(
listeners: {data: "127.0.0.1:0", admin: "127.0.0.1:0", metrics: "127.0.0.1:0"}
workers: 2
drain_timeout: 1s
upstreams:
  - name: demo
    target: "$UP"
    reflection: )",
                                    UpstreamReflection() ? "true" : "false",
                                    "\n", ProxyYaml(), RoutesYaml());
    yaml = absl::StrReplaceAll(yaml, {{"$UP", upstream_.address()}});
    yaml_ = yaml;
    auto config = ParseConfigYaml(yaml, "test.yaml");
    ASSERT_TRUE(config.ok()) << config.status();
    metrics_ = std::make_unique<ProxyMetrics>(
        std::make_shared<prometheus::Registry>());
    auto plane = DataPlane::Start(*config, metrics_.get());
    ASSERT_TRUE(plane.ok()) << plane.status();
    plane_ = std::move(*plane);
    // The test client keeps its receive window at 64 KiB too, so that
    // backpressure tests measure Sluice's hops, not the client's buffers.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    channel_ =
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", plane_->port()),
                                  grpc::InsecureChannelCredentials(), args);
    test_ = grpc::testing::TestService::NewStub(channel_);
    ticker_ = sluice::demo::v1::Ticker::NewStub(channel_);
  }

  void TearDown() override {
    if (plane_ != nullptr) plane_->Drain(absl::ZeroDuration());
    upstream_.Shutdown(absl::Seconds(1));
    watchdog_.reset();
  }

  // Waits (bounded) until the proxy has freed every call.
  bool AwaitNoCallsInFlight(absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time end = absl::Now() + timeout;
    while (plane_->calls_in_flight() != 0 && absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(5));  // polls the proxy's state
    }
    return plane_->calls_in_flight() == 0;
  }

  // The sum of every sample of one metric family in the proxy's registry.
  double SumOfSamples(const std::string& family) {
    double sum = 0;
    for (const auto& f : metrics_->registry()->Collect()) {
      if (f.name != family) continue;
      for (const auto& m : f.metric) sum += m.counter.value;
    }
    return sum;
  }

  static void SetTimeout(grpc::ClientContext* ctx, absl::Duration d) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + d));
  }

  static std::string Trailer(const grpc::ClientContext& ctx,
                             const std::string& key) {
    auto& md = ctx.GetServerTrailingMetadata();
    auto it = md.find(key);
    return it == md.end() ? ""
                          : std::string(it->second.data(), it->second.size());
  }

  // Config for the Typed half of a TEST_P over ShapeName: the demo's
  // descriptor set, so Sluice knows each method's shape and takes its
  // batched paths (the other half takes the generic path).
  static std::string ShapesYaml(bool typed) {
    return typed ? "metrics: {descriptor_sets: [proto/demo_descriptors.pb]}\n"
                 : "";
  }

  std::unique_ptr<TestWatchdog> watchdog_;  // first made, last destroyed
  demo::DemoUpstream upstream_;
  std::string yaml_;  // the config the data plane started with
  std::unique_ptr<ProxyMetrics> metrics_;
  std::unique_ptr<DataPlane> plane_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::testing::TestService::Stub> test_;
  std::unique_ptr<sluice::demo::v1::Ticker::Stub> ticker_;
};

// Names the two halves of a TEST_P over a fixture's ShapesYaml(bool).
inline std::string ShapeName(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "Typed" : "Generic";
}

}  // namespace sluice

#endif  // SLUICE_TESTS_PROXY_PROXY_FIXTURE_H_
