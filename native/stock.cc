// The gray's stock: a session's counters and the credits to use them, so the engine dials a pool
// connection's successor the moment its start header is in, and an explicit credit (WELCOME,
// GRANT) at once, each with a preamble it signs itself (verify.cc Sign) with the data key
// JavaScript handed over when the session started. See Stock in engine.h.
#include "engine.h"

#include <openssl/evp.h>
#include <unistd.h>

namespace relay {

namespace {

// Counters are JavaScript safe integers on both sides (src/engine/protocol/preamble.ts).
constexpr uint64_t kCounterMax = (uint64_t{1} << 53) - 1;

}  // namespace

Stock::~Stock() { EVP_MAC_CTX_free(mac); }

void Engine::OpenStock(Stock* stock) {
  Command c(Command::kOpenStock);
  c.stock = stock;
  c.id = stock->id;
  Post(c);
}

void Engine::AddToStock(uint32_t id, uint32_t credits, int hold) {
  Command c(Command::kStock);
  c.id = id;
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
  while (!stock->hold && stock->credits > 0 && (!stock->returned.empty() || stock->nextCounter <= kCounterMax)) {
    auto* conn = new Conn(stock->dial);
    conn->id = NextId();
    conn->stockId = stock->id;
    if (!stock->returned.empty()) {
      conn->counter = stock->returned.front();
      stock->returned.pop_front();
    } else {
      conn->counter = stock->nextCounter++;
    }
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
  stock->returned.push_front(conn->counter);
  conn->counter = 0;
  stock->credits += 1;
  stock->hold = true;
}

}  // namespace relay
