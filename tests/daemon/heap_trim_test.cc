#include "server/common/heap_trim.h"

#include <cstdlib>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace sluice {
namespace {

bool Sanitized() { return std::getenv("SLUICE_SANITIZER") != nullptr; }

// A burst of small blocks (like per-connection buffers), freed except one
// in 64 so the heap's top cannot shrink by itself: RSS stays up until a
// trim gives the free pages back.
TEST(HeapTrimmerTest, GivesBackWhatABurstFreed) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer's allocator is not glibc's";
  HeapTrimmer trimmer(8 << 20);
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
  constexpr size_t kBlock = 4096;
  constexpr size_t kBlocks = (48 << 20) / kBlock;
  std::vector<char*> blocks;
  for (size_t i = 0; i < kBlocks; ++i) {
    blocks.push_back(static_cast<char*>(std::malloc(kBlock)));
    std::memset(blocks.back(), 1, kBlock);
  }
  for (size_t i = 0; i < kBlocks; ++i) {
    if (i % 64 != 0) {
      std::free(blocks[i]);
      blocks[i] = nullptr;
    }
  }
  const size_t before = ResidentBytes();
  const HeapTrim trim = trimmer.MaybeTrim();
  EXPECT_TRUE(trim.trimmed);
  EXPECT_GT(trim.free_bytes, size_t{40} << 20);
  EXPECT_LT(trim.rss_after + (size_t{24} << 20), before)
      << "RSS " << (before >> 20) << " MiB -> " << (trim.rss_after >> 20);
  // Nothing grew since: no second trim.
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
  for (char* b : blocks) std::free(b);
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
