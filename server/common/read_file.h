// Reads a whole (small) file: configs, certificates, tokens, descriptor
// sets.
#ifndef SLUICE_SERVER_COMMON_READ_FILE_H_
#define SLUICE_SERVER_COMMON_READ_FILE_H_

#include <string>

#include "absl/status/statusor.h"

namespace sluice {

// What reading a file found, for callers that word their own errors.
struct FileRead {
  std::string bytes;
  int open_errno = 0;      // non-zero: the file could not be opened
  int read_errno = 0;      // non-zero: reading it failed
  bool too_large = false;  // more than max_bytes (bytes is cut there)
  bool ok() const { return open_errno == 0 && read_errno == 0 && !too_large; }
};

// Reads up to max_bytes + 1 bytes of `path`.
FileRead ReadFileUpTo(const std::string& path, size_t max_bytes);

// The file's bytes, or an error "cannot read <what> file "<path>": <errno
// text>". Files above `max_bytes` are an error too.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          const std::string& what,
                                          size_t max_bytes = 16 << 20);

}  // namespace sluice

#endif  // SLUICE_SERVER_COMMON_READ_FILE_H_
