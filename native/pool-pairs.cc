// A gray's pairs on the white, kept by the engine alone: JavaScript holds no object per pair.
// A pair the engine joined from a gray's pool (lend.cc) carries what its end must report (the
// client's listener, connection id and address, when it was joined), so its end event
// (kPoolPairEnd) is enough for the statistics, the log and the webhooks; the state API asks for
// the live ones on demand (PoolPairs). The gray's idle timeout is enforced here: every so often
// the pool's pairs are looked at, and one whose byte total has not moved for the timeout is
// reset and its end flagged kEndedIdle. Looking every quarter of the timeout (within bounds that
// keep it cheap) costs nothing on the path of the bytes: a pair ends after at least the timeout
// of silence and at most the timeout plus two looks.
#include <errno.h>

#include <algorithm>

#include "engine.h"

namespace relay {

namespace {

int64_t IdleSweepMs(int64_t timeoutMs) { return std::min<int64_t>(5000, std::max<int64_t>(25, timeoutMs / 4)); }

}  // namespace

void Engine::SetIdleTimeout(uint32_t dataListenerId, uint32_t timeoutMs) {
  Command c(Command::kIdleTimeout);
  c.id = dataListenerId;
  c.count = timeoutMs;
  Post(c);
}

std::vector<PoolPairInfo> Engine::PoolPairs(uint32_t publicListenerId) {
  std::vector<PoolPairInfo> out;
  const int64_t now = NowMs();
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& entry : pairs_) {
    const Pair* pair = entry.second;
    if (pair->clientListenerId != publicListenerId) continue;
    PoolPairInfo info;
    info.id = pair->id;
    info.clientConnId = pair->clientConnId;
    info.client = pair->client;
    info.fromClient = pair->dirs[0].bytes.load(std::memory_order_relaxed);
    info.toClient = pair->dirs[1].bytes.load(std::memory_order_relaxed);
    info.ageMs = now - pair->joinedAtMs;
    out.push_back(info);
  }
  return out;
}

// The end of a pool's pair, with what JavaScript reports about it; null for any other pair.
Event* Engine::PoolPairEndEvent(Pair* pair) {
  if (pair->clientListenerId == 0) return nullptr;
  auto* event = new Event(Event::kPoolPairEnd);
  const int64_t now = NowMs();
  event->listenerId = pair->clientListenerId;
  event->hasAddresses = true;
  event->remote = pair->client;
  event->flags = (pair->endedIdle ? kEndedIdle : 0u) | (pair->reused ? kEndedReused : 0u);
  event->clientConnId = pair->clientConnId;
  event->ageMs = now - pair->joinedAtMs;
  event->idleMs = now - pair->idleSinceMs;
  return event;
}

void Engine::ApplyIdleTimeout(uint32_t dataListenerId, int64_t timeoutMs) {
  Pool* pool = PoolOf(dataListenerId);
  if (!pool) return;
  pool->idleTimeoutMs = timeoutMs;
  if (timeoutMs > 0) nextIdleSweepMs_ = std::min(nextIdleSweepMs_, NowMs() + IdleSweepMs(timeoutMs));
}

void Engine::SweepIdlePairs() {
  const int64_t now = NowMs();
  if (now < nextIdleSweepMs_) return;
  // The next look: the shortest interval among the pools that have a timeout, or never.
  int64_t every = INT64_MAX;
  for (auto& entry : listeners_) {
    const Pool* pool = entry.second->pool.get();
    if (pool && pool->idleTimeoutMs > 0) every = std::min(every, IdleSweepMs(pool->idleTimeoutMs));
  }
  nextIdleSweepMs_ = every == INT64_MAX ? INT64_MAX : now + every;
  if (every == INT64_MAX) return;
  std::vector<Pair*> idle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : pairs_) {
      Pair* pair = entry.second;
      if (pair->clientListenerId == 0 || pair->dead || pair->poolListenerId == 0) continue;
      auto it = listeners_.find(pair->poolListenerId);
      const Pool* pool = it != listeners_.end() ? it->second->pool.get() : nullptr;
      const uint64_t bytes = pair->dirs[0].bytes.load(std::memory_order_relaxed) + pair->dirs[1].bytes.load(std::memory_order_relaxed);
      if (bytes != pair->idleSeenBytes) {
        pair->idleSeenBytes = bytes;
        pair->idleSinceMs = now;
      } else if (pool && pool->idleTimeoutMs > 0 && now - pair->idleSinceMs >= pool->idleTimeoutMs) {
        idle.push_back(pair);
      }
    }
  }
  for (Pair* pair : idle) {
    pair->endedIdle = true;
    Finish(pair, ECANCELED);
  }
}

}  // namespace relay
