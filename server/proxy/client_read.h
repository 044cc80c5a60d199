// One read of a client's message on a server stream, made with gRPC core's
// batch API instead of ServerAsyncReaderWriter::Read.
//
// The C++ API reports every read without a message as `ok == false`: a
// graceful half-close (the client finished its upload) and a read that
// failed because gRPC cancelled the call (a message over the data port's
// max_receive_message_bytes, which gRPC 1.51 refuses inside the call, or a
// stream reset) look the same. Forwarding the first as a half-close and the
// second as a cancel is what keeps an upload from being committed half-way
// upstream. Core tells them apart: a batch whose message step failed
// completes with success = 0 (call.cc: ReceivingStreamReady records the
// error in the batch), a read at the end of the stream with success = 1 and
// no message. A stream the client reset ends a pending read with
// success = 1 and no message too: the transport marks that case in
// grpc_call_failed_before_recv_message(), which the caller checks as well.
//
// Owned by its call, one read at a time, on the call's worker thread.
// Its completion comes off the worker's queue as `done` (CqTag), with `ok`
// as core reported it.
#ifndef SLUICE_SERVER_PROXY_CLIENT_READ_H_
#define SLUICE_SERVER_PROXY_CLIENT_READ_H_

#include <grpc/grpc.h>

#include "grpcpp/impl/codegen/completion_queue_tag.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/proxy/cq_tag.h"

namespace sluice {

class ClientRead final : public grpc::internal::CompletionQueueTag {
 public:
  explicit ClientRead(CqTag* done) : done_(done) {}
  ~ClientRead() override;
  ClientRead(const ClientRead&) = delete;
  ClientRead& operator=(const ClientRead&) = delete;

  // Starts reading one message of `call` (a server call): its completion
  // goes to the call's completion queue. False if core refused the batch
  // (then no completion comes).
  bool Start(grpc_call* call);

  enum class Result { kMessage, kHalfClosed, kFailed };
  // After the completion: what the read found. `ok` is the value the
  // completion came with.
  Result Outcome(bool ok) const;
  // kMessage: moves the message into `out` (its slices, not copied). False
  // if it cannot be read (a compressed message that does not decompress):
  // the call is then to be ended like a failed read.
  bool TakeMessage(grpc::ByteBuffer* out);

  // grpc::internal::CompletionQueueTag: hands the worker `done`.
  bool FinalizeResult(void** tag, bool* status) override;

 private:
  CqTag* const done_;
  grpc_byte_buffer* message_ = nullptr;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_CLIENT_READ_H_
