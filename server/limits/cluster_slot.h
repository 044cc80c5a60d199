// Redis Cluster's key -> hash slot function: CRC16 (XMODEM: polynomial
// 0x1021, initial value 0) of the key, or of its hash tag (the text between
// the first '{' and the first '}' after it, when not empty), modulo 16384.
// Pure functions; any thread.
#ifndef SLUICE_SERVER_LIMITS_CLUSTER_SLOT_H_
#define SLUICE_SERVER_LIMITS_CLUSTER_SLOT_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace sluice {

inline constexpr int kClusterSlots = 16384;

uint16_t Crc16(absl::string_view data);
// The part of `key` that is hashed: its hash tag, or the whole key.
absl::string_view HashTag(absl::string_view key);
int KeySlot(absl::string_view key);

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_CLUSTER_SLOT_H_
