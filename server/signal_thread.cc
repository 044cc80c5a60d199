#include "server/signal_thread.h"

#include <utility>

namespace sluice {
namespace {

// Sent by Stop() to the thread itself (never expected from outside).
constexpr int kStopSignal = SIGUSR2;

sigset_t HandledSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, kStopSignal);
  return set;
}

}  // namespace

void SignalThread::BlockSignals() {
  const sigset_t set = HandledSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

SignalThread::SignalThread(Callbacks callbacks)
    : callbacks_(std::move(callbacks)), thread_([this] { Loop(); }) {}

SignalThread::~SignalThread() { Stop(); }

void SignalThread::Stop() {
  if (!thread_.joinable()) return;
  pthread_kill(thread_.native_handle(), kStopSignal);
  thread_.join();
}

void SignalThread::Loop() {
  const sigset_t set = HandledSignals();
  int terms = 0;
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == kStopSignal) return;
    if (sig == SIGHUP) {
      if (callbacks_.reload) callbacks_.reload();
    } else if (++terms == 1) {
      if (callbacks_.drain) callbacks_.drain(sig);
    } else if (callbacks_.abort) {
      callbacks_.abort();
    }
  }
}

}  // namespace sluice
