// Allow-lists: which client networks may connect to a public port, checked at accept before a
// byte is read (intake.cc), so a refused client costs no pooled connection, no JavaScript and no
// hook. The rule is src/engine/protocol/cidr.ts's: an IPv4-mapped IPv6 source is matched as the
// IPv4 address it carries; an IPv6 source never matches an IPv4 network. JavaScript parses the
// networks (config) and hands them over as bytes.
#include "engine.h"

#include <netinet/in.h>
#include <string.h>

namespace relay {

namespace {

bool InNetwork(const uint8_t* address, const AllowNet& net) {
  int whole = net.prefix / 8;
  if (memcmp(address, net.bytes, static_cast<size_t>(whole)) != 0) return false;
  int rest = net.prefix % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (address[whole] & mask) == net.bytes[whole];
}

}  // namespace

void Engine::SetAllow(uint32_t listenerId, std::vector<AllowNet> allow) {
  Command c(Command::kAllow);
  c.id = listenerId;
  c.allow = std::move(allow);
  Post(c);
}

bool Engine::Allowed(const Listener* listener, const sockaddr_storage& remote) {
  if (listener->allow.empty()) return true;
  uint8_t family = 0;
  const uint8_t* bytes = nullptr;
  if (remote.ss_family == AF_INET) {
    family = 4;
    bytes = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in&>(remote).sin_addr);
  } else if (remote.ss_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6&>(remote).sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a)) {
      family = 4;
      bytes = &a.s6_addr[12];
    } else {
      family = 6;
      bytes = a.s6_addr;
    }
  }
  if (bytes == nullptr) return false;
  for (const AllowNet& net : listener->allow) {
    if (net.family == family && InNetwork(bytes, net)) return true;
  }
  return false;
}

}  // namespace relay
