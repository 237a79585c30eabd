// Lent connections: pairing on the engine thread. JavaScript verifies a pooled data connection
// (the preamble's HMAC and counter window stay there) and, when no client is waiting, lends it
// to the gray's public port. A client accepted there with a lent connection on hand is paired at
// once: the engine writes the start header it builds from the client's addresses and joins the
// two, and JavaScript hears kJoinedLent afterwards (for the connection's id, the events, the
// statistics). No thread hand-off sits between a client's SYN and its first bytes to the gray.
//
// Only the engine consumes lent connections, so one is never given to two clients: JavaScript
// asks for one with JoinLent (a client it admitted itself) and gets kJoinedLent or kNoneLent, and it
// takes one back only by closing it. JavaScript decides how many to lend (never more than the
// active-client limit allows, none when an authorize hook must see each client).
#include "engine.h"

#include <netinet/in.h>
#include <string.h>

#include <algorithm>

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

void Engine::Lend(uint32_t listenerId, uint32_t connId, uint8_t service) {
  Command c(Command::kLend);
  c.id = listenerId;
  c.connA = connId;
  c.service = service;
  Post(c);
}

void Engine::JoinLent(uint32_t listenerId, uint32_t clientId) { PostForId(Command::kJoinLent, listenerId, clientId); }

// Every connection lent to one port is for that port's service; the latest lend says which
// index the gray gave it in this session.
void Engine::KeepLent(uint32_t listenerId, uint32_t connId, uint8_t service) {
  auto it = listeners_.find(listenerId);
  if (it == listeners_.end()) return;  // the port closed: JavaScript closes its connections
  it->second->service = service;
  std::vector<uint32_t>& lent = it->second->lent;
  // Forget the ones that went away while lent, so an idle port's list stays the pool's size.
  lent.erase(std::remove_if(lent.begin(), lent.end(), [this](uint32_t id) { return HeldConn(id) == nullptr; }), lent.end());
  lent.push_back(connId);
}

// The newest lent connection still held is the likeliest to be alive (as in the pool broker).
bool Engine::TakeLent(Listener* listener, Conn* client) {
  if (listener->lent.empty()) return false;
  std::string header;
  sockaddr_storage local{};
  if (!ClientLocalAddress(listener, client->fd, &local) || !StartHeader(client->remote, local, listener->service, &header)) return false;
  while (!listener->lent.empty()) {
    uint32_t dataId = listener->lent.back();
    listener->lent.pop_back();
    if (HeldConn(dataId) == nullptr) continue;
    auto* pair = new Pair();
    pair->id = NextId();
    pair->dirs[0].head = header;  // to side B, the data connection, ahead of the client's bytes
    Register(pair);
    auto* event = new Event(Event::kJoinedLent);
    event->id = pair->id;
    event->listenerId = listener->id;
    event->a = client->id;
    event->b = dataId;
    event->hasAddresses = true;
    event->remote = client->remote;
    event->local = local;
    Emit(event);  // before anything the pair reports
    StartJoin(pair, client->id, dataId);
    return true;
  }
  return false;
}

}  // namespace relay
