// This process's resident set size, read from /proc/self/statm. Any
// thread; a file read per call (cheap: no lock in Sluice).
#ifndef SLUICE_SERVER_COMMON_RESIDENT_BYTES_H_
#define SLUICE_SERVER_COMMON_RESIDENT_BYTES_H_

#include <cstddef>

namespace sluice {

// Resident bytes of this process; 0 if unknown.
size_t ResidentBytes();

}  // namespace sluice

#endif  // SLUICE_SERVER_COMMON_RESIDENT_BYTES_H_
