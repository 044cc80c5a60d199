#include "server/common/read_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sluice {

FileRead ReadFileUpTo(const std::string& path, size_t max_bytes) {
  FileRead r;
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    r.open_errno = errno;
    return r;
  }
  char buffer[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) {
    r.bytes.append(buffer, n);
    if (r.bytes.size() > max_bytes) {
      r.too_large = true;
      break;
    }
  }
  if (std::ferror(file)) r.read_errno = errno;
  std::fclose(file);
  return r;
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          const std::string& what,
                                          size_t max_bytes) {
  FileRead r = ReadFileUpTo(path, max_bytes);
  if (r.ok()) return std::move(r.bytes);
  const std::string prefix =
      absl::StrCat("cannot read ", what, " file \"", path, "\": ");
  if (r.open_errno != 0) {
    return absl::InvalidArgumentError(prefix + std::strerror(r.open_errno));
  }
  if (r.read_errno != 0) {
    return absl::InvalidArgumentError(prefix + std::strerror(r.read_errno));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(prefix, "larger than ", max_bytes, " bytes"));
}

}  // namespace sluice
