// The process's signal handling: one thread that takes SIGTERM, SIGINT and
// SIGHUP with sigwait() and calls back into the daemon.
//
// Ownership and threading: owned by main(); the callbacks run on this
// object's own thread, one at a time. Stop() (also run by the destructor)
// ends and joins the thread, so no callback runs after it returns: main()
// stops it before it destroys the Daemon the callbacks use. The signals
// must be blocked in every thread (BlockSignals() before any thread starts)
// so that only sigwait() takes them; a signal that arrives after Stop()
// stays pending and is never delivered. Signals pending together are taken
// together: SIGTERM/SIGINT first, then one reload for any SIGHUPs.
#ifndef SLUICE_SERVER_SIGNAL_THREAD_H_
#define SLUICE_SERVER_SIGNAL_THREAD_H_

#include <pthread.h>
#include <signal.h>

#include <functional>
#include <thread>

namespace sluice {

class SignalThread {
 public:
  struct Callbacks {
    std::function<void()> reload;        // SIGHUP
    std::function<void(int sig)> drain;  // the first SIGTERM or SIGINT
    std::function<void()> abort;         // the second: exit without waiting
  };

  // Blocks SIGTERM, SIGINT, SIGHUP and the thread's own stop signal in the
  // calling thread (and so in every thread it starts afterwards).
  static void BlockSignals();

  explicit SignalThread(Callbacks callbacks);
  ~SignalThread();

  SignalThread(const SignalThread&) = delete;
  SignalThread& operator=(const SignalThread&) = delete;

  // Ends the thread and waits for it (a callback in progress finishes
  // first). Idempotent.
  void Stop();

 private:
  void Loop();

  const Callbacks callbacks_;
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_SIGNAL_THREAD_H_
