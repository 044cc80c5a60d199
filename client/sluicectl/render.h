// Renders admin API responses for sluicectl: aligned text for people,
// protobuf JSON (proto field names, every field printed) for scripts.
//
// Pure functions over the response messages; any thread.
#ifndef SLUICE_CLIENT_SLUICECTL_RENDER_H_
#define SLUICE_CLIENT_SLUICECTL_RENDER_H_

#include <string>
#include <vector>

#include "google/protobuf/message.h"
#include "sluice/admin/v1/admin.pb.h"

namespace sluice::sluicectl {

// `message` in the protobuf JSON mapping, indented, with proto field names
// and fields at their default value included; ends with a newline. (int64
// fields are JSON strings, as the mapping says.)
std::string ToJson(const google::protobuf::Message& message);

// Key/value lines: version, uptime, config hash, workers, calls in flight,
// draining and the bound addresses.
std::string RenderStatus(const sluice::admin::v1::GetStatusResponse& status);

// Source and hash lines, a blank line, then the configuration JSON.
std::string RenderConfig(const sluice::admin::v1::GetConfigResponse& config);

// One row per limit (route, limit, rate/burst/tokens, keys, in use/max,
// queue depth/max, msg/s, counters, overridden), then a second table with
// the top keys of keyed limits, if any. "no limits configured" when empty.
std::string RenderLimits(
    const std::vector<const sluice::admin::v1::LimitStatus*>& limits);
std::string RenderLimits(const sluice::admin::v1::ListLimitsResponse& list);

// Uptime as "1h2m3s" (whole seconds), or "0.4s" below one second.
std::string FormatUptime(double seconds);

}  // namespace sluice::sluicectl

#endif  // SLUICE_CLIENT_SLUICECTL_RENDER_H_
