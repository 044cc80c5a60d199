#include "server/config/listen_probe.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace sluice {
namespace {

// "Address already in use" -> "address already in use".
std::string Lower(const char* reason) {
  std::string s(reason);
  if (!s.empty()) s[0] = absl::ascii_tolower(s[0]);
  return s;
}

// Binds and closes one socket; 0 or the errno of the first failing call.
int TryBind(const addrinfo& ai) {
  const int fd =
      socket(ai.ai_family, ai.ai_socktype | SOCK_CLOEXEC, ai.ai_protocol);
  if (fd < 0) return errno;
  const int one = 1;
  const int zero = 0;
  int err = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      (ai.ai_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) != 0) ||
      bind(fd, ai.ai_addr, ai.ai_addrlen) != 0) {
    err = errno;
  }
  close(fd);
  return err;
}

}  // namespace

absl::Status CheckListener(absl::string_view field,
                           const std::string& address) {
  std::string host;
  std::string port;
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find("]:");
    if (close != std::string::npos) {
      host = address.substr(1, close - 1);
      port = address.substr(close + 2);
    }
  } else if (const size_t colon = address.rfind(':');
             colon != std::string::npos) {
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  if (port == "0") return absl::OkStatus();  // the OS picks a free one
  const auto fail = [&](const std::string& reason) {
    return absl::UnavailableError(
        absl::StrCat(field, ": cannot listen on ", address, ": ", reason));
  };
  if (host.empty() || port.empty()) return fail("not a host:port address");
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int gai = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
      gai != 0) {
    return fail(gai == EAI_SYSTEM ? Lower(std::strerror(errno))
                                  : Lower(gai_strerror(gai)));
  }
  int first_error = 0;
  int in_use = 0;
  bool any_bound = false;
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const int err = TryBind(*ai);
    if (err == 0) {
      any_bound = true;
    } else {
      if (first_error == 0) first_error = err;
      if (err == EADDRINUSE) in_use = err;
    }
  }
  freeaddrinfo(found);
  // A port another process holds on one of the addresses is refused even
  // when the others are free: sharing it would split the callers.
  if (in_use != 0) return fail(Lower(std::strerror(in_use)));
  if (!any_bound) {
    return fail(first_error != 0 ? Lower(std::strerror(first_error))
                                 : "the host resolves to no address");
  }
  return absl::OkStatus();
}

absl::Status ListenerFailed(absl::string_view field, const std::string& address,
                            absl::string_view what) {
  absl::Status now = CheckListener(field, address);
  if (!now.ok()) return now;
  return absl::UnavailableError(
      absl::StrCat(field, ": cannot listen on ", address, ": ", what));
}

}  // namespace sluice
