// Several engine threads as one engine (engine.h Group): the threads, the one event queue they
// share, the pools' shared parts, the stocks' parts, and how a client and a pooled data
// connection meet when the kernel gave them to different threads.
//
// Every listening port is open once per thread (SO_REUSEPORT), so each thread accepts its share
// of clients and of the gray's data connections, and keeps the verified ones in its own part of
// the gray's pool. A client is joined on its own thread with an idle connection of that thread
// when there is one, before JavaScript hears of it. Otherwise JavaScript hears of it (and keeps
// it in its books: its wait, the grant it raises) and admits it; when its thread has no idle
// connection and another has one (each thread publishes in the SharedPool the idle connections
// and waiting clients it still holds), that thread is asked (kWant): it takes the connection out
// of its epoll set and its idle list and posts it back (kAdopt), and the client's thread joins
// the two. A data connection verified on a thread where no client waits goes to a thread where
// one does, the same way. A descriptor moves once per connection, and again only if the client
// it went to was served or left on the way; only when the threads' pools are uneven, and the
// bytes of a pair never leave its thread.
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "engine.h"

namespace relay {

Group::Group(uint32_t threads) {
  for (uint32_t i = 0; i < threads; i++) engines_.emplace_back(new Engine(this, i, threads));
}

Group::~Group() {
  engines_.clear();
  for (Event* event : batch_) delete event;
}

bool Group::Start(std::string* why) {
  for (auto& engine : engines_) {
    if (!engine->Start(why)) {
      Stop();
      return false;
    }
  }
  return true;
}

void Group::Stop() {
  for (auto& engine : engines_) engine->Stop();
}

Engine* Group::For(uint32_t id) {
  if (movedCount_.load(std::memory_order_acquire) != 0) {
    std::lock_guard<std::mutex> lock(movedMutex_);
    auto it = moved_.find(id);
    if (it != moved_.end()) return engines_[it->second].get();
  }
  return engines_[id % engines_.size()].get();
}

void Group::Moved(uint32_t id, uint32_t to) {
  std::lock_guard<std::mutex> lock(movedMutex_);
  moved_[id] = to;
  movedCount_.store(moved_.size(), std::memory_order_release);
}

bool Group::IsMoved(uint32_t id) {
  std::lock_guard<std::mutex> lock(movedMutex_);
  return moved_.count(id) != 0;
}

void Group::Unmoved(uint32_t id) {
  std::lock_guard<std::mutex> lock(movedMutex_);
  moved_.erase(id);
  movedCount_.store(moved_.size(), std::memory_order_release);
}

// A thread's events of one loop turn, appended to the one queue; with post, the thread-safe
// function is called unless a call is already on its way (until JavaScript takes the queue), so
// JavaScript is entered once however many threads had something to say. Without post the
// events wait for the next call, or for JavaScript to take them (engine.cc EndTurn).
void Group::Deliver(std::vector<Event*>* events, bool post) {
  bool call;
  {
    std::lock_guard<std::mutex> lock(batchMutex_);
    if (batch_.empty()) batch_.swap(*events);
    else batch_.insert(batch_.end(), events->begin(), events->end());
    call = post && !posted_;
    if (call) posted_ = true;
  }
  events->clear();
  // Fails only while the function is being torn down; the destructor frees what is left.
  if (call) napi_call_threadsafe_function(onEvent, nullptr, napi_tsfn_nonblocking);
}

std::vector<Event*> Group::TakeBatch() {
  std::vector<Event*> taken;
  std::lock_guard<std::mutex> lock(batchMutex_);
  taken.swap(batch_);
  posted_ = false;
  return taken;
}

std::shared_ptr<SharedPool> Group::Share(uint32_t dataListenerId) {
  std::lock_guard<std::mutex> lock(sharesMutex_);
  std::shared_ptr<SharedPool>& pool = shares_[dataListenerId];
  if (!pool) pool = std::make_shared<SharedPool>();
  return pool;
}

void Group::ForgetShare(uint32_t listenerId) {
  std::lock_guard<std::mutex> lock(sharesMutex_);
  shares_.erase(listenerId);
}

namespace {

// How often a data connection may move between threads at most. It moves only toward a
// client waiting at that moment, so a second move takes a client that left or was served on
// the way; the bound only keeps a pathological run of those finite.
constexpr uint8_t kMaxHops = 4;

// The thread other than those in skip (a bit mask) with the most in counts, or -1 for none.
int Most(const std::atomic<int32_t>* counts, uint32_t threads, uint64_t skip) {
  int best = -1;
  int32_t most = 0;
  for (uint32_t i = 0; i < threads; i++) {
    if (skip & (uint64_t{1} << i)) continue;
    int32_t n = counts[i].load();  // seq_cst: see Publish
    if (n > most) {
      most = n;
      best = static_cast<int>(i);
    }
  }
  return best;
}

}  // namespace

// A slot among the port's connections still reading their prefix (every thread's copy counts).
bool Engine::TakePending(Listener* listener) {
  uint32_t pending = listener->pending->load(std::memory_order_relaxed);
  do {
    if (pending >= listener->maxPending) return false;
  } while (!listener->pending->compare_exchange_weak(pending, pending + 1, std::memory_order_relaxed));
  return true;
}

// This thread's live counts, for the others to see. Sequentially consistent with the loads in
// Most: a thread that queues a connection publishes it and then looks for a client waiting
// elsewhere, and one that queues a client publishes it and then looks for a connection, so when
// both happen at once at least one of them sees the other (neither is left waiting).
void Engine::Publish(Pool* pool) {
  if (count_ == 1) return;
  pool->shared->idle[index_].store(static_cast<int32_t>(pool->liveIdle));
  pool->shared->waiting[index_].store(static_cast<int32_t>(pool->liveWaiting));
}

// A client here waits: the thread with the most idle connections is asked for one.
bool Engine::AskForIdle(Pool* pool, uint32_t dataListenerId) {
  if (count_ == 1) return false;
  uint64_t asked = uint64_t{1} << index_;
  int to = Most(pool->shared->idle, count_, asked);
  if (to < 0) return false;
  Command c(Command::kWant);
  c.id = dataListenerId;
  c.connA = index_;
  c.count = asked | (uint64_t{1} << to);
  group_->At(static_cast<uint32_t>(to))->Post(c);
  return true;
}

// Another thread's client waits: one of this thread's idle connections goes there, or the ask
// goes on to a thread not yet asked that has one.
void Engine::OnWant(const Command& command) {
  uint32_t from = command.connA;
  Pool* pool = PoolOf(command.id);
  if (pool) {
    if (uint32_t dataId = TakeIdle(pool)) return HandOver(HeldConn(dataId), from, command.id);
    int next = Most(pool->shared->idle, count_, command.count);
    if (next >= 0) {
      Command c = command;
      c.count |= uint64_t{1} << next;
      return group_->At(static_cast<uint32_t>(next))->Post(c);
    }
  }
  // None anywhere: the client waits in its thread's pool for the next one verified (JavaScript
  // knows it waits and raises the grant).
}

// A held data connection leaves this thread for thread to's pool: out of this epoll set and
// these books. The events of this turn go first, so JavaScript hears of the connection (its
// kAccepted) before anything the other thread reports about it.
void Engine::HandOver(Conn* conn, uint32_t to, uint32_t dataListenerId) {
  Unqueue(conn);
  epoll_ctl(epollFd_, EPOLL_CTL_DEL, conn->fd, nullptr);
  conns_.erase(conn->id);
  connsHeld_.fetch_sub(1, std::memory_order_relaxed);
  conn->moved = true;
  conn->hops += 1;
  FlushEvents();
  // From now on a close JavaScript sends goes there (and one that reaches this thread is passed
  // on); one that arrives there before the connection waits for it (closeOnAdopt_).
  group_->Moved(conn->id, to);
  Command c(Command::kAdopt);
  c.conn = conn;
  c.id = dataListenerId;
  group_->At(to)->Post(c);
}

// A data connection from another thread's pool: held here (epoll reports at once whatever
// happened to it on the way) and given to the oldest client waiting, or kept idle.
void Engine::OnAdopt(Conn* conn, uint32_t dataListenerId) {
  conns_[conn->id] = conn;
  connsHeld_.fetch_add(1, std::memory_order_relaxed);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = conn;
  auto it = listeners_.find(dataListenerId);
  Pool* pool = it != listeners_.end() ? it->second->pool.get() : nullptr;
  // JavaScript closed it on its way here, taking it for an idle one (a surplus, a recycle): it
  // may still serve a client waiting here, as with one thread, where the engine joins a waiting
  // client before JavaScript hears of the connection; otherwise it is closed. Never kept:
  // JavaScript no longer counts it, so an idle one would be held for good and granted anew.
  const bool closed = closeOnAdopt_.erase(conn->id) != 0;
  if (closed && !(pool && pool->liveWaiting > 0)) return Drop(conn);
  if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, conn->fd, &ev) < 0 || !pool) return Gone(conn, kGoneClosed);
  if (closed) {
    if (!JoinWaiting(pool, conn)) Drop(conn);
    return;
  }
  Pooled(it->second, conn);
}

// conn was just queued idle here with no client waiting here: if a client waits on another
// thread, it goes there. Each move goes to a thread that had a client waiting when this one
// looked; only a client served or gone meanwhile makes it move again, and kMaxHops bounds that.
bool Engine::PushToWaiting(Pool* pool, Conn* conn) {
  if (count_ == 1 || conn->hops >= kMaxHops) return false;
  int to = Most(pool->shared->waiting, count_, uint64_t{1} << index_);
  if (to < 0) return false;
  HandOver(conn, static_cast<uint32_t>(to), pool->listenerId);
  return true;
}

// A join of two held connections on different threads (JavaScript joined a client and a data
// connection itself): side B's thread hands its connection over, once, to side A's, which then
// joins them. True when the join waits for that (kFetchForJoin); a connection this thread holds
// again (kJoin with conn) is taken back into its books first.
bool Engine::JoinAcross(const Command& command) {
  if (command.conn != nullptr) {
    Conn* conn = command.conn;
    conns_[conn->id] = conn;
    connsHeld_.fetch_add(1, std::memory_order_relaxed);
    // Registered as every held connection is, so the join finds it as it expects.
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = conn;
    epoll_ctl(epollFd_, EPOLL_CTL_ADD, conn->fd, &ev);
    return false;
  }
  if (count_ == 1 || HeldConn(command.connB) != nullptr) return false;
  Engine* there = group_->For(command.connB);
  if (there == this) return false;
  Command fetch = command;
  fetch.kind = Command::kFetchForJoin;
  fetch.connA = index_;  // where to send it; the pair keeps its ids in the kJoin posted back
  fetch.count = command.connA;
  there->Post(fetch);
  return true;
}

void Engine::FetchForJoin(const Command& command) {
  Command join(Command::kJoin);
  join.pair = command.pair;
  join.id = command.id;
  join.connA = static_cast<uint32_t>(command.count);
  join.connB = command.connB;
  if (Conn* conn = HeldConn(command.connB)) {
    Unqueue(conn);
    epoll_ctl(epollFd_, EPOLL_CTL_DEL, conn->fd, nullptr);
    conns_.erase(conn->id);
    connsHeld_.fetch_sub(1, std::memory_order_relaxed);
    FlushEvents();
    join.conn = conn;
  }
  // Without it (gone meanwhile) the join ends at once there, as with one thread.
  group_->At(command.connA)->Post(join);
}

}  // namespace relay
