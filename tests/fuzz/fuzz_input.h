// A tiny, compiler-independent reader of fuzzer input bytes (the fuzz
// targets build with gcc for the corpus-replay tests too, where clang's
// <fuzzer/FuzzedDataProvider.h> is not available). Reads past the end
// yield zeros, so every input decodes to some operation sequence.
#ifndef SLUICE_TESTS_FUZZ_FUZZ_INPUT_H_
#define SLUICE_TESTS_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace sluice::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }

  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }

  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | U8();
    return v;
  }

  // An int64 in [lo, hi] (lo <= hi), uniformly-ish from 8 bytes.
  int64_t Range(int64_t lo, int64_t hi) {
    const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
    const uint64_t v = U64();
    if (span == UINT64_MAX) return static_cast<int64_t>(v);
    return static_cast<int64_t>(static_cast<uint64_t>(lo) + v % (span + 1));
  }

  // A "magnitude" value: mostly small, sometimes huge or at a boundary, so
  // both typical and extreme values come up often.
  int64_t Magnitude(int64_t max) {
    switch (U8() % 8) {
      case 0:
        return 0;
      case 1:
        return 1;
      case 2:
        return max;
      case 3:
        return Range(0, 16);
      case 4:
        return Range(0, 1000);
      case 5:
        return Range(0, 1'000'000'000);
      default:
        return Range(0, max);
    }
  }

  std::string Bytes(size_t max_len) {
    const size_t n = U8() % (max_len + 1);
    std::string s;
    for (size_t i = 0; i < n && !empty(); ++i)
      s.push_back(static_cast<char>(U8()));
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// An invariant check that aborts (a libFuzzer crash) with a message.
#define FUZZ_CHECK(cond, ...)                                         \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
                   __LINE__, #cond);                                  \
      std::fprintf(stderr, "  " __VA_ARGS__);                         \
      std::fprintf(stderr, "\n");                                     \
      std::abort();                                                   \
    }                                                                 \
  } while (0)

}  // namespace sluice::fuzz

#endif  // SLUICE_TESTS_FUZZ_FUZZ_INPUT_H_
