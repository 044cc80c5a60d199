#include "server/demo/call_record.h"

#include <string>
#include <vector>

#include "grpc/support/time.h"

namespace sluice::demo {
namespace {

absl::Time DeadlineOf(const grpc::ServerContextBase& context) {
  gpr_timespec raw = context.raw_deadline();
  if (gpr_time_cmp(raw, gpr_inf_future(raw.clock_type)) == 0) {
    return absl::InfiniteFuture();
  }
  gpr_timespec real = gpr_convert_clock_type(raw, GPR_CLOCK_REALTIME);
  return absl::FromUnixSeconds(real.tv_sec) + absl::Nanoseconds(real.tv_nsec);
}

}  // namespace

std::vector<std::string> CallRecord::Values(absl::string_view key) const {
  std::vector<std::string> values;
  for (const auto& [k, v] : metadata) {
    if (k == key) values.push_back(v);
  }
  return values;
}

std::optional<std::string> CallRecord::Value(absl::string_view key) const {
  for (const auto& [k, v] : metadata) {
    if (k == key) return v;
  }
  return std::nullopt;
}

CallRecord CaptureCall(absl::string_view method,
                       const grpc::ServerContextBase& context) {
  CallRecord record;
  record.method = std::string(method);
  record.received = absl::Now();
  record.deadline = DeadlineOf(context);
  record.peer = context.peer();
  const auto& client_metadata = context.client_metadata();
  record.metadata.reserve(client_metadata.size());
  for (const auto& [key, value] : client_metadata) {
    record.metadata.emplace_back(std::string(key.data(), key.size()),
                                 std::string(value.data(), value.size()));
  }
  return record;
}

}  // namespace sluice::demo
