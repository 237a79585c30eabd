// Pairs: the data plane proper. Two joined sockets, one Direction each way; small messages are
// copied through the engine's buffer, streams are spliced through a borrowed pipe, FINs are
// passed on as half-closes, and the first error ends the pair (see engine.h for the design).
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace relay {

void Engine::OnSideEvent(Side* side, uint32_t events) {
  Pair* pair = side->pair;
  if (pair->dead) return;  // ended earlier in this batch
  if (events & EPOLLERR) {
    int soError = SocketError(pair->fds[side->index]);
    if (soError != 0) return Finish(pair, soError);
  }
  if (side->index == 1 && pair->connectingB && (events & EPOLLOUT)) {
    pair->connectingB = false;
    std::string().swap(pair->header);
    pair->dirs[0].dstConnecting = false;
    // Whatever waited for the connect (a head, bytes read, a FIN) left the direction blocked,
    // so it goes now; an unblocked one has nothing pending, and a recv would say EAGAIN.
  }
  Service(pair, side->index, events);
}

// Arm: the pair's two sockets are registered for its events and its heads go out.
// registeredB: side B is already in the epoll set (a held connection being joined, not a new
// connection to a service); side A always is.
void Engine::Arm(Pair* pair, bool registeredB) {
  if (pair->dead) return;
  const bool registered[2] = {true, registeredB};
  for (int i = 0; i < 2; i++) {
    epoll_event ev{};
    // Edge-triggered: an event is reported once, so a direction reads until the kernel says
    // EAGAIN, a short read has emptied the queue, or its destination is full (see Service).
    // Re-arming a held connection (MOD) reports what is already readable, such as the bytes
    // a waiting client sent.
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = &pair->sides[i];
    if (epoll_ctl(epollFd_, registered[i] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, pair->fds[i], &ev) < 0) {
      Finish(pair, errno);
      return;
    }
  }
  // A forward's service side is still connecting: nothing can be read from it nor sent to it,
  // so a head waits for its EPOLLOUT (OnSideEvent), and so do the client's bytes, read when
  // their edge comes; no recv now.
  if (pair->connectingB) {
    pair->dirs[0].blocked = !pair->dirs[0].head.empty();
    return;
  }
  // Heads go out now; readiness at registration arrives as ordinary events.
  int error = Pump(pair->dirs[0]);
  if (error == 0) error = Pump(pair->dirs[1]);
  Settle(pair, error);
}

// Two held connections become a pair (join). One of them may have gone in the meantime
// (JavaScript had not yet heard): the pair then ends at once, as if that socket had been reset.
void Engine::StartJoin(Pair* pair, uint32_t idA, uint32_t idB) {
  Conn* a = HeldConn(idA);
  Conn* b = HeldConn(idB);
  if (!a || !b || a == b) {
    if (a) Drop(a);
    if (b && b != a) Drop(b);
    Finish(pair, ECONNRESET);
    return;
  }
  Conn* conns[2] = {a, b};
  for (int i = 0; i < 2; i++) {
    CountJoin(pair, conns[i]);
    pair->fds[i] = conns[i]->fd;
    conns[i]->fd = -1;
    Forget(conns[i]);
  }
  pair->dirs[0].src = pair->fds[0];
  pair->dirs[0].dst = pair->fds[1];
  pair->dirs[1].src = pair->fds[1];
  pair->dirs[1].dst = pair->fds[0];
  Arm(pair, true);
}

// Forward: the held (dialed) connection connId and a new connection to the service become a
// pair at once; the service side is joined while it connects. A send to a socket in SYN-SENT
// says EAGAIN, so heads and early bytes wait for its EPOLLOUT like for any full socket, and a
// failed connect ends the pair with its errno, flagged kEndedBeforeConnect.
void Engine::StartForward(Pair* pair, uint32_t connId, const sockaddr_storage& address, socklen_t len, int keepAliveSec) {
  Conn* held = HeldConn(connId);
  if (!held) return Finish(pair, ECONNRESET);  // the white (or its client) left meanwhile
  pair->fds[0] = held->fd;
  held->fd = -1;
  Forget(held);
  pair->connectingB = true;
  pair->dirs[0].dstConnecting = true;
  int fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Finish(pair, errno);
  pair->fds[1] = fd;
  TuneSocket(fd, keepAliveSec);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), len) < 0 && errno != EINPROGRESS) return Finish(pair, errno);
  pair->dirs[0].src = pair->fds[0];
  pair->dirs[0].dst = pair->fds[1];
  pair->dirs[1].src = pair->fds[1];
  pair->dirs[1].dst = pair->fds[0];
  Arm(pair, false);
}

// An event on one socket moves only what it can move: readable -> the direction reading it;
// writable -> the direction writing to it, and only if that one was blocked. (EPOLLOUT is in
// almost every event mask, so pumping on it unconditionally would cost a useless recv.)
void Engine::Service(Pair* pair, int sideIndex, uint32_t events) {
  Direction& from = pair->dirs[sideIndex];
  Direction& into = pair->dirs[1 - sideIndex];
  int error = 0;
  if (events & kClosing) from.srcClosing = true;
  if (events & kReadable) error = Pump(from);
  if (error == 0 && (events & EPOLLOUT) && into.blocked) error = Pump(into);
  Settle(pair, error);
}

void Engine::Settle(Pair* pair, int error) {
  if (error != 0) {
    Finish(pair, error);
  } else if (pair->dirs[0].shut && pair->dirs[1].shut) {
    Finish(pair, 0);  // both FINs passed on, everything before them delivered
  }
}

int Engine::Blocked(Direction& d) {
  d.blocked = true;
  return 0;
}

// Moves what can be moved now. Returns 0 (stopped on EAGAIN or done) or an errno.
int Engine::Pump(Direction& d) {
  d.blocked = false;
  for (;;) {
    if (d.headSent < d.head.size()) {
      ssize_t n = send(d.dst, d.head.data() + d.headSent, d.head.size() - d.headSent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? Blocked(d) : errno;
      }
      d.headSent += static_cast<size_t>(n);
      if (d.headSent == d.head.size()) {
        std::string().swap(d.head);
        d.headSent = 0;
      }
      continue;
    }
    if (d.inPipe > 0) {
      ssize_t n = splice(d.pipeRead, nullptr, d.dst, nullptr, d.inPipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN ? Blocked(d) : errno;  // dst is full; its EPOLLOUT resumes us
      }
      d.inPipe -= static_cast<size_t>(n);
      if (d.inPipe == 0) ReleasePipe(d);
      continue;
    }
    if (d.eof) {
      if (d.dstConnecting) return Blocked(d);
      if (!d.shut) {
        d.shut = true;
        if (shutdown(d.dst, SHUT_WR) < 0 && errno != ENOTCONN) return errno;
      }
      return 0;
    }
    if (!d.splicing) {
      ssize_t n = recv(d.src, copyBuffer_.data(), copyBuffer_.size(), MSG_DONTWAIT);
      if (n == 0) {
        d.eof = true;
        continue;
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno;
      }
      d.bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      if (static_cast<size_t>(n) == copyBuffer_.size()) d.splicing = true;
      ssize_t sent = send(d.dst, copyBuffer_.data(), static_cast<size_t>(n), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return errno;
        sent = 0;
      }
      // What dst cannot take now waits in head (empty here), which goes first next time.
      if (sent < n) {
        d.head.assign(copyBuffer_.data() + sent, static_cast<size_t>(n - sent));
        return Blocked(d);
      }
      // A short read emptied the receive queue: anything arriving later raises a new edge,
      // so the recv that would only say EAGAIN is skipped.
      // (Not once a FIN was signalled: that edge is spent, so read on to the EOF.)
      if (static_cast<size_t>(n) < copyBuffer_.size() && !d.srcClosing) return 0;
      continue;
    }
    if (d.pipeRead < 0 && !AcquirePipe(d)) return errno;
    ssize_t n = splice(d.src, nullptr, d.pipeWrite, nullptr, kSpliceAsk, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n == 0) {
      d.eof = true;
      ReleasePipe(d);
      continue;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return errno;
      ReleasePipe(d);  // nothing to read: an idle direction holds no pipe
      return 0;
    }
    d.bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    d.inPipe += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < kSmallRead) d.splicing = false;
  }
}

bool Engine::AcquirePipe(Direction& d) {
  if (!freePipes_.empty()) {
    d.pipeRead = freePipes_.back().first;
    d.pipeWrite = freePipes_.back().second;
    freePipes_.pop_back();
    return true;
  }
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return false;
  fcntl(fds[1], F_SETPIPE_SZ, kPipeBytes);  // best effort, see kPipeBytes
  pipesOpen_.fetch_add(1, std::memory_order_relaxed);
  d.pipeRead = fds[0];
  d.pipeWrite = fds[1];
  return true;
}

// Only an empty pipe goes back to the free list.
void Engine::ReleasePipe(Direction& d) {
  if (d.pipeRead < 0) return;
  if (d.inPipe == 0 && freePipes_.size() < kFreePipesMax) {
    freePipes_.emplace_back(d.pipeRead, d.pipeWrite);
    d.pipeRead = d.pipeWrite = -1;
    return;
  }
  ClosePipe(d);
}

void Engine::ClosePipe(Direction& d) {
  if (d.pipeRead < 0) return;
  close(d.pipeRead);
  close(d.pipeWrite);
  d.pipeRead = d.pipeWrite = -1;
  d.inPipe = 0;
  pipesOpen_.fetch_sub(1, std::memory_order_relaxed);
}

void Engine::Finish(Pair* pair, int error) {
  pair->dead = true;
  PoolPairEnded(pair);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pairs_.erase(pair->id);
  }
  for (int fd : pair->fds) {
    if (fd < 0) continue;
    // Explicitly: a registration outlives close() while another descriptor (Node's, not yet
    // closed) still refers to the same socket.
    epoll_ctl(epollFd_, EPOLL_CTL_DEL, fd, nullptr);
    // An error (a reset, a failed connect) or destroy() is an abort: both far ends hear a reset.
    // Only the end of both directions (each FIN passed on) closes with a FIN.
    if (error != 0) Abort(fd);
    else close(fd);
  }
  for (Direction& d : pair->dirs) {
    if (d.inPipe > 0) ClosePipe(d);  // undelivered bytes must not reach the next user
    else ReleasePipe(d);
  }
  Event* event = PoolPairEndEvent(pair);
  if (!event) event = new Event(Event::kPairEnd);
  event->id = pair->id;
  event->a = pair->dirs[0].bytes.load();
  event->b = pair->dirs[1].bytes.load();
  event->code = error;
  if (event->type == Event::kPairEnd) event->listenerId = pair->connectingB ? static_cast<uint32_t>(kEndedBeforeConnect) : 0u;
  event->stockId = pair->stockId;
  if (pair->connectingB) event->prefix.swap(pair->header);
  Emit(event);
  graveyard_.push_back(pair);
}

}  // namespace relay
