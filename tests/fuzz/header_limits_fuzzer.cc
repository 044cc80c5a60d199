// libFuzzer target: the header limits at the edge
// (server/proxy/header_limits.h) against what the proxy forwards
// (server/proxy/metadata_filter.h).
//
// A fuzzed header list (any bytes in names and values, repeats, empty and
// very long ones), a fuzzed method and fuzzed limits. Checked:
//   - MeasureRequestHeaders is exact: :path plus name + value + 32 for
//     every entry, and the count of entries (a reference sum in uint64);
//   - CheckRequestHeaders refuses exactly when bytes > max_bytes or
//     count > max_count, naming the limit that was crossed;
//   - what Sluice would forward (the forwardable entries and :path) is
//     never larger than what it counted: a call that passes the check
//     cannot put more than max_bytes of the client's bytes upstream;
//   - the transport tier is at least 4x the per-call limit and 64 KiB,
//     and fits in an int.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "grpcpp/support/string_ref.h"
#include "server/proxy/header_limits.h"
#include "server/proxy/metadata_filter.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using sluice::fuzz::FuzzInput;

// Magnitude() may go past its max (up to 1e9): a length up to `max`.
size_t Length(FuzzInput& in, int64_t max) {
  return static_cast<size_t>(std::min(in.Magnitude(max), max));
}

// Names mostly from a small set (so repeats and reserved names come up),
// sometimes raw bytes.
std::string Name(FuzzInput& in) {
  static const char* const kNames[] = {"x-a",           "x-a",
                                       "user-agent",    "te",
                                       "grpc-timeout",  "x-trace-bin",
                                       "X-Upper",       "x-forwarded-for",
                                       "authorization", "",
                                       ":path",         "host"};
  const uint8_t pick = in.U8();
  if (pick < 200) return kNames[pick % (sizeof(kNames) / sizeof(kNames[0]))];
  return in.Bytes(64);
}

std::string Value(FuzzInput& in) {
  switch (in.U8() % 8) {
    case 0:
      return std::string(Length(in, 70000), 'v');
    case 1:
      return "";
    case 2:
    case 3:
      return std::string(static_cast<size_t>(in.Range(0, 2000)),
                         static_cast<char>(in.U8()));
    default:
      return in.Bytes(32);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const std::string method = in.U8() % 8 == 0
                                 ? std::string(Length(in, 20000), 'm')
                                 : "/pkg.Svc/" + in.Bytes(40);
  const int n = static_cast<int>(in.Range(0, 150));
  // The strings outlive the string_refs that point into them.
  std::vector<std::pair<std::string, std::string>> owned;
  owned.reserve(n);
  for (int i = 0; i < n && !in.empty(); ++i) {
    std::string name = Name(in);
    owned.emplace_back(std::move(name), Value(in));
  }
  std::multimap<grpc::string_ref, grpc::string_ref> md;
  uint64_t want = method.size() + 5 + 32;
  uint64_t forwarded = want;  // :path goes upstream as is
  for (const auto& [k, v] : owned) {
    md.emplace(grpc::string_ref(k), grpc::string_ref(v));
    want += k.size() + v.size() + 32;
    if (sluice::IsForwardableRequestHeader(k, v)) {
      forwarded += k.size() + v.size() + 32;
    }
  }
  const sluice::HeaderListSize got = sluice::MeasureRequestHeaders(md, method);
  FUZZ_CHECK(got.bytes >= 0 && static_cast<uint64_t>(got.bytes) == want,
             "bytes %lld, want %llu", static_cast<long long>(got.bytes),
             static_cast<unsigned long long>(want));
  FUZZ_CHECK(got.count == static_cast<int64_t>(owned.size()), "count %lld",
             static_cast<long long>(got.count));
  FUZZ_CHECK(forwarded <= want, "forwarded %llu > counted %llu",
             static_cast<unsigned long long>(forwarded),
             static_cast<unsigned long long>(want));

  const int64_t max_bytes = in.Range(1024, 1 << 20);
  const int64_t max_count = in.Range(1, 10000);
  const auto refused = sluice::CheckRequestHeaders(got, max_bytes, max_count);
  const bool over_bytes = got.bytes > max_bytes;
  const bool over_count = got.count > max_count;
  FUZZ_CHECK(
      refused.has_value() == (over_bytes || over_count),
      "refused %d, bytes %lld/%lld, count %lld/%lld", refused.has_value(),
      static_cast<long long>(got.bytes), static_cast<long long>(max_bytes),
      static_cast<long long>(got.count), static_cast<long long>(max_count));
  if (refused) {
    const char* field =
        over_bytes ? "proxy.max_header_list_bytes" : "proxy.max_header_count";
    FUZZ_CHECK(refused->find(field) != std::string::npos, "message %s",
               refused->c_str());
  } else {
    FUZZ_CHECK(forwarded <= static_cast<uint64_t>(max_bytes),
               "a passing call forwards %llu > %lld",
               static_cast<unsigned long long>(forwarded),
               static_cast<long long>(max_bytes));
  }

  const int transport = sluice::TransportMetadataLimit(max_bytes);
  FUZZ_CHECK(transport >= 65536 && transport >= 4 * max_bytes,
             "transport %d for %lld", transport,
             static_cast<long long>(max_bytes));
  return 0;
}
