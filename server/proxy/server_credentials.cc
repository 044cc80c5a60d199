#include "server/proxy/server_credentials.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace sluice {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
DataPortServerCredentials(const ServerTlsSettings& tls) {
  if (!tls.enabled) return grpc::InsecureServerCredentials();
  const int64_t seconds = std::clamp<int64_t>(
      absl::ToInt64Seconds(tls.refresh_interval), 1, 24 * 3600);
  // The provider reads the files once here, synchronously, then again
  // every `seconds`; an empty root path means no client CA is watched.
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          tls.key_file, tls.cert_file, tls.client_ca_file,
          static_cast<unsigned int>(seconds));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!tls.client_ca_file.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(
        tls.require_client_cert
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::experimental::TlsServerCredentials(options);
  if (credentials == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls: gRPC refused the TLS settings (cert_file \"",
                     tls.cert_file, "\", key_file \"", tls.key_file, "\")"));
  }
  return credentials;
}

}  // namespace sluice
