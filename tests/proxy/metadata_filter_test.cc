#include "server/proxy/metadata_filter.h"

#include <string_view>

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

// gRPC's parser accepts these from a raw HTTP/2 client or upstream, but a
// gRPC call asserts (kills the process) when handed them to send.
TEST(MetadataFilterTest, KeysGrpcCannotSendAreDropped) {
  for (const char* key :
       {"X-Upper", "x key", "x\x01", "x/y", "\xc3\xa9t\xc3\xa9"}) {
    EXPECT_TRUE(IsHopByHopRequestKey(key)) << key;
    EXPECT_TRUE(IsHopByHopResponseKey(key)) << key;
    EXPECT_FALSE(IsForwardableRequestHeader(key, "v")) << key;
    EXPECT_FALSE(IsForwardableResponseHeader(key, "v")) << key;
  }
  EXPECT_FALSE(IsHopByHopRequestKey("x_a.b-1"));
}

TEST(MetadataFilterTest, ValuesGrpcCannotSendAreDropped) {
  using namespace std::string_view_literals;
  for (std::string_view value :
       {"a\0b"sv, "tab\there"sv, "\x7f"sv, "caf\xc3\xa9"sv}) {
    EXPECT_FALSE(IsLegalValue("x-a", value)) << value;
    EXPECT_FALSE(IsForwardableRequestHeader("x-a", value)) << value;
    EXPECT_FALSE(IsForwardableResponseHeader("x-a", value)) << value;
    EXPECT_TRUE(IsLegalValue("x-a-bin", value)) << value;
    EXPECT_TRUE(IsForwardableRequestHeader("x-a-bin", value)) << value;
  }
  EXPECT_TRUE(IsForwardableRequestHeader("x-a", " printable ~ ascii "));
  EXPECT_FALSE(IsForwardableRequestHeader("te", "trailers"));
}

TEST(MetadataFilterTest, PeerAddressOnly) {
  EXPECT_EQ(PeerAddressOnly("ipv4:127.0.0.1:5555"), "127.0.0.1");
  EXPECT_EQ(PeerAddressOnly("ipv6:[::1]:5555"), "::1");
  EXPECT_EQ(PeerAddressOnly("unix:/tmp/s"), "unix:/tmp/s");
}

}  // namespace
}  // namespace sluice
