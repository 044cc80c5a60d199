#include "server/proxy/reflection_fetcher.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/descriptor_database.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/alarm.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/proxy/tsan_edges.h"
#include "spdlog/spdlog.h"

namespace sluice {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

// How often the thread looks at the watched channels' states.
constexpr absl::Duration kPollInterval = absl::Milliseconds(250);
constexpr absl::Duration kFirstRetry = absl::Seconds(5);
constexpr absl::Duration kMaxRetry = absl::Minutes(1);
// The longest one connectivity watch lasts (then it is armed again).
constexpr absl::Duration kWatchSlice = absl::Milliseconds(200);
// Shapes are fetched again at least this often.
constexpr absl::Duration kRefreshInterval = absl::Minutes(5);

constexpr const char* kMethods[2] = {
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"};

// ServerReflectionRequest fields (v1 and v1alpha have the same numbers).
constexpr int kFileByFilename = 3;
constexpr int kFileContainingSymbol = 4;
constexpr int kListServices = 7;
// ServerReflectionResponse fields.
constexpr int kFileDescriptorResponse = 4;
constexpr int kListServicesResponse = 6;
constexpr int kErrorResponse = 7;

// A request with one string field set.
grpc::ByteBuffer Request(int field, const std::string& value) {
  std::string out;
  uint32_t tag =
      WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  auto varint = [&out](uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  };
  varint(tag);
  varint(value.size());
  out += value;
  grpc::Slice slice(out);
  return grpc::ByteBuffer(&slice, 1);
}

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

// Calls on(field, bytes) for each length-delimited field of `message`
// (others are skipped); false if it does not parse.
template <typename On>
bool ForEachBytesField(const std::string& message, On on) {
  CodedInputStream in(reinterpret_cast<const uint8_t*>(message.data()),
                      static_cast<int>(message.size()));
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return in.ConsumedEntireMessage();
    if (WireFormatLite::GetTagWireType(tag) ==
        WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t size;
      std::string value;
      if (!in.ReadVarint32(&size) || !in.ReadString(&value, size)) {
        return false;
      }
      on(WireFormatLite::GetTagFieldNumber(tag), value);
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return false;
    }
  }
}

// One ServerReflectionInfo stream on a private queue, step by step.
class Stream {
 public:
  Stream(grpc::Channel* channel, const char* method, absl::Duration timeout)
      : stub_(std::shared_ptr<grpc::ChannelInterface>(
            channel, [](grpc::ChannelInterface*) {})) {
    ctx_.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    call_ = stub_.PrepareCall(&ctx_, method, &cq_);
  }
  ~Stream() {
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }
  grpc::ClientContext* ctx() { return &ctx_; }
  bool Start() {
    call_->StartCall(this);
    return Step();
  }
  // Sends `request` and reads its response; false if the stream ended.
  bool Ask(const grpc::ByteBuffer& request, std::string* response) {
    call_->Write(request, this);
    if (!Step()) return false;
    grpc::ByteBuffer buffer;
    call_->Read(&buffer, this);
    if (!Step()) return false;
    received_ += buffer.Length();
    if (received_ > kMaxReflectionBytes) {
      ctx_.TryCancel();
      return false;
    }
    *response = Bytes(buffer);
    return true;
  }
  grpc::Status Finish() {
    if (!closed_) {
      closed_ = true;
      call_->WritesDone(this);
      Step();
    }
    grpc::Status status;
    call_->Finish(&status, this);
    Step();
    return status;
  }
  void Cancel() { ctx_.TryCancel(); }

 private:
  bool Step() {
    void* tag;
    bool ok = false;
    return cq_.Next(&tag, &ok) && ok;
  }
  grpc::CompletionQueue cq_;
  grpc::GenericStub stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  size_t received_ = 0;
  bool closed_ = false;
};

// What one response holds: its files, services, or an error.
struct Response {
  std::vector<std::string> files;     // serialized FileDescriptorProtos
  std::vector<std::string> services;  // full names
  bool error = false;
};

Response Parse(const std::string& bytes) {
  Response r;
  const bool parsed =
      ForEachBytesField(bytes, [&r](int field, const std::string& v) {
        if (field == kFileDescriptorResponse) {
          ForEachBytesField(v, [&r](int f, const std::string& file) {
            if (f == 1) r.files.push_back(file);
          });
        } else if (field == kListServicesResponse) {
          ForEachBytesField(v, [&r](int f, const std::string& service) {
            if (f != 1) return;
            ForEachBytesField(service, [&r](int g, const std::string& name) {
              if (g == 1) r.services.push_back(name);
            });
          });
        } else if (field == kErrorResponse) {
          r.error = true;
        }
      });
  if (!parsed) r.error = true;
  return r;
}

void AddShape(const std::string& service, const std::string& method,
              bool client_streaming, bool server_streaming, ShapeMap* out) {
  if (out->size() >= kMaxReflectedMethods) return;
  MethodShape shape;
  shape.single_request = !client_streaming;
  shape.unary = !client_streaming && !server_streaming;
  (*out)[absl::StrCat("/", service, "/", method)] = shape;
}

// The services' method shapes from `files`: through a DescriptorPool
// (which resolves every dependency); a service the pool cannot build (a
// dependency missing) from its file's own descriptor.
ShapeMap Shapes(
    const std::vector<std::string>& services,
    const std::vector<google::protobuf::FileDescriptorProto>& files) {
  google::protobuf::SimpleDescriptorDatabase db;
  for (const auto& f : files) db.Add(f);
  google::protobuf::DescriptorPool pool(&db);
  ShapeMap out;
  for (const std::string& name : services) {
    if (const auto* s = pool.FindServiceByName(name); s != nullptr) {
      for (int i = 0; i < s->method_count(); ++i) {
        const auto* m = s->method(i);
        AddShape(name, m->name(), m->client_streaming(), m->server_streaming(),
                 &out);
      }
      continue;
    }
    for (const auto& f : files) {
      for (const auto& s : f.service()) {
        const std::string full = f.package().empty()
                                     ? s.name()
                                     : absl::StrCat(f.package(), ".", s.name());
        if (full != name) continue;
        for (const auto& m : s.method()) {
          AddShape(name, m.name(), m.client_streaming(), m.server_streaming(),
                   &out);
        }
      }
    }
  }
  return out;
}

absl::StatusOr<ShapeMap> FetchWith(grpc::Channel* channel, const char* method,
                                   absl::Duration timeout, absl::Mutex* mu,
                                   grpc::ClientContext** ctx_slot,
                                   const bool* stopped) {
  Stream stream(channel, method, timeout);
  if (mu != nullptr) {
    absl::MutexLock lock(mu);
    // A Stop between two attempts: the slot was cleared, stopped is set.
    if (stopped != nullptr && *stopped) {
      return absl::CancelledError("stopping");
    }
    *ctx_slot = stream.ctx();
  }
  struct Clear {
    absl::Mutex* mu;
    grpc::ClientContext** slot;
    ~Clear() {
      if (mu == nullptr) return;
      absl::MutexLock lock(mu);
      *slot = nullptr;
    }
  } clear{mu, ctx_slot};

  auto failed = [&stream](const std::string& what) -> absl::Status {
    const grpc::Status status = stream.Finish();
    if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      return absl::NotFoundError("reflection not served");
    }
    return absl::UnavailableError(absl::StrCat(what, ": ", status.error_code(),
                                               " ", status.error_message()));
  };
  std::string bytes;
  if (!stream.Start() || !stream.Ask(Request(kListServices, "*"), &bytes)) {
    return failed("list_services");
  }
  Response listed = Parse(bytes);
  if (listed.error) return failed("list_services answered an error");
  if (listed.services.size() > kMaxReflectedServices) {
    listed.services.resize(kMaxReflectedServices);
  }
  std::vector<google::protobuf::FileDescriptorProto> files;
  std::set<std::string> have;
  auto add = [&files, &have](const std::vector<std::string>& raw) {
    for (const std::string& r : raw) {
      google::protobuf::FileDescriptorProto file;
      if (!file.ParseFromString(r)) continue;
      if (!have.insert(file.name()).second) continue;
      files.push_back(std::move(file));
    }
  };
  for (const std::string& service : listed.services) {
    if (files.size() >= kMaxReflectedFiles) break;
    if (!stream.Ask(Request(kFileContainingSymbol, service), &bytes)) {
      return failed("file_containing_symbol");
    }
    Response r = Parse(bytes);
    if (!r.error) add(r.files);  // an unknown symbol: that service only
  }
  // Dependencies the server did not send along (it normally sends them).
  std::set<std::string> asked;
  for (size_t i = 0; i < files.size() && files.size() < kMaxReflectedFiles;
       ++i) {
    const std::vector<std::string> deps(files[i].dependency().begin(),
                                        files[i].dependency().end());
    for (const std::string& dep : deps) {
      if (have.count(dep) != 0 || !asked.insert(dep).second) continue;
      if (!stream.Ask(Request(kFileByFilename, dep), &bytes)) {
        return failed("file_by_filename");
      }
      Response r = Parse(bytes);
      if (!r.error) add(r.files);
    }
  }
  stream.Finish();
  return Shapes(listed.services, files);
}

}  // namespace

absl::StatusOr<ShapeMap> FetchShapes(grpc::Channel* channel,
                                     absl::Duration timeout, int* version,
                                     absl::Mutex* mu,
                                     grpc::ClientContext** ctx_slot,
                                     const bool* stopped) {
  const int first = version != nullptr ? *version : 1;
  absl::Status last;
  for (int v : {first, 1 - first}) {
    auto shapes =
        FetchWith(channel, kMethods[v], timeout, mu, ctx_slot, stopped);
    if (shapes.ok()) {
      if (version != nullptr) *version = v;
      return shapes;
    }
    last = shapes.status();
    if (!absl::IsNotFound(last)) return last;
  }
  return last;
}

ReflectionFetcher::ReflectionFetcher() : thread_([this] { Run(); }) {}

ReflectionFetcher::~ReflectionFetcher() { Stop(); }

void ReflectionFetcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (!stop_ && thread_.joinable()) WakeLocked();
    stop_ = true;
    if (in_flight_ != nullptr) in_flight_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

void ReflectionFetcher::Watch(std::vector<Target> targets) {
  absl::MutexLock lock(&mu_);
  if (stop_) return;
  pending_ = std::move(targets);
  new_targets_ = true;
  changed_ = true;
  WakeLocked();
}

void ReflectionFetcher::RefreshAll() {
  absl::MutexLock lock(&mu_);
  if (stop_) return;
  refresh_ = true;
  changed_ = true;
  WakeLocked();
}

// One channel's connectivity watch (NotifyOnStateChange on the fetcher's
// own queue): every transition is seen, however short the outage, since the
// next watch starts from the state the last one ended in. A watch of a
// replaced target set (older generation) is dropped when its event comes.
struct ReflectionFetcher::Event {
  explicit Event(bool w) : wake(w) {}
  virtual ~Event() = default;
  const bool wake;  // a Wake, else a ChannelWatch
};

struct ReflectionFetcher::ChannelWatch : Event {
  ChannelWatch(std::shared_ptr<grpc::Channel> c, grpc_connectivity_state s,
               size_t t, uint64_t g)
      : Event(false),
        channel(std::move(c)),
        last(s),
        target(t),
        generation(g) {}
  std::shared_ptr<grpc::Channel> channel;
  grpc_connectivity_state last;
  size_t target;
  uint64_t generation;
};

// Wakes the thread at once (Watch, RefreshAll, Stop).
struct ReflectionFetcher::Wake : Event {
  Wake() : Event(true) {}
  grpc::Alarm alarm;
};

void ReflectionFetcher::WakeLocked() {
  if (woken_) return;  // one wake-up out is enough
  woken_ = true;
  auto* wake = new Wake;
  // Made on the caller's thread, run on the fetcher's: an edge TSan cannot
  // see through the (uninstrumented) completion queue.
  TsanHandOff(wake);
  wake->alarm.Set(&watch_cq_, gpr_now(GPR_CLOCK_MONOTONIC), wake);
}

void ReflectionFetcher::Arm(ChannelWatch* watch) {
  watch->channel->NotifyOnStateChange(
      watch->last, absl::ToChronoTime(absl::Now() + kWatchSlice), &watch_cq_,
      watch);
  ++watches_;
}

void ReflectionFetcher::Run() {
  bool stopping = false;
  while (!stopping) {
    std::vector<Target> replaced;  // released outside the lock
    bool retarget = false;
    {
      absl::MutexLock lock(&mu_);
      stopping = stop_;
      changed_ = false;
      woken_ = false;
      if (new_targets_ && !stopping) {
        new_targets_ = false;
        retarget = true;
        for (Watched& w : watched_) replaced.push_back(std::move(w.target));
        watched_.clear();
        for (Target& t : pending_) {
          Watched w;
          w.target = std::move(t);
          watched_.push_back(std::move(w));
        }
        pending_.clear();
      }
      if (refresh_) {
        refresh_ = false;
        for (Watched& w : watched_) {
          w.due = true;
          w.retry_at = absl::InfinitePast();
        }
      }
    }
    if (retarget) {
      ++generation_;
      for (size_t i = 0; i < watched_.size(); ++i) {
        for (const auto& channel : watched_[i].target.channels) {
          Arm(new ChannelWatch{channel, channel->GetState(false), i,
                               generation_});
        }
      }
    }
    // Fetch what is due and connected now (no-op otherwise).
    if (!stopping) {
      for (Watched& w : watched_) MaybeFetch(w);
    }
    // Connectivity events, up to kPollInterval (which also bounds how late
    // a Watch, RefreshAll or Stop is noticed).
    const absl::Time until = absl::Now() + kPollInterval;
    void* tag;
    bool ok;
    while (!stopping &&
           watch_cq_.AsyncNext(&tag, &ok, absl::ToChronoTime(until)) ==
               grpc::CompletionQueue::GOT_EVENT) {
      TsanTakeOver(tag);
      auto* event = static_cast<Event*>(tag);
      if (event->wake) {
        delete event;
        break;
      }
      auto* watch = static_cast<ChannelWatch*>(event);
      --watches_;
      if (watch->generation != generation_) {
        delete watch;
        continue;
      }
      const grpc_connectivity_state state = watch->channel->GetState(false);
      if (state == GRPC_CHANNEL_READY && watch->last != GRPC_CHANNEL_READY) {
        // A channel that (re)connected: the upstream may have restarted.
        Watched& w = watched_[watch->target];
        w.due = true;
        w.retry_at = absl::InfinitePast();
        watch->last = state;
        Arm(watch);
        break;  // fetch now
      }
      watch->last = state;
      Arm(watch);
    }
  }
  // Every watch ends within kWatchSlice; the queue must be empty to go.
  watch_cq_.Shutdown();
  void* tag;
  bool ok;
  while (watch_cq_.Next(&tag, &ok)) {
    TsanTakeOver(tag);
    delete static_cast<Event*>(tag);
  }
}

void ReflectionFetcher::MaybeFetch(Watched& w) {
  grpc::Channel* ready = nullptr;
  for (const auto& channel : w.target.channels) {
    if (channel->GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY) {
      ready = channel.get();
      break;
    }
  }
  const absl::Time now = absl::Now();
  // A periodic look too: behind one channel, round_robin over several
  // addresses stays READY while a rolling deploy replaces them.
  if (!w.due && now - w.fetched_at >= kRefreshInterval) w.due = true;
  if (!w.due || ready == nullptr || absl::Now() < w.retry_at) return;
  auto shapes =
      FetchShapes(ready, kFetchTimeout, &w.version, &mu_, &in_flight_, &stop_);
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
  }
  w.fetched_at = absl::Now();
  if (shapes.ok()) {
    w.due = false;
    w.backoff = absl::ZeroDuration();
    // Logged when the count changes (a fetch is routine every 5 minutes).
    if (w.target.board->publishes() == 0 ||
        w.target.board->learned_size() != shapes->size()) {
      spdlog::info("upstream \"{}\": reflection gave the shape of {} methods",
                   w.target.upstream, shapes->size());
    }
    w.target.board->Publish(std::move(*shapes));
  } else if (absl::IsNotFound(shapes.status())) {
    w.due = false;
    w.backoff = absl::ZeroDuration();
    if (w.target.board->learned_size() != 0) {
      spdlog::info("upstream \"{}\": no longer serves reflection",
                   w.target.upstream);
    }
    w.target.board->Publish({});
  } else {
    w.backoff = w.backoff == absl::ZeroDuration()
                    ? kFirstRetry
                    : std::min(w.backoff * 2, kMaxRetry);
    w.retry_at = absl::Now() + w.backoff;
    spdlog::warn(
        "upstream \"{}\": reflection fetch failed ({}); shapes kept, retry "
        "in {}",
        w.target.upstream, std::string(shapes.status().message()),
        absl::FormatDuration(w.backoff));
  }
}

}  // namespace sluice
