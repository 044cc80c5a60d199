#include "client/bench/runner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpc/grpc.h"
#include "grpcpp/alarm.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/slice.h"
#include "grpcpp/support/status.h"

namespace sluice::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kReasonKey[] = "sluice-reason";
constexpr auto kLateThreshold = std::chrono::milliseconds(1);

std::chrono::system_clock::time_point ToSystem(Clock::time_point t) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             t - Clock::now());
}

// State every worker reads; the atomics are the only parts written.
struct Shared {
  explicit Shared(const ResolvedOptions& o) : options(o) {}
  const ResolvedOptions& options;
  Clock::time_point start;
  std::optional<Clock::time_point> end;  // set when bounded by duration
  std::atomic<int64_t> claimed{0};       // closed loop: calls started
  std::atomic<int64_t> inflight{0};      // open loop: calls in flight
};

struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::GenericStub> stub;
};

// A completion queue tag: one entry point, `ok == false` is a normal event.
class Tag {
 public:
  virtual ~Tag() = default;
  virtual void Proceed(bool ok) = 0;
};

class Worker;

// One call at a time on one connection. Closed loop: a slot the worker
// restarts after each call. Open loop: one per call, deleted by the worker
// when it ends. Used only on its worker's thread.
class Call final : public Tag {
 public:
  Call(Worker* worker, Connection* connection)
      : worker_(worker), connection_(connection) {}

  void Start(Clock::time_point intended);
  void Proceed(bool ok) override;

  Clock::time_point intended() const { return intended_; }
  const grpc::Status& status() const { return status_; }
  const grpc::ClientContext& context() const { return *context_; }
  uint64_t messages() const { return messages_; }

 private:
  enum class State {
    kIdle,
    kUnary,
    kStarting,
    kWriting,
    kReading,
    kClosing,
    kFinishing
  };

  void Finish();

  Worker* const worker_;
  Connection* const connection_;
  State state_ = State::kIdle;
  Clock::time_point intended_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> unary_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> stream_;
  grpc::ByteBuffer response_;
  grpc::Status status_;
  uint64_t messages_ = 0;
  int64_t rounds_ = 0;
};

// The open-loop pacer's alarm tag.
class PaceTag final : public Tag {
 public:
  explicit PaceTag(Worker* worker) : worker_(worker) {}
  void Proceed(bool ok) override;

 private:
  Worker* const worker_;
};

// One thread, one completion queue, the connections assigned to it. All
// its members are touched only by its thread (Run), except the results,
// which the runner reads after joining the thread.
class Worker {
 public:
  Worker(Shared* shared, std::vector<std::pair<int, Connection*>> connections)
      : shared_(shared),
        options_(shared->options),
        connections_(std::move(connections)),
        pace_tag_(this) {
    grpc::Slice slice(options_.payload);
    request_ = grpc::ByteBuffer(&slice, 1);
  }

  void Run();

  // Called by a Call once its status is in.
  void OnCallDone(Call* call);
  // Called by the pacer's alarm.
  void Pace();

  grpc::CompletionQueue* cq() { return &cq_; }
  const ResolvedOptions& options() const { return options_; }
  const grpc::ByteBuffer& request() const { return request_; }

  // Results, read after the thread is joined.
  Histogram latency;
  Histogram latency_ok;
  std::map<int, uint64_t> codes;
  std::map<std::string, uint64_t> reasons;
  uint64_t calls = 0;
  uint64_t messages = 0;
  uint64_t scheduled = 0;
  uint64_t dropped = 0;
  uint64_t late = 0;
  Clock::duration max_lag = Clock::duration::zero();
  std::optional<Clock::time_point> last_completion;

 private:
  bool ClaimClosedLoopCall();
  Clock::time_point Intended(int64_t k) const;
  bool HasSend(int64_t k) const;
  void MaybeShutdown();

  Shared* const shared_;
  const ResolvedOptions& options_;
  // (connection index, connection): open loop sends k with
  // k % connections == index, at start + k / rate.
  const std::vector<std::pair<int, Connection*>> connections_;
  grpc::ByteBuffer request_;
  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<Call>> slots_;  // closed loop
  std::vector<int64_t> next_send_;            // open loop, per connection
  std::unique_ptr<grpc::Alarm> alarm_;
  PaceTag pace_tag_;
  bool pacing_ = false;  // an alarm is set
  int64_t active_ = 0;   // calls in flight on this worker
  bool shut_down_ = false;
};

void Call::Start(Clock::time_point intended) {
  const ResolvedOptions& options = worker_->options();
  intended_ = intended;
  messages_ = 0;
  rounds_ = 0;
  status_ = grpc::Status();
  unary_.reset();
  stream_.reset();
  context_ = std::make_unique<grpc::ClientContext>();
  context_->set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoNanoseconds(options.options.timeout));
  for (const auto& [key, value] : options.metadata) {
    context_->AddMetadata(key, value);
  }
  if (options.kind == CallKind::kUnary) {
    state_ = State::kUnary;
    unary_ = connection_->stub->PrepareUnaryCall(
        context_.get(), options.method, worker_->request(), worker_->cq());
    unary_->StartCall();
    unary_->Finish(&response_, &status_, this);
    return;
  }
  state_ = State::kStarting;
  stream_ = connection_->stub->PrepareCall(context_.get(), options.method,
                                           worker_->cq());
  stream_->StartCall(this);
}

void Call::Finish() {
  state_ = State::kFinishing;
  stream_->Finish(&status_, this);
}

void Call::Proceed(bool ok) {
  const ResolvedOptions& options = worker_->options();
  switch (state_) {
    case State::kIdle:
      return;
    case State::kUnary:
      if (status_.ok()) messages_ = 1;
      state_ = State::kIdle;
      worker_->OnCallDone(this);  // may restart this call
      return;
    case State::kStarting:
      if (!ok) return Finish();
      state_ = State::kWriting;
      if (options.kind == CallKind::kServerStream) {
        stream_->WriteLast(worker_->request(), grpc::WriteOptions(), this);
      } else {
        stream_->Write(worker_->request(), this);
      }
      return;
    case State::kWriting:
      if (!ok) return Finish();
      state_ = State::kReading;
      stream_->Read(&response_, this);
      return;
    case State::kReading:
      if (!ok) return Finish();
      ++messages_;
      if (options.kind == CallKind::kBidi) {
        if (++rounds_ < options.options.pingpong_rounds) {
          state_ = State::kWriting;
          stream_->Write(worker_->request(), this);
        } else {
          state_ = State::kClosing;
          stream_->WritesDone(this);
        }
      } else {
        stream_->Read(&response_, this);
      }
      return;
    case State::kClosing:
      return Finish();
    case State::kFinishing:
      state_ = State::kIdle;
      worker_->OnCallDone(this);  // may restart this call
      return;
  }
}

void PaceTag::Proceed(bool ok) {
  (void)ok;  // cancelled only when the worker ends; nothing to do apart
  worker_->Pace();
}

void Worker::Run() {
  if (options_.open_loop()) {
    for (const auto& [index, connection] : connections_) {
      (void)connection;
      next_send_.push_back(index);
    }
    Pace();
  } else {
    const Clock::time_point now = Clock::now();
    bool more = true;
    for (const auto& [index, connection] : connections_) {
      for (int i = 0; more && i < options_.options.concurrency; ++i) {
        if (!ClaimClosedLoopCall()) {
          more = false;
          break;
        }
        slots_.push_back(std::make_unique<Call>(this, connection));
        ++active_;
        slots_.back()->Start(now);
      }
    }
    MaybeShutdown();
  }
  void* tag = nullptr;
  bool ok = false;
  while (cq_.Next(&tag, &ok)) static_cast<Tag*>(tag)->Proceed(ok);
}

bool Worker::ClaimClosedLoopCall() {
  if (shared_->end.has_value() && Clock::now() >= *shared_->end) return false;
  const int64_t limit = options_.options.calls;
  if (limit > 0 && shared_->claimed.fetch_add(1) >= limit) return false;
  return true;
}

Clock::time_point Worker::Intended(int64_t k) const {
  return shared_->start +
         std::chrono::nanoseconds(static_cast<int64_t>(std::llround(
             static_cast<double>(k) * 1e9 / options_.options.rate)));
}

bool Worker::HasSend(int64_t k) const {
  const int64_t limit = options_.options.calls;
  if (limit > 0 && k >= limit) return false;
  if (shared_->end.has_value() && Intended(k) >= *shared_->end) return false;
  return true;
}

void Worker::Pace() {
  pacing_ = false;
  const Clock::time_point now = Clock::now();
  const int stride = options_.options.connections;
  std::optional<Clock::time_point> next;
  for (size_t i = 0; i < connections_.size(); ++i) {
    int64_t& k = next_send_[i];
    while (HasSend(k) && Intended(k) <= now) {
      const Clock::time_point intended = Intended(k);
      k += stride;
      ++scheduled;
      if (shared_->inflight.load(std::memory_order_relaxed) >=
          options_.options.max_inflight) {
        ++dropped;
        continue;
      }
      shared_->inflight.fetch_add(1, std::memory_order_relaxed);
      const Clock::duration lag = now - intended;
      max_lag = std::max(max_lag, lag);
      if (lag > kLateThreshold) ++late;
      ++active_;
      (new Call(this, connections_[i].second))->Start(intended);
    }
    if (HasSend(k) && (!next.has_value() || Intended(k) < *next)) {
      next = Intended(k);
    }
  }
  if (next.has_value()) {
    pacing_ = true;
    alarm_ = std::make_unique<grpc::Alarm>();  // the previous one has fired
    alarm_->Set(&cq_, ToSystem(*next), &pace_tag_);
  }
  MaybeShutdown();
}

void Worker::OnCallDone(Call* call) {
  const Clock::time_point now = Clock::now();
  last_completion = now;
  ++calls;
  messages += call->messages();
  const int64_t nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            now - call->intended())
                            .count();
  latency.Record(nanos);
  if (call->status().ok()) latency_ok.Record(nanos);
  ++codes[static_cast<int>(call->status().error_code())];
  const auto& trailers = call->context().GetServerTrailingMetadata();
  auto it = trailers.find(kReasonKey);
  if (it != trailers.end()) {
    ++reasons[std::string(it->second.data(), it->second.size())];
  }

  if (options_.open_loop()) {
    shared_->inflight.fetch_sub(1, std::memory_order_relaxed);
    --active_;
    delete call;
  } else if (ClaimClosedLoopCall()) {
    call->Start(now);
  } else {
    --active_;
  }
  MaybeShutdown();
}

void Worker::MaybeShutdown() {
  if (shut_down_ || pacing_ || active_ > 0) return;
  shut_down_ = true;
  cq_.Shutdown();
}

}  // namespace

absl::StatusOr<BenchResult> RunBench(const BenchOptions& options) {
  absl::StatusOr<ResolvedOptions> resolved = Resolve(options);
  if (!resolved.ok()) return resolved.status();
  return RunBench(*resolved);
}

absl::StatusOr<BenchResult> RunBench(const ResolvedOptions& options) {
  const BenchOptions& o = options.options;
  const int connection_count = o.connections;
  const int thread_count = std::min(o.threads, o.connections);

  // One channel per connection. The distinct argument and the local
  // subchannel pool keep gRPC from sharing one connection among them.
  std::vector<Connection> connections(connection_count);
  for (int i = 0; i < connection_count; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("sluice_bench.connection", i);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetMaxReceiveMessageSize(-1);
    connections[i].channel = grpc::CreateCustomChannel(
        o.target, grpc::InsecureChannelCredentials(), args);
    connections[i].stub =
        std::make_unique<grpc::GenericStub>(connections[i].channel);
    connections[i].channel->GetState(/*try_to_connect=*/true);
  }
  const auto connect_deadline = std::chrono::system_clock::now() +
                                absl::ToChronoNanoseconds(o.connect_timeout);
  int connected = 0;
  for (Connection& connection : connections) {
    if (connection.channel->WaitForConnected(connect_deadline)) ++connected;
  }
  if (connected == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", o.target, " within ",
                     absl::FormatDuration(o.connect_timeout)));
  }

  Shared shared(options);
  std::vector<std::unique_ptr<Worker>> workers;
  {
    std::vector<std::vector<std::pair<int, Connection*>>> assigned(
        thread_count);
    for (int i = 0; i < connection_count; ++i) {
      assigned[i % thread_count].emplace_back(i, &connections[i]);
    }
    for (int t = 0; t < thread_count; ++t) {
      workers.push_back(
          std::make_unique<Worker>(&shared, std::move(assigned[t])));
    }
  }

  shared.start = Clock::now();
  if (options.duration > absl::ZeroDuration()) {
    shared.end = shared.start + absl::ToChronoNanoseconds(options.duration);
  }
  std::vector<std::thread> threads;
  for (auto& worker : workers) {
    threads.emplace_back([w = worker.get()] { w->Run(); });
  }
  for (std::thread& thread : threads) thread.join();
  const Clock::time_point joined = Clock::now();

  BenchResult result;
  result.target = o.target;
  result.method = options.method;
  result.kind = options.kind;
  result.open_loop = options.open_loop();
  result.rate = o.rate;
  result.threads = thread_count;
  result.connections = connection_count;
  result.concurrency = o.concurrency;
  std::optional<Clock::time_point> last;
  Clock::duration max_lag = Clock::duration::zero();
  for (const auto& worker : workers) {
    result.latency.Merge(worker->latency);
    result.latency_ok.Merge(worker->latency_ok);
    for (const auto& [code, count] : worker->codes) {
      result.status_counts[StatusCodeName(code)] += count;
    }
    for (const auto& [reason, count] : worker->reasons) {
      result.reasons[reason] += count;
    }
    result.calls += worker->calls;
    result.messages += worker->messages;
    result.scheduled += worker->scheduled;
    result.dropped += worker->dropped;
    result.late += worker->late;
    max_lag = std::max(max_lag, worker->max_lag);
    if (worker->last_completion.has_value() &&
        (!last.has_value() || *worker->last_completion > *last)) {
      last = worker->last_completion;
    }
  }
  result.max_send_lag_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(max_lag).count();
  result.elapsed = absl::FromChrono(last.value_or(joined) - shared.start);
  return result;
}

}  // namespace sluice::bench
