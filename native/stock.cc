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

void Engine::AddToStock(uint32_t id, uint32_t credits) {
  Command c(Command::kStock);
  c.id = id;
  c.credits = credits;
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
    stock->credits += command.credits;
    return DialFromStock(stock);
  }
  // kCloseStock: the session ended. Its preambles are never used after this (the group dropped
  // them), and its connections not yet in a pair go with it (JavaScript hears nothing more).
  stocks_.erase(it);
  std::vector<Conn*> dialed;
  for (auto& entry : conns_) {
    if (entry.second->stockId == command.id) dialed.push_back(entry.second);
  }
  for (Conn* conn : dialed) Drop(conn);
  delete stock;
}

// One preamble per dial, the next in counter order whichever thread takes it.
void Engine::DialFromStock(Stock* stock) {
  StockShare& share = *stock->share;
  while (!share.hold.load() && stock->credits > 0) {
    std::string preamble;
    {
      std::lock_guard<std::mutex> lock(share.mutex);
      if (share.preambles.empty()) return;
      preamble.swap(share.preambles.front());
      share.preambles.pop_front();
    }
    auto* conn = new Conn(stock->dial);
    conn->id = NextId();
    conn->stockId = stock->id;
    conn->preamble.swap(preamble);
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
  {
    std::lock_guard<std::mutex> lock(stock->share->mutex);
    stock->share->preambles.push_front(std::move(conn->preamble));
  }
  stock->credits += 1;
  stock->share->hold.store(true);
}

}  // namespace relay
