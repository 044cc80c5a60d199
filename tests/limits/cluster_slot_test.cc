// Redis Cluster's key -> slot function against known vectors (the CRC16
// check value, keys whose slots Redis' CLUSTER KEYSLOT reports) and hash
// tags.
#include "server/limits/cluster_slot.h"

#include "gtest/gtest.h"

namespace sluice {
namespace {

TEST(ClusterSlotTest, Crc16CheckValue) {
  // CRC-16/XMODEM of "123456789" (Redis' cluster spec and crc16.c).
  EXPECT_EQ(Crc16("123456789"), 0x31C3);
  EXPECT_EQ(Crc16(""), 0);
}

TEST(ClusterSlotTest, KnownKeys) {
  EXPECT_EQ(KeySlot("foo"), 12182);
  EXPECT_EQ(KeySlot("bar"), 5061);
  EXPECT_EQ(KeySlot("123456789"), 0x31C3 % 16384);
}

TEST(ClusterSlotTest, HashTagsPickTheSlot) {
  EXPECT_EQ(KeySlot("{user1000}.following"), KeySlot("{user1000}.followers"));
  EXPECT_EQ(KeySlot("{user1000}.following"), KeySlot("user1000"));
  EXPECT_EQ(HashTag("sluice:{shared}:route:limit"), "shared");
  // Only the first '{' and the first '}' after it count.
  EXPECT_EQ(HashTag("foo{bar}{zap}"), "bar");
  EXPECT_EQ(HashTag("foo{{bar}}zap"), "{bar");
  // An empty or unclosed tag: the whole key is hashed.
  EXPECT_EQ(HashTag("foo{}{bar}"), "foo{}{bar}");
  EXPECT_EQ(HashTag("foo{bar"), "foo{bar");
  EXPECT_EQ(KeySlot("foo{}{bar}"), Crc16("foo{}{bar}") % 16384);
}

TEST(ClusterSlotTest, EverySlotIsInRange) {
  for (int i = 0; i < 100000; ++i) {
    const int slot = KeySlot("k" + std::to_string(i));
    ASSERT_GE(slot, 0);
    ASSERT_LT(slot, kClusterSlots);
  }
}

}  // namespace
}  // namespace sluice
