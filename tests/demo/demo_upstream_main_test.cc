// The demo_upstream binary: ready file, stdout line, serving, clean SIGTERM;
// --help lists its flags.
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
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "grpc/testing/test.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"

extern char** environ;

namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Reads one line (without '\n') from `in`; false at end of file.
bool ReadLine(FILE* in, std::string* line) {
  line->clear();
  int c;
  while ((c = std::fgetc(in)) != EOF) {
    if (c == '\n') return true;
    line->push_back(static_cast<char>(c));
  }
  return !line->empty();
}

std::string Binary() {
  return absl::StrCat(Env("TEST_SRCDIR"), "/", Env("TEST_WORKSPACE"),
                      "/server/demo/demo_upstream");
}

TEST(DemoUpstreamMainTest, ServesAndStopsOnSigterm) {
  const std::string binary = Binary();
  const std::string ready_file =
      absl::StrCat(Env("TEST_TMPDIR"), "/ready.json");

  int out[2];
  ASSERT_EQ(pipe(out), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  posix_spawn_file_actions_addclose(&actions, out[1]);
  std::vector<std::string> args = {binary, "--listen=127.0.0.1:0",
                                   "--ready_file=" + ready_file};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(),
                        environ),
            0)
      << binary;
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  FILE* stdout_of_child = fdopen(out[0], "r");
  ASSERT_NE(stdout_of_child, nullptr);

  // Blocks until the binary serves (or exits).
  std::string line;
  ASSERT_TRUE(ReadLine(stdout_of_child, &line));
  absl::string_view address = line;
  ASSERT_TRUE(absl::ConsumePrefix(&address, "demo-upstream listening on "))
      << line;
  EXPECT_TRUE(absl::StartsWith(address, "127.0.0.1:")) << line;

  // The ready file is in place before the line is printed.
  EXPECT_EQ(ReadFile(ready_file),
            absl::StrCat("{\"address\":\"", address, "\"}\n"));

  {
    // Scoped: the connection closes before SIGTERM, so the binary's
    // graceful shutdown need not wait for this idle client.
    auto stub = grpc::testing::TestService::NewStub(grpc::CreateChannel(
        std::string(address), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    grpc::testing::SimpleRequest request;
    request.set_response_size(100);
    grpc::testing::SimpleResponse response;
    grpc::Status status = stub->UnaryCall(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.payload().body().size(), 100u);
  }

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int wait_status = 0;
  ASSERT_EQ(waitpid(pid, &wait_status, 0), pid);
  ASSERT_TRUE(WIFEXITED(wait_status)) << wait_status;
  EXPECT_EQ(WEXITSTATUS(wait_status), 0);
  ASSERT_TRUE(ReadLine(stdout_of_child, &line));
  EXPECT_TRUE(absl::StartsWith(line, "demo-upstream stopping")) << line;
  std::fclose(stdout_of_child);
}

// absl prints the usage and this file's flags on stdout, then exits 1.
TEST(DemoUpstreamMainTest, HelpListsTheFlags) {
  const std::string binary = Binary();
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  posix_spawn_file_actions_addclose(&actions, out[1]);
  std::vector<std::string> args = {binary, "--help"};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(),
                        environ),
            0)
      << binary;
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  std::string help;
  char buffer[4096];
  ssize_t n;
  while ((n = read(out[0], buffer, sizeof buffer)) > 0) help.append(buffer, n);
  close(out[0]);
  int wait_status = 0;
  ASSERT_EQ(waitpid(pid, &wait_status, 0), pid);
  ASSERT_TRUE(WIFEXITED(wait_status)) << wait_status;
  EXPECT_EQ(WEXITSTATUS(wait_status), 1);
  EXPECT_FALSE(absl::StrContains(help, "No flags matched")) << help;
  EXPECT_FALSE(absl::StrContains(help, "--flagfile")) << "absl's own flags";
  for (const char* flag : {"--listen", "--ready_file", "--tls_cert",
                           "--tls_key", "--capacity", "--service_time"}) {
    EXPECT_TRUE(absl::StrContains(help, flag)) << flag << "\n" << help;
  }
}

}  // namespace
