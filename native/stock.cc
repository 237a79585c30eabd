// The gray's stock: counters JavaScript gave out ahead of need and the credits to use them, so
// the engine dials a pool connection's successor the moment its start header is in, and an
// explicit credit (WELCOME, GRANT) at once, each with a preamble it signs itself (verify.cc
// Sign) with the data key JavaScript handed over when the session started. See Stock in engine.h.
#include "engine.h"

#include <openssl/evp.h>
#include <unistd.h>

namespace relay {

Stock::~Stock() { EVP_MAC_CTX_free(mac); }

void Engine::OpenStock(Stock* stock) {
  Command c(Command::kOpenStock);
  c.stock = stock;
  c.id = stock->id;
  Post(c);
}

void Engine::AddToStock(uint32_t id, uint64_t firstCounter, uint64_t count, uint32_t credits, int hold) {
  Command c(Command::kStock);
  c.id = id;
  c.firstCounter = firstCounter;
  c.count = count;
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
    for (uint64_t i = 0; i < command.count; i++) stock->counters.push_back(command.firstCounter + i);
    stock->credits += command.credits;
    if (command.hold >= 0) stock->hold = command.hold != 0;
    return DialFromStock(stock);
  }
  // kCloseStock: the session ended. Its counters are never used after this, and its
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
  while (!stock->hold && stock->credits > 0 && !stock->counters.empty()) {
    auto* conn = new Conn(stock->dial);
    conn->id = NextId();
    conn->stockId = stock->id;
    conn->counter = stock->counters.front();
    stock->counters.pop_front();
    stock->credits -= 1;
    StartDial(conn);
  }
}

bool Engine::StockPreamble(const Conn* conn, uint8_t* preamble) {
  auto it = stocks_.find(conn->stockId);
  return it != stocks_.end() && it->second->mac != nullptr && Sign(it->second->mac, it->second->sessionId, conn->counter, preamble);
}

void Engine::CreditStock(uint32_t stockId) {
  auto it = stocks_.find(stockId);
  if (it == stocks_.end()) return;
  it->second->credits += 1;
  DialFromStock(it->second);
}

void Engine::ReturnToStock(Conn* conn) {
  auto it = stocks_.find(conn->stockId);
  if (it == stocks_.end() || conn->counter == 0) return;
  Stock* stock = it->second;
  stock->counters.push_front(conn->counter);
  conn->counter = 0;
  stock->credits += 1;
  stock->hold = true;
}

}  // namespace relay
