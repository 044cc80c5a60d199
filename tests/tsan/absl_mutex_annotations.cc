// TSan happens-before edges for Debian's uninstrumented absl::Mutex.
//
// Debian's libabsl_synchronization is not built with -fsanitize=thread, so
// ThreadSanitizer does not see absl::Mutex lock/unlock (its fast path is
// atomics and futexes inside the library) and reports every access guarded
// by one as a race. This file, linked into every binary of --config=tsan
// (via --custom_malloc, the one label Bazel links into every cc_binary and
// cc_test), interposes the library's out-of-line Mutex and CondVar entry
// points: each calls the real function (found with dlsym(RTLD_NEXT)) and
// tells TSan "release" before giving up the mutex and "acquire" after
// getting it. Interposition covers calls from our code and, through the
// PLT, from the other Debian libraries.
//
// What it models: happens-before through the mutex (so no false races on
// guarded data, and real races on unguarded data are still found). What it
// does not: lock-order (deadlock) detection, and reader locks are treated
// as full acquire/release (which may hide a race between two readers that
// also write; they must not). LockWhenWithTimeout/AwaitWithTimeout and the
// deadline variants are not interposed (unused by Sluice).
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"

extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);

namespace {

void* Real(const char* mangled) {
  void* fn = dlsym(RTLD_NEXT, mangled);
  if (fn == nullptr) {
    std::fprintf(stderr, "absl_mutex_annotations: %s not found\n", mangled);
    std::abort();
  }
  return fn;
}

#define REAL(type, mangled) \
  static const auto real = reinterpret_cast<type>(Real(mangled))

using VoidFn = void (*)(absl::Mutex*);
using BoolFn = bool (*)(absl::Mutex*);
using CondFn = void (*)(absl::Mutex*, const absl::Condition*);
using WaitFn = void (*)(absl::CondVar*, absl::Mutex*);
using WaitTimeoutFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Duration);
using WaitDeadlineFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Time);

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  REAL(VoidFn, "_ZN4absl7debian35Mutex4LockEv");
  real(this);
  __tsan_acquire(this);
}

void Mutex::Unlock() {
  REAL(VoidFn, "_ZN4absl7debian35Mutex6UnlockEv");
  __tsan_release(this);
  real(this);
}

void Mutex::ReaderLock() {
  REAL(VoidFn, "_ZN4absl7debian35Mutex10ReaderLockEv");
  real(this);
  __tsan_acquire(this);
}

void Mutex::ReaderUnlock() {
  REAL(VoidFn, "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  __tsan_release(this);
  real(this);
}

bool Mutex::TryLock() {
  REAL(BoolFn, "_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  REAL(BoolFn, "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

void Mutex::LockWhen(const Condition& cond) {
  REAL(CondFn, "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  real(this, &cond);
  __tsan_acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  REAL(CondFn, "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  real(this, &cond);
  __tsan_acquire(this);
}

void Mutex::Await(const Condition& cond) {
  REAL(CondFn, "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  __tsan_release(this);
  real(this, &cond);
  __tsan_acquire(this);
}

void CondVar::Wait(Mutex* mu) {
  REAL(WaitFn, "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  __tsan_release(mu);
  real(this, mu);
  __tsan_acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  REAL(WaitTimeoutFn,
       "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  __tsan_release(mu);
  const bool r = real(this, mu, timeout);
  __tsan_acquire(mu);
  return r;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  REAL(WaitDeadlineFn,
       "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  __tsan_release(mu);
  const bool r = real(this, mu, deadline);
  __tsan_acquire(mu);
  return r;
}

ABSL_NAMESPACE_END
}  // namespace absl

namespace {

// absl's deadlock detector keeps a global graph under its own, uninstrumented
// spin lock; every Mutex operation of every thread (gRPC's included) touches
// it, and TSan reports each as a race. The daemon turns it off (main.cc);
// so does every TSan binary, before main() and before gRPC starts a thread.
const bool kDeadlockDetectionOff = [] {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}();

}  // namespace

// Suppressions, every one for code TSan cannot see into (Debian's
// uninstrumented libraries), never for Sluice's own: a race with a frame in
// gRPC's or abseil's libraries is one between their internal
// synchronization (atomics, futexes, their own locks) and TSan's blindness
// to it. Sluice's hand-offs through gRPC are annotated instead
// (server/proxy/tsan_edges.h). The demo upstream (callback API) runs its
// handlers on gRPC's threads, so its frames sit under libgrpc and are not
// checked; it is test scaffolding, not the proxy.
extern "C" const char* __tsan_default_suppressions() {
  return "race:libgrpc.so\n"
         "race:libgrpc++.so\n"
         "race:libgpr.so\n"
         "race:libabsl_\n"
         "race:libprotobuf.so\n"
         // gRPC's executor threads end detached ("thread leak").
         "thread:libgpr.so\n"
         "thread:libgrpc.so\n";
}
