// Appending a string as a JSON string literal. Pure function; thread-safe.
#ifndef SLUICE_SERVER_COMMON_JSON_STRING_H_
#define SLUICE_SERVER_COMMON_JSON_STRING_H_

#include <string>
#include <string_view>

namespace sluice {

enum class NonAscii {
  // Bytes >= 0x80 are copied as they are: for text known to be UTF-8.
  kKeep,
  // Bytes >= 0x7f are escaped one by one as \u00XX, so that arbitrary bytes
  // (metadata values are not guaranteed UTF-8) still give valid JSON.
  kEscapeBytes,
};

// Appends `s` quoted, with `"`, `\`, control characters and (per
// `non_ascii`) other bytes escaped.
void AppendJsonString(std::string_view s, NonAscii non_ascii, std::string* out);

}  // namespace sluice

#endif  // SLUICE_SERVER_COMMON_JSON_STRING_H_
