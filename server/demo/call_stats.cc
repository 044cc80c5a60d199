#include "server/demo/call_stats.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sluice::demo {

CallStats::CallStats(std::string service, std::vector<std::string> methods)
    : prefix_(absl::StrCat("/", service, "/")),
      methods_(std::move(methods)),
      stats_(methods_.size()),
      last_(methods_.size()) {}

int CallStats::IndexOf(absl::string_view method) const {
  absl::ConsumePrefix(&method, prefix_);
  for (size_t i = 0; i < methods_.size(); ++i) {
    if (methods_[i] == method) return static_cast<int>(i);
  }
  return -1;
}

void CallStats::RecordStart(int method, CallRecord record) {
  std::optional<CallRecord> old(std::move(record));
  {
    absl::MutexLock lock(&mu_);
    ++stats_[method].started;
    last_[method].swap(old);
    last_method_ = method;
  }
  // `old` (the previous record) is freed here, outside the lock.
}

void CallStats::RecordCancel(int method) {
  absl::MutexLock lock(&mu_);
  ++stats_[method].cancelled;
}

void CallStats::RecordDone(int method) {
  absl::MutexLock lock(&mu_);
  ++stats_[method].finished;
}

void CallStats::RecordWrite(int method) {
  absl::MutexLock lock(&mu_);
  ++stats_[method].messages_written;
}

MethodStats CallStats::Get(absl::string_view method) const {
  const int index = IndexOf(method);
  if (index < 0) return MethodStats();
  absl::MutexLock lock(&mu_);
  return stats_[index];
}

MethodStats CallStats::Total() const {
  absl::MutexLock lock(&mu_);
  return TotalLocked();
}

MethodStats CallStats::TotalLocked() const {
  MethodStats total;
  for (const MethodStats& s : stats_) {
    total.started += s.started;
    total.finished += s.finished;
    total.cancelled += s.cancelled;
    total.messages_written += s.messages_written;
  }
  return total;
}

std::optional<CallRecord> CallStats::LastCall(absl::string_view method) const {
  const int index = IndexOf(method);
  if (index < 0) return std::nullopt;
  absl::MutexLock lock(&mu_);
  return last_[index];
}

std::optional<CallRecord> CallStats::LastCall() const {
  absl::MutexLock lock(&mu_);
  if (last_method_ < 0) return std::nullopt;
  return last_[last_method_];
}

bool CallStats::Await(absl::string_view method,
                      absl::FunctionRef<bool(const MethodStats&)> pred,
                      absl::Duration timeout) const {
  const int index = method.empty() ? -1 : IndexOf(method);
  if (!method.empty() && index < 0) return false;
  auto holds = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return pred(index < 0 ? TotalLocked() : stats_[index]);
  };
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&holds), timeout);
}

}  // namespace sluice::demo
