// ConfigWatcher against real files: an in-place write, an editor-style
// rename, and a Kubernetes ConfigMap-style `..data` symlink swap each
// report one change; a write of the same bytes and a file missing for a
// moment report none. Waits are for the watcher's event, bounded.
#include "server/config/config_watcher.h"

#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

class ConfigWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = std::string(getenv("TEST_TMPDIR")) + "/watchXXXXXX";
    dir_ = mkdtemp(tmpl.data());
    ASSERT_FALSE(dir_.empty());
  }

  void Watch(const std::string& path) {
    ConfigWatcher::Options options;
    options.settle = absl::Milliseconds(20);
    options.poll = absl::Hours(1);  // only events, so the test shows them
    auto w = ConfigWatcher::Start(path, options, [this] {
      absl::MutexLock lock(&mu_);
      ++changes_;
    });
    ASSERT_TRUE(w.ok()) << w.status();
    watcher_ = std::move(*w);
  }

  // Waits (bounded) until `n` changes were reported.
  bool WaitForChanges(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return changes_ >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(20));
  }

  int changes() {
    absl::MutexLock lock(&mu_);
    return changes_;
  }

  // A change that must come after whatever the test did before: proves
  // earlier events were already handled (and reported nothing extra).
  void Barrier(const std::string& path, const std::string& text, int expect) {
    Write(path, text);
    ASSERT_TRUE(WaitForChanges(expect));
    EXPECT_EQ(changes(), expect);
  }

  std::string dir_;
  absl::Mutex mu_;
  int changes_ ABSL_GUARDED_BY(mu_) = 0;
  std::unique_ptr<ConfigWatcher> watcher_;
};

TEST_F(ConfigWatcherTest, InPlaceWriteIsOneChange) {
  const std::string path = dir_ + "/sluice.yaml";
  Write(path, "a: 1\n");
  Watch(path);
  Write(path, "a: 2\n");
  ASSERT_TRUE(WaitForChanges(1));
  Barrier(path, "a: 3\n", 2);
}

TEST_F(ConfigWatcherTest, SameBytesAreNoChange) {
  const std::string path = dir_ + "/sluice.yaml";
  Write(path, "a: 1\n");
  Watch(path);
  Write(path, "a: 1\n");  // touched, same contents
  Barrier(path, "a: 2\n", 1);
}

TEST_F(ConfigWatcherTest, EditorRenameIsOneChange) {
  const std::string path = dir_ + "/sluice.yaml";
  Write(path, "a: 1\n");
  Watch(path);
  Write(dir_ + "/.sluice.yaml.swp", "a: 2\n");
  ASSERT_EQ(std::rename((dir_ + "/.sluice.yaml.swp").c_str(), path.c_str()), 0);
  ASSERT_TRUE(WaitForChanges(1));
  EXPECT_EQ(changes(), 1);
}

TEST_F(ConfigWatcherTest, ConfigMapSymlinkSwapIsOneChange) {
  // What the kubelet does: sluice.yaml -> ..data/sluice.yaml, and ..data ->
  // ..<timestamp>; an update writes a new timestamped folder and renames a
  // new ..data link over the old one.
  ASSERT_EQ(mkdir((dir_ + "/..2026_1").c_str(), 0755), 0);
  Write(dir_ + "/..2026_1/sluice.yaml", "a: 1\n");
  ASSERT_EQ(symlink("..2026_1", (dir_ + "/..data").c_str()), 0);
  ASSERT_EQ(symlink("..data/sluice.yaml", (dir_ + "/sluice.yaml").c_str()), 0);
  const std::string path = dir_ + "/sluice.yaml";
  Watch(path);

  ASSERT_EQ(mkdir((dir_ + "/..2026_2").c_str(), 0755), 0);
  Write(dir_ + "/..2026_2/sluice.yaml", "a: 2\n");
  ASSERT_EQ(symlink("..2026_2", (dir_ + "/..data_tmp").c_str()), 0);
  ASSERT_EQ(
      std::rename((dir_ + "/..data_tmp").c_str(), (dir_ + "/..data").c_str()),
      0);
  ASSERT_TRUE(WaitForChanges(1));
  EXPECT_EQ(changes(), 1);
}

TEST_F(ConfigWatcherTest, FileMissingForAMomentIsNoChange) {
  const std::string path = dir_ + "/sluice.yaml";
  Write(path, "a: 1\n");
  Watch(path);
  ASSERT_EQ(unlink(path.c_str()), 0);
  Write(path, "a: 1\n");  // back, unchanged
  Barrier(path, "a: 2\n", 1);
}

TEST_F(ConfigWatcherTest, DestructorStopsTheThread) {
  const std::string path = dir_ + "/sluice.yaml";
  Write(path, "a: 1\n");
  Watch(path);
  watcher_.reset();  // must return (the test times out if it hangs)
  Write(path, "a: 2\n");
  EXPECT_EQ(changes(), 0);
}

}  // namespace
}  // namespace sluice
