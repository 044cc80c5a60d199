#include "server/proxy/connection_closer.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sluice {
namespace {

bool ParsePort(absl::string_view text, in_port_t* port) {
  int value = 0;
  if (!absl::SimpleAtoi(text, &value) || value <= 0 || value > 65535) {
    return false;
  }
  *port = htons(static_cast<uint16_t>(value));
  return true;
}

// `address` as IPv4 if it is one or an IPv4-mapped IPv6 address.
std::optional<sockaddr_in> AsIpv4(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    return *reinterpret_cast<const sockaddr_in*>(&address);
  }
  if (address.ss_family != AF_INET6) return std::nullopt;
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&address);
  if (!IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) return std::nullopt;
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = v6->sin6_port;
  std::memcpy(&v4.sin_addr, &v6->sin6_addr.s6_addr[12], 4);
  return v4;
}

int LocalPort(int fd) {
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) {
    return -1;
  }
  if (local.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&local)->sin_port);
  }
  if (local.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&local)->sin6_port);
  }
  return -1;
}

// Whether `fd` (a private duplicate) is a connected TCP socket on
// `local_port`; its remote address in `peer`.
bool IsConnection(int fd, int local_port, sockaddr_storage* peer) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  int type = 0;
  socklen_t type_length = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_length) != 0 ||
      type != SOCK_STREAM) {
    return false;  // UDP (the resolver's), raw...
  }
  socklen_t length = sizeof(*peer);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(peer), &length) != 0) {
    return false;  // not connected (a listener, UDP, ...)
  }
  return (peer->ss_family == AF_INET || peer->ss_family == AF_INET6) &&
         LocalPort(fd) == local_port;
}

}  // namespace

std::optional<TcpEndpoint> ParseGrpcPeer(absl::string_view peer) {
  TcpEndpoint out;
  if (absl::StartsWith(peer, "ipv4:")) {
    peer.remove_prefix(5);
    const size_t colon = peer.rfind(':');
    if (colon == absl::string_view::npos) return std::nullopt;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&out.address);
    v4->sin_family = AF_INET;
    const std::string host(peer.substr(0, colon));
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) != 1 ||
        !ParsePort(peer.substr(colon + 1), &v4->sin_port)) {
      return std::nullopt;
    }
    out.length = sizeof(sockaddr_in);
    return out;
  }
  if (absl::StartsWith(peer, "ipv6:")) {
    peer.remove_prefix(5);
    // "[addr]:port"; a scoped address ("fe80::1%eth0") keeps its zone out.
    const size_t end = peer.rfind("]:");
    if (peer.empty() || peer[0] != '[' || end == absl::string_view::npos) {
      return std::nullopt;
    }
    std::string host(peer.substr(1, end - 1));
    const size_t zone = host.find('%');
    if (zone != std::string::npos) host.resize(zone);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.address);
    v6->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) != 1 ||
        !ParsePort(peer.substr(end + 2), &v6->sin6_port)) {
      return std::nullopt;
    }
    out.length = sizeof(sockaddr_in6);
    return out;
  }
  return std::nullopt;
}

std::string EndpointKey(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (const std::optional<sockaddr_in> v4 = AsIpv4(address)) {
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    return absl::StrCat(text, ":", ntohs(v4->sin_port));
  }
  if (address.ss_family != AF_INET6) return "";
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&address);
  inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
  return absl::StrCat("[", text, "]:", ntohs(v6->sin6_port));
}

ConnectionCloser::ConnectionCloser(int local_port,
                                   std::function<int64_t()> now_nanos)
    : local_port_(local_port), now_nanos_(std::move(now_nanos)) {}

int64_t ConnectionCloser::SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool ConnectionCloser::Close(absl::string_view grpc_peer) {
  const std::optional<TcpEndpoint> remote = ParseGrpcPeer(grpc_peer);
  if (!remote) return false;
  const std::string key = EndpointKey(remote->address);
  // One caller at a time: another one (scanning, perhaps) means a retry on
  // a later reset, never a wait on a worker's thread.
  if (!mu_.TryLock()) return false;
  bool closed = false;
  if (!closed_.contains(key)) {
    auto it = fds_.find(key);
    if (it == fds_.end() &&
        now_nanos_() - last_scan_nanos_ >= kMinRescanNanos) {
      last_scan_nanos_ = now_nanos_();
      fds_ = Scan();
      it = fds_.find(key);
    }
    if (it != fds_.end()) {
      closed = ShutdownIfStill(it->second, key);
      fds_.erase(it);
    }
    if (closed) {
      if (closed_.size() >= kRemembered) closed_.clear();
      closed_.insert(key);
    }
  }
  mu_.Unlock();
  return closed;
}

bool ConnectionCloser::ShutdownIfStill(int fd, const std::string& key) const {
  // A private duplicate: if gRPC closed `fd` and the number was reused,
  // the duplicate refers to the new socket, and the check below fails.
  const int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return false;
  bool done = false;
  sockaddr_storage peer{};
  if (IsConnection(dup, local_port_, &peer) && EndpointKey(peer) == key) {
    done = shutdown(dup, SHUT_RDWR) == 0;
  }
  close(dup);
  return done;
}

absl::flat_hash_map<std::string, int> ConnectionCloser::Scan() const {
  absl::flat_hash_map<std::string, int> out;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  while (const dirent* entry = readdir(dir)) {
    int fd = 0;
    if (!absl::SimpleAtoi(entry->d_name, &fd) || fd == dirfd(dir)) continue;
    const int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) continue;
    sockaddr_storage peer{};
    if (IsConnection(dup, local_port_, &peer) && out.size() < kRemembered) {
      out.emplace(EndpointKey(peer), fd);
    }
    close(dup);
  }
  closedir(dir);
  return out;
}

}  // namespace sluice
