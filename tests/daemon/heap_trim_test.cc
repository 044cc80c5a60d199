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
  EXPECT_GT(trim.resident_free, size_t{40} << 20);
  EXPECT_LT(trim.rss_after + (size_t{24} << 20), before)
      << "RSS " << (before >> 20) << " MiB -> " << (trim.rss_after >> 20);
  // Nothing grew since: no second trim.
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
  for (char* b : blocks) std::free(b);
}

// A burst that ends after a check trimmed (connections still closing):
// the checks after it trim what is freed later too, and stop once the free
// bytes stop growing.
TEST(HeapTrimmerTest, FollowsABurstThatEndsAfterATrim) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer's allocator is not glibc's";
  HeapTrimmer trimmer(8 << 20);
  constexpr size_t kBlock = 4096;
  constexpr size_t kBlocks = (48 << 20) / kBlock;
  std::vector<char*> blocks;
  for (size_t i = 0; i < kBlocks; ++i) {
    blocks.push_back(static_cast<char*>(std::malloc(kBlock)));
    std::memset(blocks.back(), 1, kBlock);
  }
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);  // the low: all in use
  // Frees blocks [from, to) except one in 64.
  auto free_range = [&](size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      if (i % 64 != 0) {
        std::free(blocks[i]);
        blocks[i] = nullptr;
      }
    }
  };
  free_range(0, kBlocks * 3 / 4);  // ~36 MiB: a trim
  EXPECT_TRUE(trimmer.MaybeTrim().trimmed);
  free_range(kBlocks * 3 / 4, kBlocks * 7 / 8);  // ~6 MiB more, under 8
  const size_t before = ResidentBytes();
  const HeapTrim follow = trimmer.MaybeTrim();
  EXPECT_TRUE(follow.trimmed) << "what was freed after the trim stays";
  EXPECT_LT(follow.rss_after + (size_t{3} << 20), before)
      << "RSS " << (before >> 20) << " MiB -> " << (follow.rss_after >> 20);
  // Nothing more freed: the burst is over, no trim now or later.
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
  free_range(kBlocks * 7 / 8, kBlocks);  // ~6 MiB, under 8, burst over
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
  for (char* b : blocks) std::free(b);
}

// The same chunks used and freed again between two checks, after a trim:
// the free bytes look the same at both checks, but the pages came back.
TEST(HeapTrimmerTest, TrimsABurstBetweenTwoChecks) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer's allocator is not glibc's";
  HeapTrimmer trimmer(8 << 20);
  constexpr size_t kBlock = 4096;
  constexpr size_t kBlocks = (48 << 20) / kBlock;
  std::vector<char*> blocks(kBlocks, nullptr);
  auto burst = [&]() {
    for (size_t i = 0; i < kBlocks; ++i) {
      if (blocks[i] != nullptr) continue;
      blocks[i] = static_cast<char*>(std::malloc(kBlock));
      std::memset(blocks[i], 1, kBlock);
    }
    for (size_t i = 0; i < kBlocks; ++i) {
      if (i % 64 != 0) {
        std::free(blocks[i]);
        blocks[i] = nullptr;
      }
    }
  };
  burst();
  EXPECT_TRUE(trimmer.MaybeTrim().trimmed);
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
  burst();  // between two checks
  const size_t before = ResidentBytes();
  const HeapTrim again = trimmer.MaybeTrim();
  EXPECT_TRUE(again.trimmed) << "a burst between two checks stays resident";
  EXPECT_GT(again.resident_free, size_t{24} << 20);
  EXPECT_LT(again.rss_after + (size_t{24} << 20), before)
      << "RSS " << (before >> 20) << " MiB -> " << (again.rss_after >> 20);
  EXPECT_FALSE(trimmer.MaybeTrim().trimmed);
  for (char* b : blocks) std::free(b);
}

// Steady load after a trim: chunks used and freed again, as much in use
// at the next check as at the trim. Some came back resident, under the
// threshold: no follow-up trim (a busy proxy was trimmed every second).
TEST(HeapTrimmerTest, ChurnAfterATrimIsNotTrimmed) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer's allocator is not glibc's";
  HeapTrimmer trimmer(8 << 20);
  constexpr size_t kBlock = 4096;
  std::vector<char*> blocks;
  for (size_t i = 0; i < (32 << 20) / kBlock; ++i) {
    blocks.push_back(static_cast<char*>(std::malloc(kBlock)));
    std::memset(blocks.back(), 1, kBlock);
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (i % 64 != 0) {
      std::free(blocks[i]);
      blocks[i] = nullptr;
    }
  }
  ASSERT_TRUE(trimmer.MaybeTrim().trimmed);
  // ~3 MiB used and freed again: resident, not in use.
  std::vector<char*> churn;
  for (size_t i = 0; i < (3 << 20) / kBlock; ++i) {
    churn.push_back(static_cast<char*>(std::malloc(kBlock)));
    std::memset(churn.back(), 1, kBlock);
  }
  for (char* c : churn) std::free(c);
  const HeapTrim next = trimmer.MaybeTrim();
  EXPECT_GT(next.resident_free, size_t{1} << 20);
  EXPECT_FALSE(next.trimmed);
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
