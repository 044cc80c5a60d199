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
  bool trimmed = false;   // malloc_trim(0) ran
  size_t free_bytes = 0;  // free bytes malloc held (mallinfo2 fordblks)
  size_t rss_before = 0;  // resident bytes before and after
  size_t rss_after = 0;
  absl::Duration took;  // how long the trim took
};

class HeapTrimmer {
 public:
  // Trims when the bytes malloc holds free have grown by more than
  // `threshold` above their lowest value since the last trim (or the
  // trimmer's creation): a burst has just ended. A steady process is not
  // trimmed again and again (malloc's count of free bytes stays high after a
  // trim, which only drops their pages); a new burst uses those free bytes (the
  // count falls) and, once it ends, earns a new trim.
  // A burst may still be ending when a check trims (connections closing
  // over a second or two): while the checks after a trim see the free bytes
  // grow by more than threshold / 8 over the last trim's, they trim again;
  // the first check that does not ends the burst. Without that, what was
  // freed after the trim (up to `threshold`) stayed resident.
  // The free bytes now are the first low.
  explicit HeapTrimmer(size_t threshold);
  HeapTrim MaybeTrim();

 private:
  const size_t threshold_;
  size_t low_free_;         // least free bytes seen since the last trim
  size_t trimmed_free_ = 0;  // free bytes at the last trim
  bool burst_ending_ = false;  // the last check trimmed
};

}  // namespace sluice

#endif  // SLUICE_SERVER_COMMON_HEAP_TRIM_H_
