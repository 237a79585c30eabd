// Intake: the listening sockets the engine owns and the connections it holds until they are
// joined. Accepts on the engine thread, applies JavaScript's filter, reads the fixed-size prefix
// under a deadline, refuses on its own what it can, and watches held connections so JavaScript
// hears when one goes away (see engine.h for the design).
#include "engine.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

namespace relay {

void Engine::StartListener(Listener* listener) {
  listeners_[listener->id] = listener;
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: a wake-up takes at most kAcceptsPerWake
  ev.data.ptr = listener;
  if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, listener->fd, &ev) < 0) ListenerError(listener, errno);
}

void Engine::StopListener(uint32_t id) {
  auto it = listeners_.find(id);
  if (it == listeners_.end()) return;
  Listener* listener = it->second;
  listeners_.erase(it);
  epoll_ctl(epollFd_, EPOLL_CTL_DEL, listener->fd, nullptr);
  close(listener->fd);
  // Connections still reading their prefix belonged to this port only: nobody will take them.
  std::vector<Conn*> orphans;
  for (auto& entry : conns_) {
    if (entry.second->listenerId == id && entry.second->state == Conn::kPrefix) orphans.push_back(entry.second);
  }
  for (Conn* conn : orphans) Drop(conn);
  listener->fd = -1;
  listenerGraveyard_.push_back(listener);  // an event later in this batch may point at it
}

void Engine::ListenerError(Listener* listener, int error) {
  auto* event = new Event(Event::kListenerError);
  event->listenerId = listener->id;
  event->code = error;
  Emit(event);
}

void Engine::OnAcceptable(Listener* listener) {
  if (listener->fd < 0 || listener->resumeAt != 0) return;
  for (int i = 0; i < kAcceptsPerWake; i++) {
    sockaddr_storage remote{};
    socklen_t len = sizeof remote;
    int fd = accept4(listener->fd, reinterpret_cast<sockaddr*>(&remote), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINVAL) return;  // shut down by CloseListener; its command follows
      // Out of descriptors or memory: stop accepting for a moment instead of spinning, and
      // say so (JavaScript logs it).
      int error = errno;
      epoll_event ev{};
      ev.data.ptr = listener;
      epoll_ctl(epollFd_, EPOLL_CTL_MOD, listener->fd, &ev);
      listener->resumeAt = NowMs() + kAcceptPauseMs;
      ListenerError(listener, error);
      return;
    }
    Accepted(listener, fd, remote);
  }
}

// The socket options came with the socket: the listener has them (see TuneSocket).
void Engine::Accepted(Listener* listener, int fd, const sockaddr_storage& remote) {
  // The filter runs before a byte is read: strangers never take an unverified slot.
  in6_addr source{};
  AsV6(remote, &source);
  int32_t refusal = 0;
  if (!Allowed(listener, remote)) refusal = kRefusedNotAllowed;
  else if (listener->filter == kFilterNobody) refusal = kRefusedNoSession;
  else if (listener->filter == kFilterOnly && memcmp(&source, &listener->allowed, sizeof source) != 0) refusal = kRefusedWrongSource;
  else if (listener->prefix > 0 && !TakePending(listener)) refusal = kRefusedTooMany;
  if (refusal != 0) {
    close(fd);  // refused before a byte is read: nothing to abort (see security.md)
    Refused(listener->id, remote, refusal, std::string());
    return;
  }
  auto* conn = new Conn();
  conn->id = NextId();
  conn->fd = fd;
  conn->listenerId = listener->id;
  conn->remote = remote;
  conn->want = listener->prefix;
  conn->state = listener->prefix > 0 ? Conn::kPrefix : Conn::kHeld;
  conn->watch = listener->watchAfter;
  // A client's local address goes into its start header: asked once, here (no system call for
  // a listener bound to one address).
  if (listener->prefix == 0) conn->hasLocal = ClientLocalAddress(listener, fd, &conn->local);
  conns_[conn->id] = conn;
  connsHeld_.fetch_add(1, std::memory_order_relaxed);
  if (conn->state == Conn::kHeld) {
    // A client: joined with a lent connection at once, or reported for JavaScript to decide
    // (lend.cc). One joined at once is registered by its pair (Arm), in the pair's form: one
    // epoll_ctl instead of two. One that was reset before it was accepted is found out by the
    // join's first read and refused, before anyone hears of it.
    conn->unregistered = true;
    int error = 0;
    switch (TakeLent(listener, conn, &error)) {
      case Lent::kJoined:
        return;
      case Lent::kGone:
        Refused(listener->id, remote, kRefusedError, std::string(), error);
        return Drop(conn);
      case Lent::kNo:
        break;
    }
    conn->unregistered = false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = conn;
  if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
    int error = errno;
    ReleasePending(conn);
    conn->fd = -1;
    Forget(conn);
    Abort(fd);
    Refused(listener->id, remote, kRefusedError, std::string(), error);
    return;
  }
  if (conn->state == Conn::kHeld) return AnnounceAccepted(conn);
  deadlines_.emplace(NowMs() + listener->timeoutMs, conn->id);
  // The prefix is read when it arrives: the registration above reports at once what is
  // already there, so reading now would mostly find nothing (EAGAIN) this early.
}

// received: the prefix bytes read before the refusal (JavaScript words the reason from them).
void Engine::Refused(uint32_t listenerId, const sockaddr_storage& remote, int32_t refusal, const std::string& received, int error) {
  auto* event = new Event(Event::kRefused);
  event->listenerId = listenerId;
  event->code = refusal;
  event->a = received.size();
  event->prefix = received;
  event->b = static_cast<uint64_t>(error);
  event->hasAddresses = true;
  event->remote = remote;
  Emit(event);
}

// Reads the rest of the prefix. A connection whose bytes behind the prefix belong to its pair
// (a dialed one: the client's bytes may follow the start header) is read exactly to the end of
// its prefix, so what follows stays in the kernel. One that must stay silent after its prefix (a
// data connection, watched for any byte) is asked for one byte more: that byte, if it is there,
// is a protocol violation, and a read short of it says the queue is empty. Epoll is
// edge-triggered, so a short read ends the reading (what arrives later raises a new event)
// unless the event said the peer closed (events: the epoll events that brought us here).
void Engine::ReadPrefix(Conn* conn, uint32_t events) {
  char buffer[256];
  auto it = listeners_.find(conn->listenerId);
  const std::string* magic = it != listeners_.end() ? &it->second->magic : nullptr;
  const size_t probe = conn->listenerId != 0 && conn->watch == kWatchAny ? 1 : 0;
  const bool closing = (events & kClosing) != 0;
  while (conn->prefix.size() < conn->want) {
    size_t missing = static_cast<size_t>(conn->want) - conn->prefix.size();
    size_t ask = std::min(sizeof buffer, missing + probe);
    ssize_t n = recv(conn->fd, buffer, ask, 0);
    if (n > 0) {
      size_t before = conn->prefix.size();
      // Bytes right behind the prefix are refused before JavaScript verifies (and so spends)
      // anything.
      if (static_cast<size_t>(n) > missing) {
        conn->prefix.append(buffer, missing);
        return RefuseConn(conn, kRefusedExtra, 0);
      }
      conn->prefix.append(buffer, static_cast<size_t>(n));
      // A stranger speaking another protocol is refused at its first wrong byte, not at the
      // deadline: it would hold an unverified slot until then.
      if (magic) {
        size_t end = std::min(conn->prefix.size(), magic->size());
        for (size_t i = before; i < end; i++) {
          if (conn->prefix[i] != (*magic)[i]) return RefuseConn(conn, kRefusedBadMagic, 0);
        }
      }
      if (static_cast<size_t>(n) < ask && !closing) {
        if (conn->prefix.size() < conn->want) return;  // the rest comes with a new event
        break;
      }
      continue;
    }
    if (n == 0) return conn->listenerId == 0 ? Gone(conn, kGoneClosed) : RefuseConn(conn, kRefusedEnded, 0);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    return conn->listenerId == 0 ? Gone(conn, kGoneClosed) : RefuseConn(conn, kRefusedError, errno);
  }
  if (conn->listenerId == 0) {
    // A dialed connection's start header: the client's bytes may follow at once, and they
    // stay in the kernel for the pair (a reused one may have them read already: see
    // ReuseDataConn).
    if (conn->prefix.size() > conn->want) {
      conn->early.assign(conn->prefix, conn->want, std::string::npos);
      conn->prefix.resize(conn->want);
    }
    conn->state = Conn::kHeld;
    // A framed header (engine.h, Framing) says whether it is a credit; every raw one is.
    conn->framed = conn->prefix[0] == kStartHeaderVersionFramed;
    const bool credit = !conn->framed || (conn->prefix[kStartHeaderFlagsOffset] & kStartHeaderCredit) != 0;
    auto* event = new Event(Event::kHeader);
    event->id = conn->id;
    event->stockId = conn->stockId;
    event->code = credit ? 0 : 1;
    event->prefix.swap(conn->prefix);
    // The header is an implicit credit: the successor is dialed right after the forward, so
    // the client's connect to the service goes first.
    uint32_t stockId = conn->stockId;
    if (conn->routes == 0 || !ForwardDialed(conn, event)) Emit(event);
    if (stockId != 0 && credit) CreditStock(stockId);
    return;
  }
  // The edge that brought the prefix is spent: a FIN that came with it would never be reported
  // to a watch that wants to hear of anything, so it is taken from the event (one that comes
  // later raises a new event for the watch). A byte behind the prefix was refused above.
  const bool finished = probe != 0 && closing;
  // A gray's data port checks the preamble here (verify.cc): JavaScript hears only of the good.
  // Verified, it goes to the pool (lend.cc); JavaScript hears of it first, for its bookkeeping.
  auto listener = listeners_.find(conn->listenerId);
  Listener* dataListener = listener != listeners_.end() && listener->second->pool ? listener->second : nullptr;
  if (dataListener) {
    int32_t refusal = Verify(dataListener, conn);
    if (refusal != 0) return RefuseConn(conn, refusal, 0);
  }
  ReleasePending(conn);
  conn->state = Conn::kHeld;
  AnnounceAccepted(conn);
  if (finished) return Gone(conn, kGoneClosed);
  if (dataListener) Pooled(dataListener, conn);
}

void Engine::ReleasePending(Conn* conn) {
  if (conn->state != Conn::kPrefix) return;
  auto it = listeners_.find(conn->listenerId);
  if (it != listeners_.end()) it->second->pending->fetch_sub(1, std::memory_order_relaxed);
}

void Engine::AnnounceAccepted(Conn* conn) {
  auto* event = new Event(Event::kAccepted);
  event->id = conn->id;
  event->listenerId = conn->listenerId;
  // A verified preamble has nothing left for JavaScript to check: it is not copied over.
  if (conn->epoch == 0) event->prefix = conn->prefix;
  event->a = conn->counter;  // a verified data connection's counter and session epoch
  event->b = conn->epoch;
  event->hasAddresses = true;
  event->remote = conn->remote;
  // Only a client's local address is wanted (it goes into the start header); a connection that
  // sent a prefix is a data connection, where only the source counts, and is reported without.
  if (conn->hasLocal) event->local = conn->local;
  Emit(event);
  std::string().swap(conn->prefix);
}

bool Engine::ClientLocalAddress(const Listener* listener, int fd, sockaddr_storage* out) {
  if (listener != nullptr && !listener->localIsWildcard) {
    *out = listener->local;
    return true;
  }
  socklen_t len = sizeof *out;
  return getsockname(fd, reinterpret_cast<sockaddr*>(out), &len) == 0;
}

void Engine::RefuseConn(Conn* conn, int32_t refusal, int error) {
  Refused(conn->listenerId, conn->remote, refusal, conn->prefix, error);
  Drop(conn);
}

void Engine::OnConnEvent(Conn* conn, uint32_t events) {
  if (conn->state == Conn::kGone) return;
  if (conn->state == Conn::kConnecting) return OnDialProgress(conn, events);
  if (conn->state == Conn::kPrefix) {
    if (conn->listenerId == 0 && (events & EPOLLERR)) return Gone(conn, kGoneClosed);
    if (events & EPOLLERR) return RefuseConn(conn, kRefusedError, SocketError(conn->fd));
    return ReadPrefix(conn, events);
  }
  if (events & (EPOLLERR | EPOLLHUP)) return Gone(conn, kGoneClosed);
  if (conn->watch != kWatchAny) return;  // a waiting client's bytes and FIN wait for the pair
  if (events & EPOLLRDHUP) return Gone(conn, kGoneClosed);
  if (events & EPOLLIN) return Gone(conn, kGoneData);
}

// A held connection went away (or spoke when it must not): JavaScript hears it, and the
// engine closes it.
void Engine::Gone(Conn* conn, int32_t reason) {
  auto* event = new Event(Event::kGone);
  event->id = conn->id;
  event->listenerId = conn->listenerId;
  event->code = reason;
  event->stockId = conn->stockId;
  // An accepted one's source, for a refusal's log line (JavaScript keeps no object for a pooled
  // data connection: listener.ts).
  event->hasAddresses = conn->listenerId != 0;
  event->remote = conn->remote;
  Emit(event);
  Drop(conn);
}

Conn* Engine::HeldConn(uint32_t id) {
  auto it = conns_.find(id);
  return it != conns_.end() && it->second->state == Conn::kHeld ? it->second : nullptr;
}

// Closes the connection (if it still has its socket) with a reset and forgets it: a held
// connection relay lets go of unjoined was refused (a client nobody can serve, a data connection
// that failed its checks) or is gone already, and a reset tells the peer it got no answer, which
// a FIN would not. Forgotten (and counted out) before the close, so whoever sees the close sees
// the count too.
void Engine::Drop(Conn* conn) {
  ReleasePending(conn);
  int fd = conn->fd;
  conn->fd = -1;
  Forget(conn);
  if (fd >= 0) {
    if (!conn->unregistered) epoll_ctl(epollFd_, EPOLL_CTL_DEL, fd, nullptr);
    Abort(fd);
  }
}

void Engine::Forget(Conn* conn) {
  if (conn->moved) group_->Unmoved(conn->id);
  Unqueue(conn);
  conn->state = Conn::kGone;
  conns_.erase(conn->id);
  connsHeld_.fetch_sub(1, std::memory_order_relaxed);
  connGraveyard_.push_back(conn);
}

void Engine::ExpireAndResume() {
  if (deadlines_.empty() && listeners_.empty()) return;
  int64_t now = NowMs();
  while (!deadlines_.empty() && deadlines_.top().first <= now) {
    uint32_t id = deadlines_.top().second;
    deadlines_.pop();
    auto it = conns_.find(id);
    if (it != conns_.end() && it->second->state == Conn::kPrefix) RefuseConn(it->second, kRefusedTimeout, 0);
  }
  for (auto& entry : listeners_) {
    Listener* listener = entry.second;
    if (listener->resumeAt == 0 || listener->resumeAt > now) continue;
    listener->resumeAt = 0;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = listener;
    epoll_ctl(epollFd_, EPOLL_CTL_MOD, listener->fd, &ev);
  }
}

}  // namespace relay
