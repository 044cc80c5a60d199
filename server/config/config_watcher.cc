#include "server/config/config_watcher.h"

#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/common/read_file.h"

namespace sluice {
namespace {

constexpr uint32_t kEvents = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM |
                             IN_CLOSE_WRITE | IN_DELETE | IN_ATTRIB;

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

int Millis(absl::Duration d) {
  return static_cast<int>(absl::ToInt64Milliseconds(d));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ConfigWatcher>> ConfigWatcher::Start(
    std::string path, Options options, std::function<void()> on_change) {
  std::unique_ptr<ConfigWatcher> w(
      new ConfigWatcher(std::move(path), options, std::move(on_change)));
  w->inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  w->stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->inotify_fd_ < 0 || w->stop_fd_ < 0) {
    return absl::InternalError(
        absl::StrCat("cannot watch the config file: ", std::strerror(errno)));
  }
  auto text = ReadSmallFile(w->path_, "config");
  if (text.ok()) w->last_ = *text;
  w->AddWatches();
  w->thread_ = std::thread([raw = w.get()] { raw->Loop(); });
  return w;
}

ConfigWatcher::ConfigWatcher(std::string path, Options options,
                             std::function<void()> on_change)
    : path_(std::move(path)),
      options_(options),
      on_change_(std::move(on_change)) {}

ConfigWatcher::~ConfigWatcher() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (inotify_fd_ >= 0) close(inotify_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
}

void ConfigWatcher::AddWatches() {
  inotify_add_watch(inotify_fd_, DirName(path_).c_str(), kEvents);
  char resolved[PATH_MAX];
  if (realpath(path_.c_str(), resolved) != nullptr) {
    inotify_add_watch(inotify_fd_, DirName(resolved).c_str(), kEvents);
  }
}

void ConfigWatcher::CheckFile() {
  AddWatches();
  auto text = ReadSmallFile(path_, "config");
  // A file that is missing for a moment (mid-swap) is not a change; the
  // reload that follows a real change reports a missing file itself.
  if (!text.ok() || *text == last_) return;
  last_ = std::move(*text);
  on_change_();
}

void ConfigWatcher::Loop() {
  bool pending = false;  // events seen, waiting for them to settle
  for (;;) {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    const int timeout =
        pending ? Millis(options_.settle) : Millis(options_.poll);
    const int n = poll(fds, 2, timeout);
    if (n < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    if (n > 0 && fds[0].revents != 0) {
      char buffer[4096];
      while (read(inotify_fd_, buffer, sizeof(buffer)) > 0) {
      }
      pending = true;  // wait until the burst is over
      continue;
    }
    if (n == 0) {  // quiet: after a burst, or the periodic re-read
      pending = false;
      CheckFile();
    }
  }
}

}  // namespace sluice
