// The memory ceiling (proxy.max_memory_bytes): while Sluice's resident
// memory is at or above it, new calls are refused with RESOURCE_EXHAUSTED +
// `sluice-reason: overloaded` instead of the process growing until the
// kernel's OOM killer ends every call at once. Calls in flight go on; new
// ones are admitted again once memory is below 95% of the ceiling.
//
// OverloadState is the decision (pure, single-threaded); MemoryGuard owns a
// thread that feeds it the process's RSS every 100 ms and publishes the
// verdict in an atomic any worker reads without a lock. SetLimit() from
// any thread (start and reload). Stop() or the destructor joins the thread.
#ifndef SLUICE_SERVER_PROXY_MEMORY_GUARD_H_
#define SLUICE_SERVER_PROXY_MEMORY_GUARD_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace sluice {

// Hysteresis over RSS samples for one ceiling.
class OverloadState {
 public:
  // `limit` <= 0: no ceiling (never overloaded).
  void SetLimit(int64_t limit);
  // A new RSS sample; returns whether new calls are to be refused.
  bool Update(int64_t rss);
  bool overloaded() const { return overloaded_; }
  int64_t limit() const { return limit_; }

 private:
  int64_t limit_ = 0;
  bool overloaded_ = false;
};

// The ceiling in effect for proxy.max_memory_bytes = `configured`: itself
// when > 0; none (0) when -1; when 0, 90% of the cgroup memory limit read
// under `cgroup_root` (cgroup v2 memory.max of the process's own cgroup,
// else v1 memory/memory.limit_in_bytes), none if there is no limit.
int64_t EffectiveMemoryLimit(
    int64_t configured, const std::string& cgroup_root = "/sys/fs/cgroup",
    const std::string& proc_self_cgroup = "/proc/self/cgroup");

// The cgroup memory limit in bytes, if the process has one.
std::optional<int64_t> CgroupMemoryLimit(const std::string& cgroup_root,
                                         const std::string& proc_self_cgroup);

class MemoryGuard {
 public:
  MemoryGuard();
  ~MemoryGuard();
  void Stop();

  // The ceiling in bytes (<= 0: none), as EffectiveMemoryLimit() gives it.
  void SetLimit(int64_t limit);
  int64_t limit() const { return limit_.load(std::memory_order_relaxed); }
  // Whether new calls are refused now. Any thread, lock-free.
  bool overloaded() const {
    return overloaded_.load(std::memory_order_relaxed);
  }
  // The last RSS sample, bytes.
  int64_t resident() const { return resident_.load(std::memory_order_relaxed); }

 private:
  void Run();

  absl::Mutex mu_;
  OverloadState state_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> limit_{0};
  std::atomic<bool> overloaded_{false};
  std::atomic<int64_t> resident_{0};
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_MEMORY_GUARD_H_
