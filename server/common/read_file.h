// Reads a whole (small) file: certificates, tokens, descriptor sets.
#ifndef SLUICE_SERVER_COMMON_READ_FILE_H_
#define SLUICE_SERVER_COMMON_READ_FILE_H_

#include <string>

#include "absl/status/statusor.h"

namespace sluice {

// The file's bytes, or an error "cannot read <what> file "<path>": <errno
// text>". Files above `max_bytes` are an error too.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          const std::string& what,
                                          size_t max_bytes = 16 << 20);

}  // namespace sluice

#endif  // SLUICE_SERVER_COMMON_READ_FILE_H_
