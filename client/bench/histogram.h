// A log-linear latency histogram in the spirit of HdrHistogram: fixed
// memory, about 0.8% relative precision, exact below 128.
#ifndef SLUICE_CLIENT_BENCH_HISTOGRAM_H_
#define SLUICE_CLIENT_BENCH_HISTOGRAM_H_

#include <cstdint>
#include <vector>

namespace sluice::bench {

// Counts non-negative int64 values (sluice-bench records nanoseconds) in
// buckets: values below 2^kSubBucketBits each get their own bucket; above,
// every power-of-two range is split into 2^kSubBucketBits equal buckets, so
// a bucket is at most 1/128 of the values in it wide. Memory is fixed
// (about 58 KiB) whatever is recorded.
//
// Not thread-safe: each worker thread owns one, and the runner merges them
// after the threads are joined.
class Histogram {
 public:
  static constexpr int kSubBucketBits = 7;
  static constexpr int64_t kSubBuckets = int64_t{1} << kSubBucketBits;

  Histogram();

  // Negative values count as 0.
  void Record(int64_t value);
  void Merge(const Histogram& other);

  uint64_t count() const { return count_; }
  int64_t min() const { return count_ == 0 ? 0 : min_; }
  int64_t max() const { return max_; }
  double mean() const;

  // The value at percentile `p` (0..100]: the smallest recorded value's
  // bucket such that at least p% of the values are at or below it,
  // reported as that bucket's highest value, clamped to [min(), max()].
  // 0 when empty.
  int64_t Percentile(double p) const;

  // Bucket helpers, exposed for tests.
  static int BucketIndex(int64_t value);
  static int64_t BucketLowest(int index);
  static int64_t BucketHighest(int index);
  static int BucketCount();

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  int64_t min_ = 0;
  int64_t max_ = 0;
  long double sum_ = 0;
};

}  // namespace sluice::bench

#endif  // SLUICE_CLIENT_BENCH_HISTOGRAM_H_
