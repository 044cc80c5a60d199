#include "server/limits/clock.h"

#include <chrono>
#include <cstdint>

namespace sluice {

int64_t RealClock::NowNanos() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const RealClock& RealClock::Get() {
  // Trivially destructible in practice, but a leaked pointer keeps it
  // usable during static destruction regardless.
  static const RealClock* const kClock = new RealClock();
  return *kClock;
}

}  // namespace sluice
