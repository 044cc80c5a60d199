#include "server/proxy/memory_guard.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "server/common/resident_bytes.h"
#include "spdlog/spdlog.h"

namespace sluice {
namespace {

constexpr absl::Duration kSampleEvery = absl::Milliseconds(100);
// Calls are admitted again below this share of the ceiling.
constexpr int64_t kResumePercent = 95;
// The share of a cgroup limit used as the ceiling when none is configured:
// room for what RSS does not count (kernel memory, page cache the cgroup
// charges) before the OOM killer acts.
constexpr int64_t kCgroupPercent = 90;
// Values a cgroup v1 file holds for "no limit" are near 2^63.
constexpr int64_t kNoLimitAbove = int64_t{1} << 60;

std::optional<std::string> ReadTrimmed(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(text.str()));
}

std::optional<int64_t> ParseLimit(const std::optional<std::string>& text) {
  if (!text || *text == "max") return std::nullopt;
  int64_t bytes = 0;
  if (!absl::SimpleAtoi(*text, &bytes) || bytes <= 0 ||
      bytes >= kNoLimitAbove) {
    return std::nullopt;
  }
  return bytes;
}

// ResidentBytes() as OverloadState takes it: -1 when unknown.
int64_t Resident() {
  const size_t rss = ResidentBytes();
  return rss == 0 ? -1 : static_cast<int64_t>(rss);
}

}  // namespace

void OverloadState::SetLimit(int64_t limit) {
  limit_ = limit;
  if (limit_ <= 0) overloaded_ = false;
}

bool OverloadState::Update(int64_t rss) {
  if (limit_ <= 0 || rss < 0) {
    overloaded_ = false;
  } else if (overloaded_) {
    overloaded_ = rss >= limit_ / 100 * kResumePercent;  // no overflow
  } else {
    overloaded_ = rss >= limit_;
  }
  return overloaded_;
}

std::optional<int64_t> CgroupMemoryLimit(const std::string& cgroup_root,
                                         const std::string& proc_self_cgroup) {
  // /proc/self/cgroup names the process's own group: "0::/path" (v2) or
  // "N:...,memory,...:/path" (v1). A container usually sees its own group
  // as the root, so the root's file is read too.
  std::optional<std::string> v2_path, v1_path;
  if (auto self = ReadTrimmed(proc_self_cgroup)) {
    for (absl::string_view line : absl::StrSplit(*self, '\n')) {
      std::vector<absl::string_view> fields =
          absl::StrSplit(line, absl::MaxSplits(':', 2));
      if (fields.size() != 3) continue;
      if (fields[0] == "0" && fields[1].empty()) {
        v2_path = std::string(fields[2]);
      }
      for (absl::string_view controller : absl::StrSplit(fields[1], ',')) {
        if (controller == "memory") v1_path = std::string(fields[2]);
      }
    }
  }
  const auto under = [&](const std::string& dir, const std::string& path,
                         const char* file) {
    return ParseLimit(ReadTrimmed(path.empty() || path == "/"
                                      ? absl::StrCat(dir, "/", file)
                                      : absl::StrCat(dir, path, "/", file)));
  };
  if (v1_path) {
    const std::string dir = cgroup_root + "/memory";
    if (auto limit = under(dir, *v1_path, "memory.limit_in_bytes"))
      return limit;
    if (auto limit = under(dir, "", "memory.limit_in_bytes")) return limit;
    return std::nullopt;
  }
  if (v2_path) {
    if (auto limit = under(cgroup_root, *v2_path, "memory.max")) return limit;
    if (auto limit = under(cgroup_root, "", "memory.max")) return limit;
  }
  return std::nullopt;
}

int64_t EffectiveMemoryLimit(int64_t configured, const std::string& cgroup_root,
                             const std::string& proc_self_cgroup) {
  if (configured > 0) return configured;
  if (configured < 0) return 0;
  auto cgroup = CgroupMemoryLimit(cgroup_root, proc_self_cgroup);
  return cgroup ? *cgroup / 100 * kCgroupPercent : 0;
}

MemoryGuard::MemoryGuard() : thread_([this] { Run(); }) {}

MemoryGuard::~MemoryGuard() { Stop(); }

void MemoryGuard::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void MemoryGuard::SetLimit(int64_t limit) {
  absl::MutexLock lock(&mu_);
  state_.SetLimit(limit);
  limit_.store(limit, std::memory_order_relaxed);
  overloaded_.store(state_.Update(Resident()), std::memory_order_relaxed);
}

void MemoryGuard::Run() {
  do {
    const int64_t rss = Resident();
    resident_.store(rss, std::memory_order_relaxed);
    absl::MutexLock lock(&mu_);
    const bool was = state_.overloaded();
    const bool now = state_.Update(rss);
    overloaded_.store(now, std::memory_order_relaxed);
    if (now != was) {
      if (now) {
        spdlog::warn(
            "overloaded: resident memory {} MiB is at the ceiling ({} MiB, "
            "proxy.max_memory_bytes): refusing new calls",
            rss >> 20, state_.limit() >> 20);
      } else {
        spdlog::info("resident memory {} MiB: accepting new calls again",
                     rss >> 20);
      }
    }
  } while (!stop_.WaitForNotificationWithTimeout(kSampleEvery));
}

}  // namespace sluice
