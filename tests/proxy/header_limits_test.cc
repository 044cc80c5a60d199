#include "server/proxy/header_limits.h"

#include <map>
#include <string>

#include "grpcpp/support/string_ref.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;

// The method every test call names: ":path" + 17 + 32 = 54 bytes.
constexpr char kMethod[] = "/pkg.Svc/Method12";
constexpr int64_t kPathBytes = 5 + 17 + 32;

TEST(HeaderLimitsTest, EntryCountsNameValueAnd32) {
  EXPECT_EQ(HeaderEntryBytes("", ""), 32);
  EXPECT_EQ(HeaderEntryBytes("x-a", "12345"), 3 + 5 + 32);
  EXPECT_EQ(HeaderEntryBytes(":path", kMethod), kPathBytes);
}

TEST(HeaderLimitsTest, PathAloneIsCountedButNotAsAHeader) {
  const Metadata none;
  const HeaderListSize size = MeasureRequestHeaders(none, kMethod);
  EXPECT_EQ(size.bytes, kPathBytes);
  EXPECT_EQ(size.count, 0);
}

TEST(HeaderLimitsTest, EveryEntryCountsRepeatsAndBinaryIncluded) {
  const std::string big(9000, 'v');
  // A -bin value as gRPC hands it to the call: decoded bytes, NULs too
  // (chttp2 counts the decoded length against its limit as well).
  const std::string bin("\0\1\2\3", 4);
  Metadata md;
  md.emplace("user-agent", "grpc-python/1.51.1");
  md.emplace("x-big", big);
  md.emplace("x-rep", "a");
  md.emplace("x-rep", "bb");
  md.emplace("x-trace-bin", bin);
  // Not forwarded (illegal name), still counted: it is on the data port.
  md.emplace("X-Upper", "v");
  const HeaderListSize size = MeasureRequestHeaders(md, kMethod);
  EXPECT_EQ(size.count, 6);
  EXPECT_EQ(size.bytes, kPathBytes + (10 + 18 + 32) + (5 + 9000 + 32) +
                            (5 + 1 + 32) + (5 + 2 + 32) + (11 + 4 + 32) +
                            (7 + 1 + 32));
}

TEST(HeaderLimitsTest, AtTheLimitPassesOneByteOverIsRefused) {
  HeaderListSize size{.bytes = 7168, .count = 100};
  EXPECT_EQ(CheckRequestHeaders(size, 7168, 100), std::nullopt);
  size.bytes = 7169;
  const auto refused = CheckRequestHeaders(size, 7168, 100);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(*refused,
            "sluice: request header list of 7169 bytes is over the limit of "
            "7168 (proxy.max_header_list_bytes; name + value + 32 per "
            "header)");
}

TEST(HeaderLimitsTest, CountLimit) {
  HeaderListSize size{.bytes = 100, .count = 101};
  const auto refused = CheckRequestHeaders(size, 7168, 100);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(*refused,
            "sluice: request has 101 headers, over the limit of 100 "
            "(proxy.max_header_count)");
  size.count = 100;
  EXPECT_EQ(CheckRequestHeaders(size, 7168, 100), std::nullopt);
}

TEST(HeaderLimitsTest, DefaultsLeaveRoomForWhatSluiceAddsUnderGrpcDefault) {
  EXPECT_EQ(kDefaultMaxHeaderListBytes, 7168);
  EXPECT_EQ(kDefaultMaxHeaderListBytes + kForwardingReserveBytes,
            kGrpcDefaultHeaderListBytes);
  EXPECT_EQ(kDefaultMaxHeaderCount, 100);
}

TEST(HeaderLimitsTest, TransportTierIsFourTimesAtLeast64KiB) {
  EXPECT_EQ(TransportMetadataLimit(7168), 65536);
  EXPECT_EQ(TransportMetadataLimit(1024), 65536);
  EXPECT_EQ(TransportMetadataLimit(16384), 65536);
  EXPECT_EQ(TransportMetadataLimit(32768), 131072);
  EXPECT_EQ(TransportMetadataLimit(1 << 20), 4 << 20);
  for (int64_t limit : {1024, 7168, 20000, 1 << 20}) {
    EXPECT_GE(TransportMetadataLimit(limit), 4 * limit) << limit;
  }
}

}  // namespace
}  // namespace sluice
