// The data port's transport security: plaintext, TLS, or mutual TLS, from
// the config's `tls` section.
#ifndef SLUICE_SERVER_PROXY_SERVER_CREDENTIALS_H_
#define SLUICE_SERVER_PROXY_SERVER_CREDENTIALS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"
#include "server/config/config.h"

namespace sluice {

// Insecure credentials when `tls.enabled` is false. Otherwise gRPC's TLS
// credentials backed by a FileWatcherCertificateProvider: the certificate,
// key and client CA files are re-read every `tls.refresh_interval` on a
// thread of the provider's own, so rotated files (cert-manager, a mounted
// Secret) are served to new connections without a restart. Client
// certificates are required and verified (require_client_cert), requested
// and verified if sent (client_ca_file without require_client_cert), or not
// asked for (no client_ca_file).
//
// The returned credentials own the provider; the grpc::Server built with
// them keeps them alive. Call from any thread.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
DataPortServerCredentials(const ServerTlsSettings& tls);

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_SERVER_CREDENTIALS_H_
