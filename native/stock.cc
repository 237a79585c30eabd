// The gray's stock: preambles JavaScript computed ahead of need and the credits to use them, so
// the engine dials a pool connection's successor the moment its start header is in, and an
// explicit credit (WELCOME, GRANT) without a preamble computed on demand. See Stock in engine.h.
#include "engine.h"

#include <unistd.h>

namespace relay {

void Engine::OpenStock(Stock* stock) {
  Command c(Command::kOpenStock);
  c.stock = stock;
  c.id = stock->id;
  Post(c);
}

void Engine::AddToStock(uint32_t id, std::vector<std::string> preambles, uint32_t credits, int hold) {
  Command c(Command::kStock);
  c.id = id;
  c.preambles = std::move(preambles);
  c.credits = credits;
  c.hold = hold;
  Post(c);
}

void Engine::CloseStock(uint32_t id) { PostForId(Command::kCloseStock, id); }

void Engine::RunStockCommand(const Command& command) {
  if (command.kind == Command::kOpenStock) {
    stocks_[command.id] = command.stock;
    return;
  }
  auto it = stocks_.find(command.id);
  if (it == stocks_.end()) return;
  Stock* stock = it->second;
  if (command.kind == Command::kStock) {
    for (const std::string& preamble : command.preambles) stock->preambles.push_back(preamble);
    stock->credits += command.credits;
    if (command.hold >= 0) stock->hold = command.hold != 0;
    return DialFromStock(stock);
  }
  // kCloseStock: the session ended. Its preambles are never used after this, and its
  // connections not yet in a pair go with it (JavaScript hears nothing more of them).
  stocks_.erase(it);
  std::vector<Conn*> dialed;
  for (auto& entry : conns_) {
    if (entry.second->stockId == command.id) dialed.push_back(entry.second);
  }
  for (Conn* conn : dialed) Drop(conn);
  delete stock;
}

void Engine::DialFromStock(Stock* stock) {
  while (!stock->hold && stock->credits > 0 && !stock->preambles.empty()) {
    auto* conn = new Conn(stock->dial);
    conn->id = NextId();
    conn->stockId = stock->id;
    conn->preamble.swap(stock->preambles.front());
    stock->preambles.pop_front();
    stock->credits -= 1;
    StartDial(conn);
  }
}

void Engine::CreditStock(uint32_t stockId) {
  auto it = stocks_.find(stockId);
  if (it == stocks_.end()) return;
  it->second->credits += 1;
  DialFromStock(it->second);
}

void Engine::ReturnToStock(Conn* conn) {
  auto it = stocks_.find(conn->stockId);
  if (it == stocks_.end() || conn->preamble.empty()) return;
  Stock* stock = it->second;
  stock->preambles.push_front(std::move(conn->preamble));
  stock->credits += 1;
  stock->hold = true;
}

}  // namespace relay
