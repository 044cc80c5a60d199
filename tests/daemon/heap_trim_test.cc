#include "server/common/heap_trim.h"

#include <cstdlib>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace sluice {
namespace {

bool Sanitized() { return std::getenv("SLUICE_SANITIZER") != nullptr; }

constexpr size_t kBlock = 4096;

// Small blocks (like per-connection buffers), `blocks` holds them by index:
// a burst allocates every empty slot and touches it, then frees them all
// but one in 64, so the heap's top cannot shrink by itself and RSS stays
// up until a trim gives the free pages back.
class Blocks {
 public:
  explicit Blocks(size_t bytes) : blocks_(bytes / kBlock, nullptr) {}
  ~Blocks() {
    for (char* b : blocks_) std::free(b);
  }
  size_t size() const { return blocks_.size(); }
  void Allocate() {
    for (char*& b : blocks_) {
      if (b != nullptr) continue;
      b = static_cast<char*>(std::malloc(kBlock));
      std::memset(b, 1, kBlock);
    }
  }
  // Frees blocks [from, to) but one in 64.
  void Free(size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      if (i % 64 != 0) {
        std::free(blocks_[i]);
        blocks_[i] = nullptr;
      }
    }
  }
  void Burst() {
    Allocate();
    Free(0, size());
  }

 private:
  std::vector<char*> blocks_;
};

TEST(HeapTrimmerTest, GivesBackWhatABurstFreed) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer's allocator is not glibc's";
  HeapTrimmer trimmer(8 << 20);
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
  Blocks blocks(48 << 20);
  blocks.Burst();
  const size_t before = ResidentBytes();
  const HeapTrim trim = trimmer.MaybeTrim();
  EXPECT_TRUE(trim.trimmed);
  EXPECT_GT(trim.free_bytes, size_t{40} << 20);
  EXPECT_GT(trim.resident_free, size_t{40} << 20);
  EXPECT_LT(trim.rss_after + (size_t{24} << 20), before)
      << "RSS " << (before >> 20) << " MiB -> " << (trim.rss_after >> 20);
  // Nothing grew since: no second trim.
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
}

// A burst that ends after a check trimmed (connections still closing):
// the check after it trims what was freed later too, and the checks stop
// once nothing more is freed.
TEST(HeapTrimmerTest, FollowsABurstThatEndsAfterATrim) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer's allocator is not glibc's";
  HeapTrimmer trimmer(8 << 20);
  Blocks blocks(48 << 20);
  const size_t n = blocks.size();
  blocks.Allocate();
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);  // all in use
  blocks.Free(0, n * 3 / 4);                  // ~36 MiB: a trim
  EXPECT_TRUE(trimmer.MaybeTrim().trimmed);
  blocks.Free(n * 3 / 4, n * 7 / 8);  // ~6 MiB more, under 8
  const size_t before = ResidentBytes();
  const HeapTrim follow = trimmer.MaybeTrim();
  EXPECT_TRUE(follow.trimmed) << "what was freed after the trim stays";
  EXPECT_LT(follow.rss_after + (size_t{3} << 20), before)
      << "RSS " << (before >> 20) << " MiB -> " << (follow.rss_after >> 20);
  // Nothing more freed: the burst is over, no trim now or later.
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
  blocks.Free(n * 7 / 8, n);  // ~6 MiB, under 8, burst over
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
}

// The same chunks used and freed again between two checks, after a trim:
// the free bytes look the same at both checks, but the pages came back.
TEST(HeapTrimmerTest, TrimsABurstBetweenTwoChecks) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer's allocator is not glibc's";
  HeapTrimmer trimmer(8 << 20);
  Blocks blocks(48 << 20);
  blocks.Burst();
  EXPECT_TRUE(trimmer.MaybeTrim().trimmed);
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
  blocks.Burst();  // between two checks
  const size_t before = ResidentBytes();
  const HeapTrim again = trimmer.MaybeTrim();
  EXPECT_TRUE(again.trimmed) << "a burst between two checks stays resident";
  EXPECT_GT(again.resident_free, size_t{24} << 20);
  EXPECT_LT(again.rss_after + (size_t{24} << 20), before)
      << "RSS " << (before >> 20) << " MiB -> " << (again.rss_after >> 20);
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
}

// Steady load after a trim: chunks used and freed again, as much in use
// at the next check as at the trim. Some came back resident, under the
// threshold: no follow-up trim (a busy proxy was trimmed every second).
TEST(HeapTrimmerTest, ChurnAfterATrimIsNotTrimmed) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer's allocator is not glibc's";
  HeapTrimmer trimmer(8 << 20);
  Blocks blocks(32 << 20);
  blocks.Burst();
  ASSERT_TRUE(trimmer.MaybeTrim().trimmed);
  {
    Blocks churn(3 << 20);  // used and freed again: resident, not in use
    churn.Allocate();
  }
  const HeapTrim next = trimmer.MaybeTrim();
  EXPECT_GT(next.resident_free, size_t{1} << 20);
  EXPECT_FALSE(next.trimmed);
}

TEST(HeapTrimmerTest, SteadyProcessIsNotTrimmed) {
  HeapTrimmer trimmer(8 << 20);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
}

TEST(HeapTrimmerTest, ResidentBytesIsKnown) {
  EXPECT_GT(ResidentBytes(), size_t{1} << 20);
}

}  // namespace
}  // namespace sluice
