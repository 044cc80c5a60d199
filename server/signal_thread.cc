#include "server/signal_thread.h"

#include <time.h>

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
  const timespec now = {0, 0};
  int terms = 0;
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    // Take every other pending signal too: sigwait() returns the lowest
    // numbered first, so SIGHUP (1) arriving faster than reloads finish
    // would otherwise hold SIGTERM (15) off for ever. A burst of SIGHUPs
    // is one reload; SIGTERM/SIGINT are handled before it.
    bool stop = false, hup = false;
    int term_sigs[2] = {0, 0};
    int n_terms = 0;
    for (; sig > 0; sig = sigtimedwait(&set, nullptr, &now)) {
      if (sig == kStopSignal) {
        stop = true;
      } else if (sig == SIGHUP) {
        hup = true;
      } else if (n_terms < 2) {
        term_sigs[n_terms++] = sig;
      }
    }
    if (stop) return;
    for (int i = 0; i < n_terms; ++i) {
      if (++terms == 1) {
        if (callbacks_.drain) callbacks_.drain(term_sigs[i]);
      } else if (callbacks_.abort) {
        callbacks_.abort();
      }
    }
    if (hup && callbacks_.reload) callbacks_.reload();
  }
}

}  // namespace sluice
