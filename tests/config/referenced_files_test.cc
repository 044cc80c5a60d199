// The config settings that point at other files: data-port TLS (`tls`) and
// the admin bearer token (`admin`). Every broken file is a config error
// naming its field; the tests pin the exact text an operator would see.
// Certificates are made with the openssl command line into TEST_TMPDIR.
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "tests/config/parse_helpers.h"

namespace sluice {
namespace {

std::string TmpDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = absl::StrCat(TmpDir(), "/", name);
  std::ofstream(path, std::ios::trunc) << text;
  return path;
}

// The smallest valid config plus `extra` at the top level.
std::string With(const std::string& extra) {
  return absl::StrCat(
      "upstreams:\n  - {name: a, target: \"127.0.0.1:50051\"}\n"
      "routes:\n  - {name: r, match: {prefix: /}, upstream: a}\n",
      extra);
}

// One certificate with its key: "<dir>/<name>.pem", "<dir>/<name>.key".
struct Pair {
  std::string cert;
  std::string key;
};

// A CA and two leaf certificates made once for the whole suite.
class ReferencedFilesTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    ca_ = new Pair(SelfSigned("ca"));
    server_ = new Pair(SelfSigned("server"));
    other_ = new Pair(SelfSigned("other"));
  }
  static void TearDownTestSuite() {
    delete ca_;
    delete server_;
    delete other_;
  }

  static Pair SelfSigned(const std::string& name) {
    Pair p{absl::StrCat(TmpDir(), "/", name, ".pem"),
           absl::StrCat(TmpDir(), "/", name, ".key")};
    const std::string command = absl::StrCat(
        "/usr/bin/openssl req -x509 -newkey ec -pkeyopt "
        "ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=",
        name, " -keyout ", p.key, " -out ", p.cert, " 2>/dev/null");
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    return p;
  }

  static std::string Tls(const std::string& fields) {
    return With(absl::StrCat("tls: {", fields, "}\n"));
  }

  static Pair* ca_;
  static Pair* server_;
  static Pair* other_;
};

Pair* ReferencedFilesTest::ca_ = nullptr;
Pair* ReferencedFilesTest::server_ = nullptr;
Pair* ReferencedFilesTest::other_ = nullptr;

// ---------------------------------------------------------------------------
// tls

TEST_F(ReferencedFilesTest, NoTlsSectionMeansPlaintext) {
  auto c = MustParse(With(""));
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(c->tls().enabled);
  EXPECT_FALSE(c->proto().has_tls());
}

TEST_F(ReferencedFilesTest, TlsWithDefaults) {
  auto c = MustParse(Tls(absl::StrCat("cert_file: ", server_->cert,
                                      ", key_file: ", server_->key)));
  ASSERT_NE(c, nullptr);
  const ServerTlsSettings& tls = c->tls();
  EXPECT_TRUE(tls.enabled);
  EXPECT_EQ(tls.cert_file, server_->cert);
  EXPECT_EQ(tls.key_file, server_->key);
  EXPECT_EQ(tls.client_ca_file, "");
  EXPECT_FALSE(tls.require_client_cert);
  EXPECT_EQ(tls.refresh_interval, absl::Seconds(60));
  // The defaults are filled into the proto (what GetConfig shows), in the
  // canonical duration form: "60s" is "1m".
  EXPECT_EQ(c->proto().tls().refresh_interval(), "1m");
  EXPECT_TRUE(c->proto().tls().has_require_client_cert());
  EXPECT_FALSE(c->proto().tls().require_client_cert());
}

TEST_F(ReferencedFilesTest, ClientCaRequiresClientCertsByDefault) {
  const std::string base =
      absl::StrCat("cert_file: ", server_->cert, ", key_file: ", server_->key,
                   ", client_ca_file: ", ca_->cert);
  auto c = MustParse(Tls(base + ", refresh_interval: 1s"));
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->tls().client_ca_file, ca_->cert);
  EXPECT_TRUE(c->tls().require_client_cert);
  EXPECT_EQ(c->tls().refresh_interval, absl::Seconds(1));

  auto optional = MustParse(Tls(base + ", require_client_cert: false"));
  ASSERT_NE(optional, nullptr);
  EXPECT_FALSE(optional->tls().require_client_cert);
}

TEST_F(ReferencedFilesTest, CertAndKeyAreRequired) {
  EXPECT_EQ(ErrorOf(Tls("refresh_interval: 5s")),
            "test.yaml: tls.cert_file: required\n"
            "test.yaml: tls.key_file: required");
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", server_->cert))),
            "test.yaml: tls.key_file: required");
}

TEST_F(ReferencedFilesTest, MissingFilesNameFieldAndPath) {
  const std::string missing = absl::StrCat(TmpDir(), "/does-not-exist.pem");
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", missing,
                                     ", key_file: ", server_->key))),
            absl::StrCat(
                "test.yaml: tls.cert_file: cannot read tls.cert_file file \"",
                missing, "\": No such file or directory"));
  EXPECT_EQ(
      ErrorOf(Tls(
          absl::StrCat("cert_file: ", server_->cert, ", key_file: ", missing))),
      absl::StrCat("test.yaml: tls.key_file: cannot read tls.key_file file \"",
                   missing, "\": No such file or directory"));
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", server_->cert,
                                     ", key_file: ", server_->key,
                                     ", client_ca_file: ", missing))),
            absl::StrCat("test.yaml: tls.client_ca_file: cannot read "
                         "tls.client_ca_file file \"",
                         missing, "\": No such file or directory"));
}

TEST_F(ReferencedFilesTest, FilesThatAreNotPem) {
  const std::string junk = WriteFile("junk.pem", "not a certificate\n");
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", junk,
                                     ", key_file: ", server_->key))),
            absl::StrCat("test.yaml: tls.cert_file: \"", junk,
                         "\" holds no PEM certificate"));
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", server_->cert,
                                     ", key_file: ", junk))),
            absl::StrCat("test.yaml: tls.key_file: \"", junk,
                         "\" holds no unencrypted PEM private key"));
  // A certificate where the key belongs.
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", server_->cert,
                                     ", key_file: ", server_->cert))),
            absl::StrCat("test.yaml: tls.key_file: \"", server_->cert,
                         "\" holds no unencrypted PEM private key"));
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", server_->cert,
                                     ", key_file: ", server_->key,
                                     ", client_ca_file: ", junk))),
            absl::StrCat("test.yaml: tls.client_ca_file: \"", junk,
                         "\" holds no PEM certificate"));
  const std::string empty = WriteFile("empty.pem", "");
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", empty,
                                     ", key_file: ", server_->key))),
            absl::StrCat("test.yaml: tls.cert_file: \"", empty,
                         "\" holds no PEM certificate"));
}

TEST_F(ReferencedFilesTest, KeyMustMatchTheCertificate) {
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", server_->cert,
                                     ", key_file: ", other_->key))),
            absl::StrCat("test.yaml: tls.key_file: \"", other_->key,
                         "\" is not the key of the certificate in "
                         "tls.cert_file"));
}

TEST_F(ReferencedFilesTest, RequireClientCertNeedsAClientCa) {
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", server_->cert,
                                     ", key_file: ", server_->key,
                                     ", require_client_cert: true"))),
            "test.yaml: tls.require_client_cert: needs tls.client_ca_file "
            "(the CAs client certificates must chain to)");
}

TEST_F(ReferencedFilesTest, BadRefreshInterval) {
  const std::string files =
      absl::StrCat("cert_file: ", server_->cert, ", key_file: ", server_->key);
  for (const char* bad : {"soon", "500ms", "0s", "-5s", "inf"}) {
    EXPECT_EQ(
        ErrorOf(Tls(absl::StrCat(files, ", refresh_interval: \"", bad, "\""))),
        absl::StrCat("test.yaml: tls.refresh_interval: invalid duration "
                     "\"",
                     bad, "\" (at least \"1s\", e.g. \"60s\")"))
        << bad;
  }
}

TEST_F(ReferencedFilesTest, EveryTlsProblemIsReported) {
  const std::string missing = absl::StrCat(TmpDir(), "/none.pem");
  EXPECT_EQ(ErrorOf(Tls(absl::StrCat("cert_file: ", missing,
                                     ", key_file: ", other_->cert,
                                     ", require_client_cert: true, "
                                     "refresh_interval: 1ms"))),
            absl::StrCat(
                "test.yaml: tls.require_client_cert: needs "
                "tls.client_ca_file (the CAs client certificates must chain "
                "to)\n"
                "test.yaml: tls.refresh_interval: invalid duration \"1ms\" "
                "(at least \"1s\", e.g. \"60s\")\n"
                "test.yaml: tls.cert_file: cannot read tls.cert_file file \"",
                missing,
                "\": No such file or directory\n"
                "test.yaml: tls.key_file: \"",
                other_->cert, "\" holds no unencrypted PEM private key"));
}

TEST_F(ReferencedFilesTest, RelativePathsAreTakenFromTheConfigFolder) {
  const std::string dir = absl::StrCat(TmpDir(), "/conf");
  ASSERT_EQ(
      std::system(absl::StrCat("mkdir -p ", dir, "/certs && cp ", server_->cert,
                               " ", server_->key, " ", dir, "/certs/")
                      .c_str()),
      0);
  std::ofstream(dir + "/token") << "relative-token\n";
  std::ofstream(dir + "/sluice.yaml") << With(
      "tls: {cert_file: certs/server.pem, key_file: certs/server.key}\n"
      "admin: {bearer_token_file: token}\n");
  auto c = LoadConfigFile(dir + "/sluice.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->tls().cert_file, dir + "/certs/server.pem");
  EXPECT_EQ((*c)->tls().key_file, dir + "/certs/server.key");
  EXPECT_EQ((*c)->admin_token(), "relative-token");
}

// ---------------------------------------------------------------------------
// upstreams[].tls

std::string UpstreamTls(const std::string& fields) {
  return absl::StrCat(
      "upstreams:\n  - {name: a, target: \"127.0.0.1:50051\"}\n"
      "  - {name: b, target: \"127.0.0.1:50052\", tls: {",
      fields,
      "}}\n"
      "routes:\n  - {name: r, match: {prefix: /}, upstream: a}\n");
}

TEST_F(ReferencedFilesTest, UpstreamTlsFilesAreChecked) {
  auto c = MustParse(UpstreamTls(absl::StrCat(
      "enabled: true, server_name: up.example, ca_file: ", ca_->cert,
      ", cert_file: ", server_->cert, ", key_file: ", server_->key)));
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->upstreams()[1].tls);
  EXPECT_EQ(c->upstreams()[1].tls_ca_file, ca_->cert);

  const std::string missing = absl::StrCat(TmpDir(), "/no-ca.pem");
  const std::string junk = WriteFile("junk-ca.pem", "junk\n");
  EXPECT_EQ(
      ErrorOf(UpstreamTls(absl::StrCat("enabled: true, ca_file: ", missing))),
      absl::StrCat("test.yaml: upstreams[1].tls.ca_file: cannot read "
                   "upstreams[1].tls.ca_file file \"",
                   missing, "\": No such file or directory"));
  EXPECT_EQ(
      ErrorOf(UpstreamTls(absl::StrCat("enabled: true, ca_file: ", junk))),
      absl::StrCat("test.yaml: upstreams[1].tls.ca_file: \"", junk,
                   "\" holds no PEM certificate"));
  EXPECT_EQ(
      ErrorOf(
          UpstreamTls(absl::StrCat("enabled: true, cert_file: ", server_->cert,
                                   ", key_file: ", other_->key))),
      absl::StrCat("test.yaml: upstreams[1].tls.key_file: \"", other_->key,
                   "\" is not the key of the certificate in "
                   "upstreams[1].tls.cert_file"));
  // Not enabled: the files are not used, so not read.
  EXPECT_NE(MustParse(UpstreamTls(absl::StrCat("ca_file: ", missing))),
            nullptr);
}

// ---------------------------------------------------------------------------
// admin

TEST_F(ReferencedFilesTest, NoAdminTokenByDefault) {
  auto c = MustParse(With(""));
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->admin_token(), "");
}

TEST_F(ReferencedFilesTest, AdminTokenIsReadAndTrimmed) {
  const std::string file = WriteFile("token", "  s3cret.token-1\n\n");
  auto c =
      MustParse(With(absl::StrCat("admin: {bearer_token_file: ", file, "}\n")));
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->admin_token(), "s3cret.token-1");
  // The token itself never appears in the config the admin API shows.
  EXPECT_EQ(c->proto().admin().bearer_token_file(), file);
  EXPECT_EQ(c->proto().DebugString().find("s3cret"), std::string::npos);
}

TEST_F(ReferencedFilesTest, AdminTokenFileErrors) {
  const std::string missing = absl::StrCat(TmpDir(), "/no-token");
  EXPECT_EQ(ErrorOf(With(
                absl::StrCat("admin: {bearer_token_file: ", missing, "}\n"))),
            absl::StrCat("test.yaml: admin.bearer_token_file: cannot read "
                         "admin.bearer_token_file file \"",
                         missing, "\": No such file or directory"));
  for (const char* blank : {"", "\n", "  \t\n"}) {
    const std::string file = WriteFile("blank-token", blank);
    EXPECT_EQ(
        ErrorOf(With(absl::StrCat("admin: {bearer_token_file: ", file, "}\n"))),
        absl::StrCat("test.yaml: admin.bearer_token_file: \"", file,
                     "\" is empty"));
  }
  const std::string spaced = WriteFile("spaced-token", "two words\n");
  EXPECT_EQ(
      ErrorOf(With(absl::StrCat("admin: {bearer_token_file: ", spaced, "}\n"))),
      "test.yaml: admin.bearer_token_file: the token must be printable "
      "ASCII without spaces");
}

}  // namespace
}  // namespace sluice
