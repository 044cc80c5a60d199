#include "server/common/heap_trim.h"

#include <malloc.h>

#include "absl/time/clock.h"

namespace sluice {

HeapTrim TrimFreeHeap(size_t threshold_bytes) {
  HeapTrim result;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  // fordblks: free bytes in every arena (bins and each arena's top).
  result.free_bytes = mallinfo2().fordblks;
  if (result.free_bytes <= threshold_bytes) return result;
  const absl::Time start = absl::Now();
  malloc_trim(0);
  result.took = absl::Now() - start;
  result.trimmed = true;
#else
  (void)threshold_bytes;
#endif
  return result;
}

}  // namespace sluice
