// Drain with a call waiting for Redis (issue 15, bug 3): the workers'
// queues must outlive the Redis reply, which comes back through the call's
// worker queue (a grpc::Alarm set from the Redis thread). Before, Drain()
// gave up after a fixed 10 s and destroyed the queues while such a call was
// still alive, so a Redis timeout above 10 s completed on a destroyed queue.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/proxy/proxy_fixture.h"

namespace sluice {
namespace {

// A "Redis" on 127.0.0.1 that answers each connection's first command
// (the client's PING handshake) and then never answers again: every
// request times out.
class SilentRedis {
 public:
  SilentRedis() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(fd_, 16);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~SilentRedis() {
    stop_.store(true);
    thread_.join();
    for (int c : conns_) close(c);
    close(fd_);
  }
  int port() const { return port_; }

 private:
  // Bounded: polls every 50 ms for the stop flag.
  void Serve() {
    while (!stop_.load()) {
      std::vector<pollfd> fds = {{fd_, POLLIN, 0}};
      for (size_t i = 0; i < conns_.size(); ++i) {
        if (!answered_[i]) fds.push_back({conns_[i], POLLIN, 0});
      }
      if (poll(fds.data(), fds.size(), 50) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        const int c = accept(fd_, nullptr, nullptr);
        if (c >= 0) {
          conns_.push_back(c);
          answered_.push_back(false);
        }
      }
      for (size_t f = 1; f < fds.size(); ++f) {
        if (!(fds[f].revents & POLLIN)) continue;
        char buf[256];
        if (read(fds[f].fd, buf, sizeof(buf)) <= 0) continue;
        for (size_t i = 0; i < conns_.size(); ++i) {
          if (conns_[i] != fds[f].fd) continue;
          (void)!write(conns_[i], "+PONG\r\n", 7);
          answered_[i] = true;
        }
      }
    }
  }
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<int> conns_;
  std::vector<bool> answered_;
  std::thread thread_;
};

class DrainRedisTest : public ProxyFixture {
 protected:
  std::string ProxyYaml() override {
    return absl::StrCat("redis: {address: \"127.0.0.1:", redis_.port(),
                        "\", timeout: 2s, connect_timeout: 1s}\n");
  }
  std::string RoutesYaml() override {
    return R"(
routes:
  - name: global
    match: {method: "/grpc.testing.TestService/EmptyCall"}
    upstream: demo
    limits:
      - name: g
        scope: global
        rate: {per_second: 100, burst: 100}
        global: {fallback: fail_open}
)";
  }
  SilentRedis redis_;
};

TEST_F(DrainRedisTest, DrainWaitsForTheCallWaitingOnRedis) {
  // Far below the Redis timeout (2 s): the old fixed give-up, scaled down.
  plane_->set_drain_give_up(absl::Milliseconds(200));
  // The Redis client is up (its PING answered): the call below waits for
  // Redis instead of getting the fallback at once.
  auto connected = [&] {
    for (const auto& s : plane_->limits().All()) {
      if (s->global() != nullptr && s->global()->redis().connected()) {
        return true;
      }
    }
    return false;
  };
  const absl::Time up_by = absl::Now() + absl::Seconds(10);
  while (!connected() && absl::Now() < up_by) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_TRUE(connected());
  grpc::Status status;
  std::thread client([&] {
    grpc::ClientContext ctx;
    SetTimeout(&ctx, absl::Seconds(30));
    grpc::testing::Empty req, resp;
    status = test_->EmptyCall(&ctx, req, &resp);
  });
  // The call is in (waiting for Redis' answer, which never comes).
  const absl::Time end = absl::Now() + absl::Seconds(20);
  while (plane_->calls_in_flight() == 0 && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(plane_->calls_in_flight(), 1);
  plane_->Drain(absl::ZeroDuration());
  // Drain() returned only once the call object was gone: its Redis
  // request timed out and the reply reached a live worker queue.
  EXPECT_EQ(plane_->call_objects_alive(), 0);
  client.join();
  EXPECT_FALSE(status.ok());
}

}  // namespace
}  // namespace sluice
