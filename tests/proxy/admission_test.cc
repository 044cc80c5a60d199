// Admission control through the data plane, in process: rejections carry
// the right status, reason and RetryInfo; permits go back on every path;
// queued calls leave the queue when cancelled or out of time.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "sluice/rpc/v1/error_details.pb.h"
#include "tests/proxy/proxy_fixture.h"

namespace sluice {
namespace {

using grpc::testing::Empty;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using sluice::demo::v1::SubscribeRequest;
using sluice::demo::v1::Tick;

// Every case runs twice: Typed (descriptor set configured) and Generic.
class AdmissionTest : public ProxyFixture,
                      public ::testing::WithParamInterface<bool> {
 protected:
  std::string ProxyYaml() override { return ShapesYaml(GetParam()); }
  std::string RoutesYaml() override {
    return R"(
routes:
  - name: rated
    match: {method: "/grpc.testing.TestService/EmptyCall"}
    upstream: demo
    rate_limit_headers: true
    limits:
      - {name: per-key, rate: {per_minute: 3, burst: 3}, key: ["header:x-api-key"]}
  - name: dry
    match: {method: "/grpc.testing.TestService/CacheableUnaryCall"}
    upstream: demo
    limits:
      - {name: shadow, rate: {per_minute: 1, burst: 1}, dry_run: true}
  - name: testing
    match: {prefix: "/grpc.testing.TestService/"}
    upstream: demo
    limits:
      - {name: two, concurrency: {max: 2, queue: 0}}
  - name: ticker
    match: {prefix: "/sluice.demo.v1.Ticker/"}
    upstream: demo
    deadline: {min_budget: 100ms}
    limits:
      - {name: one, concurrency: {max: 1, queue: 2, max_wait: 10s}}
      - {name: reject, messages: {per_second: 1, burst: 3, mode: reject}}
)";
  }

  ConcurrencyLimiter* Limiter(const std::string& route,
                              const std::string& name) {
    auto state = plane_->limits().Find(route, name);
    return state == nullptr ? nullptr : state->concurrency();
  }

  grpc::Status CallEmpty(const std::string& api_key, grpc::ClientContext* ctx) {
    if (!api_key.empty()) ctx->AddMetadata("x-api-key", api_key);
    SetTimeout(ctx, absl::Seconds(5));
    Empty req, resp;
    return test_->EmptyCall(ctx, req, &resp);
  }

  // A Ticker stream that has its permit and has delivered one tick.
  struct OpenStream {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<Tick>> reader;
  };
  std::unique_ptr<OpenStream> Open(int interval_ms) {
    auto s = std::make_unique<OpenStream>();
    SubscribeRequest req;
    req.set_count(0);
    req.set_interval_ms(interval_ms);
    s->reader = ticker_->Subscribe(&s->ctx, req);
    return s;
  }
};

INSTANTIATE_TEST_SUITE_P(Shapes, AdmissionTest, ::testing::Bool(), ShapeName);

TEST_P(AdmissionTest, RateRejectionCarriesReasonRetryInfoAndHeaders) {
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    ASSERT_TRUE(CallEmpty("alice", &ctx).ok());
    auto& md = ctx.GetServerInitialMetadata();
    auto it = md.find("x-ratelimit-remaining");
    ASSERT_NE(it, md.end());
    EXPECT_EQ(std::string(it->second.data(), it->second.size()),
              std::to_string(2 - i));
  }
  grpc::ClientContext ctx;
  grpc::Status s = CallEmpty("alice", &ctx);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(s.error_message().find("\"per-key\""), std::string::npos);
  EXPECT_EQ(Trailer(ctx, "sluice-reason"), "rate_limited");
  EXPECT_EQ(Trailer(ctx, "x-ratelimit-remaining"), "0");
  sluice::rpc::v1::Status details;
  ASSERT_TRUE(details.ParseFromString(s.error_details()));
  EXPECT_EQ(details.code(), 8);
  ASSERT_EQ(details.details_size(), 1);
  EXPECT_EQ(details.details(0).type_url(),
            "type.googleapis.com/google.rpc.RetryInfo");
  sluice::rpc::v1::RetryInfo retry;
  ASSERT_TRUE(retry.ParseFromString(details.details(0).value()));
  // 3 per minute: the next token is at most 20 s away.
  const int64_t ms = retry.retry_delay().seconds() * 1000 +
                     retry.retry_delay().nanos() / 1000000;
  EXPECT_GT(ms, 0);
  EXPECT_LE(ms, 20000);
  // Another key has its own bucket; a call without the key uses "default".
  grpc::ClientContext bob;
  EXPECT_TRUE(CallEmpty("bob", &bob).ok());
  grpc::ClientContext anonymous;
  EXPECT_TRUE(CallEmpty("", &anonymous).ok());
  auto state = plane_->limits().Find("rated", "per-key");
  ASSERT_NE(state, nullptr);
  EXPECT_EQ(state->KeyCount(), 3u);
  EXPECT_EQ(state->rejected.load(), 1);
  EXPECT_EQ(upstream_.test_service().stats().Get("EmptyCall").started, 5);
}

TEST_P(AdmissionTest, DryRunCountsButNeverRejects) {
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext ctx;
    SimpleRequest req;
    SimpleResponse resp;
    ASSERT_TRUE(test_->CacheableUnaryCall(&ctx, req, &resp).ok());
  }
  auto state = plane_->limits().Find("dry", "shadow");
  ASSERT_NE(state, nullptr);
  EXPECT_EQ(state->dry_run_rejected.load(), 3);
  EXPECT_EQ(state->rejected.load(), 0);
}

TEST_P(AdmissionTest, ConcurrencyLimitRejectsWhenFullAndFreesOnEveryPath) {
  ConcurrencyLimiter* two = Limiter("testing", "two");
  ASSERT_NE(two, nullptr);
  // Two long full-duplex calls hold both permits.
  grpc::ClientContext c1, c2;
  auto s1 = test_->FullDuplexCall(&c1);
  auto s2 = test_->FullDuplexCall(&c2);
  ASSERT_TRUE(upstream_.test_service().stats().Await(
      "FullDuplexCall",
      [](const demo::MethodStats& m) { return m.started == 2; },
      absl::Seconds(10)));
  EXPECT_EQ(two->InFlight(), 2);
  grpc::ClientContext c3;
  SimpleRequest req;
  SimpleResponse resp;
  grpc::Status s = test_->UnaryCall(&c3, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Trailer(c3, "sluice-reason"), "concurrency_limited");
  // Path 1: the client cancels.
  c1.TryCancel();
  s1->Finish();
  // Path 2: the upstream fails the call.
  grpc::testing::StreamingOutputCallRequest fail;
  fail.mutable_response_status()->set_code(13);
  ASSERT_TRUE(s2->Write(fail));
  EXPECT_EQ(s2->Finish().error_code(), grpc::StatusCode::INTERNAL);
  ASSERT_TRUE(AwaitNoCallsInFlight());
  EXPECT_EQ(two->InFlight(), 0);
  // Path 3: the deadline passes while the call is upstream.
  grpc::ClientContext c4;
  SetTimeout(&c4, absl::Milliseconds(100));
  auto s4 = test_->FullDuplexCall(&c4);
  EXPECT_EQ(s4->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(AwaitNoCallsInFlight());
  EXPECT_EQ(two->InFlight(), 0);
  // And the limit admits again.
  grpc::ClientContext c5;
  EXPECT_TRUE(test_->UnaryCall(&c5, req, &resp).ok());
}

TEST_P(AdmissionTest, QueuedCallsAreFifoAndLeaveTheQueueWhenCancelled) {
  ConcurrencyLimiter* one = Limiter("ticker", "one");
  ASSERT_NE(one, nullptr);
  auto first = Open(50);
  Tick tick;
  ASSERT_TRUE(first->reader->Read(&tick));
  auto second = Open(50);
  auto third = Open(50);
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (one->QueueDepth() < 2 && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(2));  // polls the proxy's state
  }
  ASSERT_EQ(one->QueueDepth(), 2);
  // Cancelled while queued: it leaves the queue, never reaches upstream.
  third->ctx.TryCancel();
  EXPECT_EQ(third->reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  while (one->QueueDepth() != 1 && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_EQ(one->QueueDepth(), 1);
  // The first stream ends: the permit passes to the second, in order.
  first->ctx.TryCancel();
  first->reader->Finish();
  ASSERT_TRUE(second->reader->Read(&tick));
  EXPECT_EQ(one->InFlight(), 1);
  second->ctx.TryCancel();
  second->reader->Finish();
  ASSERT_TRUE(AwaitNoCallsInFlight());
  EXPECT_EQ(one->InFlight(), 0);
  EXPECT_EQ(one->QueueDepth(), 0);
  EXPECT_EQ(upstream_.ticker_service().stats().Get("Subscribe").started, 2);
}

TEST_P(AdmissionTest, QueueWaitIsBoundedByTheClientsDeadline) {
  auto first = Open(400);  // slow: stays under the message limit
  Tick tick;
  ASSERT_TRUE(first->reader->Read(&tick));
  grpc::ClientContext ctx;
  // max_wait is 10 s; the wait ends at the deadline minus min_budget.
  SetTimeout(&ctx, absl::Milliseconds(300));
  SubscribeRequest req;
  req.set_count(1);
  auto reader = ticker_->Subscribe(&ctx, req);
  const absl::Time start = absl::Now();
  while (reader->Read(&tick)) {
  }
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Trailer(ctx, "sluice-reason"), "queue_timeout");
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  first->ctx.TryCancel();
  first->reader->Finish();
  ASSERT_TRUE(AwaitNoCallsInFlight());
  EXPECT_EQ(Limiter("ticker", "one")->InFlight(), 0);
}

TEST_P(AdmissionTest, MessageRateRejectEndsTheStream) {
  grpc::ClientContext ctx;
  SubscribeRequest req;
  req.set_count(10);
  req.set_interval_ms(0);
  auto reader = ticker_->Subscribe(&ctx, req);
  Tick tick;
  int n = 0;
  while (reader->Read(&tick)) ++n;
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Trailer(ctx, "sluice-reason"), "stream_rate");
  EXPECT_LE(n, 3);  // the burst
  ASSERT_TRUE(AwaitNoCallsInFlight());
  EXPECT_EQ(Limiter("ticker", "one")->InFlight(), 0);
}

TEST_P(AdmissionTest, DrainReleasesQueuedAndRunningCalls) {
  auto first = Open(50);
  Tick tick;
  ASSERT_TRUE(first->reader->Read(&tick));
  auto second = Open(50);
  ConcurrencyLimiter* one = Limiter("ticker", "one");
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (one->QueueDepth() < 1 && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  plane_->Drain(absl::Milliseconds(100));
  while (first->reader->Read(&tick)) {
  }
  EXPECT_EQ(first->reader->Finish().error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(second->reader->Finish().error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(one->InFlight(), 0);
  EXPECT_EQ(one->QueueDepth(), 0);
}

// The queue wait ends when what is left of the deadline after the route's
// offset would be below min_budget: waiting longer only leads to a permit
// and a deadline_budget rejection (issue 15, bug 5: the wait ignored the
// offset and lasted until the client's deadline minus min_budget).
class QueueWaitOffsetTest : public ProxyFixture {
 protected:
  std::string RoutesYaml() override {
    return R"(
routes:
  - name: ticker
    match: {prefix: "/sluice.demo.v1.Ticker/"}
    upstream: demo
    deadline: {offset: 2s, min_budget: 100ms}
    limits:
      - {name: one, concurrency: {max: 1, queue: 1, max_wait: 30s}}
)";
  }
};

TEST_F(QueueWaitOffsetTest, QueueWaitLeavesTheOffsetAndMinBudget) {
  grpc::ClientContext first_ctx;
  SetTimeout(&first_ctx, absl::Seconds(30));
  SubscribeRequest hold;
  hold.set_count(0);
  hold.set_interval_ms(400);
  auto first = ticker_->Subscribe(&first_ctx, hold);
  Tick tick;
  ASSERT_TRUE(first->Read(&tick));  // it holds the one permit

  grpc::ClientContext ctx;
  const absl::Time start = absl::Now();
  SetTimeout(&ctx, absl::Seconds(5));
  SubscribeRequest req;
  req.set_count(1);
  auto reader = ticker_->Subscribe(&ctx, req);
  while (reader->Read(&tick)) {
  }
  grpc::Status s = reader->Finish();
  const absl::Duration waited = absl::Now() - start;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << s.error_message();
  EXPECT_EQ(Trailer(ctx, "sluice-reason"), "queue_timeout");
  // Out of the queue at 5 s - 2 s - 100 ms = 2.9 s (after it at the
  // earliest); the unfixed wait ran to 4.9 s.
  EXPECT_GE(waited, absl::Milliseconds(2900));
  EXPECT_LT(waited, absl::Seconds(4)) << waited;
  first_ctx.TryCancel();
  first->Finish();
  ASSERT_TRUE(AwaitNoCallsInFlight());
}

// A call that waits in two queues one after the other (issue 15, bug 2):
// granted the wide limit, it queues on the narrow one in the same handler,
// before the cancelled event of its first wait's alarm is delivered. The
// alarm is re-armed only after that event; when the call then ends (a
// cancel, or OK), it is freed at once, not at max_wait (30 s here).
class TwoQueuesTest : public ProxyFixture {
 protected:
  std::string RoutesYaml() override {
    return R"(
routes:
  - name: ticker
    match: {prefix: "/sluice.demo.v1.Ticker/"}
    upstream: demo
    limits:
      - {name: wide, concurrency: {max: 2, queue: 4, max_wait: 30s}}
      - {name: narrow, concurrency: {max: 1, queue: 4, max_wait: 30s}}
)";
  }

  struct Stream {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<Tick>> reader;
  };
  // `count` ticks 50 ms apart (0: until cancelled).
  std::unique_ptr<Stream> Open(int count) {
    auto s = std::make_unique<Stream>();
    SetTimeout(&s->ctx, absl::Seconds(60));
    SubscribeRequest req;
    req.set_count(count);
    req.set_interval_ms(50);
    s->reader = ticker_->Subscribe(&s->ctx, req);
    return s;
  }
  ConcurrencyLimiter& Limiter(const std::string& name) {
    return *plane_->limits().Find("ticker", name)->concurrency();
  }
  // Polls the limiters' state (set by the proxy's workers).
  bool AwaitDepths(int64_t wide, int64_t narrow) {
    const absl::Time end = absl::Now() + absl::Seconds(20);
    while (absl::Now() < end) {
      if (Limiter("wide").QueueDepth() == wide &&
          Limiter("narrow").QueueDepth() == narrow) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }
  bool AwaitCallsInFlight(int64_t n) {
    const absl::Time end = absl::Now() + absl::Seconds(10);
    while (plane_->calls_in_flight() != n && absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    return plane_->calls_in_flight() == n;
  }

  // S1 holds both limits; S2 holds wide and waits on narrow; S3 waits on
  // wide. S1 ends: narrow goes to S2, wide to S3, which then waits on
  // narrow. Returns {S2, S3} in that state.
  std::pair<std::unique_ptr<Stream>, std::unique_ptr<Stream>> ThirdInTwoQueues(
      int s3_count) {
    auto s1 = Open(0);
    Tick tick;
    EXPECT_TRUE(s1->reader->Read(&tick));
    auto s2 = Open(0);
    EXPECT_TRUE(AwaitDepths(0, 1));
    auto s3 = Open(s3_count);
    EXPECT_TRUE(AwaitDepths(1, 1));
    s1->ctx.TryCancel();
    s1->reader->Finish();
    EXPECT_TRUE(AwaitDepths(0, 1)) << "S3 is not waiting on narrow";
    EXPECT_TRUE(s2->reader->Read(&tick));  // S2 runs
    return {std::move(s2), std::move(s3)};
  }
};

TEST_F(TwoQueuesTest, CancelledInTheSecondQueueIsFreedAtOnce) {
  auto [s2, s3] = ThirdInTwoQueues(0);
  s3->ctx.TryCancel();
  s3->reader->Finish();
  EXPECT_TRUE(AwaitDepths(0, 0));
  EXPECT_TRUE(AwaitCallsInFlight(1)) << "S3 outlived its cancel";
  s2->ctx.TryCancel();
  s2->reader->Finish();
  EXPECT_TRUE(AwaitNoCallsInFlight());
  EXPECT_EQ(Limiter("wide").InFlight(), 0);
  EXPECT_EQ(Limiter("narrow").InFlight(), 0);
}

TEST_F(TwoQueuesTest, OkAfterTwoQueuesIsFreedAtOnce) {
  auto [s2, s3] = ThirdInTwoQueues(2);
  s2->ctx.TryCancel();  // narrow goes to S3, which runs to its end
  s2->reader->Finish();
  Tick tick;
  int ticks = 0;
  while (s3->reader->Read(&tick)) ++ticks;
  grpc::Status status = s3->reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(ticks, 2);
  EXPECT_TRUE(AwaitNoCallsInFlight()) << "S3 outlived its OK end";
}

// A paced route and a typed unary method: the read after the one response
// only brings the call's end, so it must not wait for a token (review of
// the shape checks: it waited one interval, 1 s here, on every call).
class PacedUnaryTest : public ProxyFixture {
 protected:
  std::string ProxyYaml() override { return ShapesYaml(true); }
  std::string RoutesYaml() override {
    return R"(
routes:
  - name: paced
    match: {prefix: "/"}
    upstream: demo
    limits:
      - {name: slow, messages: {per_second: 1, burst: 1, mode: pace}}
)";
  }
};

TEST_F(PacedUnaryTest, TheEndOfAUnaryCallIsNotPaced) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Seconds(20));
  SimpleRequest req;
  req.set_response_size(10);
  SimpleResponse resp;
  ASSERT_TRUE(test_->UnaryCall(&ctx, req, &resp).ok());
  ASSERT_TRUE(AwaitNoCallsInFlight());
  EXPECT_EQ(SumOfSamples("sluice_stream_paced_seconds_total"), 0.0);
}

}  // namespace
}  // namespace sluice
