// The sluice-bench binary against the demo_upstream binary: --json output
// parses, exit status 0; bad flags (absl's parse errors too) exit 2; an
// unreachable target exits 1; --help lists the flags.
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/client/json_util.h"

extern char** environ;

namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

std::string Runfile(const std::string& path) {
  return absl::StrCat(Env("TEST_SRCDIR"), "/", Env("TEST_WORKSPACE"), "/",
                      path);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Spawns `args`, with stdout (and stderr, if `err` is set) to pipes.
pid_t Spawn(std::vector<std::string> args, int* out_fd, int* err_fd) {
  int out[2], err[2];
  if (pipe(out) != 0 || pipe(err) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  for (int fd : {out[0], out[1], err[0], err[1]}) {
    posix_spawn_file_actions_addclose(&actions, fd);
  }
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) !=
      0) {
    pid = -1;
  }
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  close(err[1]);
  *out_fd = out[0];
  *err_fd = err[0];
  return pid;
}

std::string ReadAll(int fd) {
  std::string data;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof buffer)) > 0) data.append(buffer, n);
  close(fd);
  return data;
}

struct Outcome {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs sluice-bench to completion. It bounds itself (calls, connect
// timeout); the test's own timeout bounds the rest.
Outcome RunBench(const std::vector<std::string>& flags) {
  std::vector<std::string> args = {Runfile("client/bench/sluice-bench")};
  args.insert(args.end(), flags.begin(), flags.end());
  int out_fd = -1, err_fd = -1;
  Outcome outcome;
  const pid_t pid = Spawn(args, &out_fd, &err_fd);
  if (pid < 0) return outcome;
  // Small outputs: stderr fits its pipe while stdout is read.
  outcome.out = ReadAll(out_fd);
  outcome.err = ReadAll(err_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) outcome.exit_code = WEXITSTATUS(status);
  return outcome;
}

class SluiceBenchMainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string ready = absl::StrCat(Env("TEST_TMPDIR"), "/ready.json");
    std::remove(ready.c_str());
    int out_fd = -1, err_fd = -1;
    upstream_pid_ = Spawn({Runfile("server/demo/demo_upstream"),
                           "--listen=127.0.0.1:0", "--ready_file=" + ready},
                          &out_fd, &err_fd);
    ASSERT_GT(upstream_pid_, 0);
    // Kept open until TearDown: a closed pipe would kill the upstream with
    // SIGPIPE when it prints. Its few lines fit in the pipe buffer.
    upstream_out_ = out_fd;
    upstream_err_ = err_fd;
    const absl::Time give_up = absl::Now() + absl::Seconds(20);
    std::string contents;
    while (absl::Now() < give_up) {
      contents = ReadFile(ready);
      if (!contents.empty()) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    absl::string_view rest = absl::StripSuffix(contents, "\"}\n");
    ASSERT_TRUE(absl::ConsumePrefix(&rest, "{\"address\":\"")) << contents;
    address_ = std::string(rest);
  }

  void TearDown() override {
    if (upstream_pid_ > 0) {
      kill(upstream_pid_, SIGTERM);
      int status = 0;
      waitpid(upstream_pid_, &status, 0);
    }
    if (upstream_out_ >= 0) close(upstream_out_);
    if (upstream_err_ >= 0) close(upstream_err_);
  }

  pid_t upstream_pid_ = -1;
  int upstream_out_ = -1;
  int upstream_err_ = -1;
  std::string address_;
};

TEST_F(SluiceBenchMainTest, JsonRunAgainstDemoUpstream) {
  Outcome o =
      RunBench({"--target=" + address_, "--calls=100", "--connections=2",
                "--concurrency=4", "--json", "--header=x-bench:yes"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  google::protobuf::Struct s;
  ASSERT_TRUE(sluice::bench::testing::ParseJsonObject(o.out, &s)) << o.out;
  const auto& f = s.fields();
  for (const char* key : {"calls", "calls_per_s", "messages", "messages_per_s",
                          "latency_us", "status", "sluice_reason"}) {
    EXPECT_TRUE(f.contains(key)) << key;
  }
  EXPECT_EQ(f.at("calls").number_value(), 100);
  EXPECT_EQ(f.at("connections").number_value(), 2);
  EXPECT_EQ(f.at("status").struct_value().fields().at("OK").number_value(),
            100);
  const auto& latency = f.at("latency_us").struct_value().fields();
  for (const char* key : {"p50", "p90", "p99", "p99_9", "max"}) {
    ASSERT_TRUE(latency.contains(key)) << key;
    EXPECT_GT(latency.at(key).number_value(), 0) << key;
  }
}

TEST_F(SluiceBenchMainTest, TableRun) {
  Outcome o = RunBench({"--target=" + address_, "--scenario=ticker",
                        "--stream_messages=10", "--calls=5"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_NE(o.out.find("calls/s"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("OK"), std::string::npos) << o.out;
}

TEST(SluiceBenchFlagsTest, BadFlagsExitTwoWithMessage) {
  Outcome o = RunBench(
      {"--target=127.0.0.1:1", "--kind=sideways", "--payload_file=/dev/null"});
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.err.find("--kind=sideways"), std::string::npos) << o.err;
  o = RunBench({"--calls=1"});
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.err.find("--target"), std::string::npos) << o.err;
}

// Errors absl's parser would exit 1 on are usage errors too.
TEST(SluiceBenchFlagsTest, UnknownOrMalformedFlagExitsTwo) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--target=127.0.0.1:1", "--bogus"}, "unknown flag --bogus"},
      {{"--target=127.0.0.1:1", "--calls=many"},
       "bad value \"many\" for --calls"},
      {{"--target=127.0.0.1:1", "--duration=5"},
       "bad value \"5\" for --duration"},
      {{"--target=127.0.0.1:1", "--json=maybe"},
       "bad value \"maybe\" for --json"},
      {{"--target=127.0.0.1:1", "--calls"}, "flag --calls needs a value"},
  };
  for (const auto& [flags, message] : cases) {
    Outcome o = RunBench(flags);
    EXPECT_EQ(o.exit_code, 2) << flags.back() << ": " << o.err;
    EXPECT_EQ(o.out, "") << flags.back();
    EXPECT_TRUE(absl::StartsWith(o.err, "sluice-bench: " + message)) << o.err;
  }
}

// absl prints the usage and main.cc's flags on stdout, then exits 1.
TEST(SluiceBenchFlagsTest, HelpListsTheFlags) {
  Outcome o = RunBench({"--help"});
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_FALSE(absl::StrContains(o.out, "No flags matched")) << o.out;
  EXPECT_FALSE(absl::StrContains(o.out, "--flagfile")) << "absl's own flags";
  for (const char* flag : {"--target", "--scenario", "--rate", "--duration",
                           "--header", "--json"}) {
    EXPECT_TRUE(absl::StrContains(o.out, flag)) << flag << "\n" << o.out;
  }
}

TEST(SluiceBenchFlagsTest, UnreachableTargetExitsOne) {
  Outcome o = RunBench(
      {"--target=127.0.0.1:1", "--calls=1", "--connect_timeout=300ms"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_NE(o.err.find("cannot connect"), std::string::npos) << o.err;
}

}  // namespace
