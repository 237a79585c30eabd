// The gray's service tables: per white session, where each position of its service table (the
// index a start header carries) is forwarded by the engine itself. JavaScript replaces a table
// whenever the gray's file changes, so the next client of a service goes to its new target
// without redialing the pool; a connection already forwarded keeps its service.
#include "engine.h"

namespace relay {

void Engine::SetRoutes(uint32_t table, std::vector<Route> routes) {
  Command c(Command::kRoutes);
  c.id = table;
  c.routes = std::move(routes);
  Post(c);
}

const Route* Engine::RouteFor(uint32_t table, uint8_t service) const {
  auto it = routes_.find(table);
  if (it == routes_.end() || service >= it->second.size()) return nullptr;
  const Route& route = it->second[service];
  return route.forward ? &route : nullptr;
}

}  // namespace relay
