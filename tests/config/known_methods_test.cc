// metrics.descriptor_sets: the methods (and their grpc_type) a config
// names for the go-grpc-prometheus labels, the errors of a bad file, and
// relative paths taken from the config file's folder.
#include <stdlib.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/config/config.h"

namespace sluice {
namespace {

// Built by //proto:demo_descriptors (ticker, grpc.testing, health).
constexpr char kDescriptors[] = "proto/demo_descriptors.pb";

std::string Config(const std::string& metrics,
                   const std::string& route = "match: {prefix: /}") {
  return absl::StrCat(
      "upstreams:\n  - {name: up, target: \"127.0.0.1:1\"}\n"
      "routes:\n  - {name: exact, match: {method: /x.Y/Z}, upstream: up}\n"
      "  - {name: r, ",
      route, ", upstream: up}\n", metrics);
}

const MethodInfo* Find(const sluice::Config& c, const std::string& path) {
  for (const MethodInfo& m : c.methods()) {
    if (m.path == path) return &m;
  }
  return nullptr;
}

TEST(KnownMethodsTest, DescriptorSetGivesEveryMethodWithItsType) {
  auto c = ParseConfigYaml(Config(absl::StrCat("metrics: {descriptor_sets: [",
                                               kDescriptors, "]}\n")),
                           "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  const MethodInfo* unary = Find(**c, "/grpc.testing.TestService/UnaryCall");
  ASSERT_NE(unary, nullptr);
  EXPECT_EQ(unary->service, "grpc.testing.TestService");
  EXPECT_EQ(unary->method, "UnaryCall");
  EXPECT_EQ(unary->type, "unary");
  EXPECT_EQ(Find(**c, "/grpc.testing.TestService/StreamingOutputCall")->type,
            "server_stream");
  EXPECT_EQ(Find(**c, "/grpc.testing.TestService/StreamingInputCall")->type,
            "client_stream");
  EXPECT_EQ(Find(**c, "/grpc.testing.TestService/FullDuplexCall")->type,
            "bidi_stream");
  EXPECT_EQ(Find(**c, "/sluice.demo.v1.Ticker/Subscribe")->type,
            "server_stream");
  EXPECT_EQ(Find(**c, "/grpc.health.v1.Health/Watch")->type, "server_stream");
  // The exact route's method is known too, without a type.
  EXPECT_EQ(Find(**c, "/x.Y/Z")->type, "unknown");
  // Sorted and unique.
  for (size_t i = 1; i < (*c)->methods().size(); ++i) {
    EXPECT_LT((*c)->methods()[i - 1].path, (*c)->methods()[i].path);
  }
}

TEST(KnownMethodsTest, WithoutDescriptorsOnlyExactRoutesAreKnown) {
  auto c = ParseConfigYaml(Config(""), "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ((*c)->methods().size(), 1u);
  EXPECT_EQ((*c)->methods()[0].path, "/x.Y/Z");
  EXPECT_EQ((*c)->methods()[0].service, "x.Y");
  EXPECT_EQ((*c)->methods()[0].method, "Z");
}

TEST(KnownMethodsTest, ExactRouteOfADescribedMethodKeepsTheType) {
  auto c = ParseConfigYaml(
      Config(absl::StrCat("metrics: {descriptor_sets: [", kDescriptors, "]}\n"),
             "match: {method: /grpc.testing.TestService/UnaryCall}"),
      "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(Find(**c, "/grpc.testing.TestService/UnaryCall")->type, "unary");
}

TEST(KnownMethodsTest, MissingFileNamesTheField) {
  auto c = ParseConfigYaml(
      Config("metrics: {descriptor_sets: [/nonexistent/d.pb]}\n"), "test.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            "test.yaml: metrics.descriptor_sets[0]: cannot read "
            "metrics.descriptor_sets[0] file \"/nonexistent/d.pb\": No such "
            "file or directory");
}

TEST(KnownMethodsTest, FileThatIsNotADescriptorSetIsAnError) {
  const std::string path =
      std::string(getenv("TEST_TMPDIR")) + "/not-descriptors.pb";
  std::ofstream(path) << "this is text, not a FileDescriptorSet\xff\xff";
  auto c =
      ParseConfigYaml(Config(absl::StrCat("metrics: {descriptor_sets: [",
                                          kDescriptors, ", ", path, "]}\n")),
                      "test.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            absl::StrCat("test.yaml: metrics.descriptor_sets[1]: \"", path,
                         "\" is not a FileDescriptorSet (make one with protoc "
                         "--include_imports --descriptor_set_out=FILE)"));
}

TEST(KnownMethodsTest, RelativePathsAreRelativeToTheConfigFile) {
  const std::string dir = std::string(getenv("TEST_TMPDIR")) + "/cfg";
  ASSERT_EQ(system(absl::StrCat("mkdir -p ", dir, " && cp ", kDescriptors, " ",
                                dir, "/d.pb")
                       .c_str()),
            0);
  std::ofstream(dir + "/sluice.yaml")
      << Config("metrics: {descriptor_sets: [d.pb]}\n");
  auto c = LoadConfigFile(dir + "/sluice.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE(Find(**c, "/grpc.testing.TestService/UnaryCall"), nullptr);
  EXPECT_EQ((*c)->proto().metrics().descriptor_sets(0), dir + "/d.pb");
}

}  // namespace
}  // namespace sluice
