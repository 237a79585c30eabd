// Dialing: the gray's pool connections. The engine connects, writes the preamble once connected
// and then reads the white's start header like an accepted connection's prefix (intake.cc);
// afterwards the connection is held until it is forwarded (pump.cc). See engine.h for the design.
#include "engine.h"

#include <errno.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace relay {

void Engine::StartDial(Conn* conn) {
  conns_[conn->id] = conn;
  connsHeld_.fetch_add(1, std::memory_order_relaxed);
  conn->state = Conn::kConnecting;
  int fd = socket(conn->remote.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return DialFailed(conn, errno);
  conn->fd = fd;
  TuneSocket(fd, conn->keepAliveSec);
  // Linux holds the handshake's last ACK on a connecting socket with TCP_DEFER_ACCEPT set, so
  // it goes with the preamble (sent as soon as the connect is done): one segment less per data
  // connection, and the white accepts it with its preamble already in.
  setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &kDeferHandshakeAckSec, sizeof kDeferHandshakeAckSec);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&conn->remote), conn->remoteLen) < 0 && errno != EINPROGRESS) return DialFailed(conn, errno);
  // EPOLLOUT tells the connect is done; afterwards it only rides along with other events.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = conn;
  if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, fd, &ev) < 0) return DialFailed(conn, errno);
}

void Engine::OnDialProgress(Conn* conn, uint32_t events) {
  if (events & (EPOLLERR | EPOLLHUP)) {
    int error = SocketError(conn->fd);
    return DialFailed(conn, error != 0 ? error : ECONNRESET);
  }
  if (!(events & EPOLLOUT)) return;
  // Connected. The preamble is tiny and the send buffer empty, so it goes in one send; a
  // short send would leave a half preamble the white must refuse, so it counts as a failure
  // of the connection (after connecting: not retried with the same counter).
  // A stock's connection signs its counter's preamble only now, once it is sure to be sent.
  uint8_t signed_[kPreambleBytes];
  const bool fromStock = conn->stockId != 0;
  if (fromStock && !StockPreamble(conn, signed_)) return DialFailed(conn, EINVAL);
  const void* preamble = fromStock ? static_cast<const void*>(signed_) : conn->preamble.data();
  const size_t length = fromStock ? kPreambleBytes : conn->preamble.size();
  ssize_t n = send(conn->fd, preamble, length, MSG_NOSIGNAL | MSG_DONTWAIT);
  bool whole = n >= 0 && static_cast<size_t>(n) == length;
  std::string().swap(conn->preamble);
  conn->counter = 0;  // sent (or cut): never given back to the stock
  auto* event = new Event(Event::kDialed);
  event->id = conn->id;
  event->listenerId = conn->stockId;
  Emit(event);
  conn->state = Conn::kPrefix;
  if (!whole) return Gone(conn, kGoneClosed);
  // The start header answers the preamble just sent, so it cannot be in yet: a recv now would
  // only say EAGAIN. Its arrival raises a new edge (the registration is edge-triggered with
  // EPOLLIN); only bytes or a FIN already reported with this event are read at once.
  if (events & (EPOLLIN | EPOLLRDHUP)) ReadPrefix(conn);
}

void Engine::DialFailed(Conn* conn, int error) {
  if (conn->stockId != 0) ReturnToStock(conn);
  auto* event = new Event(Event::kDialed);
  event->id = conn->id;
  event->listenerId = conn->stockId;
  event->code = error;
  Emit(event);
  Drop(conn);
}

// The start header is in: join at once with a new connection to the service, so the client's
// first bytes wait for no JavaScript (the gray's thread hand-off was the largest part of a new
// connection's latency). JavaScript hears the header with the pair's id and only keeps count.
// A header that is not well formed (version 2, family 4 or 6, reserved 0, an IPv4 address's
// padding zero: what src/engine/protocol/start-header.ts's decoder requires) is not forwarded:
// (A framed header, version 3, may have the successor-credit flag where version 2 has zero.)
// JavaScript refuses it, and the service never sees a connection for it; so JavaScript need
// not decode a header the engine forwarded. Nor is one whose service has no route here (a
// PROXY header to write, a service removed): JavaScript decides.
bool Engine::ForwardDialed(Conn* conn, Event* header) {
  const std::string& h = header->prefix;
  if (h.size() != kStartHeaderBytes) return false;
  const bool framed = h[0] == kStartHeaderVersionFramed;
  const uint8_t flags = static_cast<uint8_t>(h[kStartHeaderFlagsOffset]);
  bool wellFormed = (framed || h[0] == kStartHeaderVersion) && (h[1] == 4 || h[1] == 6) && (flags & ~(framed ? kStartHeaderCredit : 0)) == 0;
  // An IPv4 address's padding is zero (one encoding per header), as the decoder requires.
  for (size_t i = 0; wellFormed && h[1] == 4 && i < 12; i++) wellFormed = h[kStartHeaderSrcOffset + 4 + i] == 0 && h[kStartHeaderDstOffset + 4 + i] == 0;
  if (!wellFormed) return false;
  const Route* route = RouteFor(conn->routes, static_cast<uint8_t>(h[6]));
  if (route == nullptr) return false;
  auto* pair = new Pair();
  pair->id = NextId();
  pair->stockId = conn->stockId;
  if (conn->stockId != 0) pair->header = h;
  Register(pair);
  header->b = pair->id;
  Emit(header);  // before anything the pair reports, so JavaScript knows the pair first
  StartForward(pair, conn->id, route->address, route->len, route->keepAliveSec);
  return true;
}

}  // namespace relay
