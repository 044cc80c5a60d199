#include "server/signal_thread.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

// Every test signals this process itself; the signals are blocked in all
// threads (gtest's included) once BlockSignals() ran in main's thread.
class SignalThreadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { SignalThread::BlockSignals(); }
};

TEST_F(SignalThreadTest, HupReloadsTermDrainsTheSecondAborts) {
  absl::Notification reloaded, drained, aborted;
  std::atomic<int> drain_signal{0};
  SignalThread thread(SignalThread::Callbacks{
      .reload = [&] { reloaded.Notify(); },
      .drain =
          [&](int sig) {
            drain_signal = sig;
            drained.Notify();
          },
      .abort = [&] { aborted.Notify(); },
  });
  kill(getpid(), SIGHUP);
  ASSERT_TRUE(reloaded.WaitForNotificationWithTimeout(absl::Seconds(30)));
  kill(getpid(), SIGINT);
  ASSERT_TRUE(drained.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(drain_signal.load(), SIGINT);
  EXPECT_FALSE(aborted.HasBeenNotified());
  kill(getpid(), SIGTERM);
  ASSERT_TRUE(aborted.WaitForNotificationWithTimeout(absl::Seconds(30)));
}

// sigwait() hands out the lowest-numbered pending signal first: SIGHUPs
// arriving faster than reloads finish must not hold a SIGTERM off. Both
// pending at once: the drain comes first, and the SIGHUPs are one reload.
TEST_F(SignalThreadTest, TermIsNotHeldOffByHup) {
  absl::Mutex mu;
  std::vector<std::string> events;
  absl::Notification both;
  auto record = [&](const char* what) {
    absl::MutexLock lock(&mu);
    events.push_back(what);
    if (events.size() == 2) both.Notify();
  };
  kill(getpid(), SIGHUP);  // pending (blocked) until the thread takes them
  kill(getpid(), SIGTERM);
  SignalThread thread(SignalThread::Callbacks{
      .reload = [&] { record("reload"); },
      .drain = [&](int) { record("drain"); },
      .abort = [&] { record("abort"); },
  });
  ASSERT_TRUE(both.WaitForNotificationWithTimeout(absl::Seconds(30)));
  thread.Stop();
  absl::MutexLock lock(&mu);
  EXPECT_EQ(events, (std::vector<std::string>{"drain", "reload"}));
}

// What main() relies on to destroy the Daemon safely: once Stop() has
// returned, a signal never reaches a callback (before, the signal thread
// was detached and a SIGHUP during shutdown used the destroyed Daemon).
TEST_F(SignalThreadTest, NoCallbackAfterStop) {
  std::atomic<int> calls{0};
  {
    SignalThread thread(SignalThread::Callbacks{
        .reload = [&] { ++calls; },
        .drain = [&](int) { ++calls; },
        .abort = [&] { ++calls; },
    });
    thread.Stop();
    thread.Stop();           // idempotent
    kill(getpid(), SIGHUP);  // stays pending: nobody takes it
  }
  EXPECT_EQ(calls.load(), 0);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_TRUE(sigismember(&pending, SIGHUP));
  // Take it, so the next test starts clean.
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  int sig = 0;
  ASSERT_EQ(sigwait(&hup, &sig), 0);
  EXPECT_EQ(sig, SIGHUP);
}

}  // namespace
}  // namespace sluice
