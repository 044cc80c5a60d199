#include "server/proxy/router.h"

namespace sluice {

int Router::Match(std::string_view method) const {
  const auto& routes = config_.routes();
  for (size_t i = 0; i < routes.size(); ++i) {
    const RouteSettings& r = routes[i];
    if (r.exact ? method == r.match : method.starts_with(r.match)) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

}  // namespace sluice
