// Pairs: the data plane proper. Two joined sockets, one Direction each way; small messages are
// copied through the engine's buffer, streams are spliced through a borrowed pipe, FINs are
// passed on as half-closes, and the first error ends the pair (see engine.h for the design).
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>

namespace relay {

void Engine::OnPairEvent(uint64_t key, uint32_t events) {
  const uint32_t id = static_cast<uint32_t>(key >> 2);
  const int index = static_cast<int>((key >> 1) & 1);
  auto it = armed_.find(id);
  if (it == armed_.end()) return;  // ended (see PairKey)
  Pair* pair = it->second;
  if (events & EPOLLERR) {
    int soError = SocketError(pair->fds[index]);
    if (soError != 0) return Finish(pair, soError);
  }
  if (index == 1 && pair->connectingB && (events & EPOLLOUT)) {
    pair->connectingB = false;
    std::string().swap(pair->header);
    pair->dirs[0].dstConnecting = false;
    pair->dirs[0].blocked = true;  // whatever waited for the connect (a head, a FIN) goes now
  }
  Service(pair, index, events);
}

// Arm: the pair's two sockets are registered for its events (a held connection is already, unless
// it is a client being joined at accept; a new connection to a service is not).
// Edge-triggered: an event is reported once, so a direction reads until the kernel says EAGAIN,
// a short read has emptied the queue, or its destination is full (see Pump). Registering (ADD,
// or MOD of a held connection) reports what each socket is ready for now, writable at least once
// it is connected, with the bytes a client sent while it waited: that first report, not a recv
// here, tells whether there is anything to read, and a head waits for it so that it goes out
// in one send with the bytes behind it (see Service).
void Engine::Arm(Pair* pair, bool registeredA, bool registeredB) {
  if (pair->dead) return;
  armed_[pair->id] = pair;
  const bool registered[2] = {registeredA, registeredB};
  for (int i = 0; i < 2; i++) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = PairKey(pair->id, i);
    if (epoll_ctl(epollFd_, registered[i] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, pair->fds[i], &ev) < 0) {
      Finish(pair, errno);
      return;
    }
  }
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
  const bool registered[2] = {!a->unregistered, !b->unregistered};
  for (int i = 0; i < 2; i++) {
    CountJoin(pair, conns[i]);
    if (conns[i]->framed) {
      FramePair(pair, i);
      pair->dataListenerId = conns[i]->listenerId;
      pair->dataEpoch = conns[i]->epoch;
      pair->dataRemote = conns[i]->remote;
    }
    pair->fds[i] = conns[i]->fd;
    conns[i]->fd = -1;
    Forget(conns[i]);
  }
  pair->dirs[0].src = pair->fds[0];
  pair->dirs[0].dst = pair->fds[1];
  pair->dirs[1].src = pair->fds[1];
  pair->dirs[1].dst = pair->fds[0];
  Arm(pair, registered[0], registered[1]);
}

// Forward: the held (dialed) connection connId and a new connection to the service become a
// pair at once; the service side is joined while it connects. The direction toward it reads
// nothing until its first EPOLLOUT (a send in SYN-SENT would only say EAGAIN), so heads and
// early bytes wait and then go in one send, and a failed connect ends the pair with its errno,
// flagged kEndedBeforeConnect.
void Engine::StartForward(Pair* pair, uint32_t connId, const sockaddr_storage& address, socklen_t len, int keepAliveSec) {
  Conn* held = HeldConn(connId);
  if (!held) return Finish(pair, ECONNRESET);  // the white (or its client) left meanwhile
  pair->fds[0] = held->fd;
  held->fd = -1;
  if (held->framed) {
    FramePair(pair, 0);
    pair->dataStockId = held->stockId;
    pair->dirs[0].early = std::move(held->early);
  }
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
  Arm(pair, true, false);
}

// An event on one socket moves only what it can move: readable -> the direction reading it;
// writable -> the direction writing to it, and only if that one was blocked. (EPOLLOUT is in
// almost every event mask, so pumping on it unconditionally would cost a useless recv.) A head
// still waiting for its source's first report (see Arm) goes alone when that report says there
// is nothing to read, or when its destination reports first (Arm registers A first, so its
// report comes first unless A had one pending).
void Engine::Service(Pair* pair, int sideIndex, uint32_t events) {
  Direction& from = pair->dirs[sideIndex];
  Direction& into = pair->dirs[1 - sideIndex];
  int error = 0;
  if (events & kClosing) from.srcClosing = true;
  if (events & EPOLLRDHUP) from.srcFin = true;
  if (events & kReadable) error = Pump(pair, sideIndex, true);
  else if (HeadWaiting(from) && !from.blocked) error = Pump(pair, sideIndex, false);
  if (error == 0 && (events & EPOLLOUT) && (into.blocked || HeadWaiting(into))) error = Pump(pair, 1 - sideIndex, into.blocked);
  Settle(pair, error);
}

void Engine::Settle(Pair* pair, int error) {
  if (error != 0) {
    Finish(pair, error);
  } else if (pair->dirs[0].shut && pair->dirs[1].shut) {
    // Both FINs (or ENDs) passed on, everything before them delivered.
    if (pair->framedSide >= 0) ReuseDataConn(pair);
    else Finish(pair, 0);
  }
}

// The direction reading the framed side decodes, the other encodes (see Framing in engine.h).
void Engine::FramePair(Pair* pair, int framedSide) {
  pair->framedSide = framedSide;
  pair->dirs[framedSide].decode = true;
  pair->dirs[1 - framedSide].encode = true;
}

// The frames in buffer's n bytes, read from a framed src: their payloads are gathered at the
// start of buffer (returned: how many bytes), their lengths taken out, up to END (*end; *used:
// the bytes up to and with it). A frame may begin in one read and go on in the next.
size_t Engine::Unframe(Direction& d, char* buffer, size_t n, bool* end, size_t* used) {
  size_t in = 0, out = 0;
  while (in < n) {
    if (d.frameLeft > 0) {
      const size_t take = std::min<size_t>(d.frameLeft, n - in);
      if (out != in) memmove(buffer + out, buffer + in, take);
      out += take;
      in += take;
      d.frameLeft -= static_cast<uint32_t>(take);
      continue;
    }
    d.length[d.lengthGot++] = static_cast<uint8_t>(buffer[in++]);
    if (d.lengthGot < kFrameLengthBytes) continue;
    d.lengthGot = 0;
    for (uint8_t byte : d.length) d.frameLeft = d.frameLeft << 8 | byte;
    if (d.frameLeft == 0) {
      *end = true;
      break;
    }
  }
  *used = in;
  return out;
}

int Engine::Blocked(Direction& d) {
  d.blocked = true;
  return 0;
}

// Sends what a copied read brought (data, n bytes) behind whatever head is still waiting, in
// one send; what dst cannot take now becomes the head, which goes first next time. last: src's
// FIN is known to follow these bytes, and the caller passes it on next (shutdown or close),
// which pushes them out: MSG_MORE holds the segment for it, so that bytes and FIN leave as one
// (as they came). Sent alone, the FIN would be a second unacknowledged segment, and the peer,
// which delays its ACK after a FIN, makes the kernel probe for it (a tail loss probe resends
// the FIN within milliseconds).
int Engine::SendCopied(Direction& d, const char* data, size_t n, bool last) {
  const size_t waiting = d.head.size() - d.headSent;
  const int flags = MSG_NOSIGNAL | MSG_DONTWAIT | (last ? MSG_MORE : 0);
  ssize_t sent;
  if (waiting == 0) {
    sent = send(d.dst, data, n, flags);
  } else {
    iovec parts[2] = {{&d.head[d.headSent], waiting}, {const_cast<char*>(data), n}};
    msghdr message{};
    message.msg_iov = parts;
    message.msg_iovlen = 2;
    sent = sendmsg(d.dst, &message, flags);
  }
  if (sent < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return errno;
    sent = 0;
  }
  size_t done = static_cast<size_t>(sent);
  if (done == waiting + n) {
    std::string().swap(d.head);
    d.headSent = 0;
    return 0;
  }
  if (done < waiting) {
    d.head.erase(0, d.headSent + done);
    d.head.append(data, n);
  } else {
    d.head.assign(data + (done - waiting), n - (done - waiting));
  }
  d.headSent = 0;
  return Blocked(d);
}

// Moves what can be moved now. Returns 0 (stopped on EAGAIN or done) or an errno. read: src
// may have bytes (false: nothing says so, and its next bytes will raise an edge; only a head,
// the pipe and a FIN are passed on).
int Engine::Pump(Pair* pair, int index, bool read) {
  Direction& d = pair->dirs[index];
  d.blocked = false;
  // A send to a socket still connecting says EAGAIN: src stays unread until the connect is
  // done (OnSideEvent), so nothing is read only to be kept.
  if (d.dstConnecting) return Blocked(d);
  for (;;) {
    if (HeadWaiting(d) && (!read || d.splicing || d.eof || d.inPipe > 0)) {
      // Nothing to send it with: the head alone, and always before the pipe (an encoding
      // direction's head is then the length of what the pipe holds, sent with it).
      ssize_t n = send(d.dst, d.head.data() + d.headSent, d.head.size() - d.headSent, MSG_NOSIGNAL | MSG_DONTWAIT | (d.inPipe > 0 ? MSG_MORE : 0));
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
      if (d.encode && !d.shut) {
        // END goes out like a head; once it is gone this direction is done.
        if (!d.endQueued) {
          d.endQueued = true;
          d.head.append(kFrameLengthBytes, '\0');
          continue;
        }
        d.shut = true;
      }
      if (!d.shut) {
        d.shut = true;
        // The second FIN: the other direction has read dst to its end and passed its FIN on,
        // so the pair ends now (Settle), and closing dst sends this FIN after what dst still has
        // to send, as shutdown would (nothing is unread on it, so close does not reset).
        if (!pair->dirs[1 - index].shut && shutdown(d.dst, SHUT_WR) < 0 && errno != ENOTCONN) return errno;
      }
      return 0;
    }
    if (!read) return 0;
    if (!d.splicing && d.decode) {
      // Frames are read as they come, several in one read, and their payloads sent on together.
      // Bytes behind END are not this pair's: on the gray, the next client's start header and
      // frames (the white took the connection back as soon as END had passed both ways), kept
      // for the connection's next use; on the white, where the gray must wait for a start
      // header, a protocol violation.
      // Right after a spliced frame, only the next length is read: a stream's next frame is
      // likely long too, and is spliced, not read through the buffer.
      char* buffer = copyBuffer_.data();
      const size_t ask = d.streamed ? kFrameLengthBytes - d.lengthGot : copyBuffer_.size();
      size_t n;
      bool drained = false;
      if (!d.early.empty()) {
        n = d.early.size();
        memcpy(buffer, d.early.data(), n);
        std::string().swap(d.early);
      } else {
        ssize_t got = recv(d.src, buffer, ask, MSG_DONTWAIT);
        if (got == 0) return ECONNRESET;  // the data connection ended before END: the stream is cut
        if (got < 0) {
          if (errno == EINTR) continue;
          if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
          read = false;  // a waiting head goes alone
          continue;
        }
        n = static_cast<size_t>(got);
        drained = n < ask;
      }
      bool end = false;
      size_t used = 0;
      const size_t payload = Unframe(d, buffer, n, &end, &used);
      if (used < n) {
        if (pair->dataListenerId != 0) return EPROTO;  // the white's
        d.early.assign(buffer + used, n - used);
      }
      d.bytes.fetch_add(payload, std::memory_order_relaxed);
      if (end) d.eof = true;
      if (payload > 0) {
        int error = SendCopied(d, buffer, payload, end);
        if (error != 0 || d.blocked) return error;
      }
      if (end) continue;
      // A long frame's payload is spliced (the pipe takes it up to the frame's end).
      if (d.frameLeft >= kSmallRead) d.splicing = true;
      else if (d.lengthGot == 0) d.streamed = false;
      if (!d.splicing && drained && !d.srcClosing) return 0;  // as for a short read below
      continue;
    }
    if (!d.splicing) {
      // Encoding, the read goes behind its frame's length, and room is left for END after it.
      char* buffer = copyBuffer_.data();
      const size_t lead = d.encode ? kFrameLengthBytes : 0;
      const size_t room = copyBuffer_.size() - 2 * lead;
      ssize_t n = recv(d.src, buffer + lead, room, MSG_DONTWAIT);
      if (n == 0) {
        d.eof = true;
        continue;
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
        read = false;  // a waiting head goes alone
        continue;
      }
      d.bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      const bool filled = static_cast<size_t>(n) == room;
      if (filled) d.splicing = true;
      bool last = !filled && d.srcFin;
      size_t length = static_cast<size_t>(n);
      if (d.encode) {
        // The end known to follow goes in the same send, as a raw pair's FIN would.
        PutFrameLength(buffer, static_cast<uint32_t>(n));
        length += lead;
        if (last) {
          PutFrameLength(buffer + length, 0);
          length += lead;
          d.eof = d.endQueued = true;
          last = false;
        }
      }
      int error = SendCopied(d, buffer, length, last);
      if (error != 0 || d.blocked) return error;
      if (filled) continue;
      // A short read emptied the receive queue: anything arriving later raises a new edge, so
      // the recv that would only say EAGAIN is skipped. Once src reported its FIN (RDHUP), no
      // byte can follow it, so a short read has reached it: that is the end of src, and the
      // recv that would only say 0 is skipped too. After a hang-up or an error without a FIN
      // that edge is spent: read on to the end.
      if (d.srcFin) d.eof = true;
      else if (!d.srcClosing) return 0;
      continue;
    }
    if (d.pipeRead < 0 && !AcquirePipe(d)) return errno;
    // Decoding, a splice takes the current frame's payload and never what follows it.
    ssize_t n = splice(d.src, nullptr, d.pipeWrite, nullptr, d.decode ? std::min<size_t>(d.frameLeft, kSpliceAsk) : kSpliceAsk, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n == 0) {
      if (d.decode) return ECONNRESET;  // ended before END
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
    if (d.decode) {
      d.frameLeft -= static_cast<uint32_t>(n);
      if (d.frameLeft == 0) {
        d.splicing = false;  // the next length is read, not spliced
        d.streamed = true;
      }
    } else if (static_cast<size_t>(n) < kSmallRead) {
      d.splicing = false;
    }
    if (d.encode) {
      // What the pipe holds is one frame: its length goes first (as a head, see above).
      char length[kFrameLengthBytes];
      PutFrameLength(length, static_cast<uint32_t>(n));
      d.head.assign(length, kFrameLengthBytes);
      d.headSent = 0;
    }
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
  const int64_t open = pipesOpen_.fetch_add(1, std::memory_order_relaxed);
  fcntl(fds[1], F_SETPIPE_SZ, open < kBigPipes ? kBigPipeBytes : kPipeBytes);  // best effort, see kBigPipeBytes
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
  armed_.erase(pair->id);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pairs_.erase(pair->id);
  }
  for (int fd : pair->fds) {
    if (fd < 0) continue;
    // No EPOLL_CTL_DEL: closing the socket removes its registration (see PairKey).
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
  if (event->type == Event::kPairEnd) event->listenerId = (pair->connectingB ? kEndedBeforeConnect : 0u) | (pair->reused ? kEndedReused : 0u);
  event->stockId = pair->stockId;
  if (pair->connectingB) event->prefix.swap(pair->header);
  Emit(event);
  graveyard_.push_back(pair);
}

// Both ENDs passed: the pair ends as a raw one whose FINs both passed (the client's or the
// service's socket closes with a FIN), and its data connection is kept. The white's goes back
// to its gray's pool (JavaScript hears of it as a verified connection with counter 0) if the
// session is the same; the gray's waits for its stock's next start header (JavaScript hears the
// pair's end flagged kEndedReused) if its stock is still open (the session goes on).
// A data connection that cannot be kept is closed with a FIN: the other end has passed END both
// ways too, and forgets it like an idle one that went away.
void Engine::ReuseDataConn(Pair* pair) {
  const int side = pair->framedSide;
  const int fd = pair->fds[side];
  Conn* conn = nullptr;
  Listener* dataListener = nullptr;
  if (pair->dataListenerId != 0) {
    auto it = listeners_.find(pair->dataListenerId);
    dataListener = it != listeners_.end() && it->second->pool ? it->second : nullptr;
    bool sameSession = false;
    if (dataListener) {
      SharedPool& shared = *dataListener->pool->shared;
      std::lock_guard<std::mutex> lock(shared.mutex);
      sameSession = shared.epoch == pair->dataEpoch;
    }
    if (sameSession) {
      conn = new Conn();
      conn->listenerId = pair->dataListenerId;
      conn->state = Conn::kHeld;
      conn->watch = dataListener->watchAfter;
      conn->epoch = pair->dataEpoch;
      conn->remote = pair->dataRemote;
      conn->framed = true;
    }
  } else {
    auto it = stocks_.find(pair->dataStockId);
    if (pair->dataStockId != 0 && it != stocks_.end()) {
      conn = new Conn(it->second->dial);
      conn->stockId = pair->dataStockId;
      conn->state = Conn::kPrefix;
      conn->prefix = std::move(pair->dirs[side].early);  // the next start header, if read already
    }
  }
  if (conn == nullptr) return Finish(pair, 0);
  pair->fds[side] = -1;
  pair->reused = true;
  Finish(pair, 0);
  conn->id = NextId();
  conn->fd = fd;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = conn;
  if (epoll_ctl(epollFd_, EPOLL_CTL_MOD, fd, &ev) < 0) {
    Abort(fd);
    delete conn;
    return;
  }
  conns_[conn->id] = conn;
  connsHeld_.fetch_add(1, std::memory_order_relaxed);
  if (dataListener) {
    AnnounceAccepted(conn);
    Pooled(dataListener, conn);
  } else {
    ReadPrefix(conn);  // the next start header may be in already, behind END
  }
}

}  // namespace relay
