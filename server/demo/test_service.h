// grpc.testing.TestService for the demo upstream, on gRPC's callback API.
#ifndef SLUICE_SERVER_DEMO_TEST_SERVICE_H_
#define SLUICE_SERVER_DEMO_TEST_SERVICE_H_

#include <cstdint>
#include <optional>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpc/testing/test.grpc.pb.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "server/demo/call_record.h"
#include "server/demo/call_stats.h"
#include "server/demo/capacity_model.h"

namespace sluice::demo {

// The interop TestService (gRPC's doc/interop-test-descriptions.md, "Server"
// features) as the fast upstream for tests and benchmarks:
//
// - EmptyCall: an empty response.
// - UnaryCall, CacheableUnaryCall: a payload of `response_size` zero bytes;
//   `response_status` ends the call with that code and message;
//   `response_compressed` gzips the response. CacheableUnaryCall also sends
//   `cache-control: max-age=60, public`.
// - StreamingOutputCall: one response per `response_parameters` entry, each
//   `size` zero bytes and sent `interval_us` after the previous write
//   completed; then `response_status` (or OK).
// - StreamingInputCall: on half-close, the sum of the request payload sizes.
// - FullDuplexCall: reads one request, writes its responses, then reads the
//   next (ping-pong; at most one request in hand). A request carrying
//   `response_status` ends the call with it after that request's responses.
//   Half-close ends the call with OK.
// - HalfDuplexCall: buffers requests until half-close (or one carrying
//   `response_status`), then writes all their responses.
// - UnimplementedCall: UNIMPLEMENTED.
// - Every method echoes `x-grpc-test-echo-initial` as initial metadata and
//   `x-grpc-test-echo-trailing-bin` as trailing metadata. Streaming methods
//   send initial metadata at once. Negative sizes or intervals, sizes over
//   64 MiB and unknown payload types: INVALID_ARGUMENT.
//   `expect_compressed` is not checked.
// - Capacity mode (capacity(), off by default): the unary methods take the
//   CapacityModel's service time (N calls at once at full speed, slower
//   beyond) before they answer, waiting on a grpc::Alarm.
//
// Streams write one message at a time (the next only after OnWriteDone) and
// wait with grpc::Alarm callbacks, so an idle or waiting stream holds no
// thread. A cancelled call (OnCancel) stops its alarm and finishes at once.
//
// Ownership and threads: owned by its creator (DemoUpstream), registered
// with one grpc::Server, and must outlive that server's Shutdown/Wait. The
// handlers and reactors run on gRPC's callback threads; the observability
// accessors are thread-safe and may be called from any thread.
class TestService final : public grpc::testing::TestService::CallbackService {
 public:
  TestService();
  TestService(const TestService&) = delete;
  TestService& operator=(const TestService&) = delete;
  ~TestService() override;

  grpc::ServerUnaryReactor* EmptyCall(grpc::CallbackServerContext* context,
                                      const grpc::testing::Empty* request,
                                      grpc::testing::Empty* response) override;
  grpc::ServerUnaryReactor* UnaryCall(
      grpc::CallbackServerContext* context,
      const grpc::testing::SimpleRequest* request,
      grpc::testing::SimpleResponse* response) override;
  grpc::ServerUnaryReactor* CacheableUnaryCall(
      grpc::CallbackServerContext* context,
      const grpc::testing::SimpleRequest* request,
      grpc::testing::SimpleResponse* response) override;
  grpc::ServerWriteReactor<grpc::testing::StreamingOutputCallResponse>*
  StreamingOutputCall(
      grpc::CallbackServerContext* context,
      const grpc::testing::StreamingOutputCallRequest* request) override;
  grpc::ServerReadReactor<grpc::testing::StreamingInputCallRequest>*
  StreamingInputCall(
      grpc::CallbackServerContext* context,
      grpc::testing::StreamingInputCallResponse* response) override;
  grpc::ServerBidiReactor<grpc::testing::StreamingOutputCallRequest,
                          grpc::testing::StreamingOutputCallResponse>*
  FullDuplexCall(grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<grpc::testing::StreamingOutputCallRequest,
                          grpc::testing::StreamingOutputCallResponse>*
  HalfDuplexCall(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* UnimplementedCall(
      grpc::CallbackServerContext* context, const grpc::testing::Empty* request,
      grpc::testing::Empty* response) override;

  // Observability. `method` is a short name ("UnaryCall") or a full one
  // ("/grpc.testing.TestService/UnaryCall"); unknown names read as zero.
  int64_t CallsStarted(absl::string_view method) const;
  int64_t CallsFinished(absl::string_view method) const;
  int64_t CallsCancelled(absl::string_view method) const;
  // Stream messages written by `method`, or by all methods.
  int64_t MessagesWritten(absl::string_view method) const;
  int64_t MessagesWritten() const;
  // Calls of all methods started and not yet finished.
  int64_t CallsInFlight() const;
  // The deadline of the last `method` call (absl::InfiniteFuture() if it
  // had none); nullopt before the first call.
  std::optional<absl::Time> LastDeadline(absl::string_view method) const;
  // Deadline, peer and client metadata of the last `method` call, or of
  // the last call of any method.
  std::optional<CallRecord> LastCall(absl::string_view method) const;
  std::optional<CallRecord> LastCall() const;
  // Block until the counter reaches at least `n` or `timeout` passes;
  // return whether it did. For tests: no sleeping, no polling.
  bool WaitForCallsStarted(absl::string_view method, int64_t n,
                           absl::Duration timeout) const;
  bool WaitForCallsFinished(absl::string_view method, int64_t n,
                            absl::Duration timeout) const;
  bool WaitForCallsCancelled(absl::string_view method, int64_t n,
                             absl::Duration timeout) const;
  // Everything above, plus Await on any condition of the counters.
  const CallStats& stats() const { return stats_; }

  // The unary methods' capacity mode (thread-safe; the Capacity service
  // changes it at run time).
  CapacityModel& capacity() { return capacity_; }

 private:
  CallStats stats_;
  CapacityModel capacity_;
};

}  // namespace sluice::demo

#endif  // SLUICE_SERVER_DEMO_TEST_SERVICE_H_
