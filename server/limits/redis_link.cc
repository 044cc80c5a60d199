#include "server/limits/redis_link.h"

namespace sluice {

const char* RedisLinkStateName(RedisLinkState state) {
  switch (state) {
    case RedisLinkState::kConnecting:
      return "connecting";
    case RedisLinkState::kUp:
      return "up";
    case RedisLinkState::kAuthFailed:
      return "auth_failed";
    case RedisLinkState::kUnreachable:
      return "unreachable";
  }
  return "unknown";
}

}  // namespace sluice
