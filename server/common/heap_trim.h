// Returns free heap memory to the kernel after a burst.
//
// glibc's malloc keeps the memory a burst of allocations freed (2,000 idle
// connections closed at once: ~26 MiB measured, docs/security.md) in its
// arenas, so RSS stays near the peak long after the load is gone.
// malloc_trim(0) hands the free pages of every arena back (madvise), which
// brings RSS back near its baseline.
//
// Owned by the daemon; MaybeTrim() is called by its main thread once a
// second, never by a worker: reading malloc's free bytes (mallinfo2) takes
// each arena's lock briefly, a trim takes each in turn for longer (0.1..5 ms
// measured with a 55 MiB heap; 19..65 ms after a rapid-reset flood).
#ifndef SLUICE_SERVER_COMMON_HEAP_TRIM_H_
#define SLUICE_SERVER_COMMON_HEAP_TRIM_H_

#include <cstddef>

#include "absl/time/time.h"
#include "server/common/resident_bytes.h"

namespace sluice {

struct HeapTrim {
  bool trimmed = false;      // malloc_trim(0) ran
  size_t free_bytes = 0;     // free bytes malloc held (mallinfo2 fordblks)
  size_t resident_free = 0;  // of RSS, the growth not in use by malloc
  size_t rss_before = 0;     // resident bytes before and after
  size_t rss_after = 0;
  absl::Duration took;  // how long the trim took
};

class HeapTrimmer {
 public:
  // Trims when the memory the process holds resident beyond what malloc
  // has in use (RSS - in-use heap bytes, mallinfo2 uordblks + hblkhd) has
  // grown by more than `threshold` above its value after the last trim (or
  // at creation): the pages of freed chunks that are still resident, what a
  // burst left behind once it ended. A steady process is not trimmed again
  // and again: what it uses counts as in use, and right after a trim its
  // free chunks are not resident. Any burst counts, also one that began and
  // ended between two checks (the free bytes alone, sampled once a second,
  // missed such a burst after a trim: it re-used and freed the same chunks).
  // A burst may still be ending when a check trims (connections closing
  // over a second or two): the check right after a trim trims again if
  // malloc's in-use bytes fell by more than threshold / 8 meanwhile and as
  // much came back resident-free. (Steady load churns the heap without
  // lowering what is in use: it earns no such follow-up.)
  explicit HeapTrimmer(size_t threshold);
  HeapTrim MaybeTrim();

 private:
  const size_t threshold_;
  // RSS - in-use heap bytes, as low as seen since the last trim.
  long long base_other_;
  bool burst_ending_ = false;  // the last check trimmed
  size_t trimmed_in_use_ = 0;  // malloc's in-use bytes at the last trim
};

}  // namespace sluice

#endif  // SLUICE_SERVER_COMMON_HEAP_TRIM_H_
