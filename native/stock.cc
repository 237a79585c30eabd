// The gray's stock: counters JavaScript gave out ahead of need and the credits to use them, so
// the engine dials a pool connection's successor the moment its start header is in, and an
// explicit credit (WELCOME, GRANT) at once, each with a preamble it signs itself (verify.cc
// Sign) with the data key JavaScript handed over when the session started. With several engine
// threads every thread has its part of the stock (its credits, its keyed MAC) and all take
// counters from one queue (Group's OpenStock, AddToStock, CloseStock). See Stock in engine.h.
#include "engine.h"

#include <openssl/evp.h>
#include <string.h>
#include <unistd.h>

namespace relay {

Stock::~Stock() { EVP_MAC_CTX_free(mac); }

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
  // kCloseStock: the session ended. Its counters are never used after this (the group dropped
  // them), and its connections not yet in a pair go with it (JavaScript hears nothing more).
  stocks_.erase(it);
  std::vector<Conn*> dialed;
  for (auto& entry : conns_) {
    if (entry.second->stockId == command.id) dialed.push_back(entry.second);
  }
  for (Conn* conn : dialed) Drop(conn);
  delete stock;
}

// One counter per dial, the next in order whichever thread takes it.
void Engine::DialFromStock(Stock* stock) {
  StockShare& share = *stock->share;
  while (!share.hold.load() && stock->credits > 0) {
    uint64_t counter;
    {
      std::lock_guard<std::mutex> lock(share.mutex);
      if (share.counters.size() <= kStockLowWater) postNow_ = true;
      if (share.counters.empty()) return;
      counter = share.counters.front();
      share.counters.pop_front();
    }
    auto* conn = new Conn(stock->dial);
    conn->id = NextId();
    conn->stockId = stock->id;
    conn->counter = counter;
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
  {
    std::lock_guard<std::mutex> lock(stock->share->mutex);
    stock->share->counters.push_front(conn->counter);
  }
  conn->counter = 0;
  stock->credits += 1;
  stock->share->hold.store(true);
}

// Each thread's part gets its own keyed MAC from the same key (a context is not thread-safe).
uint32_t Group::OpenStock(const Conn& dial, const std::string& keys) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(keys.data());
  std::vector<Stock*> parts;
  for (size_t i = 0; i < engines_.size(); i++) {
    auto* part = new Stock();
    part->dial = dial;
    memcpy(part->sessionId, bytes, kSessionIdBytes);
    part->mac = KeyedMac(bytes + kSessionIdBytes);
    parts.push_back(part);
    if (part->mac == nullptr) {
      for (Stock* made : parts) delete made;
      return 0;
    }
  }
  uint32_t id = engines_[0]->NextId();
  auto share = std::make_shared<StockShare>();
  for (size_t i = 0; i < engines_.size(); i++) {
    parts[i]->id = id;
    parts[i]->share = share;
    engines_[i]->OpenStock(parts[i]);
  }
  stocks_[id] = StockParts{share, 0};
  return id;
}

void Group::AddToStock(uint32_t id, uint64_t firstCounter, uint64_t count, uint32_t credits, int hold) {
  auto it = stocks_.find(id);
  if (it == stocks_.end()) return;
  StockShare& share = *it->second.share;
  if (count > 0) {
    std::lock_guard<std::mutex> lock(share.mutex);
    for (uint64_t i = 0; i < count; i++) share.counters.push_back(firstCounter + i);
  }
  if (hold >= 0) share.hold.store(hold != 0);
  std::vector<uint32_t> dealt(engines_.size(), 0);
  for (uint32_t i = 0; i < credits; i++) dealt[it->second.nextCredit++ % engines_.size()] += 1;
  // New counters or a release may let a thread with credits dial: every thread looks.
  bool everyone = count > 0 || hold == 0;
  for (size_t i = 0; i < engines_.size(); i++) {
    if (dealt[i] > 0 || everyone) engines_[i]->AddToStock(id, dealt[i]);
  }
}

void Group::CloseStock(uint32_t id) {
  auto it = stocks_.find(id);
  if (it == stocks_.end()) return;
  {
    std::lock_guard<std::mutex> lock(it->second.share->mutex);
    it->second.share->counters.clear();
  }
  stocks_.erase(it);
  for (auto& engine : engines_) engine->CloseStock(id);
}

}  // namespace relay
