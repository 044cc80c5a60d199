// Watches the config file and reports when its contents change, so an
// edited file, or a Kubernetes ConfigMap update (which swaps the `..data`
// symlink in the mounted directory), reloads the config without a SIGHUP.
//
// Owns one thread. It waits on inotify events for the file's directory
// (and the directory the file resolves to, when it is a symlink), lets a
// burst of events settle, then compares the file's bytes with the last
// ones it saw; a periodic re-read covers file systems that send no events.
// `on_change` runs on the watcher's thread. The destructor stops the
// thread and waits for it.
#ifndef SLUICE_SERVER_CONFIG_CONFIG_WATCHER_H_
#define SLUICE_SERVER_CONFIG_CONFIG_WATCHER_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sluice {

class ConfigWatcher {
 public:
  struct Options {
    absl::Duration settle = absl::Milliseconds(200);  // quiet time
    absl::Duration poll = absl::Seconds(10);          // re-read anyway
  };

  static absl::StatusOr<std::unique_ptr<ConfigWatcher>> Start(
      std::string path, Options options, std::function<void()> on_change);
  ~ConfigWatcher();

  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

 private:
  ConfigWatcher(std::string path, Options options,
                std::function<void()> on_change);
  void Loop();
  // Watches the directories the path lives in (again: a symlink may now
  // point elsewhere).
  void AddWatches();
  // Calls on_change_ if the bytes differ from the last ones seen.
  void CheckFile();

  const std::string path_;
  const Options options_;
  const std::function<void()> on_change_;
  std::string last_;  // the file's bytes when last seen
  int inotify_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: written by the destructor
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_CONFIG_CONFIG_WATCHER_H_
