#include "client/bench/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace sluice::bench {

int Histogram::BucketCount() {
  // Exact buckets, then one group of kSubBuckets per exponent from
  // kSubBucketBits to 62.
  return static_cast<int>(kSubBuckets * (1 + (63 - kSubBucketBits)));
}

int Histogram::BucketIndex(int64_t value) {
  if (value < kSubBuckets) return static_cast<int>(std::max<int64_t>(value, 0));
  const int exponent = 63 - std::countl_zero(static_cast<uint64_t>(value));
  const int shift = exponent - kSubBucketBits;
  const int64_t mantissa = value >> shift;  // in [kSubBuckets, 2*kSubBuckets)
  return static_cast<int>(kSubBuckets + shift * kSubBuckets +
                          (mantissa - kSubBuckets));
}

int64_t Histogram::BucketLowest(int index) {
  if (index < kSubBuckets) return index;
  const int shift = static_cast<int>((index - kSubBuckets) / kSubBuckets);
  const int64_t mantissa = (index - kSubBuckets) % kSubBuckets + kSubBuckets;
  return mantissa << shift;
}

int64_t Histogram::BucketHighest(int index) {
  if (index < kSubBuckets) return index;
  const int shift = static_cast<int>((index - kSubBuckets) / kSubBuckets);
  const int64_t mantissa = (index - kSubBuckets) % kSubBuckets + kSubBuckets;
  // (mantissa + 1) << shift may overflow for the last bucket.
  return (mantissa << shift) + ((int64_t{1} << shift) - 1);
}

Histogram::Histogram() : counts_(BucketCount(), 0) {}

void Histogram::Record(int64_t value) {
  value = std::max<int64_t>(value, 0);
  ++counts_[BucketIndex(value)];
  if (count_ == 0 || value < min_) min_ = value;
  if (value > max_) max_ = value;
  ++count_;
  sum_ += value;
}

void Histogram::Merge(const Histogram& other) {
  if (other.count_ == 0) return;
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  if (count_ == 0 || other.min_ < min_) min_ = other.min_;
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

double Histogram::mean() const {
  return count_ == 0 ? 0.0 : static_cast<double>(sum_ / count_);
}

int64_t Histogram::Percentile(double p) const {
  if (count_ == 0) return 0;
  p = std::clamp(p, 0.0, 100.0);
  // The rank of the wanted value, 1-based; at least 1.
  uint64_t rank = static_cast<uint64_t>(
      std::ceil(p / 100.0 * static_cast<double>(count_) - 1e-9));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      return std::clamp(BucketHighest(static_cast<int>(i)), min_, max_);
    }
  }
  return max_;
}

}  // namespace sluice::bench
