// Pairing on the engine thread: a gray's pool (engine.h Pool, owned by its data listener; each
// public listener of the gray points at it). A data connection whose preamble the engine verified
// (verify.cc) joins the oldest waiting client at once, or waits in the pool. A client accepted on
// a public port while the pool's active pairs are below the limit JavaScript sets (the
// active-client limit; 0 while an authorize hook must see every client) is joined at once with
// the newest idle connection, or, with none, waits in the pool for the next one verified;
// otherwise JavaScript hears of it, decides, and admits it (Admit): it is then joined with an
// idle connection or waits in the pool the same way. Joining, the
// engine writes the start header it builds from the client's addresses and its port's service
// index (every public port of a gray shares the one pool), and JavaScript hears
// kJoinedLent afterwards, for the connection's id, the events and the statistics (and of a
// client waiting in the pool when it is accepted, for its limits). No thread
// hand-off sits between a client's SYN and its first bytes to the gray, nor between a data
// connection's preamble and its place in the pool. JavaScript keeps the waiting clients' limits
// (how many, how long: it closes a client, and the pool skips it) and takes an idle connection
// back only by closing it.
#include "engine.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <algorithm>
#include <memory>

namespace relay {

namespace {

// An address as the start header carries it: family 4 (IPv4, or IPv6 mapping one) or 6.
struct HeaderAddress {
  int family = 0;
  uint8_t bytes[16] = {};
  uint16_t port = 0;  // host order
};

HeaderAddress ForHeader(const sockaddr_storage& ss) {
  HeaderAddress out;
  if (ss.ss_family == AF_INET) {
    auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    out.family = 4;
    memcpy(out.bytes, &in.sin_addr, 4);
    out.port = ntohs(in.sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    out.port = ntohs(in6.sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
      out.family = 4;
      memcpy(out.bytes, &in6.sin6_addr.s6_addr[12], 4);
    } else {
      out.family = 6;
      memcpy(out.bytes, &in6.sin6_addr, 16);
    }
  }
  return out;
}

void AsMappedV6(HeaderAddress* a) {
  if (a->family != 4) return;
  uint8_t v4[4];
  memcpy(v4, a->bytes, 4);
  memset(a->bytes, 0, 16);
  a->bytes[10] = 0xff;
  a->bytes[11] = 0xff;
  memcpy(&a->bytes[12], v4, 4);
  a->family = 6;
}

// The 40-byte start header, as src/engine/protocol/start-header.ts encodes it: version 2,
// family, source port, destination port, the service index, a reserved zero byte, then the source and the
// destination address in 16 bytes each (IPv4 in the first four). Both share one family: if
// either is IPv6, both are written as IPv6 (IPv4 mapped).
bool StartHeader(const sockaddr_storage& remote, const sockaddr_storage& local, uint8_t service, std::string* out) {
  HeaderAddress src = ForHeader(remote);
  HeaderAddress dst = ForHeader(local);
  if (src.family == 0 || dst.family == 0) return false;
  if (src.family != dst.family) {
    AsMappedV6(&src);
    AsMappedV6(&dst);
  }
  out->assign(kStartHeaderBytes, '\0');
  (*out)[0] = kStartHeaderVersion;
  (*out)[1] = static_cast<char>(src.family);
  (*out)[2] = static_cast<char>(src.port >> 8);
  (*out)[3] = static_cast<char>(src.port & 0xff);
  (*out)[4] = static_cast<char>(dst.port >> 8);
  (*out)[5] = static_cast<char>(dst.port & 0xff);
  (*out)[6] = static_cast<char>(service);
  memcpy(&(*out)[8], src.bytes, src.family == 4 ? 4 : 16);
  memcpy(&(*out)[24], dst.bytes, dst.family == 4 ? 4 : 16);
  return true;
}

}  // namespace

void Engine::UsePool(uint32_t publicListenerId, uint32_t dataListenerId, uint8_t service) {
  Command c(Command::kUsePool);
  c.id = publicListenerId;
  c.connA = dataListenerId;
  c.service = service;
  Post(c);
}

void Engine::Admit(uint32_t clientId) { PostForId(Command::kAdmit, clientId); }

void Group::SetActiveLimit(uint32_t dataListenerId, uint32_t limit) { Share(dataListenerId)->activeLimit.store(limit, std::memory_order_relaxed); }

Pool* Engine::PoolOf(uint32_t dataListenerId) {
  auto it = listeners_.find(dataListenerId);
  if (it == listeners_.end()) return nullptr;
  if (!it->second->pool) {
    it->second->pool.reset(new Pool());
    it->second->pool->shared = group_->Share(dataListenerId);
    it->second->pool->listenerId = dataListenerId;
  }
  return it->second->pool.get();
}

// The pool serving a public listener's clients, if both are still open.
Pool* Engine::PoolServing(uint32_t publicListenerId) {
  auto it = listeners_.find(publicListenerId);
  if (it == listeners_.end() || it->second->poolListenerId == 0) return nullptr;
  auto data = listeners_.find(it->second->poolListenerId);
  return data != listeners_.end() ? data->second->pool.get() : nullptr;
}

// A verified connection: the oldest client still waiting takes it, or a client waiting on
// another thread, or it waits.
void Engine::Pooled(Listener* dataListener, Conn* conn) {
  Pool* pool = dataListener->pool.get();
  if (JoinWaiting(pool, conn)) return;
  if (pool->idle.size() >= pool->pruneAt) PruneIdle(pool);
  QueueIdle(pool, conn);
  PushToWaiting(pool, conn);
}

// The oldest client waiting in this thread's part of the pool is joined with conn: true when
// one was.
bool Engine::JoinWaiting(Pool* pool, Conn* conn) {
  while (!pool->waiting.empty()) {
    Conn* client = HeldConn(pool->waiting.front());
    pool->waiting.pop_front();
    if (!client || client->queued != Conn::kQueuedWaiting || client->queuedIn != pool->listenerId) continue;
    Unqueue(client);
    Joining joined = JoinPooled(client, conn->id, false);
    if (joined == Joining::kJoined) return true;
    if (joined == Joining::kClientGone) Gone(client, kGoneClosed);
  }
  return false;
}

void Engine::QueueIdle(Pool* pool, Conn* conn) {
  pool->idle.push_back(conn->id);
  conn->queued = Conn::kQueuedIdle;
  conn->queuedIn = pool->listenerId;
  pool->liveIdle += 1;
  Publish(pool);
}

// Out of its pool's counts (taken out, or going away while listed).
void Engine::Unqueue(Conn* conn) {
  Conn::Queued was = conn->queued;
  if (was == Conn::kNotQueued) return;
  conn->queued = Conn::kNotQueued;
  auto it = listeners_.find(conn->queuedIn);
  Pool* pool = it != listeners_.end() ? it->second->pool.get() : nullptr;
  if (!pool) return;
  (was == Conn::kQueuedIdle ? pool->liveIdle : pool->liveWaiting) -= 1;
  Publish(pool);
}

// Forgets the idle connections that went away meanwhile.
void Engine::PruneIdle(Pool* pool) {
  std::vector<uint32_t>& idle = pool->idle;
  idle.erase(std::remove_if(idle.begin(), idle.end(), [this](uint32_t id) { return HeldConn(id) == nullptr; }), idle.end());
  pool->pruneAt = std::max<size_t>(16, 2 * idle.size());
}

// The newest idle connection still held (the likeliest to be alive), taken out of the pool; 0
// when there is none.
uint32_t Engine::TakeIdle(Pool* pool) {
  while (!pool->idle.empty()) {
    uint32_t dataId = pool->idle.back();
    pool->idle.pop_back();
    Conn* conn = HeldConn(dataId);
    if (conn && conn->queued == Conn::kQueuedIdle && conn->queuedIn == pool->listenerId) {
      Unqueue(conn);
      return dataId;
    }
  }
  return 0;
}

// A client JavaScript admitted: joined with an idle connection now, or waiting for one (of
// this thread, or asked of another's).
void Engine::AdmitClient(uint32_t clientId) {
  Conn* client = HeldConn(clientId);
  if (!client) return;  // gone meanwhile: JavaScript heard kGone
  auto listener = listeners_.find(client->listenerId);
  Pool* pool = PoolServing(client->listenerId);
  if (!pool) return Drop(client);  // its port or the gray's data port closed
  // Waiting already: JavaScript admits it again after its service got an index (a client
  // passed over meanwhile left the queue).
  if (client->queued == Conn::kQueuedWaiting && client->queuedIn == pool->listenerId) return;
  Unqueue(client);
  uint32_t dataId = TakeIdle(pool);
  if (dataId != 0) {
    Joining joined = JoinPooled(client, dataId, false);
    if (joined == Joining::kJoined) return;
    QueueIdle(pool, HeldConn(dataId));
    if (joined == Joining::kClientGone) Gone(client, kGoneClosed);
    return;
  }
  pool->waiting.push_back(clientId);
  client->queued = Conn::kQueuedWaiting;
  client->queuedIn = pool->listenerId;
  pool->liveWaiting += 1;
  Publish(pool);
  AskForIdle(pool, listener->second->poolListenerId);
}

// A client accepted while the pool's active pairs (over all threads) are below the limit needs
// no JavaScript: it is joined at once with an idle connection of its thread (none while others
// wait: they came first), taking a place among the active pairs (TryReserve). kNo: JavaScript
// decides.
Engine::Lent Engine::TakeLent(Listener* listener, Conn* client, int* error) {
  Pool* pool = PoolServing(listener->id);
  if (!pool) return Lent::kNo;
  SharedPool& shared = *pool->shared;
  if (shared.active.load(std::memory_order_relaxed) >= shared.activeLimit.load(std::memory_order_relaxed)) return Lent::kNo;
  if (pool->liveWaiting == 0 && TryReserve(shared)) {
    if (uint32_t dataId = TakeIdle(pool)) {
      Joining joined = JoinPooled(client, dataId, true, error);
      if (joined == Joining::kJoined) return Lent::kJoined;
      QueueIdle(pool, HeldConn(dataId));
      shared.active.fetch_sub(1, std::memory_order_relaxed);
      return joined == Joining::kClientGone ? Lent::kGone : Lent::kNo;
    }
    shared.active.fetch_sub(1, std::memory_order_relaxed);
  }
  // No idle connection: JavaScript hears of the client first and admits it (AdmitClient, which
  // asks another thread when there are several). A client the engine queued here by itself could
  // be joined by the next connection while JavaScript refuses it (its queue full) or loses its
  // wait timer, which the e2e abort test caught with one thread and with four.
  return Lent::kNo;
}

// A place among the pool's active pairs, if there is room.
bool Engine::TryReserve(SharedPool& shared) {
  uint32_t active = shared.active.load(std::memory_order_relaxed);
  do {
    if (active >= shared.activeLimit.load(std::memory_order_relaxed)) return false;
  } while (!shared.active.compare_exchange_weak(active, active + 1, std::memory_order_relaxed));
  return true;
}

// Joins a held client with the pool's held connection dataId, the start header first (naming
// the service of the client's port). kNotNow (nothing done) when the client's local address is
// unknown, its port closed (JavaScript closes its clients) or points at no pool now (its service
// has no index: JavaScript admits it again once it has). kClientGone when the client was reset
// (error: its errno), which its first read finds out before the pooled connection is spent on it:
// the caller reports and closes it. reserved: the client holds a place among the pool's active
// pairs, which the pair takes over.
//
// That read is the one the pair would make first anyway: what the client sent already (an HTTP
// request, typically) goes out behind the start header in one send.
Engine::Joining Engine::JoinPooled(Conn* client, uint32_t dataId, bool reserved, int* error) {
  auto it = listeners_.find(client->listenerId);
  if (it == listeners_.end() || it->second->poolListenerId == 0) return Joining::kNotNow;
  const Listener* listener = it->second;
  std::string header;
  if (!client->hasLocal || !StartHeader(client->remote, client->local, listener->service, &header)) return Joining::kNotNow;
  ssize_t n;
  do {
    n = recv(client->fd, copyBuffer_.data(), copyBuffer_.size(), MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    if (error) *error = errno;
    return Joining::kClientGone;
  }
  auto* pair = new Pair();
  pair->id = NextId();
  const Conn* data = HeldConn(dataId);
  if (data && data->framed) {
    // A framed start header, and the client's bytes as a frame. The join is worth a successor
    // only while the pool, over all threads, is below its refill level: a data connection that
    // comes back after its pair fills the pool again, so a steady load needs no new ones.
    Pool* pool = PoolServing(client->listenerId);
    int64_t idle = pool ? pool->liveIdle : 0;
    for (uint32_t i = 0; pool && i < count_; i++) {
      if (i != index_) idle += pool->shared->idle[i].load(std::memory_order_relaxed);
    }
    pair->noCredit = pool && idle >= static_cast<int64_t>(pool->shared->refillLevel.load(std::memory_order_relaxed));
    header[0] = kStartHeaderVersionFramed;
    header[kStartHeaderFlagsOffset] = static_cast<char>(pair->noCredit ? 0 : kStartHeaderCredit);
    if (n > 0) {
      char length[kFrameLengthBytes];
      PutFrameLength(length, static_cast<uint32_t>(n));
      header.append(length, kFrameLengthBytes);
    }
  }
  if (n > 0) {
    header.append(copyBuffer_.data(), static_cast<size_t>(n));
    pair->dirs[0].bytes.store(static_cast<uint64_t>(n), std::memory_order_relaxed);
  }
  pair->dirs[0].head = std::move(header);  // to side B, the data connection, ahead of the client's bytes
  pair->clientListenerId = client->listenerId;
  pair->clientConnId = client->id;
  pair->client = client->remote;
  pair->joinedAtMs = pair->idleSinceMs = NowMs();
  if (reserved) pair->poolListenerId = listener->poolListenerId;
  Register(pair);
  auto* event = new Event(Event::kJoinedLent);
  event->id = pair->id;
  event->listenerId = client->listenerId;
  event->a = client->id;
  event->b = dataId;
  event->code = pair->noCredit ? 1 : 0;
  event->hasAddresses = true;
  event->remote = client->remote;  // for a report; the local address went into the start header
  Emit(event);  // before anything the pair reports
  StartJoin(pair, client->id, dataId);
  return Joining::kJoined;
}

void Engine::PoolPairEnded(Pair* pair) {
  if (pair->poolListenerId == 0) return;
  auto it = listeners_.find(pair->poolListenerId);
  pair->poolListenerId = 0;
  if (it != listeners_.end() && it->second->pool) it->second->pool->shared->active.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace relay
