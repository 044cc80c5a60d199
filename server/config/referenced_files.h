// The parts of the configuration that point at other files: data-port TLS
// certificates, the admin bearer token and the descriptor sets that name
// methods for the metrics. Each is read and checked when the config is
// loaded, so a missing or broken file is a config error naming its field
// (and a reload keeps the old config).
#ifndef SLUICE_SERVER_CONFIG_REFERENCED_FILES_H_
#define SLUICE_SERVER_CONFIG_REFERENCED_FILES_H_

#include <functional>
#include <string>
#include <vector>

#include "server/config/config.h"
#include "sluice/config/v1/config.pb.h"

namespace sluice {

// Reports one problem: (field path, reason).
using ConfigErrorSink =
    std::function<void(const std::string& path, const std::string& reason)>;

// Prefixes `base_dir` ("dir/") to every relative file path in `config`.
void ResolveRelativePaths(const std::string& base_dir,
                          sluice::config::v1::Config* config);

// tls: both files readable PEM, the key matching the certificate, the CA
// bundle readable; fills defaults into `tls`.
void CheckServerTls(sluice::config::v1::ServerTls* tls,
                    const ConfigErrorSink& error, ServerTlsSettings* out);

// upstreams[i].tls (`field`), when enabled: the CA bundle, certificate and
// key files readable PEM, the key matching the certificate. (The upstream
// pool reads them again when it connects.)
void CheckUpstreamTls(const sluice::config::v1::UpstreamTls& tls,
                      const std::string& field, const ConfigErrorSink& error);

// admin.bearer_token_file: the token, trimmed; empty when unset.
std::string ReadAdminToken(const sluice::config::v1::AdminAuth& admin,
                           const ConfigErrorSink& error);

// redis.password_file and redis.username_file: the secrets, trimmed, into
// `out` (and their SHA-256 into out->fingerprint). Errors name the field
// and the file, never the contents.
void ReadRedisSecrets(const sluice::config::v1::Redis& redis,
                      const ConfigErrorSink& error, RedisSettings* out);

// Every method of metrics.descriptor_sets, plus the exact-match routes'
// methods, sorted by path and unique.
std::vector<MethodInfo> KnownMethods(const sluice::config::v1::Metrics& metrics,
                                     const std::vector<RouteSettings>& routes,
                                     const ConfigErrorSink& error);

}  // namespace sluice

#endif  // SLUICE_SERVER_CONFIG_REFERENCED_FILES_H_
