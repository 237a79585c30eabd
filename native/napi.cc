// The JavaScript surface: createEngine, which starts an engine's threads (Group) and returns an
// object of its methods (listen, filter, closeListener, dial, openStock, stock, closeStock,
// closeConn, join, forward, session, credits, usePool, admit, activeLimit, idleTimeout,
// poolPairs, setAllow, setRoutes, destroy, bytes, stats, takeEvents); trimMalloc; and the
// thread-safe function that carries an engine's events to JavaScript. Each method reads its
// arguments (Args) and checks them here, on the JavaScript thread, and hands the engine
// (engine.h) a command.
#include <node_api.h>

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "engine.h"
#include "memory.h"

namespace {

using relay::AllowNet;
using relay::AsV6;
using relay::Conn;
using relay::Engine;
using relay::Event;
using relay::Filter;
using relay::Group;
using relay::kFilterOnly;
using relay::kWatchAny;
using relay::kWatchReset;
using relay::Listener;
using relay::Route;
using relay::Pair;
using relay::PoolPairInfo;

bool ReadHead(napi_env env, napi_value value, std::string* out);

// One call's arguments, read once: its values and, for an engine's method, its engine. Every
// method of an engine object carries its Group as the function's data (Methods), so several can
// live in one process, each with its own threads and events. An argument not given reads as
// undefined; each reader says whether it was given and of its kind.
struct Args {
  static constexpr size_t kMax = 9;
  napi_env env;
  Group* engine = nullptr;
  size_t argc = kMax;
  napi_value argv[kMax];

  Args(napi_env e, napi_callback_info info) : env(e) {
    void* data = nullptr;
    napi_get_cb_info(env, info, &argc, argv, nullptr, &data);
    engine = static_cast<Group*>(data);
  }
  bool Given(size_t i) const {
    napi_valuetype type = napi_undefined;
    if (i < argc) napi_typeof(env, argv[i], &type);
    return type != napi_undefined && type != napi_null;
  }
  bool U32(size_t i, uint32_t* out) const { return i < argc && napi_get_value_uint32(env, argv[i], out) == napi_ok; }
  bool I32(size_t i, int32_t* out) const { return i < argc && napi_get_value_int32(env, argv[i], out) == napi_ok; }
  bool I64(size_t i, int64_t* out) const { return i < argc && napi_get_value_int64(env, argv[i], out) == napi_ok; }
  bool Bool(size_t i, bool* out) const { return i < argc && napi_get_value_bool(env, argv[i], out) == napi_ok; }
  // A Buffer, or nothing (left empty); false for anything else.
  bool Head(size_t i, std::string* out) const { return ReadHead(env, argv[i], out); }
};

napi_value Throw(napi_env env, const std::string& message) {
  napi_throw_error(env, "RELAY_ERR_DATA_PLANE", message.c_str());
  return nullptr;
}

// An error carrying the errno of a failed system call (JavaScript names it).
napi_value ThrowErrno(napi_env env, const char* syscall, int error) {
  napi_value message, err, number, name;
  std::string text = std::string(syscall) + ": " + strerror(error);
  napi_create_string_utf8(env, text.c_str(), NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, nullptr, message, &err);
  napi_create_int32(env, error, &number);
  napi_set_named_property(env, err, "errno", number);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &name);
  napi_set_named_property(env, err, "syscall", name);
  napi_throw(env, err);
  return nullptr;
}

// An address's IP as a string (what JavaScript compares and logs), its port in *port.
napi_value IpOf(napi_env env, const sockaddr_storage& ss, int32_t* port) {
  char text[INET6_ADDRSTRLEN] = "";
  *port = 0;
  if (ss.ss_family == AF_INET) {
    auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
    *port = ntohs(in.sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    *port = ntohs(in6.sin6_port);
  }
  napi_value ip;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &ip);
  return ip;
}

// An address into a record as bytes (JavaScript makes its text only if it reads it): its IP's
// 4 or 16 bytes at ip, its port in *port; false for none (an unset address).
bool PackAddress(const sockaddr_storage& ss, char* ip, int32_t* port, bool* v6) {
  if (ss.ss_family == AF_INET) {
    auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    memcpy(ip, &in.sin_addr, 4);
    *port = ntohs(in.sin_port);
    *v6 = false;
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    memcpy(ip, &in6.sin6_addr, 16);
    *port = ntohs(in6.sin6_port);
    *v6 = true;
    return true;
  }
  return false;
}

void Ref(napi_env env, Group* engine) {
  if (engine->active++ == 0) napi_ref_threadsafe_function(env, engine->onEvent);
}

void Unref(napi_env env, Group* engine) {
  if (--engine->active == 0) napi_unref_threadsafe_function(env, engine->onEvent);
}

// A pair the engine made on its own (a forward on a start header, a join with a lent one) keeps
// the process alive like one JavaScript asked for; its kPairEnd, always later in the queue,
// releases it.
void Account(napi_env env, Group* engine, const Event& event) {
  if (event.type == Event::kPairEnd || event.type == Event::kPoolPairEnd) Unref(env, engine);
  if ((event.type == Event::kHeader && event.b != 0) || event.type == Event::kJoinedLent) Ref(env, engine);
}

// onEvents(records, side): every event the engine queued since the last call, decoded once on
// the other side (src/engine/substrate/events.ts decodeBatch). One ArrayBuffer of fixed-size
// records (engine.h kEventRecordBytes) and one array of the prefixes too long to be inline, because
// each value made here costs a call into V8: a record is written in place, addresses and a short
// prefix as bytes, where an object per event would cost a property set per field and a string
// per address. For kPairEnd, listenerId carries PairEndFlags.
// The batch's two arguments in args (see CallOnBatch); false when nothing is queued.
bool BatchArguments(napi_env env, Group* engine, napi_value args[2]) {
  std::vector<Event*> batch = engine->TakeBatch();
  if (batch.empty()) return false;
  void* bytes = nullptr;
  napi_create_arraybuffer(env, batch.size() * relay::kEventRecordBytes, &bytes, &args[0]);
  napi_create_array(env, &args[1]);
  uint32_t sideLength = 0;
  auto push = [&](napi_value value) { napi_set_element(env, args[1], sideLength++, value); };
  for (size_t i = 0; i < batch.size(); i++) {
    const Event& event = *batch[i];
    Account(env, engine, event);
    auto* record = static_cast<char*>(bytes) + i * relay::kEventRecordBytes;
    auto* slots = reinterpret_cast<int32_t*>(record);
    auto* wide = reinterpret_cast<double*>(record + 32);
    slots[0] = event.type;
    slots[1] = static_cast<int32_t>(event.id);
    slots[2] = static_cast<int32_t>(event.listenerId);
    slots[3] = event.code;
    slots[4] = slots[5] = slots[6] = 0;
    slots[7] = static_cast<int32_t>(event.stockId);
    wide[0] = static_cast<double>(event.a);
    wide[1] = static_cast<double>(event.b);
    slots[12] = static_cast<int32_t>(event.clientConnId);
    slots[13] = static_cast<int32_t>(event.flags);
    wide[3] = static_cast<double>(event.ageMs);
    wide[4] = static_cast<double>(event.idleMs);
    char* inline_ = record + relay::kEventRecordInline;
    bool v6 = false;
    if (event.hasAddresses && PackAddress(event.remote, inline_, &slots[4], &v6)) {
      slots[6] |= relay::kRecordHasAddresses | (v6 ? relay::kRecordRemoteIPv6 : 0);
      if (PackAddress(event.local, inline_ + 16, &slots[5], &v6)) slots[6] |= relay::kRecordHasLocal | (v6 ? relay::kRecordLocalIPv6 : 0);
    }
    if (event.type == Event::kRefused || event.type == Event::kHeader || !event.prefix.empty()) {
      if (!(slots[6] & relay::kRecordHasAddresses) && event.prefix.size() <= relay::kEventRecordInlineBytes) {
        slots[6] |= relay::kRecordInlinePrefix;
        slots[5] = static_cast<int32_t>(event.prefix.size());
        memcpy(inline_, event.prefix.data(), event.prefix.size());
      } else {
        slots[6] |= relay::kRecordHasPrefix;
        napi_value prefix;
        void* copy = nullptr;
        napi_create_buffer_copy(env, event.prefix.size(), event.prefix.data(), &copy, &prefix);
        push(prefix);
      }
    }
    delete batch[i];
  }
  return true;
}

void CallOnBatch(napi_env env, napi_value callback, void* context, void* /* data */) {
  if (env == nullptr) return;  // torn down: the engine frees what is queued
  napi_value args[2];
  if (!BatchArguments(env, static_cast<Group*>(context), args)) return;
  napi_value global;
  napi_get_global(env, &global);
  napi_call_function(env, global, callback, 2, args, nullptr);
}

// takeEvents() => [records, side] | null: the events the engine threads have handed over and
// JavaScript has not yet heard, taken now rather than at the next call (which then finds fewer
// or none): for JavaScript to bring its books up to date before a decision (engine.h,
// kEventHoldMs).
napi_value TakeEvents(napi_env env, napi_callback_info info) {
  Args call(env, info);
  napi_value result;
  napi_value args[2];
  if (!BatchArguments(env, call.engine, args)) {
    napi_get_null(env, &result);
    return result;
  }
  napi_create_array_with_length(env, 2, &result);
  napi_set_element(env, result, 0, args[0]);
  napi_set_element(env, result, 1, args[1]);
  return result;
}

void Cleanup(void* arg) {
  auto* engine = static_cast<Group*>(arg);
  engine->Stop();
  if (engine->onEvent) napi_release_threadsafe_function(engine->onEvent, napi_tsfn_abort);
  delete engine;
}

napi_value Methods(napi_env env, Group* engine);

// createEngine(onEvent, threads?, holdMs?) => an engine object: starts threads engine threads
// (1 when omitted) whose events go to onEvent, and whose methods (listen, dial, join...) act on
// them. holdMs: how long bookkeeping events may wait for company (engine.h kEventHoldMs when
// omitted; 0: none wait).
napi_value CreateEngine(napi_env env, napi_callback_info info) {
  Args call(env, info);
  napi_valuetype type = napi_undefined;
  napi_typeof(env, call.argv[0], &type);
  if (type != napi_function) return Throw(env, "createEngine needs a callback");
  uint32_t threads = 1;
  if (call.Given(1) && (!call.U32(1, &threads) || threads < 1 || threads > relay::kThreadsMax)) {
    return Throw(env, "createEngine: threads must be 1 to " + std::to_string(relay::kThreadsMax));
  }
  uint32_t holdMs = relay::kEventHoldMs;
  if (call.Given(2) && (!call.U32(2, &holdMs) || holdMs > 60000)) return Throw(env, "createEngine: holdMs must be 0 to 60000");
  auto* engine = new Group(threads);
  for (uint32_t i = 0; i < threads; i++) engine->At(i)->SetEventHold(holdMs);
  napi_value name;
  napi_create_string_utf8(env, "relay-engine", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, call.argv[0], nullptr, name, 0, 1, nullptr, nullptr, engine, CallOnBatch, &engine->onEvent) != napi_ok) {
    delete engine;
    return Throw(env, "napi_create_threadsafe_function failed");
  }
  // Referenced only while pairs or listeners are open, so an idle engine never keeps the
  // process alive.
  napi_unref_threadsafe_function(env, engine->onEvent);
  std::string why;
  if (!engine->Start(&why)) {
    napi_release_threadsafe_function(engine->onEvent, napi_tsfn_abort);
    delete engine;
    return Throw(env, why);
  }
  napi_add_env_cleanup_hook(env, Cleanup, engine);
  return Methods(env, engine);
}

bool ReadHead(napi_env env, napi_value value, std::string* out) {
  napi_valuetype type;
  napi_typeof(env, value, &type);
  if (type == napi_undefined || type == napi_null) return true;
  bool isBuffer = false;
  napi_is_buffer(env, value, &isBuffer);
  if (!isBuffer) return false;
  void* data;
  size_t length;
  napi_get_buffer_info(env, value, &data, &length);
  out->assign(static_cast<const char*>(data), length);
  return true;
}

napi_value Uint32(napi_env env, uint32_t value) {
  napi_value result;
  napi_create_uint32(env, value, &result);
  return result;
}

// join(connA, connB, headToA?, headToB?) => id: two held connections become a pair. If either
// has gone meanwhile, the pair ends at once with ECONNRESET.
napi_value Join(napi_env env, napi_callback_info info) {
  Args call(env, info);
  int32_t conns[2];
  if (!call.I32(0, &conns[0]) || !call.I32(1, &conns[1]) || conns[0] < 0 || conns[1] < 0) return Throw(env, "join needs two held connections");
  auto* pair = new Pair();
  if (!call.Head(2, &pair->dirs[1].head) || !call.Head(3, &pair->dirs[0].head)) {
    delete pair;
    return Throw(env, "join: heads must be Buffers");
  }
  // Both must be held by one thread: connA's (a join across threads ends at once, ECONNRESET).
  Engine* thread = call.engine->For(static_cast<uint32_t>(conns[0]));
  pair->id = thread->NextId();
  Ref(env, call.engine);
  uint32_t id = pair->id;
  thread->Join(pair, static_cast<uint32_t>(conns[0]), static_cast<uint32_t>(conns[1]));
  return Uint32(env, id);
}

// usePool(publicListenerId, dataListenerId, service), admit(clientId),
// activeLimit(dataListenerId, limit): a gray's pool, see lend.cc.
napi_value UsePool(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t publicId, dataId, service;
  if (!call.U32(0, &publicId) || !call.U32(1, &dataId) || !call.U32(2, &service) || service > 255) return Throw(env, "usePool(publicListenerId, dataListenerId, service): bad arguments");
  for (uint32_t i = 0; i < call.engine->Threads(); i++) call.engine->At(i)->UsePool(publicId, dataId, static_cast<uint8_t>(service));
  return nullptr;
}

napi_value Admit(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t id;
  if (!call.U32(0, &id)) return Throw(env, "admit(clientId): bad arguments");
  call.engine->For(id)->Admit(id);
  return nullptr;
}

napi_value ActiveLimit(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t id, limit;
  if (!call.U32(0, &id) || !call.U32(1, &limit)) return Throw(env, "activeLimit(dataListenerId, limit): bad arguments");
  call.engine->SetActiveLimit(id, limit);
  return nullptr;
}

// session(listenerId, epoch, keys?, refillLevel?): the data listener's pool checks preambles
// against this session (keys: a Buffer of the session id and the data key; null: no session);
// refillLevel, if given, says the session's data connections are framed and reused, and below
// how many idle ones a join is worth a successor (engine.h, Framing). credits(listenerId, epoch, explicitUpTo): the
// session's explicit credit limit. See verify.cc.
napi_value Session(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t listenerId, epoch;
  int64_t refillLevel = 0;
  std::string keys;
  const bool reuse = call.Given(3);
  if (call.argc < 3 || !call.U32(0, &listenerId) || !call.U32(1, &epoch) || !call.Head(2, &keys) ||
      (!keys.empty() && keys.size() != relay::kSessionIdBytes + relay::kDataKeyBytes) ||
      (reuse && (!call.I64(3, &refillLevel) || refillLevel < 0 || refillLevel > UINT32_MAX))) {
    return Throw(env, "session(listenerId, epoch, keys, refillLevel): bad arguments");
  }
  call.engine->SetSession(listenerId, epoch, keys, reuse, static_cast<uint32_t>(refillLevel));
  return nullptr;
}

napi_value Credits(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t listenerId, epoch;
  int64_t upTo;
  if (!call.U32(0, &listenerId) || !call.U32(1, &epoch) || !call.I64(2, &upTo) || upTo < 0) return Throw(env, "credits(listenerId, epoch, explicitUpTo): bad arguments");
  call.engine->SetCredits(listenerId, epoch, static_cast<uint64_t>(upTo));
  return nullptr;
}

// An IP address as Node writes it, also an IPv6 address with a zone index (fe80::1%eth0, an
// interface name or number), which Node accepts for any IPv6 address. Host names are resolved
// in JavaScript before an engine sees them.
bool ParseIp(const std::string& text, sockaddr_storage* ss, socklen_t* len) {
  memset(ss, 0, sizeof *ss);
  auto* in = reinterpret_cast<sockaddr_in*>(ss);
  if (inet_pton(AF_INET, text.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    *len = sizeof *in;
    return true;
  }
  size_t percent = text.find('%');
  auto* in6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (inet_pton(AF_INET6, text.substr(0, percent).c_str(), &in6->sin6_addr) != 1) return false;
  if (percent != std::string::npos) {
    std::string zone = text.substr(percent + 1);
    char* end = nullptr;
    unsigned long number = strtoul(zone.c_str(), &end, 10);
    unsigned int index = !zone.empty() && *end == '\0' ? static_cast<unsigned int>(number) : if_nametoindex(zone.c_str());
    if (index == 0) return false;
    in6->sin6_scope_id = index;
  }
  in6->sin6_family = AF_INET6;
  *len = sizeof *in6;
  return true;
}

std::string StringArgument(napi_env env, napi_value value) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, nullptr, 0, &length) != napi_ok) return "";
  std::string text(length, '\0');
  napi_get_value_string_utf8(env, value, &text[0], length + 1, &length);
  return text;
}

// 0.0.0.0 or ::, where an accepted connection's local address depends on the connection.
bool IsWildcard(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return reinterpret_cast<const sockaddr_in&>(ss).sin_addr.s_addr == htonl(INADDR_ANY);
  if (ss.ss_family == AF_INET6) return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr);
  return true;
}

// An IP address (a JavaScript string) and a port as a socket address.
bool ParseEndpoint(napi_env env, napi_value ip, int32_t port, sockaddr_storage* ss, socklen_t* len) {
  if (!ParseIp(StringArgument(env, ip), ss, len)) return false;
  reinterpret_cast<sockaddr_in*>(ss)->sin_port = htons(static_cast<uint16_t>(port));  // same offset in sockaddr_in6
  return true;
}

// An allow-list as JavaScript encodes it (src/engine/protocol/cidr.ts, encodeAllowList): per
// network, family 4|6, prefix length, 16 address bytes. False for anything else.
bool ReadAllow(napi_env env, napi_value value, std::vector<AllowNet>* out) {
  std::string records;
  if (!ReadHead(env, value, &records) || records.size() % 18 != 0) return false;
  out->assign(records.size() / 18, AllowNet());
  for (size_t i = 0; i < out->size(); i++) {
    const char* r = records.data() + i * 18;
    AllowNet& net = (*out)[i];
    net.family = static_cast<uint8_t>(r[0]);
    net.prefix = static_cast<uint8_t>(r[1]);
    memcpy(net.bytes, r + 2, 16);
    if ((net.family != 4 && net.family != 6) || net.prefix > (net.family == 4 ? 32 : 128)) return false;
  }
  return true;
}

// A socket bound to ss and listening (backlog > 0) or only bound (backlog 0), or -1 (errno set).
int OpenListening(const sockaddr_storage& ss, socklen_t len, int keepAliveSec, bool reusePort, int backlog) {
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reusePort) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  // As Node does: "::" also takes IPv4 clients.
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  Engine::TuneSocket(fd, keepAliveSec);  // inherited by the accepted sockets
  if (bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) < 0 || (backlog > 0 && listen(fd, backlog) < 0)) {
    int error = errno;
    close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

// listen(ip, port, backlog, prefixBytes, prefixTimeoutMs, keepAliveSec, watchAny, magic?, allow?)
// => [listenerId, boundPort]. Binds here, on the JavaScript thread, so a failure is an exception
// the caller can report at once. allow: the allow-list from the first accept on (allow.cc).
napi_value Listen(napi_env env, napi_callback_info info) {
  Args call(env, info);
  Group* engine = call.engine;
  int32_t port, backlog, prefix, timeoutMs, keepAliveSec;
  std::string magic;
  std::vector<AllowNet> allow;
  if (!call.Head(7, &magic)) return Throw(env, "listen: magic must be a Buffer");
  if (!ReadAllow(env, call.argv[8], &allow)) return Throw(env, "listen: allow must be a Buffer of 18-byte networks");
  bool watchAny = false;
  if (!call.I32(1, &port) || !call.I32(2, &backlog) || !call.I32(3, &prefix) || !call.I32(4, &timeoutMs) || !call.I32(5, &keepAliveSec) ||
      !call.Bool(6, &watchAny) || port < 0 || port > 65535 || prefix < 0 || prefix > 4096 || timeoutMs < 0 || backlog < 1) {
    return Throw(env, "listen(ip, port, backlog, prefixBytes, prefixTimeoutMs, keepAliveSec, watchAny): bad arguments");
  }
  sockaddr_storage ss;
  socklen_t len;
  if (!ParseEndpoint(env, call.argv[0], port, &ss, &len)) return Throw(env, "listen needs an IP address");
  // One listening socket per thread. With several, each is bound with SO_REUSEPORT so the
  // kernel spreads the connections; a port someone else holds must still be refused, which
  // SO_REUSEPORT alone would not do for a socket of the same user that has it too: a socket
  // without it is bound first, alone, and its port is the one the group binds.
  const uint32_t threads = engine->Threads();
  std::vector<int> fds;
  auto fail = [&](const char* syscall, int error) {
    for (int fd : fds) close(fd);
    return ThrowErrno(env, syscall, error);
  };
  if (threads > 1) {
    int probe = OpenListening(ss, len, keepAliveSec, false, 0);
    if (probe < 0) return fail("listen", errno);
    sockaddr_storage taken{};
    socklen_t takenLen = sizeof taken;
    getsockname(probe, reinterpret_cast<sockaddr*>(&taken), &takenLen);
    close(probe);
    reinterpret_cast<sockaddr_in&>(ss).sin_port = reinterpret_cast<sockaddr_in&>(taken).sin_port;  // same offset in sockaddr_in6
  }
  for (uint32_t i = 0; i < threads; i++) {
    int fd = OpenListening(ss, len, keepAliveSec, threads > 1, backlog);
    if (fd < 0) return fail("listen", errno);
    fds.push_back(fd);
  }
  sockaddr_storage bound{};
  socklen_t boundLen = sizeof bound;
  getsockname(fds[0], reinterpret_cast<sockaddr*>(&bound), &boundLen);
  uint32_t id = engine->At(0)->NextId();
  auto pending = std::make_shared<std::atomic<uint32_t>>(0);
  for (uint32_t i = 0; i < threads; i++) {
    auto* listener = new Listener();
    listener->id = id;
    listener->pending = pending;
    listener->fd = fds[i];
    listener->prefix = static_cast<uint32_t>(prefix);
    listener->magic = magic;
    listener->allow = allow;
    listener->timeoutMs = timeoutMs;
    listener->keepAliveSec = keepAliveSec;
    listener->local = bound;
    listener->localIsWildcard = IsWildcard(bound);
    listener->watchAfter = watchAny ? kWatchAny : kWatchReset;
    engine->At(i)->AddListener(listener);
  }
  Ref(env, engine);
  napi_value result;
  napi_create_array_with_length(env, 2, &result);
  napi_set_element(env, result, 0, Uint32(env, id));
  napi_set_element(env, result, 1, Uint32(env, ntohs(reinterpret_cast<sockaddr_in&>(bound).sin_port)));
  return result;
}

// closeListener(id): stops accepting; connections still reading their prefix are closed.
napi_value CloseListener(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t id;
  if (!call.U32(0, &id)) return nullptr;
  for (uint32_t i = 0; i < call.engine->Threads(); i++) call.engine->At(i)->CloseListener(id);
  call.engine->ForgetShare(id);
  Unref(env, call.engine);
  return nullptr;
}

// filter(listenerId, mode, ip, maxPending): who may connect before a byte is read. mode 0:
// anyone; 1: nobody; 2: only ip. maxPending caps the connections still reading their prefix.
napi_value SetFilter(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t id, mode, maxPending;
  if (!call.U32(0, &id) || !call.U32(1, &mode) || !call.U32(3, &maxPending) || mode > kFilterOnly) return Throw(env, "filter(listenerId, mode, ip, maxPending): bad arguments");
  in6_addr ip{};
  if (mode == kFilterOnly) {
    sockaddr_storage ss;
    socklen_t len;
    if (!ParseIp(StringArgument(env, call.argv[2]), &ss, &len)) return Throw(env, "filter needs an IP address");
    AsV6(ss, &ip);
  }
  for (uint32_t i = 0; i < call.engine->Threads(); i++) call.engine->At(i)->SetFilter(id, static_cast<Filter>(mode), ip, maxPending);
  return nullptr;
}

// Where and how a connection is dialed, into conn (dial and openStock): the arguments ip, port,
// prefixBytes, keepAliveSec and routes? at the positions in at. Returns what is wrong, or nullptr.
const char* ParseDialing(const Args& call, const size_t (&at)[5], Conn* conn) {
  int32_t port, prefix, keepAliveSec;
  if (!call.I32(at[1], &port) || !call.I32(at[2], &prefix) || !call.I32(at[3], &keepAliveSec) || port < 1 || port > 65535 || prefix < 1 || prefix > 4096 ||
      keepAliveSec < 0) {
    return "bad arguments";
  }
  if (!ParseEndpoint(call.env, call.argv[at[0]], port, &conn->remote, &conn->remoteLen)) return "needs an IP address";
  conn->want = static_cast<uint32_t>(prefix);
  conn->keepAliveSec = keepAliveSec;
  // Optional: the service table whose routes it is forwarded by as soon as the start header
  // is in (Conn::routes, routes.cc).
  if (!call.Given(at[4])) return nullptr;
  if (!call.U32(at[4], &conn->routes) || conn->routes == 0) return "routes must be a service table id above 0";
  return nullptr;
}

// setAllow(listenerId, networks): a public port's allow-list, a Buffer of 18-byte records
// (family 4|6, prefix length, 16 address bytes); empty: anyone (allow.cc).
napi_value SetAllow(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t listenerId;
  std::vector<AllowNet> allow;
  if (call.argc < 2 || !call.U32(0, &listenerId) || !ReadAllow(env, call.argv[1], &allow)) {
    return Throw(env, "setAllow(listenerId, networks): bad arguments (networks: a Buffer of 18-byte records)");
  }
  for (uint32_t i = 0; i < call.engine->Threads(); i++) call.engine->At(i)->SetAllow(listenerId, allow);
  return nullptr;
}

// setRoutes(table, routes): a service table's routes by position, each [ip, port,
// keepAliveSec] or null (JavaScript forwards); an empty list forgets the table (routes.cc).
napi_value SetRoutes(napi_env env, napi_callback_info info) {
  Args call(env, info);
  napi_value list = call.argv[1];
  uint32_t table, length;
  bool isArray = false;
  if (!call.U32(0, &table) || table == 0 || napi_is_array(env, list, &isArray) != napi_ok || !isArray || napi_get_array_length(env, list, &length) != napi_ok ||
      length > 256) {
    return Throw(env, "setRoutes(table, routes): bad arguments");
  }
  std::vector<Route> routes(length);
  for (uint32_t i = 0; i < length; i++) {
    napi_value item;
    napi_valuetype type;
    napi_get_element(env, list, i, &item);
    napi_typeof(env, item, &type);
    if (type == napi_null || type == napi_undefined) continue;
    napi_value ip, port, keepAlive;
    int32_t portValue, keepAliveValue;
    if (napi_get_element(env, item, 0, &ip) != napi_ok || napi_get_element(env, item, 1, &port) != napi_ok || napi_get_element(env, item, 2, &keepAlive) != napi_ok ||
        napi_get_value_int32(env, port, &portValue) != napi_ok || napi_get_value_int32(env, keepAlive, &keepAliveValue) != napi_ok || portValue < 1 || portValue > 65535 ||
        keepAliveValue < 0 || !ParseEndpoint(env, ip, portValue, &routes[i].address, &routes[i].len)) {
      return Throw(env, "setRoutes: a route needs an IP address, a port and a keepalive");
    }
    routes[i].forward = true;
    routes[i].keepAliveSec = keepAliveValue;
  }
  for (uint32_t i = 0; i < call.engine->Threads(); i++) call.engine->At(i)->SetRoutes(table, routes);
  return nullptr;
}

// dial(ip, port, preamble, prefixBytes, keepAliveSec, routes?) => connId. The engine connects,
// writes the preamble, then reads exactly prefixBytes and reports them (kHeader); until then it
// reports the connect (kDialed, errno or 0) and a close (kGone). The connection is held
// afterwards, or forwarded by the routes of the service its start header names.
napi_value Dial(napi_env env, napi_callback_info info) {
  Args call(env, info);
  auto* conn = new Conn();
  const char* wrong = !call.Head(2, &conn->preamble) || conn->preamble.empty() ? "bad arguments" : ParseDialing(call, {0, 1, 3, 4, 5}, conn);
  if (wrong != nullptr) {
    delete conn;
    return Throw(env, std::string("dial ") + wrong);
  }
  Engine* thread = call.engine->Next();
  conn->id = thread->NextId();
  uint32_t id = conn->id;
  thread->Dial(conn);
  return Uint32(env, id);
}

// openStock(keys, ip, port, prefixBytes, keepAliveSec, routes?) => stockId: a stock (engine.h
// Stock) of the session whose keys (its session id then its data key) sign its preambles,
// whose connections are dialed like dial()'s.
napi_value OpenStock(napi_env env, napi_callback_info info) {
  Args call(env, info);
  std::string keys;
  if (!call.Head(0, &keys) || keys.size() != relay::kSessionIdBytes + relay::kDataKeyBytes) {
    return Throw(env, "openStock needs the session's keys (its session id then its data key)");
  }
  Conn dial;
  if (const char* wrong = ParseDialing(call, {1, 2, 3, 4, 5}, &dial)) return Throw(env, std::string("openStock ") + wrong);
  uint32_t id = call.engine->OpenStock(dial, keys);
  if (id == 0) return Throw(env, "openStock: OpenSSL has no HMAC-SHA256");
  return Uint32(env, id);
}

// stock(stockId, firstCounter, count, credits, hold): appends count counters from firstCounter
// (safe integers from 1), adds credits and holds (1) or releases (0) the stock (-1: as it is).
napi_value AddToStock(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t id, count, credits;
  int64_t first;
  int32_t hold;
  constexpr int64_t kCounterMax = (int64_t{1} << 53) - 1;  // a JavaScript safe integer
  if (!call.U32(0, &id) || !call.I64(1, &first) || !call.U32(2, &count) || !call.U32(3, &credits) || !call.I32(4, &hold) || hold < -1 || hold > 1 ||
      first < 1 || count > 4096 || first > kCounterMax - count) {
    return Throw(env, "stock(stockId, firstCounter, count, credits, hold): bad arguments");
  }
  call.engine->AddToStock(id, static_cast<uint64_t>(first), count, credits, hold);
  return nullptr;
}

// forward(connId, ip, port, headToService?, keepAliveSec) => pairId: connects to the service
// and joins it (side B) with the held connection (side A). A pair that ends before the service
// answered is flagged kEndedBeforeConnect; one whose connection had gone ends with ECONNRESET.
napi_value Forward(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t connId;
  int32_t port, keepAliveSec;
  auto* pair = new Pair();
  if (!call.U32(0, &connId) || !call.I32(2, &port) || !call.Head(3, &pair->dirs[0].head) || !call.I32(4, &keepAliveSec) || port < 1 || port > 65535 ||
      keepAliveSec < 0) {
    delete pair;
    return Throw(env, "forward(connId, ip, port, headToService, keepAliveSec): bad arguments");
  }
  sockaddr_storage address;
  socklen_t len;
  if (!ParseEndpoint(env, call.argv[1], port, &address, &len)) {
    delete pair;
    return Throw(env, "forward needs an IP address");
  }
  Engine* thread = call.engine->For(connId);
  pair->id = thread->NextId();
  Ref(env, call.engine);
  uint32_t id = pair->id;
  thread->Forward(pair, connId, address, len, keepAliveSec);
  return Uint32(env, id);
}

// A function of one id that only posts a command: a missing engine or a bad id does nothing.
// (A pair or connection is its thread's.)
napi_value ForId(napi_env env, napi_callback_info info, void (Engine::*action)(uint32_t)) {
  Args call(env, info);
  uint32_t id;
  if (call.U32(0, &id)) (call.engine->For(id)->*action)(id);
  return nullptr;
}

// closeStock(id): drops the stock's counters and closes its connections not in a pair.
napi_value CloseStock(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t id;
  if (call.U32(0, &id)) call.engine->CloseStock(id);
  return nullptr;
}

// closeConn(id): closes a held connection.
napi_value CloseConn(napi_env env, napi_callback_info info) { return ForId(env, info, &Engine::CloseConn); }

// destroy(id): ends a pair now (its callback still runs, with ECANCELED).
napi_value Destroy(napi_env env, napi_callback_info info) { return ForId(env, info, &Engine::Destroy); }

// bytes(id) => [fromA, fromB] for a live pair, else null.
napi_value Bytes(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t id;
  uint64_t fromA, fromB;
  napi_value result;
  if (!call.U32(0, &id) || !call.engine->For(id)->Bytes(id, &fromA, &fromB)) {
    napi_get_null(env, &result);
    return result;
  }
  napi_create_array_with_length(env, 2, &result);
  napi_value a, b;
  napi_create_double(env, static_cast<double>(fromA), &a);
  napi_create_double(env, static_cast<double>(fromB), &b);
  napi_set_element(env, result, 0, a);
  napi_set_element(env, result, 1, b);
  return result;
}

// stats() => { pairs, pipes, conns, threads }: live pairs, pipes open (in use or free),
// connections accepted or dialed and not yet joined or closed; threads: the same pairs and
// connections per engine thread ([{ pairs, conns }]), to see the load spread.
napi_value Stats(napi_env env, napi_callback_info info) {
  Group* engine = Args(env, info).engine;
  napi_value result, threads;
  napi_create_object(env, &result);
  double pairs = 0, pipes = 0, conns = 0;
  uint32_t count = engine->Threads();
  napi_create_array_with_length(env, count, &threads);
  for (uint32_t i = 0; i < count; i++) {
    Engine* thread = engine->At(i);
    double threadPairs = static_cast<double>(thread->PairCount());
    double threadConns = static_cast<double>(thread->ConnsHeld());
    pairs += threadPairs;
    conns += threadConns;
    pipes += static_cast<double>(thread->PipesOpen());
    napi_value item, value;
    napi_create_object(env, &item);
    napi_create_double(env, threadPairs, &value);
    napi_set_named_property(env, item, "pairs", value);
    napi_create_double(env, threadConns, &value);
    napi_set_named_property(env, item, "conns", value);
    napi_set_element(env, threads, i, item);
  }
  napi_value value;
  napi_create_double(env, pairs, &value);
  napi_set_named_property(env, result, "pairs", value);
  napi_create_double(env, pipes, &value);
  napi_set_named_property(env, result, "pipes", value);
  napi_create_double(env, conns, &value);
  napi_set_named_property(env, result, "conns", value);
  napi_set_named_property(env, result, "threads", threads);
  return result;
}

// idleTimeout(dataListenerId, ms): the pool resets its pairs silent both ways for ms (0: never).
napi_value IdleTimeout(napi_env env, napi_callback_info info) {
  Args call(env, info);
  uint32_t id, ms;
  if (!call.U32(0, &id) || !call.U32(1, &ms)) return Throw(env, "idleTimeout(dataListenerId, ms): bad arguments");
  for (uint32_t i = 0; i < call.engine->Threads(); i++) call.engine->At(i)->SetIdleTimeout(id, ms);
  return nullptr;
}

// poolPairs(publicListenerId) => [{ pair, conn, ip, port, fromClient, toClient, ageMs }]: the
// live pairs of that port's clients, made on demand (JavaScript keeps no object per pair).
napi_value PoolPairs(napi_env env, napi_callback_info info) {
  Args call(env, info);
  Group* engine = call.engine;
  uint32_t id;
  if (!call.U32(0, &id)) return Throw(env, "poolPairs(publicListenerId): bad arguments");
  std::vector<PoolPairInfo> pairs;
  for (uint32_t i = 0; i < engine->Threads(); i++) {
    std::vector<PoolPairInfo> thread = engine->At(i)->PoolPairs(id);
    pairs.insert(pairs.end(), thread.begin(), thread.end());
  }
  napi_value result;
  napi_create_array_with_length(env, pairs.size(), &result);
  for (size_t i = 0; i < pairs.size(); i++) {
    const PoolPairInfo& p = pairs[i];
    napi_value item, pair, conn, ip, port, fromClient, toClient, age;
    napi_create_object(env, &item);
    napi_create_uint32(env, p.id, &pair);
    napi_create_uint32(env, p.clientConnId, &conn);
    int32_t portNumber;
    ip = IpOf(env, p.client, &portNumber);
    napi_create_int32(env, portNumber, &port);
    napi_create_double(env, static_cast<double>(p.fromClient), &fromClient);
    napi_create_double(env, static_cast<double>(p.toClient), &toClient);
    napi_create_double(env, static_cast<double>(p.ageMs), &age);
    napi_set_named_property(env, item, "pair", pair);
    napi_set_named_property(env, item, "conn", conn);
    napi_set_named_property(env, item, "ip", ip);
    napi_set_named_property(env, item, "port", port);
    napi_set_named_property(env, item, "fromClient", fromClient);
    napi_set_named_property(env, item, "toClient", toClient);
    napi_set_named_property(env, item, "ageMs", age);
    napi_set_element(env, result, static_cast<uint32_t>(i), item);
  }
  return result;
}

napi_value Methods(napi_env env, Group* engine) {
  napi_property_descriptor properties[] = {
      {"join", nullptr, Join, nullptr, nullptr, nullptr, napi_default, engine},
      {"destroy", nullptr, Destroy, nullptr, nullptr, nullptr, napi_default, engine},
      {"bytes", nullptr, Bytes, nullptr, nullptr, nullptr, napi_default, engine},
      {"stats", nullptr, Stats, nullptr, nullptr, nullptr, napi_default, engine},
      {"takeEvents", nullptr, TakeEvents, nullptr, nullptr, nullptr, napi_default, engine},
      {"listen", nullptr, Listen, nullptr, nullptr, nullptr, napi_default, engine},
      {"closeListener", nullptr, CloseListener, nullptr, nullptr, nullptr, napi_default, engine},
      {"filter", nullptr, SetFilter, nullptr, nullptr, nullptr, napi_default, engine},
      {"closeConn", nullptr, CloseConn, nullptr, nullptr, nullptr, napi_default, engine},
      {"dial", nullptr, Dial, nullptr, nullptr, nullptr, napi_default, engine},
      {"forward", nullptr, Forward, nullptr, nullptr, nullptr, napi_default, engine},
      {"usePool", nullptr, UsePool, nullptr, nullptr, nullptr, napi_default, engine},
      {"admit", nullptr, Admit, nullptr, nullptr, nullptr, napi_default, engine},
      {"activeLimit", nullptr, ActiveLimit, nullptr, nullptr, nullptr, napi_default, engine},
      {"session", nullptr, Session, nullptr, nullptr, nullptr, napi_default, engine},
      {"credits", nullptr, Credits, nullptr, nullptr, nullptr, napi_default, engine},
      {"openStock", nullptr, OpenStock, nullptr, nullptr, nullptr, napi_default, engine},
      {"stock", nullptr, AddToStock, nullptr, nullptr, nullptr, napi_default, engine},
      {"closeStock", nullptr, CloseStock, nullptr, nullptr, nullptr, napi_default, engine},
      {"idleTimeout", nullptr, IdleTimeout, nullptr, nullptr, nullptr, napi_default, engine},
      {"poolPairs", nullptr, PoolPairs, nullptr, nullptr, nullptr, napi_default, engine},
      {"setAllow", nullptr, SetAllow, nullptr, nullptr, nullptr, napi_default, engine},
      {"setRoutes", nullptr, SetRoutes, nullptr, nullptr, nullptr, napi_default, engine},
  };
  napi_value object;
  napi_create_object(env, &object);
  napi_define_properties(env, object, sizeof properties / sizeof properties[0], properties);
  return object;
}

}  // namespace

NAPI_MODULE_INIT() {
  napi_property_descriptor properties[] = {
      {"createEngine", nullptr, CreateEngine, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"trimMalloc", nullptr, relay::TrimMalloc, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
  return exports;
}
