// Returns free heap memory to the kernel after a burst.
//
// glibc's malloc keeps the memory a burst of allocations freed (2,000 idle
// connections closed at once: ~25 MiB measured, docs/security.md) in its
// arenas, so RSS stays near the peak long after the load is gone.
// malloc_trim(0) hands free pages of every arena back (madvise), which
// brings RSS back near its baseline. Called by the daemon's main thread
// every few seconds; cheap when there is little to give back.
#ifndef SLUICE_SERVER_COMMON_HEAP_TRIM_H_
#define SLUICE_SERVER_COMMON_HEAP_TRIM_H_

#include <cstddef>

#include "absl/time/time.h"

namespace sluice {

struct HeapTrim {
  size_t free_bytes = 0;  // free bytes glibc held before (mallinfo2)
  bool trimmed = false;   // malloc_trim(0) ran
  absl::Duration took;    // how long the trim took
};

// Runs malloc_trim(0) when glibc holds more than `threshold_bytes` free.
// Thread-safe; never call it from a worker thread (it takes every arena's
// lock in turn).
HeapTrim TrimFreeHeap(size_t threshold_bytes);

}  // namespace sluice

#endif  // SLUICE_SERVER_COMMON_HEAP_TRIM_H_
