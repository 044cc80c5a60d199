#include "server/config/referenced_files.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.pb.h"
#include "server/common/read_file.h"

namespace sluice {
namespace {

namespace pb = sluice::config::v1;

constexpr absl::Duration kDefaultRefresh = absl::Seconds(60);

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

std::unique_ptr<BIO, BioFree> MemoryBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioFree>(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Reads `file` for `field`; reports and returns nullopt on failure (an
// empty file is read fine, as "").
std::optional<std::string> Read(const std::string& file,
                                const std::string& field,
                                const ConfigErrorSink& error) {
  auto text = ReadSmallFile(file, field);
  if (!text.ok()) {
    error(field, std::string(text.status().message()));
    return std::nullopt;
  }
  return *text;
}

// The first PEM certificate of `file` (a chain or a CA bundle) for
// `field`; reports and returns null if it cannot be read or holds none.
// Nothing for an empty `file` (unset).
std::unique_ptr<X509, X509Free> ReadCertificate(const std::string& file,
                                                const std::string& field,
                                                const ConfigErrorSink& error) {
  std::unique_ptr<X509, X509Free> cert;
  if (file.empty()) return cert;
  const auto pem = Read(file, field, error);
  if (!pem.has_value()) return cert;
  auto bio = MemoryBio(*pem);
  cert.reset(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    error(field, absl::StrCat("\"", file, "\" holds no PEM certificate"));
  }
  return cert;
}

// Checks that `file` holds an unencrypted PEM private key, and that it is
// the key of `cert` (from `cert_field`) when there is one.
void CheckKey(const std::string& file, const std::string& field, X509* cert,
              const std::string& cert_field, const ConfigErrorSink& error) {
  if (file.empty()) return;
  const auto pem = Read(file, field, error);
  if (!pem.has_value()) return;
  auto bio = MemoryBio(*pem);
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    error(field,
          absl::StrCat("\"", file, "\" holds no unencrypted PEM private key"));
  } else if (cert != nullptr && X509_check_private_key(cert, key.get()) != 1) {
    error(field,
          absl::StrCat("\"", file, "\" is not the key of the certificate in ",
                       cert_field));
  }
}

std::string GrpcType(const google::protobuf::MethodDescriptorProto& m) {
  if (m.client_streaming() && m.server_streaming()) return "bidi_stream";
  if (m.client_streaming()) return "client_stream";
  if (m.server_streaming()) return "server_stream";
  return "unary";
}

void Resolve(const std::string& base_dir, std::string* path) {
  if (!path->empty() && (*path)[0] != '/') *path = base_dir + *path;
}

}  // namespace

void ResolveRelativePaths(const std::string& base_dir, pb::Config* c) {
  if (c->has_access_log())
    Resolve(base_dir, c->mutable_access_log()->mutable_path());
  if (c->has_tls()) {
    Resolve(base_dir, c->mutable_tls()->mutable_cert_file());
    Resolve(base_dir, c->mutable_tls()->mutable_key_file());
    Resolve(base_dir, c->mutable_tls()->mutable_client_ca_file());
  }
  for (pb::Upstream& u : *c->mutable_upstreams()) {
    if (!u.has_tls()) continue;
    Resolve(base_dir, u.mutable_tls()->mutable_ca_file());
    Resolve(base_dir, u.mutable_tls()->mutable_cert_file());
    Resolve(base_dir, u.mutable_tls()->mutable_key_file());
  }
  if (c->has_admin()) {
    Resolve(base_dir, c->mutable_admin()->mutable_bearer_token_file());
  }
  if (c->has_redis()) {
    Resolve(base_dir, c->mutable_redis()->mutable_password_file());
    Resolve(base_dir, c->mutable_redis()->mutable_username_file());
  }
  for (std::string& file : *c->mutable_metrics()->mutable_descriptor_sets()) {
    Resolve(base_dir, &file);
  }
}

void CheckServerTls(pb::ServerTls* tls, const ConfigErrorSink& error,
                    ServerTlsSettings* out) {
  out->enabled = true;
  if (tls->cert_file().empty()) error("tls.cert_file", "required");
  if (tls->key_file().empty()) error("tls.key_file", "required");
  out->cert_file = tls->cert_file();
  out->key_file = tls->key_file();
  out->client_ca_file = tls->client_ca_file();
  if (!tls->has_require_client_cert()) {
    tls->set_require_client_cert(!tls->client_ca_file().empty());
  }
  if (tls->require_client_cert() && tls->client_ca_file().empty()) {
    error("tls.require_client_cert",
          "needs tls.client_ca_file (the CAs client certificates must "
          "chain to)");
  }
  out->require_client_cert = tls->require_client_cert();
  if (tls->refresh_interval().empty()) tls->set_refresh_interval("60s");
  absl::Duration refresh = kDefaultRefresh;
  if (!absl::ParseDuration(tls->refresh_interval(), &refresh) ||
      refresh < absl::Seconds(1) || refresh == absl::InfiniteDuration()) {
    error("tls.refresh_interval",
          absl::StrCat("invalid duration \"", tls->refresh_interval(),
                       "\" (at least \"1s\", e.g. \"60s\")"));
    refresh = kDefaultRefresh;
  } else {
    tls->set_refresh_interval(CanonicalDuration(refresh));
  }
  out->refresh_interval = refresh;

  auto cert = ReadCertificate(out->cert_file, "tls.cert_file", error);
  CheckKey(out->key_file, "tls.key_file", cert.get(), "tls.cert_file", error);
  ReadCertificate(out->client_ca_file, "tls.client_ca_file", error);
}

void CheckUpstreamTls(const pb::UpstreamTls& tls, const std::string& field,
                      const ConfigErrorSink& error) {
  if (!tls.enabled()) return;
  ReadCertificate(tls.ca_file(), field + ".ca_file", error);
  auto cert = ReadCertificate(tls.cert_file(), field + ".cert_file", error);
  CheckKey(tls.key_file(), field + ".key_file", cert.get(),
           field + ".cert_file", error);
}

std::string ReadAdminToken(const pb::AdminAuth& admin,
                           const ConfigErrorSink& error) {
  if (admin.bearer_token_file().empty()) return "";
  const auto text =
      Read(admin.bearer_token_file(), "admin.bearer_token_file", error);
  if (!text.has_value()) return "";
  std::string token = *text;
  absl::StripAsciiWhitespace(&token);
  if (token.empty()) {
    error("admin.bearer_token_file",
          absl::StrCat("\"", admin.bearer_token_file(), "\" is empty"));
    return "";
  }
  if (!std::all_of(token.begin(), token.end(),
                   [](char c) { return c > 0x20 && c < 0x7f; })) {
    error("admin.bearer_token_file",
          "the token must be printable ASCII without spaces");
    return "";
  }
  return token;
}

namespace {

// One AUTH secret of `file` for `field`, trimmed; nullopt (reported) if it
// cannot be read, is empty or holds a space or a control character.
std::optional<std::string> ReadSecret(const std::string& file,
                                      const std::string& field,
                                      const ConfigErrorSink& error) {
  const auto text = Read(file, field, error);
  if (!text.has_value()) return std::nullopt;
  std::string secret = *text;
  absl::StripAsciiWhitespace(&secret);
  if (secret.empty()) {
    error(field, absl::StrCat("\"", file, "\" is empty"));
    return std::nullopt;
  }
  if (!std::all_of(secret.begin(), secret.end(), [](char c) {
        return static_cast<unsigned char>(c) > 0x20 && c != 0x7f;
      })) {
    error(field, absl::StrCat("\"", file,
                              "\" must hold one line without spaces or "
                              "control characters"));
    return std::nullopt;
  }
  return secret;
}

std::string Sha256Hex(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(),
         digest);
  return absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(digest), SHA256_DIGEST_LENGTH));
}

}  // namespace

void ReadRedisSecrets(const pb::Redis& redis, const ConfigErrorSink& error,
                      RedisSettings* out) {
  if (!redis.username_file().empty() && redis.password_file().empty()) {
    error("redis.username_file",
          "needs redis.password_file (AUTH <user> <password>)");
  }
  if (!redis.password_file().empty()) {
    if (auto p =
            ReadSecret(redis.password_file(), "redis.password_file", error)) {
      out->password = *std::move(p);
    }
  }
  if (!redis.username_file().empty()) {
    if (auto u =
            ReadSecret(redis.username_file(), "redis.username_file", error)) {
      out->username = *std::move(u);
    }
  }
  if (!out->password.empty()) {
    absl::StrAppend(&out->fingerprint, "|auth:",
                    Sha256Hex(absl::StrCat(out->username.size(), ":",
                                           out->username, out->password)));
  }
}

std::vector<MethodInfo> KnownMethods(const pb::Metrics& metrics,
                                     const std::vector<RouteSettings>& routes,
                                     const ConfigErrorSink& error) {
  std::vector<MethodInfo> methods;
  for (int i = 0; i < metrics.descriptor_sets_size(); ++i) {
    const std::string field = absl::StrCat("metrics.descriptor_sets[", i, "]");
    const std::string& file = metrics.descriptor_sets(i);
    const auto bytes = Read(file, field, error);
    if (!bytes.has_value() || bytes->empty()) continue;
    google::protobuf::FileDescriptorSet set;
    if (!set.ParseFromString(*bytes)) {
      error(field, absl::StrCat("\"", file,
                                "\" is not a FileDescriptorSet (make one "
                                "with protoc --include_imports "
                                "--descriptor_set_out=FILE)"));
      continue;
    }
    for (const auto& proto_file : set.file()) {
      for (const auto& service : proto_file.service()) {
        const std::string full_service =
            proto_file.package().empty()
                ? service.name()
                : absl::StrCat(proto_file.package(), ".", service.name());
        for (const auto& m : service.method()) {
          methods.push_back({absl::StrCat("/", full_service, "/", m.name()),
                             full_service, m.name(), GrpcType(m)});
        }
      }
    }
  }
  for (const RouteSettings& r : routes) {
    if (!r.exact) continue;
    // "/pkg.Service/Method"
    const size_t slash = r.match.rfind('/');
    if (slash == 0 || slash == std::string::npos) continue;
    methods.push_back({r.match, r.match.substr(1, slash - 1),
                       r.match.substr(slash + 1), "unknown"});
  }
  // Sort by path with typed entries first, then keep the first of each.
  std::stable_sort(methods.begin(), methods.end(),
                   [](const MethodInfo& a, const MethodInfo& b) {
                     if (a.path != b.path) return a.path < b.path;
                     return a.type != "unknown" && b.type == "unknown";
                   });
  methods.erase(std::unique(methods.begin(), methods.end(),
                            [](const MethodInfo& a, const MethodInfo& b) {
                              return a.path == b.path;
                            }),
                methods.end());
  return methods;
}

}  // namespace sluice
