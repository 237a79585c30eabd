// The engine's thread and its command queue: starting and stopping the thread, the calls the JS
// thread makes (each posts a command and wakes the engine), the epoll loop that dispatches
// events to the pairs (pump.cc), the listeners and held connections (intake.cc) and the dials
// (dial.cc), and the cleanup when the environment goes away. See engine.h for the design.
#include "engine.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace relay {

bool Engine::Start(std::string* why) {
  epollFd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epollFd_ < 0) return Fail(why, "epoll_create1");
  wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakeFd_ < 0) return Fail(why, "eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake descriptor is the only registration without a Kind
  if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, wakeFd_, &ev) < 0) return Fail(why, "epoll_ctl");
  thread_ = std::thread([this] { Run(); });
  // Named so that top -H, ps -L and /proc/<pid>/task/*/comm tell the engine's threads from
  // Node's (the bench splits a process's CPU by these names); named here, before Start returns,
  // so whoever started the engine sees the name.
  char name[16];
  snprintf(name, sizeof name, "relay-engine-%u", index_);
  pthread_setname_np(thread_.native_handle(), name);
  return true;
}

void Engine::Stop() {
  if (!thread_.joinable()) return;
  Command stop(Command::kStop);
  Post(stop);
  thread_.join();
}

void Engine::Join(Pair* pair, uint32_t connA, uint32_t connB) {
  Register(pair);
  Command c(Command::kJoin);
  c.pair = pair;
  c.id = pair->id;
  c.connA = connA;
  c.connB = connB;
  Post(c);
}

void Engine::PostForId(Command::Kind kind, uint32_t id, uint32_t connA) {
  Command c(kind);
  c.id = id;
  c.connA = connA;
  Post(c);
}

void Engine::Destroy(uint32_t id) { PostForId(Command::kDestroy, id); }

void Engine::AddListener(Listener* listener) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    listenerFds_[listener->id] = listener->fd;
  }
  Command c(Command::kAddListener);
  c.listener = listener;
  c.id = listener->id;
  Post(c);
}

void Engine::CloseListener(uint32_t id) {
  // The command alone would leave the port accepting until the engine thread takes it: a
  // client could still connect after "config reloaded" said the gray was removed. shutdown()
  // on a listening socket stops it listening (new SYNs are refused, the backlog is reset) while
  // the descriptor stays the engine's to close; its accept then says EINVAL.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = listenerFds_.find(id);
    if (it != listenerFds_.end()) {
      shutdown(it->second, SHUT_RDWR);
      listenerFds_.erase(it);
    }
  }
  PostForId(Command::kCloseListener, id);
}

void Engine::SetFilter(uint32_t id, Filter filter, const in6_addr& ip, uint32_t maxPending) {
  Command c(Command::kFilter);
  c.id = id;
  c.filter = filter;
  c.ip = ip;
  c.maxPending = maxPending;
  Post(c);
}

void Engine::CloseConn(uint32_t id) { PostForId(Command::kCloseConn, id); }

void Engine::Dial(Conn* conn) {
  Command c(Command::kDial);
  c.conn = conn;
  c.id = conn->id;
  Post(c);
}

void Engine::Forward(Pair* pair, uint32_t connId, const sockaddr_storage& address, socklen_t len, int keepAliveSec) {
  Register(pair);
  Command c(Command::kForward);
  c.pair = pair;
  c.id = pair->id;
  c.connA = connId;
  c.address = address;
  c.addressLen = len;
  c.keepAliveSec = keepAliveSec;
  Post(c);
}

bool Engine::Bytes(uint32_t id, uint64_t* fromA, uint64_t* fromB) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = pairs_.find(id);
  if (it == pairs_.end()) return false;
  *fromA = it->second->dirs[0].bytes.load(std::memory_order_relaxed);
  *fromB = it->second->dirs[1].bytes.load(std::memory_order_relaxed);
  return true;
}

size_t Engine::PairCount() {
  std::lock_guard<std::mutex> lock(mutex_);
  return pairs_.size();
}

bool Engine::Fail(std::string* why, const char* what) {
  *why = std::string(what) + ": " + strerror(errno);
  return false;
}

void Engine::Register(Pair* pair) {
  std::lock_guard<std::mutex> lock(mutex_);
  pairs_[pair->id] = pair;
}

// Only the first command of a batch wakes the engine: RunCommands reads the eventfd before it
// takes the batch, so a command queued behind a pending wake is taken with it. (The gray posts
// a dial and a forward in the same tick; each wake is a system call on both threads.)
void Engine::Post(const Command& command) {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    wake = commands_.empty();
    commands_.push_back(command);
  }
  if (!wake) return;
  uint64_t one = 1;
  // A full eventfd counter still wakes the engine; nothing is lost if this write fails.
  ssize_t ignored = write(wakeFd_, &one, sizeof one);
  (void)ignored;
}

Engine::~Engine() {
  for (Event* event : turnEvents_) delete event;
}

namespace {

// What JavaScript must hear at once, because a client waits on its answer or it reports a
// trouble as it happens: a client it is to admit or refuse (accepted, not a verified data
// connection), a refusal it counts and logs, a listener's error, a connection it dialed itself,
// a start header it is to forward. Everything else only updates its books.
bool MustPostNow(const Event& event) {
  switch (event.type) {
    case Event::kAccepted:
      return event.b == 0;  // b: a verified data connection's session epoch
    case Event::kRefused:
    case Event::kListenerError:
      return true;
    case Event::kDialed:
      return event.listenerId == 0;  // listenerId: its stock
    case Event::kHeader:
      return event.b == 0;  // b: the pair the engine forwarded it into
    default:
      return false;
  }
}

}  // namespace

void Engine::Emit(Event* event) {
  turnEvents_.push_back(event);
  if (!postNow_ && MustPostNow(*event)) postNow_ = true;
}

void Engine::FlushEvents() {
  postNow_ = false;
  if (turnEvents_.empty() && heldUntilMs_ == 0) return;
  heldUntilMs_ = 0;
  held_ = 0;
  group_->Deliver(&turnEvents_, true);
}

// The events go to the group's queue every turn, so JavaScript can take them itself whenever it
// needs its books current (takeEvents: a stop deciding whether to drain); only the wake-up is
// held. The deadline is checked whenever the engine wakes anyway, so under load the hold costs
// no wake-up of its own; only while events are held does epoll_wait get a timeout for it.
void Engine::EndTurn(int64_t now) {
  if (turnEvents_.empty() && heldUntilMs_ == 0) return;
  held_ += turnEvents_.size();
  if (postNow_ || eventHoldMs_ <= 0 || held_ >= kEventHoldMax || (heldUntilMs_ != 0 && now >= heldUntilMs_)) return FlushEvents();
  if (heldUntilMs_ == 0) heldUntilMs_ = now + eventHoldMs_;
  if (!turnEvents_.empty()) group_->Deliver(&turnEvents_, false);
}

// Milliseconds epoll may sleep: until the next prefix deadline, paused listener's resume, idle
// sweep or held events' deadline.
int Engine::WaitTimeout(int64_t now) {
  int64_t next = heldUntilMs_ != 0 ? heldUntilMs_ : INT64_MAX;
  if (!deadlines_.empty() && deadlines_.top().first < next) next = deadlines_.top().first;
  if (nextIdleSweepMs_ < next) next = nextIdleSweepMs_;
  for (auto& entry : listeners_) {
    if (entry.second->resumeAt != 0 && entry.second->resumeAt < next) next = entry.second->resumeAt;
  }
  if (next == INT64_MAX) return -1;
  int64_t wait = next - now;
  return wait <= 0 ? 0 : static_cast<int>(wait + 1);
}

void Engine::Run() {
  epoll_event events[kEventsPerWait];
  int64_t now = NowMs();
  while (!stopping_) {
    int n = epoll_wait(epollFd_, events, kEventsPerWait, WaitTimeout(now));
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    // Commands first: JavaScript posted them before whatever it did next, so a connection that
    // arrives in the same wake-up (a dial after new credits, a preamble after a new session's
    // keys) must find them applied.
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == nullptr) {
        RunCommands();
        break;
      }
    }
    for (int i = 0; i < n; i++) {
      if (events[i].data.u64 & kPairKeyTag) {
        OnPairEvent(events[i].data.u64, events[i].events);
        continue;
      }
      void* ptr = events[i].data.ptr;
      if (ptr == nullptr) continue;
      switch (*static_cast<Kind*>(ptr)) {
        case Kind::kListener:
          OnAcceptable(static_cast<Listener*>(ptr));
          break;
        case Kind::kConn:
          OnConnEvent(static_cast<Conn*>(ptr), events[i].events);
          break;
      }
    }
    ExpireAndResume();
    SweepIdlePairs();
    now = NowMs();
    EndTurn(now);
    // Pairs and connections ended in this batch may still have had events later in the same
    // batch: free them only now.
    for (Pair* pair : graveyard_) delete pair;
    graveyard_.clear();
    for (Conn* conn : connGraveyard_) delete conn;
    connGraveyard_.clear();
    for (Listener* listener : listenerGraveyard_) delete listener;
    listenerGraveyard_.clear();
  }
  // Stopping (the environment is going away): end what is left without telling JavaScript.
  std::vector<Pair*> left;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : pairs_) left.push_back(entry.second);
    pairs_.clear();
  }
  for (Pair* pair : left) {
    for (int fd : pair->fds) {
      if (fd >= 0) close(fd);
    }
    for (Direction& d : pair->dirs) ClosePipe(d);
    delete pair;
  }
  for (auto& entry : conns_) {
    close(entry.second->fd);
    delete entry.second;
  }
  for (auto& entry : listeners_) {
    close(entry.second->fd);
    delete entry.second;
  }
  for (auto& entry : stocks_) delete entry.second;
  for (auto& p : freePipes_) {
    close(p.first);
    close(p.second);
  }
  close(wakeFd_);
  close(epollFd_);
}

void Engine::RunCommands() {
  uint64_t count;
  ssize_t ignored = read(wakeFd_, &count, sizeof count);
  (void)ignored;
  std::deque<Command> batch;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    batch.swap(commands_);
  }
  for (const Command& command : batch) {
    switch (command.kind) {
      case Command::kStop:
        stopping_ = true;
        break;
      case Command::kJoin:
        if (JoinAcross(command)) break;
        StartJoin(command.pair, command.connA, command.connB);
        break;
      case Command::kFetchForJoin:
        FetchForJoin(command);
        break;
      case Command::kDestroy: {
        Pair* pair = nullptr;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          auto it = pairs_.find(command.id);
          if (it != pairs_.end()) pair = it->second;
        }
        if (pair && !pair->dead) Finish(pair, ECANCELED);
        postNow_ = true;  // JavaScript is ending things (a drain, a stop): it hears the ends now
        break;
      }
      case Command::kAddListener:
        StartListener(command.listener);
        break;
      case Command::kCloseListener:
        StopListener(command.id);
        postNow_ = true;
        break;
      case Command::kFilter: {
        auto it = listeners_.find(command.id);
        if (it == listeners_.end()) break;
        it->second->filter = command.filter;
        it->second->allowed = command.ip;
        it->second->maxPending = command.maxPending;
        break;
      }
      case Command::kCloseConn: {
        auto it = conns_.find(command.id);
        if (it != conns_.end()) {
          Drop(it->second);
        } else if (Engine* there = group_->For(command.id); there != this) {
          there->PostForId(Command::kCloseConn, command.id);  // it moved to another thread's pool
        } else if (group_->IsMoved(command.id)) {
          closeOnAdopt_.insert(command.id);  // moving here: closed when it comes
        }
        break;
      }
      case Command::kDial:
        StartDial(command.conn);
        break;
      case Command::kForward:
        StartForward(command.pair, command.connA, command.address, command.addressLen, command.keepAliveSec);
        break;
      case Command::kSession:
        PoolOf(command.id);
        break;
      case Command::kWant:
        OnWant(command);
        break;
      case Command::kAdopt:
        OnAdopt(command.conn, command.id);
        break;
      case Command::kAllow: {
        auto it = listeners_.find(command.id);
        if (it != listeners_.end()) it->second->allow = command.allow;
        break;
      }
      case Command::kRoutes:
        if (command.routes.empty()) routes_.erase(command.id);
        else routes_[command.id] = command.routes;
        break;
      case Command::kOpenStock:
      case Command::kStock:
      case Command::kCloseStock:
        RunStockCommand(command);
        break;
      case Command::kUsePool: {
        auto it = listeners_.find(command.id);
        if (it == listeners_.end()) break;
        it->second->poolListenerId = command.connA;
        it->second->service = command.service;
        break;
      }
      case Command::kAdmit:
        AdmitClient(command.id);
        break;
      case Command::kIdleTimeout:
        ApplyIdleTimeout(command.id, static_cast<int64_t>(command.count));
        break;
    }
  }
}

// ---- Socket helpers shared by the pairs, the intake and the dialer ----

int Engine::SocketError(int fd) {
  int soError = 0;
  socklen_t len = sizeof soError;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len) < 0) return errno;
  return soError;
}

void Engine::TuneSocket(int fd, int keepAliveSec) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (keepAliveSec > 0) {
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &keepAliveSec, sizeof keepAliveSec);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kKeepAliveIntervalSec, sizeof kKeepAliveIntervalSec);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kKeepAliveProbes, sizeof kKeepAliveProbes);
  }
}

void Engine::Abort(int fd) {
  linger reset{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  close(fd);
}

}  // namespace relay
