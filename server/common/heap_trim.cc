#include "server/common/heap_trim.h"

#include <malloc.h>

#include "absl/time/clock.h"

namespace sluice {

namespace {

size_t FreeHeapBytes() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  return mallinfo2().fordblks;  // free bytes in every arena
#else
  return 0;
#endif
}

}  // namespace

HeapTrimmer::HeapTrimmer(size_t threshold)
    : threshold_(threshold), low_free_(FreeHeapBytes()) {}

HeapTrim HeapTrimmer::MaybeTrim() {
  HeapTrim result;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  result.free_bytes = FreeHeapBytes();
  if (result.free_bytes < low_free_) low_free_ = result.free_bytes;
  const bool still_freeing =
      burst_ending_ && result.free_bytes > trimmed_free_ + threshold_ / 8;
  burst_ending_ = false;
  if (!still_freeing && result.free_bytes <= low_free_ + threshold_) {
    return result;
  }
  result.rss_before = ResidentBytes();
  const absl::Time start = absl::Now();
  malloc_trim(0);
  result.took = absl::Now() - start;
  result.trimmed = true;
  result.rss_after = ResidentBytes();
  low_free_ = result.free_bytes;
  trimmed_free_ = result.free_bytes;
  burst_ending_ = true;
#endif
  return result;
}

}  // namespace sluice
