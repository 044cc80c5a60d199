// What the data path knows of one upstream's method shapes beyond the
// config's descriptor sets: the shapes its server reflection gave
// (reflection_fetcher.h), and the methods whose calls broke their declared
// shape at run time, which take the general path from then on.
//
// A ShapeBoard belongs to one upstream of an UpstreamPool and lives as long
// as that pool (a reload that keeps the upstream keeps it, and with it its
// fallbacks; a reload that rebuilds the pool carries the fallbacks of an
// upstream of the same name and target over, see InheritFallbacks). Its table
// is immutable and swapped whole: the fetcher thread publishes learned shapes,
// any worker may mark a fallback (rare: once per method), and a worker reads
// through its own cached copy, re-read only when the version moves, so an
// accept costs one atomic load and, when the table is not empty, one hash
// lookup.
#ifndef SLUICE_SERVER_PROXY_METHOD_SHAPES_H_
#define SLUICE_SERVER_PROXY_METHOD_SHAPES_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"

namespace sluice {

// A method's shape as the data path uses it (grpc_metrics.h, CallSeries).
struct MethodShape {
  bool unary = false;           // one request, one response
  bool single_request = false;  // one request (unary or server_stream)
};

// "/pkg.Service/Method" -> shape.
using ShapeMap = absl::flat_hash_map<std::string, MethodShape>;

// Most methods one upstream's reflection may declare (the rest keep the
// general path): bounds the table's memory whatever the upstream serves.
inline constexpr size_t kMaxReflectedMethods = 10000;

class ShapeBoard {
 public:
  // `workers`: the data plane's worker count (one cached copy each).
  // The metric families may be null (no metrics).
  ShapeBoard(std::string upstream, int workers,
             prometheus::Family<prometheus::Counter>* fallbacks,
             prometheus::Family<prometheus::Gauge>* reflected);
  ~ShapeBoard();
  ShapeBoard(const ShapeBoard&) = delete;
  ShapeBoard& operator=(const ShapeBoard&) = delete;

  // Worker `worker`'s thread, at accept: the shape a call of `path` takes.
  // `declared`: the shape the config's descriptor sets give (all false
  // when they do not name the method), which wins over reflection; a
  // method that fell back takes the general path (all false).
  MethodShape ShapeFor(int worker, std::string_view path, MethodShape declared);

  // Fetcher thread: the shapes the upstream's reflection gave now (empty:
  // it serves none), replacing the previous ones.
  void Publish(ShapeMap learned);

  // Any thread: a call of `path` broke its shape; the method takes the
  // general path from now on. Counted once per method.
  void Fallback(std::string_view path);

  // Reload thread, before this board is used: marks the methods that fell
  // back on `earlier` (the previous pool's board of the same upstream) as
  // fallen back here too, without logging or counting them again.
  void InheritFallbacks(const ShapeBoard& earlier);
  // The methods that fell back, sorted.
  std::vector<std::string> fallen_back() const;

  const std::string& upstream() const { return upstream_; }
  size_t learned_size() const;
  // How many times Publish ran (tests wait for a fetch with it).
  uint64_t publishes() const {
    return publishes_.load(std::memory_order_acquire);
  }

 private:
  struct Entry {
    MethodShape shape;
    bool learned = false;    // reflection gave its shape
    bool fell_back = false;  // see Fallback
  };
  struct Table {
    absl::flat_hash_map<std::string, Entry> entries;
    size_t learned = 0;
  };
  struct alignas(64) Slot {
    uint64_t version = 0;
    std::shared_ptr<const Table> table;
  };
  // Marks `paths` as fallen back (a new table, swapped in); false if every
  // one already was (nothing changed).
  bool MarkFellBack(const std::vector<std::string>& paths);
  // Installs `table` as current (mu_ held); the old one is returned to be
  // freed after the unlock.
  std::shared_ptr<const Table> SwapLocked(std::shared_ptr<const Table> table)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string upstream_;
  prometheus::Family<prometheus::Counter>* const fallbacks_;
  prometheus::Family<prometheus::Gauge>* const reflected_;
  prometheus::Gauge* reflected_gauge_ = nullptr;
  std::atomic<uint64_t> version_{1};
  std::atomic<uint64_t> publishes_{0};
  std::vector<Slot> slots_;  // by worker, each its worker's thread only
  mutable absl::Mutex mu_;
  std::shared_ptr<const Table> current_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_METHOD_SHAPES_H_
