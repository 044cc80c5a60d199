// The demo upstream's capacity mode: how long a unary call takes given how
// many are being served.
#ifndef SLUICE_SERVER_DEMO_CAPACITY_MODEL_H_
#define SLUICE_SERVER_DEMO_CAPACITY_MODEL_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sluice::demo {

// An upstream that serves `capacity` (N) unary calls at once at full speed,
// in `service_time` (S) each, and slows down beyond: a call that starts
// with k calls being served, itself included, takes S * max(1, k / N). So
// with k >= N in flight it finishes N / S calls a second whatever k is
// (the capacity C), and latency grows with the queue it stands for. A call
// keeps the service time it got at its start (a change of settings applies
// to calls starting after it). Off (capacity 0): calls take no time.
//
// Ownership: owned by the TestService; shared with the Capacity service
// that changes it at run time. Thread-safety: every method may be called
// from any thread (gRPC's callback threads).
class CapacityModel {
 public:
  struct Settings {
    int64_t capacity = 0;                                  // N; 0: off
    absl::Duration service_time = absl::Milliseconds(10);  // S
    bool operator==(const Settings&) const = default;
  };

  struct State {
    Settings settings;
    int64_t in_flight = 0;      // calls being served now
    int64_t max_in_flight = 0;  // the most at once since the last Set
    int64_t served = 0;         // calls finished since start
  };

  CapacityModel() = default;
  explicit CapacityModel(const Settings& settings) : settings_(settings) {}

  CapacityModel(const CapacityModel&) = delete;
  CapacityModel& operator=(const CapacityModel&) = delete;

  // New settings for calls starting from now; resets max_in_flight.
  // Negative values act as 0.
  void Set(const Settings& settings);

  // A call starts: returns how long it is served (zero when off, and then
  // it is not counted). A call given a non-zero time must call Finish()
  // once when that time is over or it is cancelled.
  absl::Duration Start();
  void Finish();

  State state() const;
  bool enabled() const;

 private:
  mutable absl::Mutex mu_;
  Settings settings_ ABSL_GUARDED_BY(mu_);
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t served_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice::demo

#endif  // SLUICE_SERVER_DEMO_CAPACITY_MODEL_H_
