// Tests for the configuration loader: YAML -> JSON -> proto -> validated
// Config. Every error test pins the exact text an operator would see.
#include "server/config/config.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/config/yaml_to_json.h"
#include "sluice/config/v1/config.pb.h"
#include "tests/config/parse_helpers.h"

namespace sluice {
namespace {

// The smallest valid config: one upstream, one catch-all route.
constexpr char kMinimal[] = R"(upstreams:
  - name: a
    target: 127.0.0.1:50051
routes:
  - name: r
    match: {prefix: /}
    upstream: a
)";

// kMinimal with `extra` appended at the top level.
std::string MinimalWith(const std::string& extra) {
  return absl::StrCat(kMinimal, extra);
}

// One upstream "a" and one route whose body (below `- name: r`) is `route`.
std::string WithRoute(const std::string& route) {
  return absl::StrCat(
      "upstreams:\n  - {name: a, target: \"127.0.0.1:50051\"}\n"
      "routes:\n  - name: r\n",
      route);
}

std::string Sha256Hex16(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), 8));
}

// ---------------------------------------------------------------------------
// Valid configs.

TEST(ConfigTest, MinimalConfigGetsEveryDefault) {
  auto config = MustParse(kMinimal);
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->source(), "test.yaml");
  EXPECT_EQ(config->data_address(), "0.0.0.0:8080");
  EXPECT_EQ(config->admin_address(), "127.0.0.1:9901");
  EXPECT_EQ(config->metrics_address(), "0.0.0.0:9090");
  EXPECT_EQ(config->health_address(), "");  // no health-only port
  EXPECT_GE(config->workers(), 1);
  EXPECT_LE(config->workers(), 256);
  EXPECT_EQ(config->drain_timeout(), absl::Seconds(30));
  EXPECT_EQ(config->stream_window(), 2);
  EXPECT_EQ(config->forwarded_for_header(), "");
  EXPECT_EQ(config->max_receive_message_bytes(), 4194304);
  EXPECT_EQ(config->max_concurrent_streams(), 1000);

  ASSERT_EQ(config->upstreams().size(), 1u);
  const UpstreamSettings& upstream = config->upstreams()[0];
  EXPECT_EQ(upstream.name, "a");
  EXPECT_EQ(upstream.target, "127.0.0.1:50051");
  EXPECT_EQ(upstream.channels, 2);
  EXPECT_EQ(upstream.lb_policy, "round_robin");
  EXPECT_EQ(upstream.keepalive_time, absl::Seconds(330));
  EXPECT_EQ(upstream.keepalive_timeout, absl::Seconds(20));
  EXPECT_FALSE(upstream.keepalive_permit_without_calls);
  EXPECT_EQ(upstream.max_message_bytes, 4194304);
  EXPECT_FALSE(upstream.tls);
  EXPECT_FALSE(upstream.required);

  ASSERT_EQ(config->routes().size(), 1u);
  const RouteSettings& route = config->routes()[0];
  EXPECT_EQ(route.name, "r");
  EXPECT_FALSE(route.exact);
  EXPECT_EQ(route.match, "/");
  EXPECT_EQ(route.upstream, "a");
  EXPECT_EQ(route.upstream_index, 0);
  EXPECT_EQ(route.deadline.default_timeout, absl::ZeroDuration());
  EXPECT_EQ(route.deadline.max_timeout, absl::ZeroDuration());
  EXPECT_EQ(route.deadline.offset, absl::ZeroDuration());
  EXPECT_EQ(route.deadline.min_budget, absl::Milliseconds(1));
  EXPECT_EQ(route.deadline.stream_idle_timeout, absl::ZeroDuration());
}

TEST(ConfigTest, DefaultsAreFilledIntoTheProto) {
  auto config = MustParse(kMinimal);
  ASSERT_NE(config, nullptr);
  const config::v1::Config& p = config->proto();
  EXPECT_EQ(p.listeners().data(), "0.0.0.0:8080");
  EXPECT_EQ(p.listeners().admin(), "127.0.0.1:9901");
  EXPECT_EQ(p.listeners().metrics(), "0.0.0.0:9090");
  EXPECT_EQ(p.listeners().health(), "");  // off: nothing filled in
  EXPECT_EQ(p.workers(), 0u);  // "one per core" stays 0: same hash anywhere
  EXPECT_EQ(p.drain_timeout(), "30s");
  EXPECT_EQ(p.proxy().stream_window(), 2u);
  EXPECT_EQ(p.proxy().max_receive_message_bytes(), 4194304u);
  EXPECT_EQ(p.proxy().max_concurrent_streams(), 1000u);
  EXPECT_EQ(p.upstreams(0).channels(), 2u);
  EXPECT_EQ(p.upstreams(0).lb_policy(), "round_robin");
  EXPECT_EQ(p.upstreams(0).keepalive().time(), "5m30s");
  EXPECT_EQ(p.upstreams(0).keepalive().timeout(), "20s");
  EXPECT_EQ(p.upstreams(0).max_message_bytes(), 4194304u);
  EXPECT_FALSE(p.upstreams(0).has_tls());
  EXPECT_EQ(p.routes(0).deadline().default_timeout(), "0s");
  EXPECT_EQ(p.routes(0).deadline().max_timeout(), "0s");
  EXPECT_EQ(p.routes(0).deadline().offset(), "0s");
  EXPECT_EQ(p.routes(0).deadline().min_budget(), "1ms");
  EXPECT_EQ(p.routes(0).deadline().stream_idle_timeout(), "0s");
}

TEST(ConfigTest, FullConfigWithEveryField) {
  auto config = MustParse(R"(
listeners:
  data: "[::1]:18080"
  admin: localhost:19901
  metrics: 10.1.2.3:0
workers: 3
drain_timeout: 1m30s
upstreams:
  - name: backend-1.v2
    target: dns:///backend.default.svc.cluster.local:50051
    channels: 64
    lb_policy: pick_first
    keepalive:
      time: 30s
      timeout: 5s
      permit_without_calls: true
    max_message_bytes: 1048576
    tls:            # disabled: the files are kept but not read
      enabled: false
      ca_file: /etc/ssl/ca.pem
      cert_file: /etc/ssl/client.pem
      key_file: /etc/ssl/client.key
      server_name: backend.example.com
    required: true
  - name: "123"
    target: unix:/run/app.sock
routes:
  - name: get_user
    match:
      method: /acme.users.v1.Users/GetUser
    upstream: backend-1.v2
    deadline:
      default_timeout: 1.5s
      max_timeout: 2m
      offset: 250ms
      min_budget: 2ms
      stream_idle_timeout: 1h30m
  - name: rest
    match: {prefix: /acme.}
    upstream: 123
proxy:
  stream_window: 1
  forwarded_for_header: X-Forwarded-For
  max_receive_message_bytes: 65536
  max_concurrent_streams: 100
)");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->data_address(), "[::1]:18080");
  EXPECT_EQ(config->admin_address(), "localhost:19901");
  EXPECT_EQ(config->metrics_address(), "10.1.2.3:0");
  EXPECT_EQ(config->workers(), 3);
  EXPECT_EQ(config->drain_timeout(), absl::Seconds(90));
  EXPECT_EQ(config->stream_window(), 1);
  EXPECT_EQ(config->forwarded_for_header(), "x-forwarded-for");
  EXPECT_EQ(config->proto().proxy().forwarded_for_header(), "x-forwarded-for");
  EXPECT_EQ(config->max_receive_message_bytes(), 65536);
  EXPECT_EQ(config->max_concurrent_streams(), 100);

  ASSERT_EQ(config->upstreams().size(), 2u);
  const UpstreamSettings& b = config->upstreams()[0];
  EXPECT_EQ(b.name, "backend-1.v2");
  EXPECT_EQ(b.target, "dns:///backend.default.svc.cluster.local:50051");
  EXPECT_EQ(b.channels, 64);
  EXPECT_EQ(b.lb_policy, "pick_first");
  EXPECT_EQ(b.keepalive_time, absl::Seconds(30));
  EXPECT_EQ(b.keepalive_timeout, absl::Seconds(5));
  EXPECT_TRUE(b.keepalive_permit_without_calls);
  EXPECT_EQ(b.max_message_bytes, 1048576);
  EXPECT_FALSE(b.tls);
  EXPECT_EQ(b.tls_ca_file, "/etc/ssl/ca.pem");
  EXPECT_EQ(b.tls_cert_file, "/etc/ssl/client.pem");
  EXPECT_EQ(b.tls_key_file, "/etc/ssl/client.key");
  EXPECT_EQ(b.tls_server_name, "backend.example.com");
  EXPECT_TRUE(b.required);
  // A name that looks like a number is still a string.
  EXPECT_EQ(config->upstreams()[1].name, "123");
  EXPECT_EQ(config->upstreams()[1].target, "unix:/run/app.sock");

  ASSERT_EQ(config->routes().size(), 2u);
  const RouteSettings& get_user = config->routes()[0];
  EXPECT_TRUE(get_user.exact);
  EXPECT_EQ(get_user.match, "/acme.users.v1.Users/GetUser");
  EXPECT_EQ(get_user.upstream_index, 0);
  EXPECT_EQ(get_user.deadline.default_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(get_user.deadline.max_timeout, absl::Minutes(2));
  EXPECT_EQ(get_user.deadline.offset, absl::Milliseconds(250));
  EXPECT_EQ(get_user.deadline.min_budget, absl::Milliseconds(2));
  EXPECT_EQ(get_user.deadline.stream_idle_timeout, absl::Minutes(90));
  const RouteSettings& rest = config->routes()[1];
  EXPECT_FALSE(rest.exact);
  EXPECT_EQ(rest.match, "/acme.");
  EXPECT_EQ(rest.upstream, "123");
  EXPECT_EQ(rest.upstream_index, 1);
}

TEST(ConfigTest, NullValuesLeaveFieldsUnset) {
  auto config =
      MustParse(MinimalWith("listeners:\nproxy:\n  stream_window:\n"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->data_address(), "0.0.0.0:8080");
  EXPECT_EQ(config->stream_window(), 2);
}

TEST(ConfigTest, WorkersZeroMeansOnePerCore) {
  auto config = MustParse(MinimalWith("workers: 0\n"));
  ASSERT_NE(config, nullptr);
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(config->workers(), std::clamp(cores, 1, 256));
}

TEST(ConfigTest, HashIsSha256OfTheCanonicalJson) {
  auto config = MustParse(kMinimal);
  ASSERT_NE(config, nullptr);
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(config->proto(),
                                                          &json, options)
                  .ok());
  EXPECT_EQ(config->hash().size(), 16u);
  EXPECT_EQ(config->hash(), Sha256Hex16(json));
}

TEST(ConfigTest, HashIgnoresSpellingAndFollowsContent) {
  auto minimal = MustParse(kMinimal);
  // The same config, with its defaults spelled out and in flow style.
  auto explicit_defaults = MustParse(R"(
listeners: {data: "0.0.0.0:8080", admin: "127.0.0.1:9901"}
drain_timeout: 30s
upstreams: [{name: a, target: "127.0.0.1:50051", channels: 2}]
routes: [{name: r, match: {prefix: /}, upstream: a,
          deadline: {min_budget: 1ms}}]
)");
  auto other = MustParse(MinimalWith("drain_timeout: 31s\n"));
  ASSERT_NE(minimal, nullptr);
  ASSERT_NE(explicit_defaults, nullptr);
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(minimal->hash(), explicit_defaults->hash());
  EXPECT_NE(minimal->hash(), other->hash());
}

TEST(ConfigTest, FromProtoNamesTheSource) {
  config::v1::Config proto;
  config::v1::Upstream* upstream = proto.add_upstreams();
  upstream->set_name("a");
  upstream->set_target("127.0.0.1:1");
  config::v1::Route* route = proto.add_routes();
  route->set_name("r");
  route->mutable_match()->set_method("/pkg.Svc/Call");
  route->set_upstream("a");
  proto.mutable_listeners()->set_data("127.0.0.1:0");

  auto config = Config::FromProto(proto, "flags");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ((*config)->source(), "flags");
  EXPECT_EQ((*config)->data_address(), "127.0.0.1:0");
  EXPECT_TRUE((*config)->routes()[0].exact);

  proto.mutable_listeners()->set_data("8080");
  auto bad = Config::FromProto(proto, "flags");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "flags: listeners.data: invalid address \"8080\" (expected "
            "host:port, e.g. \"0.0.0.0:8080\")");
}

// ---------------------------------------------------------------------------
// Schema errors, found while converting YAML to JSON.

TEST(ConfigErrorTest, UnknownFieldSuggestsTheNearName) {
  EXPECT_EQ(ErrorOf(R"(upstreams:
  - {name: a, target: "127.0.0.1:1"}
routes:
  - name: r
    match: {prefix: /}
    upstream: a
  - name: s
    matc: {prefix: /x}
    upstream: a
)"),
            "test.yaml: routes[1].matc (line 8): unknown field \"matc\" "
            "(did you mean \"match\"?)");
}

// Found by config_fuzzer: an unknown key holding a line break broke the
// one-line-per-error form (the raw key was in the field path).
TEST(ConfigErrorTest, UnknownKeyWithALineBreakStaysOneLine) {
  EXPECT_EQ(ErrorOf(MinimalWith("\"drain\\r\\ntimeout\": 5s\n")),
            "test.yaml: \"drain\\r\\ntimeout\" (line 8): unknown field "
            "\"drain\\r\\ntimeout\" (did you mean \"drain_timeout\"?)");
}

TEST(ConfigErrorTest, CamelCaseFieldSuggestsTheProtoName) {
  EXPECT_EQ(ErrorOf(MinimalWith("drainTimeout: 5s\n")),
            "test.yaml: drainTimeout (line 8): unknown field "
            "\"drainTimeout\" (did you mean \"drain_timeout\"?)");
}

TEST(ConfigErrorTest, UnknownFieldListsTheKnownOnes) {
  EXPECT_EQ(ErrorOf(MinimalWith("limits: {}\n")),
            "test.yaml: limits (line 8): unknown field \"limits\" (known "
            "fields: listeners, workers, drain_timeout, upstreams, routes, "
            "proxy, access_log, tls, admin, metrics, redis)");
}

TEST(ConfigErrorTest, RatesAboveOnePerNanosecondAreRefused) {
  EXPECT_EQ(
      ErrorOf(WithRoute("    match: {prefix: /}\n    upstream: a\n"
                        "    limits:\n"
                        "      - {name: l, rate: {per_second: 4000000000}}\n"
                        "      - {name: m, messages: {per_second: "
                        "1000000001}}\n")),
      "test.yaml: routes[0].limits[0].rate.per_second: 4000000000 is out of "
      "range (1..1000000000); the buckets count time in nanoseconds\n"
      "test.yaml: routes[0].limits[1].messages.per_second: 1000000001 is out "
      "of range (1..1000000000); the buckets count time in nanoseconds");
}

TEST(ConfigErrorTest, IntegerFieldRejectsText) {
  EXPECT_EQ(ErrorOf(MinimalWith("workers: abc\n")),
            "test.yaml: workers (line 8): expected an unsigned integer, got "
            "\"abc\"");
}

TEST(ConfigErrorTest, UnsignedFieldRejectsNegative) {
  EXPECT_EQ(ErrorOf(MinimalWith("workers: -1\n")),
            "test.yaml: workers (line 8): expected an unsigned integer, got "
            "\"-1\"");
}

TEST(ConfigErrorTest, IntegerOutOfRangeForItsType) {
  EXPECT_EQ(ErrorOf(MinimalWith("proxy: {stream_window: 5000000000}\n")),
            "test.yaml: proxy.stream_window (line 8): 5000000000 is out of "
            "range for uint32");
}

TEST(ConfigErrorTest, StringFieldRejectsAMap) {
  EXPECT_EQ(ErrorOf(MinimalWith("listeners:\n  data:\n    port: 8080\n")),
            "test.yaml: listeners.data (line 10): expected a string, got a "
            "map");
}

TEST(ConfigErrorTest, BoolFieldRejectsOtherWords) {
  EXPECT_EQ(ErrorOf(R"(upstreams:
  - name: a
    target: 127.0.0.1:1
    required: maybe
routes: [{name: r, match: {prefix: /}, upstream: a}]
)"),
            "test.yaml: upstreams[0].required (line 4): expected true or "
            "false, got \"maybe\"");
}

TEST(ConfigErrorTest, MessageFieldRejectsAScalar) {
  EXPECT_EQ(ErrorOf(MinimalWith("listeners: 8080\n")),
            "test.yaml: listeners (line 8): expected a map, got \"8080\"");
}

TEST(ConfigErrorTest, RepeatedFieldRejectsAMap) {
  EXPECT_EQ(ErrorOf("upstreams:\n  name: a\n  target: x:1\n"
                    "routes: [{name: r, match: {prefix: /}, upstream: a}]\n"),
            "test.yaml: upstreams (line 2): expected a list (\"- item\" lines "
            "or [a, b]), got a map");
}

TEST(ConfigErrorTest, MethodAndPrefixAreExclusive) {
  EXPECT_EQ(ErrorOf(WithRoute("    match:\n"
                              "      method: /a.B/C\n"
                              "      prefix: /a.B/\n"
                              "    upstream: a\n")),
            "test.yaml: routes[0].match (line 6): only one of \"method\" or "
            "\"prefix\" may be set (they are alternatives)");
}

TEST(ConfigErrorTest, DuplicateYamlKey) {
  EXPECT_EQ(ErrorOf(MinimalWith("workers: 1\nworkers: 2\n")),
            "test.yaml: workers (line 9): duplicate key \"workers\" (first at "
            "line 8)");
}

// yaml-cpp 0.7's LoadAll never returns on a lone "," (found by
// tests/fuzz/config_fuzzer; a hang here is a test timeout).
TEST(ConfigErrorTest, StrayCommaIsAnErrorNotAHang) {
  EXPECT_EQ(ErrorOf(","),
            "test.yaml: invalid YAML (line 1, column 1): unexpected character "
            "at document level");
  EXPECT_EQ(ErrorOf(",t"),
            "test.yaml: invalid YAML (line 1, column 1): unexpected character "
            "at document level");
}

TEST(ConfigErrorTest, KeysMustBeFieldNames) {
  EXPECT_EQ(ErrorOf(MinimalWith("[a, b]: 1\n")),
            "test.yaml: top level (line 8): keys must be field names, got a "
            "list");
}

TEST(ConfigErrorTest, StringsMustBeUtf8) {
  EXPECT_EQ(ErrorOf(WithRoute("    match: {prefix: \"/\xff\"}\n"
                              "    upstream: a\n")),
            "test.yaml: routes[0].match.prefix (line 5): not valid UTF-8 "
            "text");
}

TEST(ConfigErrorTest, AllSchemaErrorsAreReported) {
  EXPECT_EQ(ErrorOf(R"(workers: many
listeners: {data: [1, 2], admn: x}
upstreams:
  - {name: a, target: "127.0.0.1:1", channels: two}
routes: [{name: r, match: {prefix: /}, upstream: a}]
)"),
            "test.yaml: workers (line 1): expected an unsigned integer, got "
            "\"many\"\n"
            "test.yaml: listeners.data (line 2): expected a string, got a "
            "list\n"
            "test.yaml: listeners.admn (line 2): unknown field \"admn\" (did "
            "you mean \"admin\"?)\n"
            "test.yaml: upstreams[0].channels (line 4): expected an unsigned "
            "integer, got \"two\"");
}

// ---------------------------------------------------------------------------
// Schema errors and semantic errors are reported together: a user fixing
// the first round does not meet a second one.

TEST(ConfigErrorTest, SchemaAndSemanticErrorsTogether) {
  EXPECT_EQ(ErrorOf(R"(wokers: 2
upstreams:
  - {name: a, target: "127.0.0.1:1"}
routes:
  - {name: r, match: {prefix: /}, upstream: b}
)"),
            "test.yaml: wokers (line 1): unknown field \"wokers\" (did you "
            "mean \"workers\"?)\n"
            "test.yaml: routes[0].upstream: unknown upstream \"b\"");
}

TEST(ConfigErrorTest, AWrongTypeSkipsOnlyTheChecksOfThatValue) {
  // upstreams[0].name does not fit (a list): neither "name: required" nor
  // "unknown upstream" for the route naming it, whose name may be right;
  // the unrelated errors of the same file are all there.
  EXPECT_EQ(ErrorOf(R"(drain_timeout: 5 minutes
upstreams:
  - {name: [a], target: "127.0.0.1:1", channels: 100}
routes:
  - {name: r, match: {prefix: x}, upstream: a,
     deadline: {default_timeout: [1s], max_timeout: 1s}}
)"),
            "test.yaml: upstreams[0].name (line 3): expected a string, got a "
            "list\n"
            "test.yaml: routes[0].deadline.default_timeout (line 6): expected "
            "a string, got a list\n"
            "test.yaml: drain_timeout: invalid duration \"5 minutes\" (use "
            "e.g. \"250ms\", \"1.5s\", \"2m\")\n"
            "test.yaml: upstreams[0].channels: 100 is out of range (1..64)\n"
            "test.yaml: routes[0].match.prefix: invalid prefix \"x\" (must "
            "start with \"/\", e.g. \"/package.Service/\", or be \"/\" "
            "for every call)");
}

TEST(ConfigErrorTest, AListElementOfTheWrongTypeKeepsTheOthersIndexes) {
  EXPECT_EQ(ErrorOf(R"(upstreams:
  - {name: a, target: "127.0.0.1:1"}
routes:
  - just a string
  - {name: s, match: {prefix: /}, upstream: nowhere}
)"),
            "test.yaml: routes[0] (line 4): expected a map, got \"just a "
            "string\"\n"
            "test.yaml: routes[1].upstream: unknown upstream \"nowhere\"");
}

TEST(ConfigErrorTest, AMisspelledFieldIsNotAlsoMissing) {
  // "upstrem" was meant as "upstream": no "upstream: required" on top;
  // the route's other errors are reported.
  EXPECT_EQ(ErrorOf(R"(upstreams:
  - {name: a, target: "127.0.0.1:1"}
routes:
  - {name: "r r", match: {prefix: /}, upstrem: a}
)"),
            "test.yaml: routes[0].upstrem (line 4): unknown field "
            "\"upstrem\" (did you mean \"upstream\"?)\n"
            "test.yaml: routes[0].name: invalid name \"r r\" (use letters, "
            "digits, '_', '.', '-')");
}

TEST(ConfigErrorTest, DocumentErrorsStillComeAlone) {
  // Nothing to check semantically: the YAML itself is unreadable.
  EXPECT_EQ(ErrorOf("routes: [\n"),
            "test.yaml: invalid YAML (line 2, column 1): end of sequence flow "
            "not found");
}

TEST(YamlToJsonTest, PartialReadingKeepsWhatFits) {
  config::v1::Config proto;
  SchemaErrors errors;
  ASSERT_TRUE(YamlTextToMessagePartial("workers: many\n"
                                       "drain_timeout: 5s\n"
                                       "routes: [{name: r, match: 7}, x]\n"
                                       "wokrers: 1\n",
                                       &proto, &errors)
                  .ok());
  EXPECT_EQ(proto.drain_timeout(), "5s");
  EXPECT_EQ(proto.workers(), 0u);
  ASSERT_EQ(proto.routes_size(), 2);
  EXPECT_EQ(proto.routes(0).name(), "r");
  EXPECT_FALSE(proto.routes(0).has_match());
  EXPECT_EQ(errors.lines.size(), 4u);
  EXPECT_EQ(errors.dropped, (std::vector<std::string>{
                                "workers", "routes[0].match", "routes[1]"}));
  // "wokrers" was meant as "workers", which is there too: not dropped.
}

// ---------------------------------------------------------------------------
// Document-level errors.

TEST(ConfigErrorTest, BadYamlSyntax) {
  EXPECT_EQ(ErrorOf("upstreams:\n  - name: a\n    target: [1, 2\n"),
            "test.yaml: invalid YAML (line 4, column 1): end of sequence flow "
            "not found");
}

TEST(ConfigErrorTest, EmptyFile) {
  const std::string expected =
      "test.yaml: the document is empty: expected a map of "
      "sluice.config.v1.Config fields";
  EXPECT_EQ(ErrorOf(""), expected);
  EXPECT_EQ(ErrorOf("# only a comment\n"), expected);
  EXPECT_EQ(ErrorOf("---\n"), expected);
}

TEST(ConfigErrorTest, TopLevelIsNotAMap) {
  EXPECT_EQ(ErrorOf("- upstreams\n- routes\n"),
            "test.yaml: top level (line 1): expected a map of "
            "sluice.config.v1.Config fields, got a list");
  EXPECT_EQ(ErrorOf("hello\n"),
            "test.yaml: top level (line 1): expected a map of "
            "sluice.config.v1.Config fields, got \"hello\"");
}

TEST(ConfigErrorTest, TwoDocuments) {
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "---\n", kMinimal)),
            "test.yaml: expected one YAML document, found 2 (separated by "
            "\"---\")");
}

TEST(ConfigErrorTest, MissingFile) {
  auto config = LoadConfigFile("/nonexistent/sluice.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(config.status().message(),
            "/nonexistent/sluice.yaml: cannot open config file: No such file "
            "or directory");
}

TEST(ConfigErrorTest, FileErrorsNameThePath) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/bad_config.yaml");
  std::ofstream(path) << MinimalWith("wokers: 2\n");
  auto config = LoadConfigFile(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            absl::StrCat(path,
                         ": wokers (line 8): unknown field \"wokers\" (did "
                         "you mean \"workers\"?)"));

  std::ofstream(path) << kMinimal;
  auto good = LoadConfigFile(path);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ((*good)->source(), path);
}

// ---------------------------------------------------------------------------
// Validation errors, found in the proto.

TEST(ConfigErrorTest, BadDuration) {
  EXPECT_EQ(ErrorOf(WithRoute("    match: {prefix: /}\n"
                              "    upstream: a\n"
                              "    deadline:\n"
                              "      max_timeout: 5 seconds\n")),
            "test.yaml: routes[0].deadline.max_timeout: invalid duration "
            "\"5 seconds\" (use e.g. \"250ms\", \"1.5s\", \"2m\")");
}

TEST(ConfigErrorTest, DurationWithoutUnit) {
  EXPECT_EQ(ErrorOf(MinimalWith("drain_timeout: 30\n")),
            "test.yaml: drain_timeout: invalid duration \"30\" (use e.g. "
            "\"250ms\", \"1.5s\", \"2m\")");
}

TEST(ConfigErrorTest, NegativeDuration) {
  EXPECT_EQ(ErrorOf(WithRoute("    match: {prefix: /}\n"
                              "    upstream: a\n"
                              "    deadline: {offset: -5ms}\n")),
            "test.yaml: routes[0].deadline.offset: negative duration \"-5ms\" "
            "(must be >= 0)");
}

TEST(ConfigErrorTest, InfiniteDuration) {
  EXPECT_EQ(ErrorOf(MinimalWith("drain_timeout: inf\n")),
            "test.yaml: drain_timeout: infinite duration \"inf\" (use a "
            "finite one, e.g. \"1h\")");
}

TEST(ConfigErrorTest, MaxTimeoutBelowDefaultTimeout) {
  EXPECT_EQ(ErrorOf(WithRoute("    match: {prefix: /}\n"
                              "    upstream: a\n"
                              "    deadline: {default_timeout: 10s, "
                              "max_timeout: 5s}\n")),
            "test.yaml: routes[0].deadline.max_timeout: 5s is less than "
            "default_timeout 10s");
}

TEST(ConfigErrorTest, UnknownUpstreamInRoute) {
  EXPECT_EQ(ErrorOf(WithRoute("    match: {prefix: /}\n"
                              "    upstream: b\n")),
            "test.yaml: routes[0].upstream: unknown upstream \"b\"");
}

TEST(ConfigErrorTest, LivenessIsNotAnUpstreamName) {
  EXPECT_EQ(ErrorOf(R"(upstreams:
  - {name: liveness, target: "127.0.0.1:1"}
routes: [{name: r, match: {prefix: /}, upstream: liveness}]
)"),
            "test.yaml: upstreams[0].name: \"liveness\" is reserved: the "
            "health service of that name reports that Sluice itself runs");
}

TEST(ConfigErrorTest, DuplicateUpstreamNames) {
  EXPECT_EQ(ErrorOf(R"(upstreams:
  - {name: a, target: "127.0.0.1:1"}
  - {name: b, target: "127.0.0.1:2"}
  - {name: a, target: "127.0.0.1:3"}
routes: [{name: r, match: {prefix: /}, upstream: a}]
)"),
            "test.yaml: upstreams[2].name: duplicate name \"a\" (first at "
            "upstreams[0])");
}

TEST(ConfigErrorTest, DuplicateRouteNames) {
  EXPECT_EQ(ErrorOf(R"(upstreams: [{name: a, target: "127.0.0.1:1"}]
routes:
  - {name: r, match: {method: /a.B/C}, upstream: a}
  - {name: r, match: {prefix: /}, upstream: a}
)"),
            "test.yaml: routes[1].name: duplicate name \"r\" (first at "
            "routes[0])");
}

TEST(ConfigErrorTest, InvalidAndMissingNames) {
  EXPECT_EQ(ErrorOf(R"(upstreams:
  - {name: "my upstream", target: "127.0.0.1:1"}
  - {target: "127.0.0.1:2"}
routes: [{match: {prefix: /}, upstream: a}]
)"),
            "test.yaml: upstreams[0].name: invalid name \"my upstream\" (use "
            "letters, digits, '_', '.', '-')\n"
            "test.yaml: upstreams[1].name: required\n"
            "test.yaml: routes[0].name: required\n"
            "test.yaml: routes[0].upstream: unknown upstream \"a\"");
}

TEST(ConfigErrorTest, EmptyRoutes) {
  EXPECT_EQ(ErrorOf("upstreams: [{name: a, target: \"127.0.0.1:1\"}]\n"
                    "routes: []\n"),
            "test.yaml: routes: at least one route is required");
}

TEST(ConfigErrorTest, NoUpstreams) {
  // Every problem is reported, not just the first.
  EXPECT_EQ(ErrorOf("routes: [{name: r, match: {prefix: /}, upstream: a}]\n"),
            "test.yaml: upstreams: at least one upstream is required\n"
            "test.yaml: routes[0].upstream: unknown upstream \"a\"");
}

TEST(ConfigErrorTest, MissingTargetAndRouteFields) {
  EXPECT_EQ(ErrorOf("upstreams: [{name: a}]\nroutes: [{name: r}]\n"),
            "test.yaml: upstreams[0].target: required (e.g. "
            "\"127.0.0.1:50051\" or \"dns:///backend:50051\")\n"
            "test.yaml: routes[0].match: required: set \"method\" (e.g. "
            "\"/package.Service/Method\") or \"prefix\" (e.g. "
            "\"/package.Service/\")\n"
            "test.yaml: routes[0].upstream: required");
}

TEST(ConfigErrorTest, AddressWithoutHost) {
  EXPECT_EQ(ErrorOf(MinimalWith("listeners: {data: 8080}\n")),
            "test.yaml: listeners.data: invalid address \"8080\" (expected "
            "host:port, e.g. \"0.0.0.0:8080\")");
  EXPECT_EQ(ErrorOf(MinimalWith("listeners: {data: \":8080\"}\n")),
            "test.yaml: listeners.data: invalid address \":8080\": the host "
            "is missing (use \"0.0.0.0:8080\" for every interface)");
}

// Found by config_fuzzer: a port with a newline made the IPv6 hint (and
// the missing-host hint) a second, unprefixed error line.
TEST(ConfigErrorTest, AddressHintsQuoteWhatTheyRepeat) {
  EXPECT_EQ(ErrorOf(MinimalWith("listeners:\n"
                                "  data: \"::1:x\\ny\"\n"
                                "  admin: \":1\\n2\"\n")),
            "test.yaml: listeners.data: invalid address \"::1:x\\ny\": put an "
            "IPv6 host in brackets, e.g. \"[::1]:x\\ny\"\n"
            "test.yaml: listeners.admin: invalid address \":1\\n2\": the host "
            "is missing (use \"0.0.0.0:1\\n2\" for every interface)");
}

TEST(ConfigErrorTest, AddressWithBadPortOrHost) {
  EXPECT_EQ(ErrorOf(MinimalWith("listeners:\n"
                                "  data: 0.0.0.0:65536\n"
                                "  admin: \"::1:9901\"\n"
                                "  metrics: 300.1.1.1:9090\n")),
            "test.yaml: listeners.data: invalid address \"0.0.0.0:65536\": "
            "port \"65536\" is not a number in 0..65535\n"
            "test.yaml: listeners.admin: invalid address \"::1:9901\": put an "
            "IPv6 host in brackets, e.g. \"[::1]:9901\"\n"
            "test.yaml: listeners.metrics: invalid address "
            "\"300.1.1.1:9090\": \"300.1.1.1\" is not an IPv4 address");
  EXPECT_EQ(ErrorOf(MinimalWith("listeners:\n"
                                "  data: \"[::g]:80\"\n"
                                "  admin: bad_host:80\n"
                                "  metrics: localhost:http\n")),
            "test.yaml: listeners.data: invalid address \"[::g]:80\": \"::g\" "
            "is not an IPv6 address\n"
            "test.yaml: listeners.admin: invalid address \"bad_host:80\": "
            "\"bad_host\" is not a valid host name\n"
            "test.yaml: listeners.metrics: invalid address "
            "\"localhost:http\": port \"http\" is not a number in 0..65535");
}

TEST(ConfigErrorTest, ListenersSharingAPort) {
  EXPECT_EQ(ErrorOf(MinimalWith("listeners:\n"
                                "  data: 0.0.0.0:9000\n"
                                "  admin: 127.0.0.1:9000\n"
                                "  metrics: 127.0.0.1:0\n")),
            "test.yaml: listeners.admin: port 9000 is already used by "
            "listeners.data");
}

TEST(ConfigTest, HealthListener) {
  auto config = MustParse(MinimalWith(
      "listeners: {admin: \"127.0.0.1:9901\", health: \"0.0.0.0:9902\"}\n"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->health_address(), "0.0.0.0:9902");
  EXPECT_EQ(config->proto().listeners().health(), "0.0.0.0:9902");
  EXPECT_EQ(config->admin_address(), "127.0.0.1:9901");
  // Port 0 (tests) and an IPv6 host are fine too.
  config = MustParse(MinimalWith("listeners: {health: \"[::1]:0\"}\n"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->health_address(), "[::1]:0");
}

TEST(ConfigErrorTest, BadHealthAddress) {
  EXPECT_EQ(ErrorOf(MinimalWith("listeners: {health: 9902}\n")),
            "test.yaml: listeners.health: invalid address \"9902\" (expected "
            "host:port, e.g. \"0.0.0.0:8080\")");
  EXPECT_EQ(ErrorOf(MinimalWith("listeners: {health: \"0.0.0.0:99020\"}\n")),
            "test.yaml: listeners.health: invalid address \"0.0.0.0:99020\": "
            "port \"99020\" is not a number in 0..65535");
}

TEST(ConfigErrorTest, HealthListenerSharingAPort) {
  // With the admin port (the default 127.0.0.1:9901 against a wildcard).
  EXPECT_EQ(ErrorOf(MinimalWith("listeners: {health: \"0.0.0.0:9901\"}\n")),
            "test.yaml: listeners.health: port 9901 is already used by "
            "listeners.admin");
  EXPECT_EQ(ErrorOf(MinimalWith("listeners:\n"
                                "  data: 0.0.0.0:8080\n"
                                "  health: 0.0.0.0:8080\n")),
            "test.yaml: listeners.health: port 8080 is already used by "
            "listeners.data");
  EXPECT_EQ(ErrorOf(MinimalWith("listeners: {health: \"127.0.0.1:9090\"}\n")),
            "test.yaml: listeners.health: port 9090 is already used by "
            "listeners.metrics");
  // Different hosts, neither a wildcard: no conflict.
  EXPECT_NE(MustParse(MinimalWith("listeners: {health: \"127.0.0.2:9901\"}\n")),
            nullptr);
}

TEST(ConfigErrorTest, BadMethodShape) {
  EXPECT_EQ(ErrorOf(WithRoute("    match: {method: acme.Users/Get}\n"
                              "    upstream: a\n")),
            "test.yaml: routes[0].match.method: invalid method "
            "\"acme.Users/Get\" (expected \"/package.Service/Method\")");
  EXPECT_EQ(ErrorOf(WithRoute("    match: {method: /acme.Users/}\n"
                              "    upstream: a\n")),
            "test.yaml: routes[0].match.method: invalid method "
            "\"/acme.Users/\" (expected \"/package.Service/Method\")");
}

TEST(ConfigErrorTest, BadPrefix) {
  EXPECT_EQ(ErrorOf(WithRoute("    match: {prefix: acme.Users}\n"
                              "    upstream: a\n")),
            "test.yaml: routes[0].match.prefix: invalid prefix "
            "\"acme.Users\" (must start with \"/\", e.g. "
            "\"/package.Service/\", or be \"/\" for every call)");
}

TEST(ConfigErrorTest, UnreachableRoute) {
  EXPECT_EQ(ErrorOf(R"(upstreams: [{name: a, target: "127.0.0.1:1"}]
routes:
  - {name: all, match: {prefix: /}, upstream: a}
  - {name: users, match: {method: /acme.Users/Get}, upstream: a}
)"),
            "test.yaml: routes[1].match: unreachable: routes[0] (\"all\", "
            "prefix \"/\") comes first and takes every call this route "
            "matches");
}

TEST(ConfigErrorTest, UpstreamSettingsOutOfRange) {
  EXPECT_EQ(ErrorOf(R"(upstreams:
  - name: a
    target: "127.0.0.1:1"
    channels: 65
    lb_policy: least_request
    max_message_bytes: 2000000000
    keepalive: {timeout: 0s}
    tls: {enabled: false, cert_file: /c.pem}
routes: [{name: r, match: {prefix: /}, upstream: a}]
)"),
            "test.yaml: upstreams[0].channels: 65 is out of range (1..64)\n"
            "test.yaml: upstreams[0].lb_policy: unknown policy "
            "\"least_request\" (use \"round_robin\" or \"pick_first\")\n"
            "test.yaml: upstreams[0].keepalive.timeout: must be greater than "
            "0 (default \"20s\")\n"
            "test.yaml: upstreams[0].max_message_bytes: 2000000000 is out of "
            "range (1..1073741824)\n"
            "test.yaml: upstreams[0].tls.key_file: required when cert_file "
            "is set");
}

TEST(ConfigErrorTest, ProcessSettingsOutOfRange) {
  EXPECT_EQ(ErrorOf(MinimalWith("workers: 300\n"
                                "proxy:\n"
                                "  stream_window: 65\n"
                                "  forwarded_for_header: grpc-peer\n"
                                "  max_receive_message_bytes: 1073741825\n")),
            "test.yaml: workers: 300 is out of range (0..256); 0 means one "
            "per CPU core\n"
            "test.yaml: proxy.stream_window: 65 is out of range (1..64)\n"
            "test.yaml: proxy.forwarded_for_header: \"grpc-peer\" is "
            "reserved: names starting with \"grpc-\" belong to gRPC\n"
            "test.yaml: proxy.max_receive_message_bytes: 1073741825 is out of "
            "range (1..1073741824)");
}

// An upstream "a" with `target` and `extra` YAML lines in its body.
std::string UpstreamWith(const std::string& target, const std::string& extra) {
  return absl::StrCat("upstreams:\n  - name: a\n    target: \"", target, "\"\n",
                      extra,
                      "routes: [{name: r, match: {prefix: /}, upstream: a}]\n");
}

TEST(ConfigReconnectTest, LoopbackAndUnixTargetsReconnectWithinASecond) {
  for (const char* target :
       {"127.0.0.1:50051", "localhost:50051", "[::1]:50051",
        "dns:///localhost:50051", "ipv4:127.0.0.1:1,127.0.0.2:2",
        "ipv6:[::1]:50051", "unix:/run/app.sock", "unix-abstract:app"}) {
    SCOPED_TRACE(target);
    auto config = MustParse(UpstreamWith(target, ""));
    ASSERT_NE(config, nullptr);
    const UpstreamSettings& u = config->upstreams()[0];
    EXPECT_EQ(u.reconnect_initial_backoff, absl::Milliseconds(100));
    EXPECT_EQ(u.reconnect_max_backoff, absl::Seconds(1));
    EXPECT_EQ(u.connect_timeout, absl::Seconds(1));
    EXPECT_EQ(u.connect_wait, absl::Seconds(1));
    EXPECT_EQ(config->proto().upstreams(0).reconnect().max_backoff(), "1s");
    EXPECT_EQ(config->proto().upstreams(0).connect_wait(), "1s");
  }
}

TEST(ConfigReconnectTest, RemoteTargetsGrowToACap) {
  for (const char* target :
       {"10.0.0.1:50051", "backend:50051", "dns:///backend.ns.svc:50051",
        "ipv4:127.0.0.1:1,10.0.0.2:2", "128.0.0.1:1"}) {
    SCOPED_TRACE(target);
    auto config = MustParse(UpstreamWith(target, ""));
    ASSERT_NE(config, nullptr);
    const UpstreamSettings& u = config->upstreams()[0];
    EXPECT_EQ(u.reconnect_initial_backoff, absl::Seconds(1));
    EXPECT_EQ(u.reconnect_max_backoff, absl::Seconds(10));
    EXPECT_EQ(u.connect_timeout, absl::Seconds(20));
    EXPECT_EQ(u.connect_wait, absl::Seconds(1));
  }
}

TEST(ConfigReconnectTest, ExplicitValues) {
  auto config = MustParse(UpstreamWith(
      "backend:1",
      "    reconnect: {initial_backoff: 200ms, max_backoff: 2000ms,\n"
      "                connect_timeout: 3s}\n"
      "    connect_wait: 0\n"));
  ASSERT_NE(config, nullptr);
  const UpstreamSettings& u = config->upstreams()[0];
  EXPECT_EQ(u.reconnect_initial_backoff, absl::Milliseconds(200));
  EXPECT_EQ(u.reconnect_max_backoff, absl::Seconds(2));
  EXPECT_EQ(u.connect_timeout, absl::Seconds(3));
  EXPECT_EQ(u.connect_wait, absl::ZeroDuration());  // no wait: fail fast
  EXPECT_EQ(config->proto().upstreams(0).reconnect().max_backoff(), "2s");
  EXPECT_EQ(config->proto().upstreams(0).connect_wait(), "0s");
}

TEST(ConfigReconnectTest, OutOfRange) {
  EXPECT_EQ(ErrorOf(UpstreamWith(
                "127.0.0.1:1",
                "    reconnect: {initial_backoff: 50ms, max_backoff: 2h,\n"
                "                connect_timeout: 0s}\n"
                "    connect_wait: 2h\n")),
            "test.yaml: upstreams[0].reconnect.initial_backoff: must be "
            "between \"100ms\" and \"1h\"\n"
            "test.yaml: upstreams[0].reconnect.max_backoff: must be between "
            "\"100ms\" and \"1h\"\n"
            "test.yaml: upstreams[0].reconnect.connect_timeout: must be "
            "between \"100ms\" and \"1h\"\n"
            "test.yaml: upstreams[0].connect_wait: must be at most \"1h\"");
  EXPECT_EQ(ErrorOf(UpstreamWith(
                "127.0.0.1:1",
                "    reconnect: {initial_backoff: 5s, max_backoff: 1s}\n")),
            "test.yaml: upstreams[0].reconnect.max_backoff: must be at least "
            "initial_backoff (5s)");
  EXPECT_EQ(ErrorOf(UpstreamWith("127.0.0.1:1",
                                 "    reconnect: {max_backoff: soon}\n"
                                 "    connect_wait: -1s\n")),
            "test.yaml: upstreams[0].reconnect.max_backoff: invalid duration "
            "\"soon\" (use e.g. \"250ms\", \"1.5s\", \"2m\")\n"
            "test.yaml: upstreams[0].connect_wait: negative duration \"-1s\" "
            "(must be >= 0)");
}

// upstreams[].reflection: learn method shapes from the upstream's server
// reflection; on unless set to false, and a boolean.
TEST(ConfigReflectionTest, OnByDefaultOffWhenFalse) {
  auto on = MustParse(UpstreamWith("127.0.0.1:1", ""));
  ASSERT_NE(on, nullptr);
  EXPECT_TRUE(on->upstreams()[0].reflection);
  auto set = MustParse(UpstreamWith("127.0.0.1:1", "    reflection: true\n"));
  ASSERT_NE(set, nullptr);
  EXPECT_TRUE(set->upstreams()[0].reflection);
  auto off = MustParse(UpstreamWith("127.0.0.1:1", "    reflection: false\n"));
  ASSERT_NE(off, nullptr);
  EXPECT_FALSE(off->upstreams()[0].reflection);
  EXPECT_NE(ErrorOf(UpstreamWith("127.0.0.1:1", "    reflection: sometimes\n"))
                .find("upstreams[0].reflection"),
            std::string::npos);
}

TEST(ConfigReconnectTest, DefaultsFollowAnEditedTarget) {
  // What `sluice --config=F --upstream=T` does: the file's loopback target
  // replaced by a remote one before defaults are filled in.
  auto config = ParseConfigYaml(
      UpstreamWith("127.0.0.1:1", ""), kSource, "",
      [](sluice::config::v1::Config* proto) {
        proto->mutable_upstreams(0)->set_target("backend.example:443");
      });
  ASSERT_TRUE(config.ok()) << config.status();
  const UpstreamSettings& u = (*config)->upstreams()[0];
  EXPECT_EQ(u.target, "backend.example:443");
  EXPECT_EQ(u.reconnect_max_backoff, absl::Seconds(10));
  EXPECT_EQ(u.connect_timeout, absl::Seconds(20));
}

TEST(ConfigErrorTest, KeepaliveOutOfRange) {
  EXPECT_EQ(ErrorOf(UpstreamWith("127.0.0.1:1",
                                 "    keepalive: {time: 25h, timeout: 2h}\n")),
            "test.yaml: upstreams[0].keepalive.time: must be at most \"24h\" "
            "(\"0s\" turns keepalive off)\n"
            "test.yaml: upstreams[0].keepalive.timeout: must be at most "
            "\"1h\"");
  // The largest values gRPC's int milliseconds hold comfortably are fine.
  auto config = MustParse(
      UpstreamWith("127.0.0.1:1", "    keepalive: {time: 24h, timeout: 1h}\n"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->upstreams()[0].keepalive_time, absl::Hours(24));
}

TEST(ConfigTest, MaxMemoryBytes) {
  auto config = MustParse(kMinimal);
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->max_memory_bytes(), 0);  // from the cgroup, if any
  for (int64_t value : {int64_t{-1}, int64_t{16} << 20, int64_t{1} << 50}) {
    auto c = MustParse(
        MinimalWith(absl::StrCat("proxy: {max_memory_bytes: ", value, "}\n")));
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->max_memory_bytes(), value);
  }
  for (const char* bad : {"1000", "-5", "1125899906842625"}) {
    EXPECT_EQ(ErrorOf(MinimalWith(
                  absl::StrCat("proxy: {max_memory_bytes: ", bad, "}\n"))),
              absl::StrCat("test.yaml: proxy.max_memory_bytes: ", bad,
                           " is not a ceiling: use 0 (90% of the cgroup "
                           "memory limit, if any), -1 (none) or 16777216 "
                           "(16 MiB) to 1125899906842624 (1 PiB)"));
  }
}

TEST(ConfigTest, EarlyCancelBudget) {
  auto config = MustParse(kMinimal);
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->connections().early_cancels_per_second, 100);
  EXPECT_EQ(config->connections().early_cancels_burst, 500);
  EXPECT_EQ(config->proto().proxy().connections().early_cancels_per_second(),
            100u);
  auto off = MustParse(
      MinimalWith("proxy: {connections: {early_cancels_per_second: 0}}\n"));
  ASSERT_NE(off, nullptr);
  EXPECT_EQ(off->connections().early_cancels_per_second, 0);  // off
  EXPECT_EQ(
      ErrorOf(MinimalWith("proxy: {connections: {early_cancels_per_second: "
                          "2000000, early_cancels_burst: 0}}\n")),
      "test.yaml: proxy.connections.early_cancels_per_second: 2000000 is out "
      "of range (0..1000000); 0 turns the defence off\n"
      "test.yaml: proxy.connections.early_cancels_burst: 0 is out of range "
      "(1..10000000)");
}

TEST(ConfigErrorTest, BadForwardedForHeader) {
  EXPECT_EQ(ErrorOf(MinimalWith("proxy: {forwarded_for_header: \"x peer\"}\n")),
            "test.yaml: proxy.forwarded_for_header: invalid header name "
            "\"x peer\" (use letters, digits, '-', '_', '.')");
  EXPECT_EQ(ErrorOf(MinimalWith("proxy: {forwarded_for_header: x-peer-bin}\n")),
            "test.yaml: proxy.forwarded_for_header: \"x-peer-bin\" names a "
            "binary header (\"-bin\"); use a text header such as "
            "\"x-forwarded-for\"");
}

// ---------------------------------------------------------------------------
// Route limits.

// kMinimal's route "r" with `limits` (YAML lines below `limits:`).
std::string WithLimits(const std::string& limits) {
  return WithRoute(
      absl::StrCat("    match: {prefix: /}\n"
                   "    upstream: a\n"
                   "    limits:\n",
                   limits));
}

TEST(ConfigLimitsTest, EveryKindOfLimit) {
  auto config = MustParse(WithRoute(R"(    match: {prefix: /}
    upstream: a
    rate_limit_headers: true
    limits:
      - name: per-client
        rate: {per_second: 200, burst: 50}
        key: [peer, "header:X-Api-Key", method]
        max_keys: 500
        default_key: anonymous
        dry_run: true
      - name: in_flight.1
        concurrency: {max: 64, queue: 128, max_wait: 500ms}
      - name: stream
        messages: {per_second: 100, burst: 10, mode: reject,
                   client_to_upstream: true}
      - name: all
        rate: {per_minute: 30, burst: 3}
        concurrency: {max: 1}
        messages: {per_second: 5}
)"));
  ASSERT_NE(config, nullptr);
  const RouteSettings& route = config->routes()[0];
  EXPECT_TRUE(route.rate_limit_headers);
  ASSERT_EQ(route.limits.size(), 4u);

  const LimitSettings& rate = route.limits[0];
  EXPECT_EQ(rate.name, "per-client");
  EXPECT_EQ(rate.rate_count, 200);
  EXPECT_EQ(rate.rate_period, absl::Seconds(1));
  EXPECT_EQ(rate.rate_burst, 50);
  EXPECT_EQ(rate.concurrency_max, 0);
  EXPECT_EQ(rate.messages_per_second, 0);
  // Header names are lowered, as gRPC metadata keys are.
  EXPECT_EQ(rate.key,
            (std::vector<std::string>{"peer", "header:x-api-key", "method"}));
  EXPECT_EQ(config->proto().routes(0).limits(0).key(1), "header:x-api-key");
  EXPECT_EQ(rate.max_keys, 500);
  EXPECT_EQ(rate.default_key, "anonymous");
  EXPECT_TRUE(rate.dry_run);

  const LimitSettings& concurrency = route.limits[1];
  EXPECT_EQ(concurrency.name, "in_flight.1");
  EXPECT_EQ(concurrency.rate_count, 0);
  EXPECT_EQ(concurrency.concurrency_max, 64);
  EXPECT_EQ(concurrency.concurrency_queue, 128);
  EXPECT_EQ(concurrency.concurrency_max_wait, absl::Milliseconds(500));
  EXPECT_EQ(concurrency.messages_per_second, 0);
  EXPECT_TRUE(concurrency.key.empty());
  EXPECT_FALSE(concurrency.dry_run);

  const LimitSettings& messages = route.limits[2];
  EXPECT_EQ(messages.rate_count, 0);
  EXPECT_EQ(messages.concurrency_max, 0);
  EXPECT_EQ(messages.messages_per_second, 100);
  EXPECT_EQ(messages.messages_burst, 10);
  EXPECT_TRUE(messages.messages_reject);
  EXPECT_TRUE(messages.messages_client_to_upstream);

  const LimitSettings& all = route.limits[3];
  EXPECT_EQ(all.rate_count, 30);
  EXPECT_EQ(all.rate_period, absl::Minutes(1));
  EXPECT_EQ(all.rate_burst, 3);
  EXPECT_EQ(all.concurrency_max, 1);
  EXPECT_EQ(all.concurrency_queue, 0);
  EXPECT_EQ(all.concurrency_max_wait, absl::Seconds(1));
  EXPECT_EQ(all.messages_per_second, 5);
  EXPECT_EQ(all.messages_burst, 5);
  EXPECT_FALSE(all.messages_reject);
  EXPECT_FALSE(all.messages_client_to_upstream);
}

TEST(ConfigLimitsTest, NoLimitsByDefault) {
  auto config = MustParse(kMinimal);
  ASSERT_NE(config, nullptr);
  EXPECT_TRUE(config->routes()[0].limits.empty());
  EXPECT_FALSE(config->routes()[0].rate_limit_headers);
}

TEST(ConfigLimitsTest, DefaultsAreFilledIn) {
  auto config = MustParse(WithLimits(R"(      - name: s
        rate: {per_second: 7}
      - name: m
        rate: {per_minute: 600}
      - name: slow
        rate: {per_minute: 30}
      - name: c
        concurrency: {max: 4}
      - name: p
        messages: {per_second: 20}
)"));
  ASSERT_NE(config, nullptr);
  const std::vector<LimitSettings>& limits = config->routes()[0].limits;
  ASSERT_EQ(limits.size(), 5u);
  EXPECT_EQ(limits[0].rate_count, 7);
  EXPECT_EQ(limits[0].rate_period, absl::Seconds(1));
  EXPECT_EQ(limits[0].rate_burst, 7);
  EXPECT_EQ(limits[0].max_keys, 10000);
  EXPECT_EQ(limits[0].default_key, "default");
  EXPECT_FALSE(limits[0].dry_run);
  EXPECT_TRUE(limits[0].key.empty());
  EXPECT_EQ(limits[1].rate_count, 600);
  EXPECT_EQ(limits[1].rate_period, absl::Minutes(1));
  EXPECT_EQ(limits[1].rate_burst, 10);  // the per-second rate
  EXPECT_EQ(limits[2].rate_burst, 1);   // at least 1
  EXPECT_EQ(limits[3].concurrency_max, 4);
  EXPECT_EQ(limits[3].concurrency_queue, 0);
  EXPECT_EQ(limits[3].concurrency_max_wait, absl::Seconds(1));
  EXPECT_EQ(limits[4].messages_per_second, 20);
  EXPECT_EQ(limits[4].messages_burst, 20);
  EXPECT_FALSE(limits[4].messages_reject);
  EXPECT_FALSE(limits[4].messages_client_to_upstream);

  // GetConfig shows them.
  const config::v1::Route& route = config->proto().routes(0);
  EXPECT_EQ(route.limits(0).rate().burst(), 7u);
  EXPECT_EQ(route.limits(0).max_keys(), 10000u);
  EXPECT_EQ(route.limits(0).default_key(), "default");
  EXPECT_EQ(route.limits(1).rate().burst(), 10u);
  EXPECT_EQ(route.limits(2).rate().burst(), 1u);
  EXPECT_EQ(route.limits(3).concurrency().max_wait(), "1s");
  EXPECT_EQ(route.limits(4).messages().burst(), 20u);
  EXPECT_EQ(route.limits(4).messages().mode(), "pace");
}

TEST(ConfigLimitsTest, FingerprintFollowsTheDefinition) {
  const auto fingerprints = [](const std::string& limits) {
    std::vector<std::string> out;
    auto config = MustParse(WithLimits(limits));
    if (config == nullptr) return out;
    for (const LimitSettings& limit : config->routes()[0].limits) {
      out.push_back(limit.fingerprint);
    }
    return out;
  };
  const std::vector<std::string> a = fingerprints(
      "      - {name: x, rate: {per_second: 10}, key: [peer]}\n"
      "      - {name: y, concurrency: {max: 2}}\n");
  // The same definitions, with defaults spelled out and another case.
  const std::vector<std::string> b = fingerprints(
      "      - name: x\n"
      "        rate: {per_second: 10, burst: 10}\n"
      "        key: [peer]\n"
      "        max_keys: 10000\n"
      "        default_key: default\n"
      "      - {name: y, concurrency: {max: 2, queue: 0, max_wait: 1s}}\n");
  const std::vector<std::string> c = fingerprints(
      "      - {name: x, rate: {per_second: 11}, key: [peer]}\n"
      "      - {name: y, concurrency: {max: 2, max_wait: 2s}}\n");
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_FALSE(a[0].empty());
  EXPECT_NE(a[0], a[1]);
  EXPECT_EQ(a[0], b[0]);
  EXPECT_EQ(a[1], b[1]);
  EXPECT_NE(a[0], c[0]);
  EXPECT_NE(a[1], c[1]);
  const std::vector<std::string> lowered = fingerprints(
      "      - {name: x, rate: {per_second: 1}, "
      "key: [\"header:X-Id\"]}\n");
  const std::vector<std::string> lower = fingerprints(
      "      - {name: x, rate: {per_second: 1}, "
      "key: [\"header:x-id\"]}\n");
  EXPECT_EQ(lowered, lower);
}

TEST(ConfigLimitsTest, MissingName) {
  EXPECT_EQ(ErrorOf(WithLimits("      - rate: {per_second: 1}\n")),
            "test.yaml: routes[0].limits[0].name: required");
  EXPECT_EQ(ErrorOf(WithLimits("      - {name: \"a b\", "
                               "rate: {per_second: 1}}\n")),
            "test.yaml: routes[0].limits[0].name: invalid name \"a b\" (use "
            "letters, digits, '_', '.', '-')");
}

TEST(ConfigLimitsTest, DuplicateName) {
  EXPECT_EQ(ErrorOf(WithLimits("      - {name: x, rate: {per_second: 1}}\n"
                               "      - {name: y, rate: {per_second: 1}}\n"
                               "      - {name: x, concurrency: {max: 1}}\n")),
            "test.yaml: routes[0].limits[2].name: duplicate name \"x\" (first "
            "at routes[0].limits[0])");
  // Unique within the route only.
  EXPECT_NE(MustParse(R"(upstreams: [{name: a, target: "127.0.0.1:1"}]
routes:
  - {name: r, match: {method: /a.B/C}, upstream: a,
     limits: [{name: x, rate: {per_second: 1}}]}
  - {name: s, match: {prefix: /}, upstream: a,
     limits: [{name: x, rate: {per_second: 1}}]}
)"),
            nullptr);
}

TEST(ConfigLimitsTest, EmptyLimit) {
  EXPECT_EQ(ErrorOf(WithLimits("      - {name: x, rate: {per_second: 1}}\n"
                               "      - {name: y, dry_run: true}\n")),
            "test.yaml: routes[0].limits[1]: a limit needs at least one of "
            "rate, concurrency, messages");
}

TEST(ConfigLimitsTest, BothPerSecondAndPerMinute) {
  EXPECT_EQ(
      ErrorOf(WithLimits("      - name: x\n"
                         "        rate: {per_second: 1, per_minute: 60}\n")),
      "test.yaml: routes[0].limits[0].rate: set only one of per_second "
      "and per_minute");
}

TEST(ConfigLimitsTest, ZeroRate) {
  const std::string expected =
      "test.yaml: routes[0].limits[0].rate: set per_second or per_minute "
      "(> 0)";
  EXPECT_EQ(ErrorOf(WithLimits("      - {name: x, rate: {per_second: 0}}\n")),
            expected);
  EXPECT_EQ(ErrorOf(WithLimits("      - {name: x, rate: {burst: 5}}\n")),
            expected);
  EXPECT_EQ(ErrorOf(WithLimits("      - {name: x, rate: {}}\n")), expected);
}

TEST(ConfigLimitsTest, BadMode) {
  EXPECT_EQ(ErrorOf(WithLimits("      - name: x\n"
                               "        messages: {per_second: 5, "
                               "mode: drop}\n")),
            "test.yaml: routes[0].limits[0].messages.mode: unknown mode "
            "\"drop\" (use \"pace\" or \"reject\")");
}

TEST(ConfigLimitsTest, MessagesWithoutRate) {
  EXPECT_EQ(ErrorOf(WithLimits("      - {name: x, messages: {burst: 5}}\n")),
            "test.yaml: routes[0].limits[0].messages.per_second: required, "
            "> 0");
}

TEST(ConfigLimitsTest, BadKey) {
  EXPECT_EQ(
      ErrorOf(WithLimits("      - name: x\n"
                         "        rate: {per_second: 1}\n"
                         "        key: [user, \"header:\", \"header::path\",\n"
                         "              \"header:x id\", peer, PEER, peer,\n"
                         "              \"header:X-A\", \"header:x-a\"]\n")),
      "test.yaml: routes[0].limits[0].key[0]: unknown key part \"user\" (use "
      "\"peer\", \"method\" or \"header:<name>\")\n"
      "test.yaml: routes[0].limits[0].key[1]: \"header:\" needs a header "
      "name, e.g. \"header:x-api-key\"\n"
      "test.yaml: routes[0].limits[0].key[2]: \"header::path\" names a "
      "pseudo-header; use a regular header name (the method is the "
      "\"method\" key part)\n"
      "test.yaml: routes[0].limits[0].key[3]: invalid header name in "
      "\"header:x id\" (use letters, digits, '-', '_', '.')\n"
      "test.yaml: routes[0].limits[0].key[5]: unknown key part \"PEER\" (use "
      "\"peer\", \"method\" or \"header:<name>\")\n"
      "test.yaml: routes[0].limits[0].key[6]: duplicate key part \"peer\" "
      "(first at key[4])\n"
      "test.yaml: routes[0].limits[0].key[8]: duplicate key part "
      "\"header:x-a\" (first at key[7])");
}

TEST(ConfigLimitsTest, KeyWithoutRate) {
  EXPECT_EQ(ErrorOf(WithLimits("      - {name: x, concurrency: {max: 1}, "
                               "key: [peer]}\n")),
            "test.yaml: routes[0].limits[0].key: key applies to rate only");
}

TEST(ConfigLimitsTest, BadMaxWait) {
  EXPECT_EQ(ErrorOf(WithLimits("      - name: x\n"
                               "        concurrency: {max: 1, "
                               "max_wait: 1 second}\n")),
            "test.yaml: routes[0].limits[0].concurrency.max_wait: invalid "
            "duration \"1 second\" (use e.g. \"250ms\", \"1.5s\", \"2m\")");
  EXPECT_EQ(ErrorOf(WithLimits("      - name: x\n"
                               "        concurrency: {max: 1, "
                               "max_wait: -1s}\n")),
            "test.yaml: routes[0].limits[0].concurrency.max_wait: negative "
            "duration \"-1s\" (must be >= 0)");
  // 0s is allowed: a queued call waits no longer than its deadline allows.
  auto config =
      MustParse(WithLimits("      - {name: x, concurrency: {max: 1, queue: 5, "
                           "max_wait: 0s}}\n"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->routes()[0].limits[0].concurrency_max_wait,
            absl::ZeroDuration());
}

TEST(ConfigLimitsTest, MaxKeysOutOfRange) {
  EXPECT_EQ(ErrorOf(WithLimits("      - {name: x, rate: {per_second: 1}, "
                               "max_keys: 10000001}\n")),
            "test.yaml: routes[0].limits[0].max_keys: 10000001 is out of "
            "range (1..10000000)");
  auto config = MustParse(WithLimits(
      "      - {name: x, rate: {per_second: 1}, max_keys: 10000000}\n"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->routes()[0].limits[0].max_keys, 10000000);
}

TEST(ConfigLimitsTest, ConcurrencyWithoutMax) {
  EXPECT_EQ(
      ErrorOf(WithLimits("      - {name: x, concurrency: {queue: 10}}\n")),
      "test.yaml: routes[0].limits[0].concurrency.max: required, > 0");
}

TEST(ConfigLimitsTest, AllLimitErrorsAreReported) {
  EXPECT_EQ(ErrorOf(R"(upstreams: [{name: a, target: "127.0.0.1:1"}]
routes:
  - name: r
    match: {method: /a.B/C}
    upstream: a
    limits:
      - {concurrency: {}, key: [peer]}
  - name: s
    match: {prefix: /}
    upstream: a
    limits:
      - {name: x, messages: {per_second: 1, mode: Pace}}
      - {name: x}
)"),
            "test.yaml: routes[0].limits[0].name: required\n"
            "test.yaml: routes[0].limits[0].concurrency.max: required, > 0\n"
            "test.yaml: routes[0].limits[0].key: key applies to rate only\n"
            "test.yaml: routes[1].limits[0].messages.mode: unknown mode "
            "\"Pace\" (use \"pace\" or \"reject\")\n"
            "test.yaml: routes[1].limits[1].name: duplicate name \"x\" (first "
            "at routes[1].limits[0])\n"
            "test.yaml: routes[1].limits[1]: a limit needs at least one of "
            "rate, concurrency, messages");
}

// ---------------------------------------------------------------------------
// Durations: one meaning per spelling, one hash per meaning.

TEST(ConfigDurationTest, SpellingsOfOneDurationHaveOneHash) {
  auto seconds = MustParse(
      WithRoute("    match: {prefix: /}\n    upstream: a\n"
                "    deadline: {default_timeout: 1s, max_timeout: 1m30s}\n"
                "    limits: [{name: l, concurrency: {max: 1, max_wait: 2s}}]\n"
                "drain_timeout: 1s\n"));
  auto millis = MustParse(WithRoute(
      "    match: {prefix: /}\n    upstream: a\n"
      "    deadline: {default_timeout: 1000ms, max_timeout: 90s}\n"
      "    limits: [{name: l, concurrency: {max: 1, max_wait: 2000ms}}]\n"
      "drain_timeout: 1000ms\n"));
  ASSERT_NE(seconds, nullptr);
  ASSERT_NE(millis, nullptr);
  EXPECT_EQ(seconds->hash(), millis->hash());
  // The canonical text is what the proto (GetConfig) shows.
  EXPECT_EQ(millis->proto().drain_timeout(), "1s");
  EXPECT_EQ(millis->proto().routes(0).deadline().default_timeout(), "1s");
  EXPECT_EQ(millis->proto().routes(0).deadline().max_timeout(), "1m30s");
  // A reload keeps the live state of a limit whose definition is the same.
  EXPECT_EQ(seconds->routes()[0].limits[0].fingerprint,
            millis->routes()[0].limits[0].fingerprint);
  EXPECT_NE(seconds->hash(),
            MustParse(MinimalWith("drain_timeout: 2s\n"))->hash());
}

TEST(ConfigDurationTest, CanonicalForm) {
  EXPECT_EQ(CanonicalDuration(absl::ZeroDuration()), "0s");
  EXPECT_EQ(CanonicalDuration(absl::Milliseconds(1000)), "1s");
  EXPECT_EQ(CanonicalDuration(absl::Milliseconds(1500)), "1.5s");
  EXPECT_EQ(CanonicalDuration(absl::Milliseconds(250)), "250ms");
  EXPECT_EQ(CanonicalDuration(absl::Seconds(90)), "1m30s");
  EXPECT_EQ(CanonicalDuration(absl::Minutes(90)), "1h30m");
}

// docs/configuration.md: "0" and "0s" are the zero duration; absent (or
// null, or "") is the field's default, which is zero only for some.
TEST(ConfigDurationTest, ZeroAndAbsentMeanWhatTheDocsSay) {
  auto absent = MustParse(kMinimal);
  auto zero = MustParse(MinimalWith("drain_timeout: 0\n"));
  auto zero_s = MustParse(MinimalWith("drain_timeout: 0s\n"));
  auto zero_ms = MustParse(MinimalWith("drain_timeout: 0ms\n"));
  auto null = MustParse(MinimalWith("drain_timeout:\n"));
  auto empty = MustParse(MinimalWith("drain_timeout: \"\"\n"));
  ASSERT_TRUE(absent && zero && zero_s && zero_ms && null && empty);
  EXPECT_EQ(absent->drain_timeout(), absl::Seconds(30));  // the default
  EXPECT_EQ(null->drain_timeout(), absl::Seconds(30));
  EXPECT_EQ(empty->drain_timeout(), absl::Seconds(30));
  EXPECT_EQ(null->hash(), absent->hash());
  EXPECT_EQ(empty->hash(), absent->hash());
  EXPECT_EQ(zero->drain_timeout(), absl::ZeroDuration());  // no waiting
  EXPECT_EQ(zero->proto().drain_timeout(), "0s");
  EXPECT_EQ(zero->hash(), zero_s->hash());
  EXPECT_EQ(zero->hash(), zero_ms->hash());
  EXPECT_NE(zero->hash(), absent->hash());

  // Where the default is zero, absent and "0" are one config.
  auto no_deadline =
      MustParse(WithRoute("    match: {prefix: /}\n"
                          "    upstream: a\n"));
  auto zero_deadline = MustParse(WithRoute(
      "    match: {prefix: /}\n    upstream: a\n"
      "    deadline: {default_timeout: 0, max_timeout: 0s, offset: 0ms,\n"
      "               stream_idle_timeout: 0}\n"));
  ASSERT_TRUE(no_deadline && zero_deadline);
  EXPECT_EQ(no_deadline->hash(), zero_deadline->hash());

  // Where zero is not allowed, "0" is an error, not the default.
  EXPECT_EQ(ErrorOf("upstreams:\n"
                    "  - {name: a, target: \"127.0.0.1:1\", "
                    "keepalive: {timeout: 0}}\n"
                    "routes: [{name: r, match: {prefix: /}, upstream: a}]\n"),
            "test.yaml: upstreams[0].keepalive.timeout: must be greater than "
            "0 (default \"20s\")");
  // A number other than 0 needs a unit.
  EXPECT_EQ(ErrorOf(MinimalWith("drain_timeout: 5\n")),
            "test.yaml: drain_timeout: invalid duration \"5\" (use e.g. "
            "\"250ms\", \"1.5s\", \"2m\")");
}

// ---------------------------------------------------------------------------
// Restart-only settings: what a reload keeps from the running config.

TEST(ConfigRestartOnlyTest, ChangesNameEachField) {
  auto running = MustParse(
      MinimalWith("workers: 2\nlisteners: {admin: \"127.0.0.1:9901\"}\n"));
  auto next = MustParse(
      MinimalWith("workers: 3\nlisteners: {admin: \"127.0.0.1:9902\"}\n"
                  "proxy: {max_concurrent_streams: 10, stream_window: 4}\n"
                  "drain_timeout: 5s\n"));
  ASSERT_TRUE(running && next);
  std::vector<std::string> fields;
  for (const SettingChange& c : next->RestartOnlyChanges(*running)) {
    fields.push_back(absl::StrCat(c.field, " ", c.from, " -> ", c.to));
  }
  EXPECT_EQ(fields,
            (std::vector<std::string>{
                "listeners.admin \"127.0.0.1:9901\" -> "
                "\"127.0.0.1:9902\"",
                "workers 2 -> 3", "proxy.max_concurrent_streams 1000 -> 10"}));
  EXPECT_TRUE(running->RestartOnlyChanges(*running).empty());
}

TEST(ConfigRestartOnlyTest, HealthListenerIsRestartOnly) {
  auto running = MustParse(kMinimal);
  auto next = MustParse(MinimalWith("listeners: {health: \"0.0.0.0:9902\"}\n"));
  ASSERT_TRUE(running && next);
  std::vector<std::string> fields;
  for (const SettingChange& c : next->RestartOnlyChanges(*running)) {
    fields.push_back(absl::StrCat(c.field, " ", c.from, " -> ", c.to));
  }
  EXPECT_EQ(
      fields,
      (std::vector<std::string>{"listeners.health \"\" -> \"0.0.0.0:9902\""}));
  auto effective = next->WithRestartOnlyOf(*running);
  ASSERT_TRUE(effective.ok()) << effective.status();
  EXPECT_EQ((*effective)->health_address(), "");
  EXPECT_EQ((*effective)->hash(), running->hash());
}

TEST(ConfigRestartOnlyTest, WhatAReloadPutsInEffect) {
  auto running = MustParse(
      MinimalWith("workers: 2\nlisteners: {admin: \"127.0.0.1:9901\"}\n"));
  auto next = MustParse(
      MinimalWith("workers: 3\nlisteners: {admin: \"127.0.0.1:9902\"}\n"
                  "drain_timeout: 5s\n"));
  // The file a restart with the running listeners would load.
  auto expected = MustParse(
      MinimalWith("workers: 2\nlisteners: {admin: \"127.0.0.1:9901\"}\n"
                  "drain_timeout: 5s\n"));
  ASSERT_TRUE(running && next && expected);
  auto effective = next->WithRestartOnlyOf(*running);
  ASSERT_TRUE(effective.ok()) << effective.status();
  const Config& e = **effective;
  EXPECT_EQ(e.admin_address(), "127.0.0.1:9901");
  EXPECT_EQ(e.workers(), 2);
  EXPECT_EQ(e.proto().workers(), 2u);
  EXPECT_EQ(e.proto().listeners().admin(), "127.0.0.1:9901");
  EXPECT_EQ(e.drain_timeout(), absl::Seconds(5));  // the reloadable part
  EXPECT_EQ(e.hash(), expected->hash());
  EXPECT_NE(e.hash(), next->hash());
  EXPECT_TRUE(next->RestartOnlyChanges(e).size() == 2);
  EXPECT_TRUE(e.RestartOnlyChanges(*running).empty());
}

// ---------------------------------------------------------------------------
// Header limits at the edge (proxy.max_header_list_bytes, max_header_count).

TEST(ConfigHeaderLimitsTest, DefaultsFitUnderADefaultGrpcServer) {
  auto config = MustParse(kMinimal);
  ASSERT_NE(config, nullptr);
  // 8192 (what a default gRPC server accepts) minus 1024 for what Sluice
  // adds when it forwards.
  EXPECT_EQ(config->max_header_list_bytes(), 7168);
  EXPECT_EQ(config->max_header_count(), 100);
  EXPECT_EQ(config->proto().proxy().max_header_list_bytes(), 7168u);
  EXPECT_EQ(config->proto().proxy().max_header_count(), 100u);
}

TEST(ConfigHeaderLimitsTest, SetAndBounds) {
  auto config = MustParse(MinimalWith(
      "proxy: {max_header_list_bytes: 16384, max_header_count: 250}\n"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->max_header_list_bytes(), 16384);
  EXPECT_EQ(config->max_header_count(), 250);
  auto edges = MustParse(MinimalWith(
      "proxy: {max_header_list_bytes: 1024, max_header_count: 1}\n"));
  ASSERT_NE(edges, nullptr);
  EXPECT_EQ(edges->max_header_list_bytes(), 1024);
  EXPECT_EQ(edges->max_header_count(), 1);
  auto top = MustParse(MinimalWith(
      "proxy: {max_header_list_bytes: 1048576, max_header_count: 10000}\n"));
  ASSERT_NE(top, nullptr);
  EXPECT_EQ(top->max_header_list_bytes(), 1048576);
  EXPECT_EQ(top->max_header_count(), 10000);
}

TEST(ConfigHeaderLimitsTest, OutOfRange) {
  EXPECT_EQ(ErrorOf(MinimalWith("proxy:\n"
                                "  max_header_list_bytes: 1023\n"
                                "  max_header_count: 10001\n")),
            "test.yaml: proxy.max_header_list_bytes: 1023 is out of range "
            "(1024..1048576)\n"
            "test.yaml: proxy.max_header_count: 10001 is out of range "
            "(1..10000)");
  EXPECT_EQ(ErrorOf(MinimalWith("proxy: {max_header_list_bytes: 1048577}\n")),
            "test.yaml: proxy.max_header_list_bytes: 1048577 is out of range "
            "(1024..1048576)");
  EXPECT_EQ(ErrorOf(MinimalWith("proxy: {max_header_count: -1}\n")).empty(),
            false);
}

// The byte limit also sets gRPC's transport limit on the data port's
// server: restart only. The count is checked per call: reloadable.
TEST(ConfigHeaderLimitsTest, ByteLimitIsRestartOnlyCountIsReloadable) {
  auto running = MustParse(kMinimal);
  auto next = MustParse(MinimalWith(
      "proxy: {max_header_list_bytes: 4096, max_header_count: 20}\n"));
  ASSERT_TRUE(running && next);
  std::vector<std::string> fields;
  for (const SettingChange& c : next->RestartOnlyChanges(*running)) {
    fields.push_back(absl::StrCat(c.field, " ", c.from, " -> ", c.to));
  }
  EXPECT_EQ(
      fields,
      (std::vector<std::string>{"proxy.max_header_list_bytes 7168 -> 4096"}));
  auto effective = next->WithRestartOnlyOf(*running);
  ASSERT_TRUE(effective.ok()) << effective.status();
  EXPECT_EQ((*effective)->max_header_list_bytes(), 7168);
  EXPECT_EQ((*effective)->proto().proxy().max_header_list_bytes(), 7168u);
  EXPECT_EQ((*effective)->max_header_count(), 20);
}

// ---------------------------------------------------------------------------
// Client connections on the data port (proxy.connections).

TEST(ConfigConnectionsTest, DefaultsAreSafeForASidecar) {
  auto config = MustParse(kMinimal);
  ASSERT_NE(config, nullptr);
  const ConnectionSettings& c = config->connections();
  EXPECT_EQ(c.max_idle, absl::Minutes(5));
  EXPECT_EQ(c.max_age, absl::ZeroDuration());        // off
  EXPECT_EQ(c.max_age_grace, absl::ZeroDuration());  // off
  EXPECT_EQ(c.handshake_timeout, absl::Seconds(10));
  EXPECT_EQ(c.min_ping_interval, absl::Minutes(5));
  EXPECT_EQ(c.max_ping_strikes, 2);
  const config::v1::Connections& p = config->proto().proxy().connections();
  EXPECT_EQ(p.max_idle(), "5m");
  EXPECT_EQ(p.max_age(), "0s");
  EXPECT_EQ(p.max_age_grace(), "0s");
  EXPECT_EQ(p.handshake_timeout(), "10s");
  EXPECT_EQ(p.min_ping_interval(), "5m");
  EXPECT_EQ(p.max_ping_strikes(), 2u);
  // The data port accepts Sluice's own upstream keepalive default (one
  // Sluice in front of another).
  EXPECT_GE(config->upstreams()[0].keepalive_time, c.min_ping_interval);
}

TEST(ConfigConnectionsTest, SetValues) {
  auto config =
      MustParse(MinimalWith("proxy:\n"
                            "  connections:\n"
                            "    max_idle: 1s\n"
                            "    max_age: 30m\n"
                            "    max_age_grace: 1m\n"
                            "    handshake_timeout: 100ms\n"
                            "    min_ping_interval: 10s\n"
                            "    max_ping_strikes: 100\n"));
  ASSERT_NE(config, nullptr);
  const ConnectionSettings& c = config->connections();
  EXPECT_EQ(c.max_idle, absl::Seconds(1));
  EXPECT_EQ(c.max_age, absl::Minutes(30));
  EXPECT_EQ(c.max_age_grace, absl::Minutes(1));
  EXPECT_EQ(c.handshake_timeout, absl::Milliseconds(100));
  EXPECT_EQ(c.min_ping_interval, absl::Seconds(10));
  EXPECT_EQ(c.max_ping_strikes, 100);
  auto off = MustParse(MinimalWith("proxy: {connections: {max_idle: 0s}}\n"));
  ASSERT_NE(off, nullptr);
  EXPECT_EQ(off->connections().max_idle, absl::ZeroDuration());
  auto top = MustParse(MinimalWith(
      "proxy: {connections: {max_idle: 24h, max_age: 24h, "
      "max_age_grace: 24h, handshake_timeout: 5m, min_ping_interval: 24h}}\n"));
  ASSERT_NE(top, nullptr);
  EXPECT_EQ(top->connections().handshake_timeout, absl::Minutes(5));
}

TEST(ConfigConnectionsTest, ErrorsNameTheField) {
  EXPECT_EQ(ErrorOf(MinimalWith("proxy:\n"
                                "  connections:\n"
                                "    max_idle: 500ms\n"
                                "    max_age: 25h\n"
                                "    max_age_grace: 5\n"
                                "    handshake_timeout: 0s\n"
                                "    min_ping_interval: 999ms\n"
                                "    max_ping_strikes: 101\n")),
            "test.yaml: proxy.connections.max_idle: must be between \"1s\" "
            "and \"24h\", or \"0s\" (off); got \"500ms\"\n"
            "test.yaml: proxy.connections.max_age: must be between \"1s\" "
            "and \"24h\", or \"0s\" (off); got \"25h\"\n"
            "test.yaml: proxy.connections.max_age_grace: invalid duration "
            "\"5\" (use e.g. \"250ms\", \"1.5s\", \"2m\")\n"
            "test.yaml: proxy.connections.handshake_timeout: must be between "
            "\"100ms\" and \"5m\"; got \"0s\"\n"
            "test.yaml: proxy.connections.min_ping_interval: must be between "
            "\"1s\" and \"24h\"; got \"999ms\"\n"
            "test.yaml: proxy.connections.max_ping_strikes: 101 is out of "
            "range (1..100)");
  EXPECT_EQ(ErrorOf(MinimalWith("proxy: {connections: {max_idle: -1s}}\n")),
            "test.yaml: proxy.connections.max_idle: negative duration \"-1s\" "
            "(must be >= 0)");
  EXPECT_FALSE(
      ErrorOf(MinimalWith("proxy: {connections: {max_idel: 1s}}\n")).empty());
}

// The data port's server is built with them: restart only.
TEST(ConfigConnectionsTest, RestartOnly) {
  auto running = MustParse(kMinimal);
  auto next = MustParse(MinimalWith(
      "proxy: {connections: {max_idle: 1m, handshake_timeout: 5s}}\n"
      "drain_timeout: 5s\n"));
  ASSERT_TRUE(running && next);
  std::vector<std::string> fields;
  for (const SettingChange& c : next->RestartOnlyChanges(*running)) {
    fields.push_back(absl::StrCat(c.field, " ", c.from, " -> ", c.to));
  }
  EXPECT_EQ(fields, (std::vector<std::string>{
                        "proxy.connections.max_idle \"5m\" -> \"1m\"",
                        "proxy.connections.handshake_timeout \"10s\" -> "
                        "\"5s\""}));
  auto effective = next->WithRestartOnlyOf(*running);
  ASSERT_TRUE(effective.ok()) << effective.status();
  EXPECT_EQ((*effective)->connections().max_idle, absl::Minutes(5));
  EXPECT_EQ((*effective)->connections().handshake_timeout, absl::Seconds(10));
  EXPECT_EQ((*effective)->proto().proxy().connections().max_idle(), "5m");
  EXPECT_EQ((*effective)->drain_timeout(), absl::Seconds(5));
  EXPECT_TRUE((*effective)->RestartOnlyChanges(*running).empty());
}

// ---------------------------------------------------------------------------
// YamlToJson on its own.

TEST(YamlToJsonTest, TypesFollowTheSchema) {
  auto json = YamlTextToJson(
      "workers: 4\n"
      "listeners: {data: 8080}\n"
      "upstreams:\n"
      "  - name: 007\n"
      "    target: \"a\\\"b\\\\c\"\n"
      "    required: yes\n"
      "routes:\n"
      "  - match: {method: /a.B/C}\n",
      *config::v1::Config::descriptor());
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(
      *json,
      R"({"workers":4,"listeners":{"data":"8080"},)"
      R"("upstreams":[{"name":"007","target":"a\"b\\c","required":true}],)"
      R"("routes":[{"match":{"method":"/a.B/C"}}]})");
}

TEST(YamlToJsonTest, MessageRoundTrip) {
  config::v1::Config proto;
  ASSERT_TRUE(YamlTextToMessage(kMinimal, &proto).ok());
  ASSERT_EQ(proto.upstreams_size(), 1);
  EXPECT_EQ(proto.upstreams(0).target(), "127.0.0.1:50051");
  EXPECT_EQ(proto.routes(0).match().prefix(), "/");
}

// ---------------------------------------------------------------------------
// The shipped examples.

// The examples in the test's runfiles (or, run by hand from the runfiles
// folder, relative to it).
std::string ExamplesDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return "deploy/examples";
  return absl::StrCat(srcdir, "/", workspace, "/deploy/examples");
}

TEST(ExamplesTest, EveryExampleLoads) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(ExamplesDir())) {
    if (entry.path().extension() == ".yaml") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 2u) << "no examples found in " << ExamplesDir();
  for (const std::string& file : files) {
    auto config = LoadConfigFile(file);
    EXPECT_TRUE(config.ok()) << config.status();
  }
}

TEST(ExamplesTest, DemoIsWhatMakeRunNeeds) {
  auto loaded = LoadConfigFile(ExamplesDir() + "/demo.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Config& config = **loaded;
  EXPECT_EQ(config.data_address(), "127.0.0.1:8080");
  EXPECT_EQ(config.admin_address(), "127.0.0.1:9901");
  EXPECT_EQ(config.metrics_address(), "127.0.0.1:9090");
  ASSERT_EQ(config.upstreams().size(), 1u);
  EXPECT_EQ(config.upstreams()[0].name, "demo");
  EXPECT_EQ(config.upstreams()[0].target, "127.0.0.1:50051");
  ASSERT_EQ(config.routes().size(), 3u);
  const RouteSettings& ticker = config.routes()[0];
  EXPECT_EQ(ticker.name, "ticker");
  EXPECT_EQ(ticker.match, "/sluice.demo.v1.Ticker/");
  EXPECT_EQ(ticker.deadline.stream_idle_timeout, absl::Seconds(60));
  ASSERT_EQ(ticker.limits.size(), 1u);
  EXPECT_EQ(ticker.limits[0].messages_per_second, 100);
  EXPECT_EQ(ticker.limits[0].messages_burst, 10);
  EXPECT_FALSE(ticker.limits[0].messages_reject);
  const RouteSettings& testing = config.routes()[1];
  EXPECT_EQ(testing.name, "testing");
  EXPECT_EQ(testing.match, "/grpc.testing.TestService/");
  EXPECT_EQ(testing.deadline.default_timeout, absl::Seconds(10));
  EXPECT_EQ(testing.deadline.max_timeout, absl::Seconds(60));
  EXPECT_EQ(testing.deadline.offset, absl::Milliseconds(5));
  ASSERT_EQ(testing.limits.size(), 2u);
  EXPECT_EQ(testing.limits[0].name, "per-client");
  EXPECT_EQ(testing.limits[0].rate_count, 200);
  EXPECT_EQ(testing.limits[0].rate_period, absl::Seconds(1));
  EXPECT_EQ(testing.limits[0].rate_burst, 50);
  EXPECT_EQ(testing.limits[0].key, std::vector<std::string>{"peer"});
  EXPECT_EQ(testing.limits[1].concurrency_max, 64);
  EXPECT_EQ(testing.limits[1].concurrency_queue, 128);
  EXPECT_EQ(testing.limits[1].concurrency_max_wait, absl::Milliseconds(500));
  EXPECT_TRUE(testing.rate_limit_headers);
  EXPECT_TRUE(config.routes()[2].limits.empty());
  const RouteSettings& fallback = config.routes()[2];
  EXPECT_EQ(fallback.name, "default");
  EXPECT_FALSE(fallback.exact);
  EXPECT_EQ(fallback.match, "/");
}

TEST(ExamplesTest, SidecarListensForProbes) {
  auto loaded = LoadConfigFile(ExamplesDir() + "/sidecar.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Config& config = **loaded;
  EXPECT_EQ(config.data_address(), "0.0.0.0:8080");
  // The admin API on loopback; the kubelet's probes on the health-only port.
  EXPECT_EQ(config.admin_address(), "127.0.0.1:9901");
  EXPECT_EQ(config.health_address(), "0.0.0.0:9902");
  EXPECT_EQ(config.upstreams()[0].target, "127.0.0.1:50051");
  ASSERT_EQ(config.routes().size(), 1u);
  EXPECT_EQ(config.routes()[0].match, "/");
}

}  // namespace
}  // namespace sluice

namespace sluice {
namespace {

TEST(ConfigAccessLogTest, DefaultsAndAlwaysSensitiveHeaders) {
  auto config = ParseConfigYaml(R"(
access_log: {path: /tmp/a.log, headers: [X-Request-Id], sensitive_headers: [x-team]}
upstreams: [{name: a, target: "127.0.0.1:1"}]
routes: [{name: r, match: {prefix: /}, upstream: a}]
)",
                                "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  const AccessLogSettings& a = (*config)->access_log();
  EXPECT_TRUE(a.enabled);
  EXPECT_EQ(a.path, "/tmp/a.log");
  EXPECT_EQ(a.sample_rate, 1.0);
  EXPECT_EQ(a.headers, std::vector<std::string>{"x-request-id"});
  EXPECT_EQ(a.sensitive_headers,
            (std::vector<std::string>{"x-team", "authorization", "cookie",
                                      "proxy-authorization", "x-api-key"}));
}

TEST(ConfigAccessLogTest, AbsentMeansNoAccessLog) {
  auto config = ParseConfigYaml(R"(
upstreams: [{name: a, target: "127.0.0.1:1"}]
routes: [{name: r, match: {prefix: /}, upstream: a}]
)",
                                "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE((*config)->access_log().enabled);
}

TEST(ConfigAccessLogTest, BadValuesNameTheField) {
  auto config = ParseConfigYaml(R"(
access_log: {sample_rate: 1.5, headers: [":path"]}
upstreams: [{name: a, target: "127.0.0.1:1"}]
routes: [{name: r, match: {prefix: /}, upstream: a}]
)",
                                "test.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            "test.yaml: access_log.sample_rate: must be between 0 and 1, got "
            "1.5\ntest.yaml: access_log.headers[0]: invalid header name "
            "\":path\"");
}

}  // namespace
}  // namespace sluice
