// The demo upstream's capacity mode: the model's service times (pure), and
// the unary calls of a real DemoUpstream over loopback, slowed down beyond
// capacity and changed at run time through sluice.demo.v1.Capacity.
#include <algorithm>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/testing/test.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "server/demo/capacity_model.h"
#include "server/demo/demo_upstream.h"
#include "sluice/demo/v1/capacity.grpc.pb.h"

namespace sluice::demo {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

TEST(CapacityModelTest, OffByDefault) {
  CapacityModel model;
  EXPECT_FALSE(model.enabled());
  EXPECT_EQ(model.Start(), absl::ZeroDuration());
  EXPECT_EQ(model.state().in_flight, 0);  // not counted
}

TEST(CapacityModelTest, FullSpeedUpToCapacityThenSlower) {
  CapacityModel model({.capacity = 2, .service_time = absl::Milliseconds(10)});
  EXPECT_EQ(model.Start(), absl::Milliseconds(10));  // 1 in flight
  EXPECT_EQ(model.Start(), absl::Milliseconds(10));  // 2
  EXPECT_EQ(model.Start(), absl::Milliseconds(15));  // 3: 10 ms * 3 / 2
  EXPECT_EQ(model.Start(), absl::Milliseconds(20));  // 4
  CapacityModel::State state = model.state();
  EXPECT_EQ(state.in_flight, 4);
  EXPECT_EQ(state.max_in_flight, 4);
  model.Finish();
  model.Finish();
  EXPECT_EQ(model.Start(), absl::Milliseconds(15));  // 3 again
  state = model.state();
  EXPECT_EQ(state.in_flight, 3);
  EXPECT_EQ(state.served, 2);
}

TEST(CapacityModelTest, SetAppliesToCallsStartingAfter) {
  CapacityModel model({.capacity = 1, .service_time = absl::Milliseconds(10)});
  EXPECT_EQ(model.Start(), absl::Milliseconds(10));
  model.Set({.capacity = 4, .service_time = absl::Milliseconds(30)});
  EXPECT_EQ(model.state().max_in_flight, 1);  // reset to what is in flight
  EXPECT_EQ(model.Start(), absl::Milliseconds(30));  // 2 of 4
  model.Set({.capacity = 0, .service_time = absl::Milliseconds(30)});
  EXPECT_FALSE(model.enabled());
  EXPECT_EQ(model.Start(), absl::ZeroDuration());
  model.Finish();
  model.Finish();
  EXPECT_EQ(model.state().in_flight, 0);
}

class CapacityModeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(upstream_.Start("127.0.0.1:0").ok());
    channel_ = grpc::CreateChannel(upstream_.address(),
                                   grpc::InsecureChannelCredentials());
    test_ = grpc::testing::TestService::NewStub(channel_);
    capacity_ = sluice::demo::v1::Capacity::NewStub(channel_);
  }
  void TearDown() override { upstream_.Shutdown(absl::Seconds(1)); }

  sluice::demo::v1::CapacityState Set(uint32_t capacity, uint32_t service_us) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kWait));
    sluice::demo::v1::SetCapacityRequest request;
    request.set_capacity(capacity);
    request.set_service_time_us(service_us);
    sluice::demo::v1::CapacityState state;
    EXPECT_TRUE(capacity_->Set(&context, request, &state).ok());
    return state;
  }
  sluice::demo::v1::CapacityState Get() {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kWait));
    sluice::demo::v1::CapacityState state;
    EXPECT_TRUE(
        capacity_->Get(&context, sluice::demo::v1::GetCapacityRequest(), &state)
            .ok());
    return state;
  }
  // One UnaryCall; its status and latency.
  std::pair<grpc::Status, absl::Duration> Call(
      absl::Duration deadline = kWait) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    grpc::testing::SimpleResponse response;
    const absl::Time start = absl::Now();
    grpc::Status status =
        test_->UnaryCall(&context, grpc::testing::SimpleRequest(), &response);
    return {status, absl::Now() - start};
  }

  DemoUpstream upstream_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::testing::TestService::Stub> test_;
  std::unique_ptr<sluice::demo::v1::Capacity::Stub> capacity_;
};

TEST_F(CapacityModeTest, SetAndGet) {
  sluice::demo::v1::CapacityState state = Get();
  EXPECT_EQ(state.capacity(), 0u);
  EXPECT_EQ(state.service_time_us(), 10000u);  // the default S
  state = Set(8, 2500);
  EXPECT_EQ(state.capacity(), 8u);
  EXPECT_EQ(state.service_time_us(), 2500u);
  state = Set(3, 0);  // 0: keep the service time
  EXPECT_EQ(state.capacity(), 3u);
  EXPECT_EQ(state.service_time_us(), 2500u);
  EXPECT_EQ(upstream_.capacity().state().settings.capacity, 3);
}

TEST_F(CapacityModeTest, CallsBeyondCapacityAreSlower) {
  // One call at a time in 100 ms: three at once take 100, 200 and 300 ms
  // (the time each got at its start). Lower bounds only: a loaded machine
  // may be slower, never faster.
  Set(1, 100000);
  std::vector<absl::Duration> latencies(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      auto [status, latency] = Call();
      EXPECT_TRUE(status.ok()) << status.error_message();
      latencies[i] = latency;
    });
  }
  for (auto& t : threads) t.join();
  std::sort(latencies.begin(), latencies.end());
  EXPECT_GE(latencies[0], absl::Milliseconds(100));
  // The last to start saw 2 or 3 in flight (the first may already be done
  // on a slow machine): at least 200 ms.
  EXPECT_GE(latencies[2], absl::Milliseconds(200));
  const sluice::demo::v1::CapacityState state = Get();
  EXPECT_EQ(state.served(), 3u);
  EXPECT_EQ(state.in_flight(), 0u);
  EXPECT_GE(state.max_in_flight(), 2u);
}

TEST_F(CapacityModeTest, OffAnswersAtOnceAndCountsNothing) {
  Set(0, 0);
  auto [status, latency] = Call();
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(Get().served(), 0u);
}

TEST_F(CapacityModeTest, ACancelledCallLeavesAtOnce) {
  Set(1, 60 * 1000 * 1000);  // a minute
  auto [status, latency] = Call(absl::Milliseconds(200));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(latency, absl::Seconds(30));
  // The server sees the cancel, ends the call, and stops counting it.
  ASSERT_TRUE(
      upstream_.test_service().WaitForCallsFinished("UnaryCall", 1, kWait));
  EXPECT_EQ(upstream_.test_service().CallsCancelled("UnaryCall"), 1);
  EXPECT_EQ(Get().in_flight(), 0u);
}

}  // namespace
}  // namespace sluice::demo
