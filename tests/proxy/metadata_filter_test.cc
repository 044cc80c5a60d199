#include "server/proxy/metadata_filter.h"

#include "gtest/gtest.h"

namespace sluice {
namespace {

TEST(MetadataFilterTest, RequestHopByHopKeysAreDropped) {
  for (const char* key :
       {":authority", ":path", "te", "content-type", "grpc-timeout",
        "grpc-encoding", "grpc-accept-encoding", "user-agent", "connection",
        "host"}) {
    EXPECT_TRUE(IsHopByHopRequestKey(key)) << key;
  }
  for (const char* key : {"authorization", "x-api-key", "x-trace-bin",
                          "grpc-trace-bin", "x-forwarded-for"}) {
    EXPECT_FALSE(IsHopByHopRequestKey(key)) << key;
  }
}

TEST(MetadataFilterTest, StatusKeysTravelInTheStatusNotTheTrailers) {
  for (const char* key : {"grpc-status", "grpc-message",
                          "grpc-status-details-bin", "content-type"}) {
    EXPECT_TRUE(IsHopByHopResponseKey(key)) << key;
  }
  EXPECT_FALSE(IsHopByHopResponseKey("x-grpc-test-echo-trailing-bin"));
  EXPECT_FALSE(IsHopByHopResponseKey("user-agent"));
}

TEST(MetadataFilterTest, PeerAddressOnly) {
  EXPECT_EQ(PeerAddressOnly("ipv4:127.0.0.1:5555"), "127.0.0.1");
  EXPECT_EQ(PeerAddressOnly("ipv6:[::1]:5555"), "::1");
  EXPECT_EQ(PeerAddressOnly("unix:/tmp/s"), "unix:/tmp/s");
}

}  // namespace
}  // namespace sluice
