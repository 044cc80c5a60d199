#include "server/proxy/method_shapes.h"

#include <algorithm>
#include <utility>

#include "spdlog/spdlog.h"

namespace sluice {

ShapeBoard::ShapeBoard(std::string upstream, int workers,
                       prometheus::Family<prometheus::Counter>* fallbacks,
                       prometheus::Family<prometheus::Gauge>* reflected)
    : upstream_(std::move(upstream)),
      fallbacks_(fallbacks),
      reflected_(reflected),
      slots_(workers > 0 ? workers : 1),
      current_(std::make_shared<const Table>()) {
  if (reflected_ != nullptr) {
    // Shared with an earlier pool's board of the same name: this one is
    // the upstream's now, and has learned nothing yet.
    reflected_gauge_ = &reflected_->Add({{"upstream", upstream_}});
    reflected_gauge_->Set(0);
  }
}

// The gauge series stays: a new pool's board for the same upstream name
// shares it (one series per upstream name, ever).
ShapeBoard::~ShapeBoard() = default;

MethodShape ShapeBoard::ShapeFor(int worker, std::string_view path,
                                 MethodShape declared) {
  const uint64_t v = version_.load(std::memory_order_acquire);
  std::shared_ptr<const Table> local;  // a worker outside the slots
  const Table* table;
  if (worker >= 0 && worker < static_cast<int>(slots_.size())) {
    Slot& slot = slots_[worker];
    if (slot.version != v) {
      std::shared_ptr<const Table> old;  // freed after the unlock
      absl::MutexLock lock(&mu_);
      old = std::exchange(slot.table, current_);
      slot.version = v;
    }
    table = slot.table.get();
  } else {
    absl::MutexLock lock(&mu_);
    local = current_;
    table = local.get();
  }
  if (table->entries.empty()) return declared;
  auto it = table->entries.find(absl::string_view(path.data(), path.size()));
  if (it == table->entries.end()) return declared;
  const Entry& e = it->second;
  if (e.fell_back) return MethodShape{};
  if (declared.single_request || declared.unary) return declared;
  return e.shape;
}

std::shared_ptr<const ShapeBoard::Table> ShapeBoard::SwapLocked(
    std::shared_ptr<const Table> table) {
  std::shared_ptr<const Table> old = std::exchange(current_, std::move(table));
  version_.fetch_add(1, std::memory_order_release);
  return old;
}

void ShapeBoard::Publish(ShapeMap learned) {
  auto table = std::make_shared<Table>();
  std::shared_ptr<const Table> old;
  size_t count = 0;
  {
    absl::MutexLock lock(&mu_);
    // Fallbacks stay, whatever reflection says now.
    for (const auto& [path, e] : current_->entries) {
      if (e.fell_back) table->entries[path] = Entry{MethodShape{}, false, true};
    }
    for (auto& [path, shape] : learned) {
      if (count >= kMaxReflectedMethods) break;
      Entry& e = table->entries[path];
      e.shape = shape;
      e.learned = true;
      ++count;
    }
    table->learned = count;
    old = SwapLocked(std::move(table));
  }
  if (reflected_gauge_ != nullptr) {
    reflected_gauge_->Set(static_cast<double>(count));
  }
  publishes_.fetch_add(1, std::memory_order_release);
}

bool ShapeBoard::MarkFellBack(const std::vector<std::string>& paths) {
  std::shared_ptr<const Table> old;  // freed after the unlock
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Table> table;
  for (const std::string& path : paths) {
    auto it = current_->entries.find(path);
    if (it != current_->entries.end() && it->second.fell_back) continue;
    if (table == nullptr) table = std::make_shared<Table>(*current_);
    table->entries[path].fell_back = true;
  }
  if (table == nullptr) return false;
  old = SwapLocked(std::move(table));
  return true;
}

void ShapeBoard::Fallback(std::string_view path) {
  if (!MarkFellBack({std::string(path)})) return;
  spdlog::warn(
      "upstream \"{}\": a call of {} broke the method's declared shape (a "
      "second request or response on a one-message side); its calls take "
      "the general path from now on",
      upstream_, path);
  if (fallbacks_ != nullptr) {
    fallbacks_->Add({{"upstream", upstream_}, {"method", std::string(path)}})
        .Increment();
  }
}

void ShapeBoard::InheritFallbacks(const ShapeBoard& earlier) {
  MarkFellBack(earlier.fallen_back());
}

std::vector<std::string> ShapeBoard::fallen_back() const {
  std::vector<std::string> paths;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [path, e] : current_->entries) {
      if (e.fell_back) paths.push_back(path);
    }
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

size_t ShapeBoard::learned_size() const {
  absl::MutexLock lock(&mu_);
  return current_->learned;
}

}  // namespace sluice
