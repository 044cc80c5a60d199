// Happens-before edges that ThreadSanitizer cannot see through gRPC.
//
// Debian's libgrpc is not built with -fsanitize=thread, so TSan does not
// see that a tag handed to a completion queue on one thread (a grpc::Alarm
// set by the thread that releases a concurrency permit, or by the Redis
// client's thread) is the same tag a worker later takes from cq->Next() and
// runs: it would report the state written before the hand-off and read in
// Proceed() as a race. The thread that hands a tag over calls
// TsanHandOff(tag) just before; the worker calls TsanTakeOver(tag) before
// Proceed(). Both compile to nothing outside TSan builds.
#ifndef SLUICE_SERVER_PROXY_TSAN_EDGES_H_
#define SLUICE_SERVER_PROXY_TSAN_EDGES_H_

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace sluice {

inline void TsanHandOff([[maybe_unused]] void* tag) {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(tag);
#endif
}

inline void TsanTakeOver([[maybe_unused]] void* tag) {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(tag);
#endif
}

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_TSAN_EDGES_H_
