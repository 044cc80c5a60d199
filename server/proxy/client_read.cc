#include "server/proxy/client_read.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>

#include <vector>

#include "server/proxy/tsan_edges.h"

namespace sluice {

ClientRead::~ClientRead() {
  if (message_ != nullptr) grpc_byte_buffer_destroy(message_);
}

bool ClientRead::Start(grpc_call* call) {
  if (message_ != nullptr) {
    grpc_byte_buffer_destroy(message_);
    message_ = nullptr;
  }
  grpc_op op = {};
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &message_;
  TsanHandOff(done_);
  return grpc_call_start_batch(
             call, &op, 1,
             static_cast<grpc::internal::CompletionQueueTag*>(this),
             nullptr) == GRPC_CALL_OK;
}

ClientRead::Result ClientRead::Outcome(bool ok) const {
  if (message_ != nullptr) return ok ? Result::kMessage : Result::kFailed;
  return ok ? Result::kHalfClosed : Result::kFailed;
}

bool ClientRead::TakeMessage(grpc::ByteBuffer* out) {
  // The reader also undoes a compressed buffer's compression.
  grpc_byte_buffer_reader reader;
  std::vector<grpc::Slice> slices;
  const bool readable = grpc_byte_buffer_reader_init(&reader, message_) != 0;
  if (readable) {
    grpc_slice slice;
    while (grpc_byte_buffer_reader_next(&reader, &slice) != 0) {
      slices.emplace_back(slice, grpc::Slice::STEAL_REF);
    }
    grpc_byte_buffer_reader_destroy(&reader);
    grpc::ByteBuffer buffer(slices.data(), slices.size());
    out->Swap(&buffer);
  }
  grpc_byte_buffer_destroy(message_);
  message_ = nullptr;
  return readable;
}

bool ClientRead::FinalizeResult(void** tag, bool* /*status*/) {
  *tag = done_;
  return true;
}

}  // namespace sluice
