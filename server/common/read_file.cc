#include "server/common/read_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sluice {

absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          const std::string& what,
                                          size_t max_bytes) {
  const std::string prefix =
      absl::StrCat("cannot read ", what, " file \"", path, "\": ");
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::InvalidArgumentError(prefix + std::strerror(errno));
  }
  std::string text;
  char buffer[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) {
    text.append(buffer, n);
    if (text.size() > max_bytes) break;
  }
  const int read_errno = std::ferror(file) ? errno : 0;
  std::fclose(file);
  if (read_errno != 0) {
    return absl::InvalidArgumentError(prefix + std::strerror(read_errno));
  }
  if (text.size() > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "larger than ", max_bytes, " bytes"));
  }
  return text;
}

}  // namespace sluice
