// Injected monotonic time for the limiters.
//
// Every limiter takes "now" as an int64_t count of nanoseconds on one
// monotonic time line; callers read it from a Clock. Production code uses
// RealClock::Get(); tests drive a SimulatedClock and never sleep.
#ifndef SLUICE_SERVER_LIMITS_CLOCK_H_
#define SLUICE_SERVER_LIMITS_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace sluice {

// A source of monotonic nanoseconds. Values from one Clock never go
// backwards (SimulatedClock::Set excepted) and have an arbitrary epoch, so
// only differences mean anything. Implementations are thread-safe.
//
// Ownership: whoever builds the limiters owns the clock and keeps it alive
// longer than every object that reads it.
class Clock {
 public:
  virtual ~Clock() = default;

  // Monotonic time in nanoseconds since an unspecified epoch.
  virtual int64_t NowNanos() const = 0;
};

// The process's monotonic clock (std::chrono::steady_clock, i.e.
// CLOCK_MONOTONIC on Linux: not affected by wall-clock steps).
//
// Ownership: stateless; use the process-wide instance from Get(), which is
// never destroyed. Any thread may call it.
class RealClock final : public Clock {
 public:
  RealClock() = default;

  int64_t NowNanos() const override;

  // The process-wide instance. Never destroyed, safe from any thread and
  // during static destruction.
  static const RealClock& Get();
};

// A clock that moves only when told to. Thread-safe: readers and the
// (usually single) driver may run on different threads.
//
// Ownership: owned by the test; it must outlive every object that reads it.
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(int64_t start_nanos = 0) : now_(start_nanos) {}

  SimulatedClock(const SimulatedClock&) = delete;
  SimulatedClock& operator=(const SimulatedClock&) = delete;

  int64_t NowNanos() const override {
    return now_.load(std::memory_order_acquire);
  }

  // Moves time forward by `d` (negative `d` moves it back; don't).
  void Advance(absl::Duration d) {
    now_.fetch_add(absl::ToInt64Nanoseconds(d), std::memory_order_acq_rel);
  }
  void AdvanceNanos(int64_t nanos) {
    now_.fetch_add(nanos, std::memory_order_acq_rel);
  }

  // Sets the absolute time. Setting it backwards breaks monotonicity; the
  // caller owns that choice.
  void Set(int64_t nanos) { now_.store(nanos, std::memory_order_release); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_LIMITS_CLOCK_H_
