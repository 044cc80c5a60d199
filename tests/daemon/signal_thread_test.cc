#include "server/signal_thread.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>

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
    thread.Stop();  // idempotent
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
