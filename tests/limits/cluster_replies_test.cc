// Parsing of CLUSTER SLOTS and of MOVED / ASK: the shapes Redis sends and
// the ones refused.
#include "server/limits/cluster_replies.h"

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace sluice {
namespace {

RedisValue Int(int64_t v) {
  RedisValue r;
  r.type = RedisValue::kInteger;
  r.integer = v;
  return r;
}

RedisValue Str(std::string s) {
  RedisValue r;
  r.type = RedisValue::kString;
  r.str = std::move(s);
  return r;
}

RedisValue Arr(std::vector<RedisValue> e) {
  RedisValue r;
  r.type = RedisValue::kArray;
  r.elements = std::move(e);
  return r;
}

RedisValue Node(const std::string& host, int port) {
  return Arr({Str(host), Int(port), Str("0123abcd")});
}

TEST(ClusterSlotsTest, ParsesMastersAndSkipsReplicas) {
  const RedisValue reply = Arr({
      Arr({Int(0), Int(5460), Node("127.0.0.1", 7000),
           Node("127.0.0.1", 7004)}),
      Arr({Int(5461), Int(10922), Node("127.0.0.1", 7001)}),
      Arr({Int(10923), Int(16383), Node("", 7002)}),
  });
  std::vector<SlotRange> ranges;
  std::string error;
  ASSERT_TRUE(
      ParseClusterSlots(reply, ClusterNode{"10.0.0.9", 7009}, &ranges, &error))
      << error;
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[0].first, 0);
  EXPECT_EQ(ranges[0].last, 5460);
  EXPECT_EQ(ranges[0].master.Name(), "127.0.0.1:7000");
  EXPECT_EQ(ranges[1].master.Name(), "127.0.0.1:7001");
  // An empty host: the node that was asked.
  EXPECT_EQ(ranges[2].master.Name(), "10.0.0.9:7002");
}

TEST(ClusterSlotsTest, RefusesOtherShapes) {
  std::vector<SlotRange> ranges;
  std::string error;
  const ClusterNode asked{"h", 1};
  EXPECT_FALSE(ParseClusterSlots(Str("x"), asked, &ranges, &error));
  EXPECT_FALSE(
      ParseClusterSlots(Arr({Arr({Int(0), Int(5)})}), asked, &ranges, &error));
  EXPECT_FALSE(ParseClusterSlots(Arr({Arr({Int(5), Int(0), Node("h", 1)})}),
                                 asked, &ranges, &error));
  EXPECT_NE(error.find("bad slot range 5-0"), std::string::npos) << error;
  EXPECT_FALSE(ParseClusterSlots(Arr({Arr({Int(0), Int(16384), Node("h", 1)})}),
                                 asked, &ranges, &error));
  EXPECT_FALSE(ParseClusterSlots(Arr({Arr({Int(0), Int(1), Node("h", 0)})}),
                                 asked, &ranges, &error));
  EXPECT_NE(error.find("bad port 0"), std::string::npos) << error;
}

TEST(RedirectTest, MovedAndAsk) {
  Redirect r;
  ASSERT_TRUE(ParseRedirect("MOVED 3999 127.0.0.1:6381", &r));
  EXPECT_FALSE(r.ask);
  EXPECT_EQ(r.slot, 3999);
  EXPECT_EQ(r.to.Name(), "127.0.0.1:6381");
  ASSERT_TRUE(ParseRedirect("ASK 12182 ::1:7002", &r));
  EXPECT_TRUE(r.ask);
  EXPECT_EQ(r.slot, 12182);
  EXPECT_EQ(r.to.host, "::1");
  EXPECT_EQ(r.to.port, 7002);
  EXPECT_EQ(r.to.Name(), "[::1]:7002");
}

TEST(RedirectTest, RefusesOtherErrors) {
  Redirect r;
  EXPECT_FALSE(ParseRedirect("ERR unknown command", &r));
  EXPECT_FALSE(ParseRedirect("MOVED 16384 h:1", &r));
  EXPECT_FALSE(ParseRedirect("MOVED 1 h", &r));
  EXPECT_FALSE(ParseRedirect("MOVED 1 h:0", &r));
  EXPECT_FALSE(ParseRedirect("MOVED x h:1", &r));
  EXPECT_FALSE(ParseRedirect("CLUSTERDOWN The cluster is down", &r));
}

}  // namespace
}  // namespace sluice
