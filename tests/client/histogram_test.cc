// sluice::bench::Histogram: buckets, percentiles of known inputs, merging.
#include "client/bench/histogram.h"

#include <cstdint>
#include <cstdlib>

#include "gtest/gtest.h"

namespace sluice::bench {
namespace {

TEST(HistogramTest, EmptyReadsZero) {
  Histogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.Percentile(50), 0);
  EXPECT_EQ(h.max(), 0);
  EXPECT_EQ(h.min(), 0);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(HistogramTest, BucketsCoverEveryValueInOrder) {
  int previous = -1;
  for (int64_t v : {int64_t{0}, int64_t{1}, int64_t{127}, int64_t{128},
                    int64_t{129}, int64_t{255}, int64_t{256}, int64_t{1000000},
                    int64_t{1} << 40, INT64_MAX}) {
    const int index = Histogram::BucketIndex(v);
    EXPECT_GT(index, previous) << v;
    EXPECT_LT(index, Histogram::BucketCount()) << v;
    EXPECT_LE(Histogram::BucketLowest(index), v) << v;
    EXPECT_GE(Histogram::BucketHighest(index), v) << v;
    previous = index;
  }
  EXPECT_EQ(Histogram::BucketIndex(INT64_MAX), Histogram::BucketCount() - 1);
  // Adjacent buckets tile the line.
  for (int i = 0; i + 1 < Histogram::BucketCount(); ++i) {
    ASSERT_EQ(Histogram::BucketHighest(i) + 1, Histogram::BucketLowest(i + 1))
        << i;
  }
}

TEST(HistogramTest, SmallValuesAreExact) {
  Histogram h;
  for (int v = 1; v <= 100; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 100u);
  EXPECT_EQ(h.Percentile(50), 50);
  EXPECT_EQ(h.Percentile(90), 90);
  EXPECT_EQ(h.Percentile(99), 99);
  EXPECT_EQ(h.Percentile(99.9), 100);
  EXPECT_EQ(h.Percentile(100), 100);
  EXPECT_EQ(h.min(), 1);
  EXPECT_EQ(h.max(), 100);
  EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

// 1..1,000,000 once each: the p-th percentile is p * 10,000, reported
// within the histogram's 1/128 relative precision and never below it.
TEST(HistogramTest, PercentilesOfUniformInputWithinPrecision) {
  Histogram h;
  for (int64_t v = 1; v <= 1000000; ++v) h.Record(v);
  for (double p : {50.0, 90.0, 99.0, 99.9}) {
    const double exact = p * 10000;
    const double got = static_cast<double>(h.Percentile(p));
    EXPECT_GE(got, exact) << p;
    EXPECT_LE(got, exact * (1 + 1.0 / 128)) << p;
  }
  EXPECT_EQ(h.max(), 1000000);
  EXPECT_EQ(h.Percentile(100), 1000000);
}

TEST(HistogramTest, SkewedInputAndOutlier) {
  // 990 values of 1 ms, 9 of 10 ms, one of 1 s (nanoseconds).
  Histogram h;
  for (int i = 0; i < 990; ++i) h.Record(1000000);
  for (int i = 0; i < 9; ++i) h.Record(10000000);
  h.Record(1000000000);
  EXPECT_NEAR(h.Percentile(50), 1000000, 1000000 / 128);
  EXPECT_NEAR(h.Percentile(99), 1000000, 1000000 / 128);
  EXPECT_NEAR(h.Percentile(99.9), 10000000, 10000000 / 128);
  EXPECT_EQ(h.Percentile(100), 1000000000);
  EXPECT_EQ(h.max(), 1000000000);
  EXPECT_EQ(h.min(), 1000000);
}

TEST(HistogramTest, MergeEqualsRecordingEverything) {
  Histogram a, b, all;
  for (int64_t v = 0; v < 5000; ++v) {
    const int64_t value = v * v + 3;
    (v % 3 == 0 ? a : b).Record(value);
    all.Record(value);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  EXPECT_DOUBLE_EQ(a.mean(), all.mean());
  for (double p : {1.0, 50.0, 90.0, 99.0, 99.9}) {
    EXPECT_EQ(a.Percentile(p), all.Percentile(p)) << p;
  }
}

TEST(HistogramTest, NegativeCountsAsZero) {
  Histogram h;
  h.Record(-5);
  EXPECT_EQ(h.count(), 1u);
  EXPECT_EQ(h.max(), 0);
  EXPECT_EQ(h.Percentile(50), 0);
}

}  // namespace
}  // namespace sluice::bench
