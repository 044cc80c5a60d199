// The memory ceiling's decision (hysteresis) and how the ceiling is found
// (configured, or from a cgroup limit read from fake cgroup files).
#include "server/proxy/memory_guard.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace sluice {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

TEST(OverloadStateTest, NoCeilingNeverOverloads) {
  OverloadState s;
  EXPECT_FALSE(s.Update(int64_t{1} << 40));
  s.SetLimit(0);
  EXPECT_FALSE(s.Update(int64_t{1} << 40));
}

TEST(OverloadStateTest, RefusesAtTheCeilingAndResumesBelow95Percent) {
  OverloadState s;
  s.SetLimit(100 * kMiB);
  EXPECT_FALSE(s.Update(100 * kMiB - 1));
  EXPECT_TRUE(s.Update(100 * kMiB));
  // Hysteresis: still refusing until below 95 MiB.
  EXPECT_TRUE(s.Update(99 * kMiB));
  EXPECT_TRUE(s.Update(95 * kMiB));
  EXPECT_FALSE(s.Update(95 * kMiB - 1));
  // And it takes the ceiling again to refuse again.
  EXPECT_FALSE(s.Update(99 * kMiB));
  EXPECT_TRUE(s.Update(101 * kMiB));
}

TEST(OverloadStateTest, AnUnreadableSampleOrARemovedCeilingAdmits) {
  OverloadState s;
  s.SetLimit(10 * kMiB);
  EXPECT_TRUE(s.Update(20 * kMiB));
  EXPECT_FALSE(s.Update(-1));
  EXPECT_TRUE(s.Update(20 * kMiB));
  s.SetLimit(0);
  EXPECT_FALSE(s.overloaded());
}

class CgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    root_ = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") /
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_ / "fs");
  }
  void Write(const std::string& relative, const std::string& text) {
    const auto path = root_ / relative;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  std::string fs() const { return (root_ / "fs").string(); }
  std::string self() const { return (root_ / "self_cgroup").string(); }
  std::filesystem::path root_;
};

TEST_F(CgroupTest, V2OwnGroup) {
  Write("self_cgroup", "0::/kubepods/pod1/c1\n");
  Write("fs/kubepods/pod1/c1/memory.max", "268435456\n");
  EXPECT_EQ(CgroupMemoryLimit(fs(), self()), 268435456);
  // 0: 90% of it.
  EXPECT_EQ(EffectiveMemoryLimit(0, fs(), self()), 268435456 / 100 * 90);
  // Configured values win; -1 is none.
  EXPECT_EQ(EffectiveMemoryLimit(64 * kMiB, fs(), self()), 64 * kMiB);
  EXPECT_EQ(EffectiveMemoryLimit(-1, fs(), self()), 0);
}

TEST_F(CgroupTest, V2ContainerSeesItsGroupAsTheRoot) {
  Write("self_cgroup", "0::/\n");
  Write("fs/memory.max", "134217728\n");
  EXPECT_EQ(CgroupMemoryLimit(fs(), self()), 134217728);
}

TEST_F(CgroupTest, V2WithoutLimit) {
  Write("self_cgroup", "0::/user.slice\n");
  Write("fs/user.slice/memory.max", "max\n");
  EXPECT_EQ(CgroupMemoryLimit(fs(), self()), std::nullopt);
  EXPECT_EQ(EffectiveMemoryLimit(0, fs(), self()), 0);
}

TEST_F(CgroupTest, V1LimitAndItsNoLimitValue) {
  // A container's view: its group mounted as the hierarchy's root.
  Write("self_cgroup", "12:memory:/docker/abc\n0::/\n");
  Write("fs/memory/memory.limit_in_bytes", "536870912\n");
  EXPECT_EQ(CgroupMemoryLimit(fs(), self()), 536870912);
  Write("fs/memory/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_EQ(CgroupMemoryLimit(fs(), self()), std::nullopt);
  // The host's view: the group under the hierarchy, among other
  // controllers on the line.
  Write("self_cgroup", "4:cpuacct,memory:/jobs/j1\n");
  Write("fs/memory/jobs/j1/memory.limit_in_bytes", "1073741824\n");
  EXPECT_EQ(CgroupMemoryLimit(fs(), self()), 1073741824);
}

TEST_F(CgroupTest, NothingReadable) {
  EXPECT_EQ(CgroupMemoryLimit(fs(), self()), std::nullopt);
  Write("self_cgroup", "0::/x\n");
  Write("fs/x/memory.max", "garbage\n");
  EXPECT_EQ(CgroupMemoryLimit(fs(), self()), std::nullopt);
}

}  // namespace
}  // namespace sluice
