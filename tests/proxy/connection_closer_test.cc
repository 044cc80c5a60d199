// ConnectionCloser with real loopback TCP connections: it shuts down exactly
// the connection a gRPC peer string names (the client then reads
// end-of-stream), leaves every other one alone, and refuses what is not a
// TCP peer.
#include "server/proxy/connection_closer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

// A listener on 127.0.0.1 port 0 (or ::1) and connections to it, each with
// both ends open in this process, as gRPC's and its client's would be.
class Loopback {
 public:
  explicit Loopback(int family) : family_(family) {
    listener_ = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage a = Local(0);
    ok_ = listener_ >= 0 &&
          bind(listener_, reinterpret_cast<sockaddr*>(&a), Size()) == 0 &&
          listen(listener_, 16) == 0;
    socklen_t len = sizeof(a);
    ok_ = ok_ &&
          getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) == 0;
    port_ = ok_ ? ntohs(Port(a)) : 0;
  }
  ~Loopback() {
    for (int fd : fds_) close(fd);
    if (listener_ >= 0) close(listener_);
  }
  bool ok() const { return ok_; }
  int port() const { return port_; }

  // Connects; returns the client's end and sets `peer` to the server side's
  // view of the client, as gRPC would print it.
  int Connect(std::string* peer) {
    const int client = socket(family_, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage a = Local(port_);
    if (client < 0 ||
        connect(client, reinterpret_cast<sockaddr*>(&a), Size()) != 0) {
      return -1;
    }
    const int server = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (server < 0) return -1;
    fds_.push_back(client);
    fds_.push_back(server);
    sockaddr_storage c{};
    socklen_t len = sizeof(c);
    getsockname(client, reinterpret_cast<sockaddr*>(&c), &len);
    *peer = family_ == AF_INET ? absl::StrCat("ipv4:127.0.0.1:", ntohs(Port(c)))
                               : absl::StrCat("ipv6:[::1]:", ntohs(Port(c)));
    return client;
  }

 private:
  sockaddr_storage Local(int port) const {
    sockaddr_storage a{};
    if (family_ == AF_INET) {
      auto* v4 = reinterpret_cast<sockaddr_in*>(&a);
      v4->sin_family = AF_INET;
      v4->sin_port = htons(static_cast<uint16_t>(port));
      v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&a);
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(static_cast<uint16_t>(port));
      v6->sin6_addr = in6addr_loopback;
    }
    return a;
  }
  socklen_t Size() const {
    return family_ == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  }
  static in_port_t Port(const sockaddr_storage& a) {
    return a.ss_family == AF_INET
               ? reinterpret_cast<const sockaddr_in*>(&a)->sin_port
               : reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port;
  }

  const int family_;
  int listener_ = -1;
  int port_ = 0;
  bool ok_ = false;
  std::vector<int> fds_;
};

// Whether the client's end reads end-of-stream (or a reset) within 5 s.
bool SeesClose(int client) {
  pollfd p{client, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1) return false;
  char byte;
  return recv(client, &byte, 1, MSG_DONTWAIT) <= 0;
}

// Whether the client's end is still open: nothing to read right now.
bool StillOpen(int client) {
  pollfd p{client, POLLIN, 0};
  return poll(&p, 1, 0) == 0;
}

TEST(ConnectionCloserTest, ClosesTheNamedConnectionOnly) {
  Loopback net(AF_INET);
  ASSERT_TRUE(net.ok());
  std::string flood_peer, other_peer;
  const int flood = net.Connect(&flood_peer);
  const int other = net.Connect(&other_peer);
  ASSERT_GE(flood, 0);
  ASSERT_GE(other, 0);

  ConnectionCloser closer(net.port());
  EXPECT_TRUE(closer.Close(flood_peer));
  EXPECT_TRUE(SeesClose(flood));
  EXPECT_TRUE(StillOpen(other));
  // Asked again for the same connection: nothing more to do.
  EXPECT_FALSE(closer.Close(flood_peer));
  EXPECT_TRUE(StillOpen(other));
}

TEST(ConnectionCloserTest, ANewConnectionIsLookedForAtMostEvery100Ms) {
  Loopback net(AF_INET);
  ASSERT_TRUE(net.ok());
  std::string a_peer, b_peer, c_peer;
  const int a = net.Connect(&a_peer);
  const int b = net.Connect(&b_peer);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  int64_t now = 1'000'000'000;
  ConnectionCloser closer(net.port(), [&now] { return now; });
  EXPECT_TRUE(closer.Close(a_peer));  // a scan: A and B in the table
  EXPECT_TRUE(SeesClose(a));
  const int c = net.Connect(&c_peer);
  ASSERT_GE(c, 0);
  now += 50'000'000;
  EXPECT_TRUE(closer.Close(b_peer));   // from the table, no scan
  EXPECT_FALSE(closer.Close(c_peer));  // not in it; the last scan is 50 ms old
  EXPECT_TRUE(StillOpen(c));
  now += 50'000'000;
  EXPECT_TRUE(closer.Close(c_peer));  // 100 ms: scanned again
  EXPECT_TRUE(SeesClose(b));
  EXPECT_TRUE(SeesClose(c));
}

TEST(ConnectionCloserTest, OnlyConnectionsOfItsOwnPort) {
  Loopback net(AF_INET);
  ASSERT_TRUE(net.ok());
  std::string peer;
  const int client = net.Connect(&peer);
  ASSERT_GE(client, 0);
  // The same remote address and port, but another local port: not the
  // data port's connection (e.g. an upstream connection).
  ConnectionCloser closer(net.port() == 65535 ? 1 : net.port() + 1);
  EXPECT_FALSE(closer.Close(peer));
  EXPECT_TRUE(StillOpen(client));
}

TEST(ConnectionCloserTest, Ipv6) {
  Loopback net(AF_INET6);
  if (!net.ok()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  std::string peer;
  const int client = net.Connect(&peer);
  ASSERT_GE(client, 0);
  ConnectionCloser closer(net.port());
  EXPECT_TRUE(closer.Close(peer));
  EXPECT_TRUE(SeesClose(client));
}

TEST(ConnectionCloserTest, UnknownOrMalformedPeers) {
  Loopback net(AF_INET);
  ASSERT_TRUE(net.ok());
  std::string peer;
  const int client = net.Connect(&peer);
  ASSERT_GE(client, 0);
  ConnectionCloser closer(net.port());
  for (const char* bad :
       {"", "unix:/tmp/sock", "ipv4:", "ipv4:127.0.0.1", "ipv4:127.0.0.1:0",
        "ipv4:127.0.0.1:70000", "ipv4:300.0.0.1:80", "ipv4:127.0.0.1:x",
        "ipv6:::1:80", "ipv6:[::1]", "ipv6:[zz]:80", "ipv4:127.0.0.9:1"}) {
    EXPECT_FALSE(closer.Close(bad)) << bad;
  }
  EXPECT_TRUE(StillOpen(client));
}

TEST(ParseGrpcPeerTest, Forms) {
  auto v4 = ParseGrpcPeer("ipv4:10.1.2.3:443");
  ASSERT_TRUE(v4.has_value());
  const auto* a = reinterpret_cast<const sockaddr_in*>(&v4->address);
  EXPECT_EQ(a->sin_family, AF_INET);
  EXPECT_EQ(ntohs(a->sin_port), 443);
  EXPECT_EQ(ntohl(a->sin_addr.s_addr), 0x0A010203u);
  auto v6 = ParseGrpcPeer("ipv6:[fe80::1%eth0]:8080");
  ASSERT_TRUE(v6.has_value());
  const auto* b = reinterpret_cast<const sockaddr_in6*>(&v6->address);
  EXPECT_EQ(b->sin6_family, AF_INET6);
  EXPECT_EQ(ntohs(b->sin6_port), 8080);
  EXPECT_FALSE(ParseGrpcPeer("unix:/run/sluice.sock").has_value());
}

TEST(EndpointKeyTest, Ipv4MappedIsIpv4) {
  auto v4 = ParseGrpcPeer("ipv4:10.1.2.3:443");
  auto mapped = ParseGrpcPeer("ipv6:[::ffff:10.1.2.3]:443");
  auto v6 = ParseGrpcPeer("ipv6:[2001:db8::1]:443");
  ASSERT_TRUE(v4 && mapped && v6);
  EXPECT_EQ(EndpointKey(v4->address), "10.1.2.3:443");
  EXPECT_EQ(EndpointKey(mapped->address), "10.1.2.3:443");
  EXPECT_EQ(EndpointKey(v6->address), "[2001:db8::1]:443");
}

}  // namespace
}  // namespace sluice
