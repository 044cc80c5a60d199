// Route table: first route whose match fits a full method name.
//
// Built once per Config snapshot and immutable afterwards, so any worker
// may use it without a lock. Dies with the snapshot that owns it.
#ifndef SLUICE_SERVER_PROXY_ROUTER_H_
#define SLUICE_SERVER_PROXY_ROUTER_H_

#include <string_view>

#include "server/config/config.h"

namespace sluice {

class Router {
 public:
  explicit Router(const Config& config) : config_(config) {}

  // Index of the first matching route in config.routes(), or -1.
  int Match(std::string_view method) const;

 private:
  const Config& config_;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_PROXY_ROUTER_H_
