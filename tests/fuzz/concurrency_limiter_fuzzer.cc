// libFuzzer target: the concurrency limiter and its FIFO queue
// (server/limits/concurrency_limiter.h).
//
// A fuzzed sequence of TryAcquire / AcquireOrEnqueue / Cancel / Release /
// SetLimits on one limiter, single-threaded, against a model. Waiters may
// call back into the limiter from OnGranted (release at once, or cancel
// another waiter whose grant is still pending on this thread). Checked:
//   - every permit is granted only while in-flight <= max_in_flight (a
//     lowered limit revokes nothing, but nothing is handed on above it);
//   - a waiter is queued only if the queue is then within max_queue;
//   - no barging: TryAcquire fails while anyone is queued;
//   - FIFO: OnGranted runs for the oldest waiter not cancelled;
//   - every waiter is granted exactly once or cancelled exactly once;
//     Cancel() == false only once a grant is owed, and then OnGranted runs;
//   - InFlight()/QueueDepth() equal the model after every operation, and
//     queue non-empty implies in-flight >= max_in_flight;
//   - at the end, cancelling everyone and releasing every permit leaves
//     0 in flight and an empty queue.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>

#include "server/limits/concurrency_limiter.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using sluice::ConcurrencyLimiter;
using sluice::fuzz::FuzzInput;

constexpr int kWaiters = 12;

struct Model;

class FuzzWaiter : public ConcurrencyLimiter::Waiter {
 public:
  enum State { kIdle, kQueued, kGrantOwed };
  Model* model = nullptr;
  int id = 0;
  State state = kIdle;
  int mode = 0;  // what OnGranted does: 0 keep, 1 release, 2 cancel another
  void OnGranted() override;
};

struct Model {
  ConcurrencyLimiter* limiter = nullptr;
  FuzzInput* in = nullptr;
  std::array<FuzzWaiter, kWaiters> waiters;
  std::deque<int> queue;  // queued or grant-owed, arrival order
  int64_t held = 0;       // permits owned by "callers"
  int64_t max_in_flight = 0;
  int64_t max_queue = 0;
  int depth = 0;  // OnGranted nesting (must stay 1: no recursion)

  void CheckCounts() const {
    FUZZ_CHECK(limiter->InFlight() == held, "InFlight %lld, model %lld",
               (long long)limiter->InFlight(), (long long)held);
    int64_t queued = 0;
    for (int id : queue) queued += waiters[id].state == FuzzWaiter::kQueued;
    FUZZ_CHECK(limiter->QueueDepth() == queued, "QueueDepth %lld, model %lld",
               (long long)limiter->QueueDepth(), (long long)queued);
    FUZZ_CHECK(queued == 0 || held >= max_in_flight,
               "%lld queued with %lld/%lld in flight", (long long)queued,
               (long long)held, (long long)max_in_flight);
    FUZZ_CHECK(limiter->max_in_flight() == max_in_flight &&
                   limiter->max_queue() == max_queue,
               "limits");
  }

  void Cancel(int id) {
    FuzzWaiter& w = waiters[id];
    const bool removed = limiter->Cancel(&w);
    if (w.state == FuzzWaiter::kQueued && removed) {
      queue.erase(std::find(queue.begin(), queue.end(), id));
      w.state = FuzzWaiter::kIdle;
    } else if (w.state == FuzzWaiter::kQueued) {
      // Popped by a grant not yet delivered (we are inside OnGranted).
      FUZZ_CHECK(depth > 0, "Cancel false for a queued waiter outside a grant");
      w.state = FuzzWaiter::kGrantOwed;
    } else {
      FUZZ_CHECK(!removed, "Cancel true for waiter %d not queued", id);
    }
  }

  void Release() {
    if (held == 0) return;
    --held;
    limiter->Release();
  }
};

void FuzzWaiter::OnGranted() {
  FUZZ_CHECK(model->depth == 0, "OnGranted recursed");
  FUZZ_CHECK(state == kQueued || state == kGrantOwed,
             "OnGranted for waiter %d in state %d", id, state);
  FUZZ_CHECK(!model->queue.empty() && model->queue.front() == id,
             "OnGranted out of FIFO order: waiter %d, front %d", id,
             model->queue.empty() ? -1 : model->queue.front());
  model->queue.pop_front();
  state = kIdle;
  ++model->held;
  FUZZ_CHECK(model->held <= model->max_in_flight,
             "granted beyond the limit: %lld > %lld", (long long)model->held,
             (long long)model->max_in_flight);
  ++model->depth;
  if (mode == 1) {
    model->Release();
  } else if (mode == 2) {
    model->Cancel(model->in->U8() % kWaiters);
  }
  --model->depth;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  Model m;
  m.in = &in;
  const int64_t max_in_flight = in.Range(-2, 6);
  const int64_t max_queue = in.Range(-2, 8);
  ConcurrencyLimiter limiter(max_in_flight, max_queue);
  m.limiter = &limiter;
  m.max_in_flight = std::max<int64_t>(0, max_in_flight);
  m.max_queue = std::max<int64_t>(0, max_queue);
  for (int i = 0; i < kWaiters; ++i) {
    m.waiters[i].model = &m;
    m.waiters[i].id = i;
  }
  m.CheckCounts();

  for (int step = 0; step < 5000 && !in.empty(); ++step) {
    const uint8_t op = in.U8() % 10;
    if (op == 0) {
      const bool anyone_queued = limiter.QueueDepth() > 0;
      const int64_t before = m.held;
      if (limiter.TryAcquire()) {
        FUZZ_CHECK(!anyone_queued, "TryAcquire barged past the queue");
        FUZZ_CHECK(before < m.max_in_flight, "TryAcquire beyond the limit");
        ++m.held;
      } else {
        FUZZ_CHECK(anyone_queued || before >= m.max_in_flight,
                   "TryAcquire refused a free permit");
      }
    } else if (op <= 3) {
      FuzzWaiter& w = m.waiters[in.U8() % kWaiters];
      w.mode = in.U8() % 3;
      if (w.state != FuzzWaiter::kIdle) continue;  // waits in one queue only
      const int64_t depth_before = limiter.QueueDepth();
      switch (limiter.AcquireOrEnqueue(&w)) {
        case ConcurrencyLimiter::AcquireResult::kAcquired:
          FUZZ_CHECK(depth_before == 0 && m.held < m.max_in_flight,
                     "kAcquired past the queue or the limit");
          ++m.held;
          break;
        case ConcurrencyLimiter::AcquireResult::kQueued:
          FUZZ_CHECK(depth_before + 1 <= m.max_queue,
                     "queued beyond max_queue: %lld + 1 > %lld",
                     (long long)depth_before, (long long)m.max_queue);
          w.state = FuzzWaiter::kQueued;
          m.queue.push_back(w.id);
          break;
        case ConcurrencyLimiter::AcquireResult::kRejectedQueueFull:
          FUZZ_CHECK(depth_before >= m.max_queue,
                     "rejected with room in the queue");
          break;
      }
    } else if (op <= 5) {
      m.Cancel(in.U8() % kWaiters);
    } else if (op <= 8) {
      m.Release();
    } else {
      m.max_in_flight = std::max<int64_t>(0, in.Range(-1, 6));
      m.max_queue = std::max<int64_t>(0, in.Range(-1, 8));
      limiter.SetLimits(m.max_in_flight, m.max_queue);
    }
    for (const FuzzWaiter& w : m.waiters) {
      FUZZ_CHECK(w.state != FuzzWaiter::kGrantOwed,
                 "waiter %d: Cancel said a grant was owed, none came", w.id);
    }
    m.CheckCounts();
  }

  // Tear down: everyone still queued is cancelled, every permit returned.
  while (!m.queue.empty()) m.Cancel(m.queue.front());
  while (m.held > 0) m.Release();
  FUZZ_CHECK(limiter.InFlight() == 0 && limiter.QueueDepth() == 0,
             "left %lld in flight, %lld queued", (long long)limiter.InFlight(),
             (long long)limiter.QueueDepth());
  return 0;
}
