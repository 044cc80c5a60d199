// One direction of a proxied call's messages.
#ifndef SLUICE_SERVER_PROXY_PUMP_H_
#define SLUICE_SERVER_PROXY_PUMP_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/impl/call_op_set.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/status.h"
#include "server/config/config.h"
#include "server/limits/limit_state.h"
#include "server/limits/token_bucket.h"
#include "server/proxy/cq_tag.h"

namespace sluice {

// The messages of one direction (client -> upstream or upstream -> client)
// between its source and its destination: the window of messages read and
// not yet written, gRPC's one read and one write in flight, the message
// limits of the route (reject, or pace the next read), and how long reads
// were held back by pacing or by a full window (backpressure).
//
// The pump decides; its call does the I/O on the two streams and tells the
// pump what completed. Backpressure: a read is started only while fewer
// than `window` messages are held (queued, being read or being written), so
// a slow destination stops the source's reads and the transport's flow
// control pushes back on the sender.
//
// Ownership: a member of its ProxyCall, with the pacing alarm it owns; the
// pace tag is the call's. Threading: the call's worker thread only.
class Pump {
 public:
  // Why the message just read ended the call (a `messages` limit, mode
  // reject): the status, and the index of the limit in the route.
  struct Refusal {
    grpc::Status status;
    int limit = 0;
  };

  enum class PaceResult {
    kGo,      // read now
    kArmed,   // a pacing alarm was just set: its event calls Paced()
    kWaiting  // a pacing alarm is already out
  };

  explicit Pump(CqTag* pace_tag) : pace_tag_(pace_tag) {}

  // Adds one `messages` limit of the route (limit_index in its limits).
  void AddMessageLimit(const LimitSettings* settings, LimitState* state,
                       int limit_index);

  // ---- reads ----
  // A read may start: none in flight, the source open, the destination
  // accepting, and room in the window.
  bool WantsRead(int window) const {
    return !reading_ && !src_done_ && !dst_failed_ && held() < window;
  }
  // Paces the next read (mode pace): takes every pacing limit's token for
  // the message it will bring, and holds the read until the latest is due.
  PaceResult Pace(grpc::CompletionQueue* cq);
  // The pacing alarm's event arrived (counts the time held back).
  void Paced();
  void StartRead() { reading_ = true; }
  // The read completed (with or without a message).
  void ReadDone() { reading_ = false; }
  grpc::ByteBuffer* read_buf() { return &read_buf_; }
  // Queues the message just read into read_buf() for writing. mode reject:
  // charges it; a refusal means the call must end.
  std::optional<Refusal> Queue(const std::string& route_name);
  // The source has no more messages (half-close, end of stream, failure).
  void SourceDone() { src_done_ = true; }

  // ---- writes ----
  // Write coalescing. A write sent with gRPC's buffer_hint is not flushed:
  // chttp2 completes it at once while less than its write buffer (64 KiB)
  // is pending on the stream, and sends it with the next write without the
  // hint (perform_stream_op_locked). So the pump hints every write but the
  // last message in hand, and holds back that last one while a read is in
  // flight that may bring another: it is written (without the hint) when
  // the read brings nothing, or when the worker's queue has no event left
  // to run, or 1024 events or 1 ms after the first hold (FlushDue(): the
  // call asked its worker, Worker::RequestFlush). A message is thus never
  // held past the moment the worker would go idle, nor for more than 1 ms
  // under sustained load, and a 1-per-second stream keeps its latency.
  enum class WriteStep {
    kNone,   // nothing to write now (none queued, a write out, dst failed)
    kHold,   // the last message in hand waits for the flush point
    kWrite,  // StartWrite() now
  };
  WriteStep NextWrite() const;
  // A write may start (kWrite), or may once the flush point comes.
  bool CanWrite() const { return !writing_ && !dst_failed_ && !queue_.empty(); }
  // The worker's queue ran dry: write what is held.
  void FlushDue() {
    if (!queue_.empty()) flush_due_ = true;
  }
  // Takes the next queued message into write_buf() and marks the write in
  // flight. Its options carry the hint while more is queued behind it.
  grpc::WriteOptions StartWrite();
  // The message the write in flight carries.
  grpc::ByteBuffer& write_buf() { return write_buf_; }
  // Unary: the one response leaves with the status (WriteAndFinish), not
  // through a write of its own; returns it (kept until the pump goes).
  grpc::ByteBuffer& TakeReplyForFinish() {
    write_buf_ = std::move(queue_.front());
    queue_.clear();
    return write_buf_;
  }
  // The write completed; returns its size in bytes (0 if it failed).
  // A failed write means the destination refuses any more (Fail()).
  int64_t WriteDone(bool ok);
  // The destination refuses writes: what waits for it is dropped.
  void Fail();
  // Drops what waits to be written (the call ended).
  void Discard() { queue_.clear(); }
  // The half-close went to the destination.
  void Close() { closed_ = true; }

  // Every message has gone: the source is done, nothing queued or in
  // flight, and the destination accepts, so a half-close may be sent.
  bool ReadyToClose() const {
    return src_done_ && !closed_ && !writing_ && queue_.empty() && !dst_failed_;
  }

  bool reading() const { return reading_; }
  bool writing() const { return writing_; }
  bool src_done() const { return src_done_; }
  bool dst_failed() const { return dst_failed_; }
  bool closed() const { return closed_; }
  bool queue_empty() const { return queue_.empty(); }
  bool pace_armed() const { return pace_armed_; }
  void CancelPace() {
    if (pace_armed_) pace_alarm_.Cancel();
  }

  // ---- accounting ----
  // Tracks whether reads wait for the window (backpressure).
  void NoteBlocked(bool blocked);
  // Time held back by pacing and by backpressure since the last call.
  int64_t TakePacedNanos() { return std::exchange(paced_nanos_, 0); }
  int64_t TakeBlockedNanos() { return std::exchange(blocked_nanos_, 0); }

 private:
  // One `messages` limit applied to this direction of this stream.
  struct MessageLimit {
    std::unique_ptr<TokenBucket> bucket;
    const LimitSettings* settings = nullptr;
    LimitState* state = nullptr;  // counters
    int limit_index = 0;          // in the route's limits
  };

  int held() const {
    return static_cast<int>(queue_.size()) + (writing_ ? 1 : 0) +
           (reading_ ? 1 : 0);
  }

  CqTag* const pace_tag_;
  std::deque<grpc::ByteBuffer> queue_;  // read, waiting to be written
  grpc::ByteBuffer read_buf_;
  grpc::ByteBuffer write_buf_;
  bool reading_ = false;
  bool writing_ = false;
  bool src_done_ = false;    // the source has no more messages
  bool dst_failed_ = false;  // the destination refuses writes
  bool closed_ = false;      // half-close sent to the destination
  bool flush_due_ = false;   // the flush point came (FlushDue)

  std::vector<MessageLimit> limits_;
  grpc::Alarm pace_alarm_;
  bool pace_armed_ = false;      // its event is not delivered yet
  bool token_reserved_ = false;  // the next read's token is already taken
  absl::Time pace_until_ = absl::InfinitePast();  // monotonic
  absl::Time pace_started_;                       // monotonic
  int64_t paced_nanos_ = 0;
  absl::Time blocked_since_ = absl::InfinitePast();  // monotonic
  int64_t blocked_nanos_ = 0;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_PUMP_H_
