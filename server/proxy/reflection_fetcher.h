// Learns the shapes of upstreams' methods from their own server reflection
// (grpc.reflection.v1, else v1alpha, ServerReflection/ServerReflectionInfo):
// list_services, then file_containing_symbol per service (and
// file_by_filename for any dependency not sent along), the returned
// FileDescriptorProtos built into a DescriptorPool, and per method path its
// client_streaming / server_streaming flags, published to the upstream's
// ShapeBoard (method_shapes.h) for calls to read at accept.
//
// When: for each watched upstream, as soon as one of its channels is
// READY (at start and for a new pool), again whenever a channel becomes
// READY after it was not (a reconnect: the upstream may have restarted
// with other methods; every transition is watched), at each reload
// (RefreshAll), and at least every 5 minutes (a channel balancing over
// several addresses stays READY through a rolling deploy). A fetch that
// fails for a reason other than "not served" keeps the shapes it had and
// is retried with a backoff (5 s doubling to 1 min); an upstream that does
// not serve reflection (UNIMPLEMENTED) gets an empty table.
//
// Owned by the DataPlane; one thread of its own, which does every fetch
// one after another, each bounded by kFetchTimeout, through a channel of
// the upstream's pool (the fetch is an ordinary call on that connection).
// Nothing here touches a worker. Watch, RefreshAll and Stop are for the
// control thread; the destructor stops and joins the thread.
#ifndef SLUICE_SERVER_PROXY_REFLECTION_FETCHER_H_
#define SLUICE_SERVER_PROXY_REFLECTION_FETCHER_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"
#include "server/proxy/method_shapes.h"

namespace sluice {

// Bounds of one fetch (whatever the upstream serves).
inline constexpr absl::Duration kFetchTimeout = absl::Seconds(10);
inline constexpr int kMaxReflectedServices = 1000;
inline constexpr int kMaxReflectedFiles = 2000;
inline constexpr size_t kMaxReflectionBytes = 16 << 20;

// One fetch, blocking (the fetcher's thread, or a test): the shapes
// `channel`'s server declares. `ctx_slot`, when not null, is set to the
// fetch's ClientContext while it runs (under `mu`) so another thread can
// cancel it; `stopped` (read under `mu`, may be null) true: no attempt
// starts. NotFound: the server serves no reflection (UNIMPLEMENTED on
// both versions); `version` (in/out, may be null): 1 or 0 (v1alpha), the
// version to try first, set to the one that answered.
absl::StatusOr<ShapeMap> FetchShapes(grpc::Channel* channel,
                                     absl::Duration timeout,
                                     int* version = nullptr,
                                     absl::Mutex* mu = nullptr,
                                     grpc::ClientContext** ctx_slot = nullptr,
                                     const bool* stopped = nullptr);

class ReflectionFetcher {
 public:
  struct Target {
    std::string upstream;
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    std::shared_ptr<ShapeBoard> board;
  };

  ReflectionFetcher();
  ~ReflectionFetcher();
  ReflectionFetcher(const ReflectionFetcher&) = delete;
  ReflectionFetcher& operator=(const ReflectionFetcher&) = delete;

  // The upstreams to learn from from now on (replacing the previous set:
  // a new pool); each is fetched as soon as it is connected.
  void Watch(std::vector<Target> targets);
  // Fetch every watched upstream again (a reload that kept the pool).
  void RefreshAll();
  // Stops the thread (cancelling a fetch in flight); idempotent.
  void Stop();

 private:
  struct Event;
  struct ChannelWatch;
  struct Wake;
  struct Watched {
    Target target;
    bool due = true;
    absl::Time fetched_at = absl::InfinitePast();
    absl::Time retry_at = absl::InfinitePast();
    absl::Duration backoff = absl::ZeroDuration();
    int version = 1;  // reflection version to try first
  };
  void Run();
  void Arm(ChannelWatch* watch);
  // Posts an immediate event on watch_cq_ (one at a time; never after
  // stop_).
  void WakeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fetches `w` if it is due and connected (fetcher thread).
  void MaybeFetch(Watched& w);

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool changed_ ABSL_GUARDED_BY(mu_) = false;  // Watch/RefreshAll since
  std::vector<Target> pending_ ABSL_GUARDED_BY(mu_);
  bool new_targets_ ABSL_GUARDED_BY(mu_) = false;
  bool refresh_ ABSL_GUARDED_BY(mu_) = false;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;  // a Wake is out
  grpc::ClientContext* in_flight_ ABSL_GUARDED_BY(mu_) = nullptr;
  // The thread's own.
  std::vector<Watched> watched_;
  grpc::CompletionQueue watch_cq_;  // connectivity watches
  uint64_t generation_ = 0;         // of watched_
  int watches_ = 0;                 // watches out
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_REFLECTION_FETCHER_H_
