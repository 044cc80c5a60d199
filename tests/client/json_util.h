// Parses sluice-bench's JSON output with protobuf's JSON parser (into a
// google.protobuf.Struct), for tests.
#ifndef SLUICE_TESTS_CLIENT_JSON_UTIL_H_
#define SLUICE_TESTS_CLIENT_JSON_UTIL_H_

#include <string>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace sluice::bench::testing {

// False if `json` is not one valid JSON object.
inline bool ParseJsonObject(const std::string& json,
                            google::protobuf::Struct* out) {
  return google::protobuf::util::JsonStringToMessage(json, out).ok();
}

}  // namespace sluice::bench::testing

#endif  // SLUICE_TESTS_CLIENT_JSON_UTIL_H_
