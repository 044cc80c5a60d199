// The demo upstream: TestService, Ticker, health and reflection on one
// gRPC server. What `make run` puts behind Sluice, and what integration,
// end-to-end and benchmark tests use as the upstream.
#ifndef SLUICE_SERVER_DEMO_DEMO_UPSTREAM_H_
#define SLUICE_SERVER_DEMO_DEMO_UPSTREAM_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "server/demo/capacity_model.h"
#include "server/demo/capacity_service.h"
#include "server/demo/test_service.h"
#include "server/demo/ticker_service.h"

namespace sluice::demo {

// Owns a grpc::Server serving, on one port (plaintext by default):
// grpc.testing.TestService, sluice.demo.v1.Ticker, sluice.demo.v1.Capacity
// (the TestService's capacity mode, changed at run time),
// grpc.health.v1.Health
// (gRPC's default service: "" and both service names SERVING; NOT_SERVING
// once Shutdown starts) and server reflection (grpc.reflection.v1alpha).
//
// Health and reflection are process-wide gRPC settings. Reflection: linking
// //third_party:grpc++_reflection registers the reflection plugin for every
// ServerBuilder in the process (a static initializer in libgrpc++_reflection;
// Start also calls InitProtoReflectionServerBuilderPlugin). It describes
// symbols from protobuf's generated pool: this library keeps the generated
// files of all three services linked (grpc/testing/test.proto has no
// messages, so a static link would drop it), and Start fails if the pool
// cannot find one of them. Health: Start
// switches the default health service on for this server's build and
// restores the previous setting right after, so do not build other servers
// concurrently with Start.
//
// Ownership and threads: owned by one thread (main, or a test fixture),
// which calls Start once and then Shutdown (idempotent); the destructor
// shuts down with no grace if that has not happened. The services run on
// gRPC's callback threads; the service accessors are thread-safe.
class DemoUpstream {
 public:
  DemoUpstream();
  DemoUpstream(const DemoUpstream&) = delete;
  DemoUpstream& operator=(const DemoUpstream&) = delete;
  ~DemoUpstream();

  // Listens on `listen` ("host:port"; port 0 picks a free one) and starts
  // serving, in plaintext unless `credentials` are given (e.g. TLS).
  // Returns the bound port. `min_ping_interval` > 0: the shortest interval
  // between HTTP/2 pings without data it tolerates (gRPC's default, 5 min,
  // otherwise; faster pings earn strikes and then a GOAWAY).
  absl::StatusOr<int> Start(
      absl::string_view listen,
      std::shared_ptr<grpc::ServerCredentials> credentials = nullptr,
      absl::Duration min_ping_interval = absl::ZeroDuration());

  // Health goes NOT_SERVING, then the server stops accepting calls, lets
  // calls in flight run until `deadline`, cancels the rest and waits for
  // every reactor to finish. Idempotent.
  void Shutdown(absl::Time deadline);
  void Shutdown(absl::Duration grace) { Shutdown(absl::Now() + grace); }

  // The bound port, 0 before Start.
  int port() const { return port_; }
  // "host:port" to dial: the listen host with the bound port, with a
  // wildcard host (0.0.0.0, [::], empty) replaced by 127.0.0.1.
  const std::string& address() const { return address_; }

  TestService& test_service() { return test_service_; }
  TickerService& ticker_service() { return ticker_service_; }
  // The unary methods' capacity mode (off unless set).
  CapacityModel& capacity() { return test_service_.capacity(); }
  // Null before Start.
  grpc::Server* server() { return server_.get(); }

 private:
  TestService test_service_;
  TickerService ticker_service_;
  CapacityService capacity_service_{&test_service_.capacity()};
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  bool shut_down_ = false;
};

}  // namespace sluice::demo

#endif  // SLUICE_SERVER_DEMO_DEMO_UPSTREAM_H_
