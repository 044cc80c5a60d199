// What the admin API needs from the daemon. Implemented by the Daemon;
// called from the admin server's own threads, so every method is
// thread-safe.
#ifndef SLUICE_SERVER_ADMIN_ADMIN_BACKEND_H_
#define SLUICE_SERVER_ADMIN_ADMIN_BACKEND_H_

#include <memory>

#include "server/config/config.h"
#include "server/limits/limit_registry.h"
#include "sluice/admin/v1/admin.pb.h"

namespace sluice {

class AdminBackend {
 public:
  virtual ~AdminBackend() = default;
  virtual sluice::admin::v1::GetStatusResponse Status() = 0;
  virtual std::shared_ptr<const Config> CurrentConfig() = 0;
  // Starts a drain; false if one is already under way.
  virtual bool RequestDrain() = 0;
  // The live limits (outlives the admin server).
  virtual LimitRegistry* Limits() = 0;
};

}  // namespace sluice

#endif  // SLUICE_SERVER_ADMIN_ADMIN_BACKEND_H_
