#include "server/common/heap_trim.h"

#include <malloc.h>

#include "absl/time/clock.h"

namespace sluice {

namespace {

struct HeapBytes {
  size_t free = 0;    // free in every arena
  size_t in_use = 0;  // in use: arena chunks and mmapped chunks
};

HeapBytes ReadHeapBytes() {
  HeapBytes b;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  const struct mallinfo2 mi = mallinfo2();
  b.free = mi.fordblks;
  b.in_use = mi.uordblks + mi.hblkhd;
#endif
  return b;
}

long long ResidentOther(size_t rss, const HeapBytes& heap) {
  return static_cast<long long>(rss) - static_cast<long long>(heap.in_use);
}

}  // namespace

HeapTrimmer::HeapTrimmer(size_t threshold)
    : threshold_(threshold),
      base_other_(ResidentOther(ResidentBytes(), ReadHeapBytes())) {}

HeapTrim HeapTrimmer::MaybeTrim() {
  HeapTrim result;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  const HeapBytes heap = ReadHeapBytes();
  result.free_bytes = heap.free;
  result.rss_before = ResidentBytes();
  const long long other = ResidentOther(result.rss_before, heap);
  if (other < base_other_) base_other_ = other;
  const long long excess = other - base_other_;
  result.resident_free = static_cast<size_t>(excess);
  const size_t small = threshold_ / 8;
  const bool still_ending = burst_ending_ &&
                            heap.in_use + small < trimmed_in_use_ &&
                            excess > static_cast<long long>(small);
  burst_ending_ = false;
  if (!still_ending && excess <= static_cast<long long>(threshold_)) {
    return result;
  }
  const absl::Time start = absl::Now();
  malloc_trim(0);
  result.took = absl::Now() - start;
  result.trimmed = true;
  result.rss_after = ResidentBytes();
  base_other_ = ResidentOther(result.rss_after, heap);
  burst_ending_ = true;
  trimmed_in_use_ = heap.in_use;
#endif
  return result;
}

}  // namespace sluice
