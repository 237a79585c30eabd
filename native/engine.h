// The engine: the native data plane. It owns every data connection of a process that has it:
// it listens, accepts, dials, holds, joins connections into pairs and moves their bytes with
// splice(2) instead of through JavaScript. The words (pair, join, held connection, lend,
// forward, prefix, start header, preamble) are the glossary's in docs/architecture.md.
//
// Why: in the JS plane every byte is copied kernel -> user -> kernel at each hop, and those
// copies were most of relay's bulk cost (see docs/performance.md). splice moves the pages between
// a socket and a kernel pipe and from the pipe to the other socket without entering user space,
// which is what a C relay such as haproxy does.
//
// Shape: an Engine is one thread with its own epoll instance; a Group is engine.threads of them,
// which JavaScript sees as one engine, reporting through one thread-safe function (group.cc). JavaScript joins two connections the engine
// holds into a pair (join); an idle pair costs only this file's structs and the kernel's
// sockets. Small messages are copied with recv/send through one shared
// buffer; once a direction streams, it splices, borrowing a pipe from a small free list only
// while bytes are in flight, so thousands of idle pairs hold no pipes. A FIN is passed on as
// a shutdown(SHUT_WR) once everything before it was delivered (half-close), and the second one
// by closing both sockets, which ends the pair (see Pump in pump.cc; on a framed data
// connection END stands for its FIN, and the connection outlives the pair: see Framing below);
// the first error ends the pair, and the pair's sockets are then closed with a reset, so an abort reaches both far
// ends as an abort (only a FIN is passed on as a FIN). When a pair ends, its byte counts and errno reach JavaScript through a thread-safe
// function; JavaScript can end a pair early (destroy) or read its live counts (bytes).
//
// Intake: the engine can also own listening sockets (listen). It accepts on its own thread,
// applies the filter JavaScript set (who may connect at all, how many may be unverified), reads
// a fixed-size prefix (the data port's preamble) under a deadline, checks a gray's preamble with
// the keys JavaScript handed over (verify.cc), keeps the verified connections in the gray's
// pool and joins clients with them by itself (lend.cc); JavaScript hears of it all afterwards,
// and decides only about the clients the engine does not join at accept.
// Until it is joined an accepted connection is held by the engine and watched: JavaScript hears
// when it goes away.
// A connection therefore never becomes a Node socket: that construction and teardown was most
// of the white's cost per client (docs/performance.md).
//
// Dialing: the gray's side of the same idea. The engine opens a pool connection (dial, or from
// a stock: one per credit, and the successor at once for every start header that is a credit, each with a
// preamble the engine signs with the session's data key), writes its preamble once connected, and reads the white's fixed-size
// start header; only then does JavaScript hear of it. JavaScript answers with forward: the engine connects to the local
// service and joins the two at once, the service socket still connecting (a send to it waits
// for its EPOLLOUT like any full socket). Dialed with a service table (Conn::routes),
// the engine forwards by itself as soon as a well-formed header is in, and JavaScript hears
// the header together with the pair's id. A connection that fails is reported as the end of
// that pair, flagged as never connected, so the gray can say the service is unreachable.
//
// Where the code is, one concept a file: this header holds the types every part shares and the
// Engine's declaration; engine.cc the engine thread and its command queue; pump.cc the pairs
// (the data plane proper); intake.cc listeners and held connections; verify.cc the preamble
// check; lend.cc a gray's pool and the joins from it; pool-pairs.cc the pool's pairs (their end
// report, the live list, the idle timeout); dial.cc dialing and the forward on a start header;
// stock.cc the gray's stock (its counters, signed on the engine thread); allow.cc a public
// port's allow-list; routes.cc the gray's service tables; group.cc several engine threads as one
// engine (engine.threads: the listeners per thread, the pools' shared parts, a data connection
// moving to a client's thread, the stock's parts, one event queue); napi.cc the JavaScript
// surface (and memory.cc
// its one call that is not the engine's:
// malloc_trim after startup). The types live in namespace relay (not an anonymous
// namespace) because the Engine's methods are defined in several translation units.
#ifndef RELAY_NATIVE_ENGINE_H_
#define RELAY_NATIVE_ENGINE_H_

#include <node_api.h>

#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

// OpenSSL's MAC context, kept opaque here (only verify.cc includes OpenSSL).
typedef struct evp_mac_ctx_st EVP_MAC_CTX;

namespace relay {

// A pipe of 1 MiB lets one splice move a loopback burst in a single call: a stream costs fewer
// splices and wake-ups per byte than with 256 KiB (relay's CPU per GB of a single bulk stream
// about 0.8x). A pipe's size counts against its user's pipe allowance
// (/proc/sys/fs/pipe-user-pages-soft, 64 MiB by default; beyond it every new pipe of that user
// gets two pages), so a pipe is that big only while the engine has fewer than kBigPipes open,
// and 256 KiB otherwise: a full free list is then at most 8 + 56 / 4 = 22 MiB of it. If the
// allowance is used up anyway, the kernel refuses and the pipe keeps its default size.
constexpr int kBigPipeBytes = 1024 * 1024;
constexpr int64_t kBigPipes = 8;
constexpr int kPipeBytes = 256 * 1024;
// Asked for on each splice into a pipe; the pipe's free space is the real bound.
constexpr size_t kSpliceAsk = 1 << 20;
// Small messages are copied through one engine-wide buffer of this size with recv/send: for a
// few hundred bytes that is cheaper than two splices and a pipe. A read that fills the buffer
// means a stream is flowing, and the direction switches to splice; a splice that brings less
// than kSmallRead switches it back. (haproxy decides the same way between copying and splicing.)
constexpr size_t kCopyBuffer = 64 * 1024;
constexpr size_t kSmallRead = 16 * 1024;
// Free pipes kept for reuse: enough for the directions that are busy at one moment.
constexpr size_t kFreePipesMax = 64;
constexpr int kEventsPerWait = 256;
// The white's start header on a pooled connection (src/engine/protocol/start-header.ts).
constexpr size_t kStartHeaderBytes = 40;
constexpr char kStartHeaderVersion = 2;
// A start header of a session whose data connections are reused (see Framing below): the bytes
// after it are frames, and its byte 7 is flags instead of a reserved zero.
constexpr char kStartHeaderVersionFramed = 3;
constexpr size_t kStartHeaderFlagsOffset = 7;
// The flag: this join is worth a successor credit (the white's pool was below its refill level).
constexpr uint8_t kStartHeaderCredit = 1;
// Where its source and destination addresses are: 16 bytes each, an IPv4 one padded with zeros.
constexpr size_t kStartHeaderSrcOffset = 8;
constexpr size_t kStartHeaderDstOffset = 24;
// Keepalive probes once a socket has been idle for its keepalive time: one a second, ten in all,
// as libuv sets them for Node's sockets, so both data planes give up on a vanished peer alike.
constexpr int kKeepAliveIntervalSec = 1;
constexpr int kKeepAliveProbes = 10;
// TCP_DEFER_ACCEPT on a dialed data connection (dial.cc): any non-zero value makes Linux hold
// the handshake's last ACK for the first bytes sent.
constexpr int kDeferHandshakeAckSec = 1;

// Framing: in a session where both ends are engines, a data connection carries one client after
// another. After the start header each direction is a sequence of frames, a 4-byte big-endian
// length and that many bytes of the client's stream; a frame of length 0 (END) is that
// direction's end, where a raw connection would have a FIN. A pair with a framed side ends when
// END has passed both ways: the client's or service's socket is closed, and the data connection
// goes back to the pool (the white) or waits for the next start header (the gray). Anything
// else that ends a pair (a reset, an error, a data connection closed before END) closes the data
// connection with a reset, as in a raw pair.
constexpr size_t kFrameLengthBytes = 4;
inline void PutFrameLength(char* at, uint32_t n) {
  for (size_t i = 0; i < kFrameLengthBytes; i++) at[i] = static_cast<char>(n >> (8 * (kFrameLengthBytes - 1 - i)));
}

// What an epoll registration points at. A listener or a held connection is registered with
// its pointer; every registered struct starts with its Kind, so an event's pointer can be told
// apart before it is cast (nullptr is the wake descriptor). A pair's socket is registered with
// a key instead (PairKey: the pair's id and the side, the low bit set, which no pointer has),
// looked up when its event comes: a pair closes its sockets without EPOLL_CTL_DEL (close
// removes the registration with the socket), and if another descriptor still held a socket (a
// fork between fork and exec), an event of the registration that outlived the pair finds no
// pair, where a pointer would point at freed memory.
enum class Kind : uint8_t { kListener, kConn };
constexpr uint64_t kPairKeyTag = 1;
inline uint64_t PairKey(uint32_t id, int index) { return static_cast<uint64_t>(id) << 2 | static_cast<uint64_t>(index) << 1 | kPairKeyTag; }

// Who a listener lets in, before any byte is read (set by JavaScript, see filter()).
enum Filter : uint8_t { kFilterAnyone = 0, kFilterNobody = 1, kFilterOnly = 2 };
// What a held connection's watch reports: anything (a pooled connection must stay silent), or
// only a reset/hang-up (a waiting client may send bytes or a FIN and still wants its answer).
enum Watch : uint8_t { kWatchReset = 0, kWatchAny = 1 };
// Why the engine refused or dropped a connection on its own (the codes JavaScript maps).
enum Refusal : int32_t {
  kRefusedNoSession = 1,
  kRefusedWrongSource = 2,
  kRefusedTooMany = 3,
  kRefusedTimeout = 4,
  kRefusedEnded = 5,
  kRefusedError = 6,
  kRefusedBadMagic = 7,  // the prefix does not start as it must: refused at the first wrong byte
  kRefusedExtra = 8,     // bytes right behind the prefix, where the peer must wait
  // The preamble check (verify.cc), in the order it is made:
  kRefusedBadCounter = 9,     // counter 0 or beyond 2^53 - 1
  kRefusedOtherSession = 10,  // names a session that is not the gray's current one
  kRefusedBadTag = 11,        // the HMAC tag does not verify
  kRefusedReplay = 12,        // counter used already
  kRefusedNoCredit = 13,      // counter beyond the credits granted
  kRefusedNotAllowed = 14,    // the source is not in the listener's allow-list (allow.cc)
};

// One network of a public port's allow-list (allow.cc): family 4 or 6, the network's bytes
// (IPv4 in the first four), its prefix length.
struct AllowNet {
  uint8_t family = 0;
  uint8_t bytes[16] = {};
  uint8_t prefix = 0;
};

// Where the gray forwards a service's clients by itself (routes.cc): a position of a session's
// service table. forward is false for a service JavaScript forwards (a PROXY header to write,
// or a position whose service was removed).
struct Route {
  bool forward = false;
  sockaddr_storage address{};
  socklen_t len = 0;
  int keepAliveSec = 0;
};
// Why a held connection went away.
enum GoneReason : int32_t { kGoneClosed = 1, kGoneData = 2 };

// The white's pool of one gray, owned by the gray's data listener (verify.cc): what the engine
// needs to check a data connection's preamble on its own thread. JavaScript hands over the
// session's keys when a session starts (SetSession) and the explicit credit limit whenever it
// grows (SetCredits, from WELCOME and GRANT); the implicit credits (one per start header) the
// engine counts itself when it joins one of the pool's connections, before the start header can
// reach the gray. The counter window is the one of src/engine/protocol/replay-window.ts: every
// counter up to floor is used, and the used ones above it are remembered, at most the credits
// beyond floor. With several engine threads each has its own Pool (its held connections) and
// all share one SharedPool (the keys, the window, the active count).
constexpr size_t kPreambleBytes = 60;
constexpr size_t kSessionIdBytes = 16;
constexpr size_t kDataKeyBytes = 32;
// HMAC-SHA256 keyed with a session's data key (verify.cc), or nullptr; a copy of it does each
// computation, so it stays keyed. The gray's stock signs its preambles with one (Sign), the
// white's pool checks them with another. A keyed context is not thread-safe: each engine
// thread's part of a stock has its own.
EVP_MAC_CTX* KeyedMac(const uint8_t* key);
// The preamble of counter in session (src/engine/protocol/preamble.ts): false if the MAC failed.
bool Sign(EVP_MAC_CTX* keyed, const uint8_t* sessionId, uint64_t counter, uint8_t* preamble);
// What every thread's Pool of one gray shares (group.cc): the session's keys, the credits and
// the counter window, so a preamble used on one thread's copy of the data port is refused on
// every other; and the active pairs, so the active-client limit holds across threads. The mutex
// is taken once per data connection's check and once per join, never on the byte path. idle and
// waiting publish each thread's counts, so a thread whose pool is empty knows where to ask.
constexpr uint32_t kThreadsMax = 16;
struct SharedPool {
  SharedPool() = default;
  SharedPool(const SharedPool&) = delete;
  SharedPool& operator=(const SharedPool&) = delete;
  ~SharedPool();
  std::mutex mutex;
  uint32_t epoch = 0;  // JavaScript's number for the current session; 0: there is none
  uint8_t sessionId[kSessionIdBytes] = {};
  EVP_MAC_CTX* mac = nullptr;  // HMAC-SHA256 keyed with the session's data key, copied per check
  uint64_t explicitCredits = 0;
  uint64_t implicitCredits = 0;
  uint64_t floor = 0;
  std::unordered_set<uint64_t> seen;
  // The pool's pairs over all threads, and how many may run before clients stop being joined at
  // accept (JavaScript sets it: the active-client limit, or 0 while an authorize hook decides).
  std::atomic<uint32_t> active{0};
  std::atomic<uint32_t> activeLimit{0};
  // The session's data connections are framed and reused (the gray asked for it), and the idle
  // count below which the pool is refilled: a join is worth a successor credit only while fewer
  // are idle over all threads (JavaScript's GraySession.refillLevel).
  std::atomic<bool> reuse{false};
  std::atomic<uint32_t> refillLevel{0};
  std::atomic<int32_t> idle[kThreadsMax] = {};
  std::atomic<int32_t> waiting[kThreadsMax] = {};
};

struct Pool {
  // Pairing (lend.cc), this thread's part. Verified connections wait in idle (newest last) for a
  // client; clients wait in waiting (oldest first) for a connection. Ids of connections that
  // went away meanwhile are skipped when met. A client is joined at accept, without JavaScript,
  // only while the shared active count is below its limit.
  std::shared_ptr<SharedPool> shared;
  uint32_t listenerId = 0;  // its data listener's
  std::vector<uint32_t> idle;
  std::deque<uint32_t> waiting;
  // The connections in idle and the clients in waiting that are still held (the lists keep the
  // ids of those gone until met): what the thread publishes in the SharedPool, so another
  // thread is never sent to a client or asked for a connection that has gone.
  uint32_t liveIdle = 0;
  uint32_t liveWaiting = 0;
  // idle is rid of the ones gone meanwhile when it reaches this size (then twice what is left),
  // so it stays near the pool's size at a constant cost per connection.
  size_t pruneAt = 16;
  // The gray's idle timeout (pool-pairs.cc): a pair of this pool with no byte either way for this
  // long is reset and its end flagged kEndedIdle; 0: none.
  int64_t idleTimeoutMs = 0;
};

struct Listener {
  Kind kind = Kind::kListener;
  uint32_t id = 0;
  int fd = -1;
  uint32_t prefix = 0;
  std::string magic;  // what every prefix starts with
  int timeoutMs = 0;
  int keepAliveSec = 0;
  Watch watchAfter = kWatchReset;
  Filter filter = kFilterAnyone;
  in6_addr allowed{};
  uint32_t maxPending = UINT32_MAX;
  // Connections still reading their prefix, over every thread's copy of the port (group.cc).
  std::shared_ptr<std::atomic<uint32_t>> pending = std::make_shared<std::atomic<uint32_t>>(0);
  // A public port: the data listener whose pool serves its clients (lend.cc); 0: none.
  uint32_t poolListenerId = 0;
  // A public port: who may connect (empty: anyone), checked at accept before a byte is read;
  // and the service index of its clients' start headers, the gray's for this port's service in
  // the current session (lend.cc).
  std::vector<AllowNet> allow;
  uint8_t service = 0;
  // The bound address: every accepted connection's local address, unless bound to a wildcard
  // (0.0.0.0, ::), where it depends on the connection and getsockname must ask.
  sockaddr_storage local{};
  bool localIsWildcard = true;
  int64_t resumeAt = 0;  // accept paused until then (out of descriptors)
  // A gray's data port: its pool (verify.cc, lend.cc), made by the first command about it.
  std::unique_ptr<Pool> pool;
};

// A connection the engine holds before it is joined: accepted by a listener (listenerId != 0)
// or dialed for JavaScript (listenerId == 0, see dial()).
struct Conn {
  Kind kind = Kind::kConn;
  uint32_t id = 0;
  int fd = -1;
  uint32_t listenerId = 0;
  enum State : uint8_t { kConnecting, kPrefix, kHeld, kGone } state = kPrefix;
  Watch watch = kWatchReset;
  uint32_t want = 0;
  int keepAliveSec = 0;
  std::string prefix;
  std::string preamble;  // dialed by JavaScript: written once connected (a stock's: see counter)
  sockaddr_storage remote{};
  socklen_t remoteLen = 0;
  // A client's local address (its start header's destination), asked once at accept.
  sockaddr_storage local{};
  bool hasLocal = false;
  // Dialed with a service table (routes.cc, 0: none): once a well-formed start header is read,
  // the engine forwards the connection to the route of the header's service by itself,
  // without waiting for JavaScript (see ForwardDialed in dial.cc).
  uint32_t routes = 0;
  // A data connection whose preamble the engine verified: the session's epoch and its counter;
  // dialed from a stock: the counter of the preamble it writes once connected.
  uint32_t epoch = 0;
  uint64_t counter = 0;
  // Dialed from a stock (see Stock): its start header credits that stock with one dial.
  uint32_t stockId = 0;
  // A data connection that came from another thread's pool: the group routes its id here;
  // hops: how often it moved (a bound on its moves, see kMaxHops in group.cc).
  bool moved = false;
  uint8_t hops = 0;
  // In the idle list or the waiting queue of the pool of data listener queuedIn (lend.cc): the
  // pool counts it there until it is taken out or goes away (Unqueue).
  enum Queued : uint8_t { kNotQueued, kQueuedIdle, kQueuedWaiting } queued = kNotQueued;
  uint32_t queuedIn = 0;
  // Not in the epoll set: a client while the engine tries to join it at accept (Accepted).
  bool unregistered = false;
  // A data connection whose bytes after the start header are frames: the white's, of a session
  // that reuses them; the gray's, once it read a framed start header (kStartHeaderVersionFramed).
  bool framed = false;
  // The gray's framed connection: bytes read behind its start header with the previous
  // client's END (the next client's first frames), for its pair to decode first.
  std::string early;
};

// The gray's stock (stock.cc): counters JavaScript gave out ahead of need, in the order they are
// to be used, and the credits to use them. The engine dials one connection for every credit
// while it has counters, each with its counter's preamble, which it signs with the session's
// data key (JavaScript handed the keys over when the session started): JavaScript credits the
// explicit ones (WELCOME, GRANT), and every start header read on a connection dialed from the
// stock that is a credit (every raw one, a framed one with kStartHeaderCredit) is an implicit
// credit the engine counts by itself, so the successor is dialed at once,
// with no JavaScript between. A dial that fails before its preamble was sent gives its counter
// back (used first) with its credit and holds the stock until JavaScript releases it (its
// backoff). The counters stay JavaScript's: it gives each out once, to one stock.
// With several engine threads, every thread has its part of a stock (the same id) and all share
// one StockShare: the counters are one queue, taken in order under its mutex once per dial, so
// the white sees the counters used densely whichever thread dials, and one hold.
// JavaScript tops a stock up when it hears of the start headers that used its counters, and hears
// of them late (kEventHoldMs) unless told at once: a turn that leaves a stock with kStockLowWater
// counters or fewer posts its events now, so the engine does not run dry and leave the white's
// pool without successors while JavaScript's events wait. Half of the lead JavaScript gives
// (STOCK_LEAD, src/engine/gray/pool-dialer.ts).
constexpr size_t kStockLowWater = 16;
struct StockShare {
  std::mutex mutex;
  std::deque<uint64_t> counters;  // guarded by mutex
  std::atomic<bool> hold{false};
};
struct Stock {
  Stock() = default;
  Stock(const Stock&) = delete;
  Stock& operator=(const Stock&) = delete;
  ~Stock();
  uint32_t id = 0;
  Conn dial;  // what every connection dialed from it copies: the white, prefix, keepalive, routes
  // This thread's keyed MAC (made from the session's data key: one per thread, since a context
  // is not thread-safe) and the session id it signs for.
  uint8_t sessionId[kSessionIdBytes] = {};
  EVP_MAC_CTX* mac = nullptr;
  // The credits are each thread's (JavaScript's explicit ones dealt round-robin, the implicit
  // one of a start header kept by the thread that read it), so a connection's successor is
  // dialed on its own thread.
  std::shared_ptr<StockShare> share;
  uint64_t credits = 0;
};

// One way through a pair: bytes read from src are written to dst.
struct Direction {
  int src = -1;
  int dst = -1;
  int pipeRead = -1;
  int pipeWrite = -1;
  size_t inPipe = 0;
  // Bytes JavaScript had already read or must send first (a start header, a PROXY header, a
  // waiting client's early bytes), and later what a copied read could not send at once:
  // written to dst before anything else is read from src.
  std::string head;
  size_t headSent = 0;
  bool eof = false;
  bool shut = false;
  bool splicing = false;
  // dst refused bytes (EAGAIN): this direction waits for dst's EPOLLOUT, src left unread.
  bool blocked = false;
  // dst is still connecting (forward): nothing is read for it yet, and a FIN must not be
  // passed on, since shutting down a socket in SYN-SENT aborts the connection.
  bool dstConnecting = false;
  // src reported a FIN, hang-up or error: read it to the end, never stop at a short read.
  bool srcClosing = false;
  // src reported its FIN (EPOLLRDHUP): a short read has reached it (see Pump).
  bool srcFin = false;
  // Framing (see kFrameLengthBytes). encode: dst is a framed data connection, every read from src
  // goes out as a frame and src's end as END (endQueued: END is in head, or gone). decode: src is
  // one; frameLeft is what the current frame still has to come, length the next frame's length
  // as far as read (lengthGot bytes of it), and END is src's end.
  bool encode = false;
  bool endQueued = false;
  bool decode = false;
  bool streamed = false;  // decoding: the last frame was spliced; the next read takes only a length
  uint32_t frameLeft = 0;
  uint8_t lengthGot = 0;
  uint8_t length[kFrameLengthBytes] = {};
  // Decoding: bytes read from src that are still to be decoded (the gray: frames that came
  // behind the start header, read with the previous client's END), and, once END is read, what
  // came behind it (the next start header and frames), which the connection keeps.
  std::string early;
  std::atomic<uint64_t> bytes{0};
};

struct Pair {
  uint32_t id = 0;
  int fds[2] = {-1, -1};  // side A, side B
  Direction dirs[2];  // dirs[0]: fds[0] -> fds[1]; dirs[1]: fds[1] -> fds[0]
  bool dead = false;
  // Forward: side B is the service, connecting until its first EPOLLOUT. A pair that ends
  // before that never reached the service.
  bool connectingB = false;
  // Joined with a data connection of this listener's pool: counted in its active pairs.
  uint32_t poolListenerId = 0;
  // Forwarded from a stock's connection (stock.cc): its end is reported with the stock's id,
  // and, if it never reached the service, with the start header (for the log of whose client
  // it was), kept only until the service answers. JavaScript keeps no object per such pair.
  uint32_t stockId = 0;
  std::string header;
  // A client joined with a pooled connection (lend.cc), which reports itself (pool-pairs.cc):
  // its public listener, its held connection's id, its address, when it was joined. Set before
  // the pair is registered and never changed, so PoolPairs reads them under the mutex alone.
  uint32_t clientListenerId = 0;
  uint32_t clientConnId = 0;
  sockaddr_storage client{};
  int64_t joinedAtMs = 0;
  // The idle timeout's view (engine thread only): the byte total last seen, since when.
  uint64_t idleSeenBytes = 0;
  int64_t idleSinceMs = 0;
  bool endedIdle = false;
  // The side that is a framed data connection (-1: none), and what it becomes when the pair ends
  // cleanly (ReuseDataConn): the white's goes back to its data listener's pool, if the session
  // is still dataEpoch; the gray's waits for its stock's (dataStockId) next start header.
  int framedSide = -1;
  uint32_t dataListenerId = 0;
  uint32_t dataStockId = 0;
  uint32_t dataEpoch = 0;
  sockaddr_storage dataRemote{};
  bool reused = false;
  // Joined with a framed connection while its pool had its refill level idle: the start header
  // says so, and neither end counts the join as a successor credit (verify.cc CountJoin).
  bool noCredit = false;
};

// How a pair's end is flagged to JavaScript (the event's `code` stays the errno).
// kEndedReused: the pair's data connection was kept for the next client (see Framing).
enum PairEndFlags : uint32_t { kEndedBeforeConnect = 1, kEndedIdle = 2, kEndedReused = 4 };

// What the engine tells JavaScript, through one thread-safe function.
struct Event {
  // kDialed: a dialed connection connected (code 0, preamble written) or failed (code errno);
  // kHeader: a dialed connection read its prefix (the white's start header); b is the pair the
  // engine forwarded it into by itself (Conn::routes), or 0 when JavaScript is to forward it.
  // kJoinedLent: a client (a) was joined with a lent connection (b) into pair id (lend.cc).
  // kAccepted of a verified data connection (verify.cc): a is its counter, b its session epoch;
  // a is 0 for one back in the pool after a pair (ReuseDataConn, pump.cc).
  // kJoinedLent's and kHeader's code is 1 when the join gave the gray no successor credit (see
  // Framing).
  // kPoolPairEnd: a pair of kJoinedLent ended (pool-pairs.cc): listenerId is the client's
  // public listener, remote the client; flags, clientConnId, ageMs and idleMs say the rest.
  // (The numbers are also in src/engine/substrate/codes.ts; a test compares the two.)
  // kDialed carries the connection's stock in listenerId (0: dialed by JavaScript).
  enum Type : int32_t { kPairEnd = 0, kAccepted = 1, kRefused = 2, kGone = 3, kListenerError = 4, kDialed = 5, kHeader = 6, kJoinedLent = 7, kPoolPairEnd = 8 } type;
  explicit Event(Type t) : type(t) {}
  uint32_t id = 0;          // pair (kPairEnd) or connection
  uint32_t listenerId = 0;  // 0 for a dialed connection; kPairEnd: PairEndFlags
  int32_t code = 0;         // errno (kPairEnd, kListenerError), Refusal or GoneReason
  uint64_t a = 0;           // kPairEnd: bytes from A; kRefused: prefix bytes received
  uint64_t b = 0;           // kPairEnd: bytes from B
  std::string prefix;       // kAccepted: the prefix read; kPairEnd: see Pair::header
  uint32_t stockId = 0;     // kPairEnd, kHeader, kGone: the stock of the connection, 0 for none
  bool hasAddresses = false;
  sockaddr_storage remote{};
  sockaddr_storage local{};
  // kPoolPairEnd only.
  uint32_t flags = 0;
  uint32_t clientConnId = 0;
  int64_t ageMs = 0;
  int64_t idleMs = 0;
};

// One live pair of a pool as PoolPairs reports it to JavaScript.
struct PoolPairInfo {
  uint32_t id = 0;
  uint32_t clientConnId = 0;
  sockaddr_storage client{};
  uint64_t fromClient = 0;
  uint64_t toClient = 0;
  int64_t ageMs = 0;
};

// Events cross to JavaScript in batches: the engine thread collects a loop turn's events and
// appends them to one queue; only an append to an empty queue calls the thread-safe function,
// so JavaScript is entered once per turn, or once for several turns while it is behind.
// Most events are bookkeeping (a pair's end, a join from the pool, a verified connection going
// into the pool, a dial from a stock, a header the engine forwarded): nothing waits for
// JavaScript's answer to them, so the engine holds them for up to kEventHoldMs (or
// kEventHoldMax events) and JavaScript wakes once for many connections. An event JavaScript must
// act on for a client to move (see MustPostNow in engine.cc) posts at once, with everything held
// before it, in order. On the
// JavaScript thread a batch is one ArrayBuffer of fixed-size records plus one array for the
// variable parts (napi.cc CallOnBatch, src/engine/substrate/events.ts decodeBatch). A record:
// int32 slots type, id, listenerId, code, remotePort, localPort, flags, stockId; float64 a, b;
// int32 clientConnId, endFlags; float64 ageMs, idleMs (the last four: kPoolPairEnd's); then
// kEventRecordInlineBytes of bytes: the remote and local IP addresses (16 bytes each, an IPv4
// address in the first 4), or a prefix short enough (a start header), its length in the
// localPort slot. Addresses cross as bytes: JavaScript makes their text only when something
// reads it, which for most connections nothing does.
constexpr size_t kEventRecordBytes = 112;
constexpr size_t kEventRecordInline = 72;
constexpr size_t kEventRecordInlineBytes = 40;
constexpr int64_t kEventHoldMs = 5;
constexpr size_t kEventHoldMax = 512;
// A record's flags: what it carries inline (the addresses and their families, or a prefix), and
// whether a prefix too long for that follows in the side array (a Buffer).
enum EventRecordFlags : uint32_t { kRecordHasPrefix = 1, kRecordHasAddresses = 2, kRecordHasLocal = 4, kRecordRemoteIPv6 = 8, kRecordLocalIPv6 = 16, kRecordInlinePrefix = 32 };

struct Command {
  enum Kind { kJoin, kDestroy, kStop, kAddListener, kCloseListener, kFilter, kCloseConn, kDial, kForward, kSession, kUsePool, kAdmit, kOpenStock, kStock, kCloseStock, kIdleTimeout, kAllow, kRoutes, kWant, kAdopt, kFetchForJoin } kind;
  explicit Command(Kind k) : kind(k) {}
  Pair* pair = nullptr;
  Conn* conn = nullptr;     // kDial; kAdopt, kJoin: a held connection from another thread
  sockaddr_storage address{};  // kForward: the service
  socklen_t addressLen = 0;
  int keepAliveSec = 0;
  uint32_t id = 0;  // pair, listener or connection
  uint32_t connA = 0;
  uint32_t connB = 0;
  Listener* listener = nullptr;
  Filter filter = kFilterAnyone;
  in6_addr ip{};
  uint32_t maxPending = 0;
  uint64_t count = 0;     // kIdleTimeout: ms; kWant: the threads asked so far
  // kOpenStock: this thread's part of the stock; kStock: credits for this thread.
  Stock* stock = nullptr;
  uint32_t credits = 0;
  uint8_t service = 0;          // kUsePool
  std::vector<AllowNet> allow;  // kAllow
  std::vector<Route> routes;    // kRoutes
};

inline int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// An address as a v6 address (IPv4 as ::ffff:a.b.c.d), for comparing sources.
inline bool AsV6(const sockaddr_storage& ss, in6_addr* out) {
  if (ss.ss_family == AF_INET6) {
    *out = reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr;
    return true;
  }
  if (ss.ss_family == AF_INET) {
    memset(out, 0, sizeof *out);
    out->s6_addr[10] = 0xff;
    out->s6_addr[11] = 0xff;
    memcpy(&out->s6_addr[12], &reinterpret_cast<const sockaddr_in&>(ss).sin_addr, 4);
    return true;
  }
  return false;
}

// Accepting stops for this long when the process is out of descriptors (level-triggered
// readiness would otherwise spin); the waiting connections stay in the kernel's backlog.
constexpr int kAcceptPauseMs = 100;
// Accepts per wake-up, so one busy listener cannot starve the pairs.
constexpr int kAcceptsPerWake = 64;

class Group;

class Engine {
 public:
  // One of group's count threads, the index-th: its ids are those equal to index modulo count.
  Engine(Group* group, uint32_t index, uint32_t count) : group_(group), index_(index), count_(count) {}
  ~Engine();

  // The JS thread's side (engine.cc). Start starts the engine thread; the other calls post a
  // command to it, except Bytes and PairCount, which read under the mutex.
  bool Start(std::string* why);
  void Stop();
  // Before Start: how long bookkeeping events may be held (0: every turn's events post at once).
  void SetEventHold(int64_t ms) { eventHoldMs_ = ms; }

  // JS thread. Takes ownership of pair, whose sockets become the two held connections.
  void Join(Pair* pair, uint32_t connA, uint32_t connB);

  void Destroy(uint32_t id);

  // JS thread. Takes ownership of listener (already bound and listening).
  void AddListener(Listener* listener);

  // Refuses new connections at once (shutdown of the listening socket, on the calling thread),
  // so a port is closed when JavaScript says so; the engine then closes it for good.
  void CloseListener(uint32_t id);
  void SetFilter(uint32_t id, Filter filter, const in6_addr& ip, uint32_t maxPending);
  void CloseConn(uint32_t id);

  // JS thread. Takes ownership of conn (its remote address, prefix size and preamble are set).
  void Dial(Conn* conn);

  // JS thread. Takes ownership of pair: side A becomes the held connection connId, side B a new
  // connection to address.
  void Forward(Pair* pair, uint32_t connId, const sockaddr_storage& address, socklen_t len, int keepAliveSec);

  // JS thread (lend.cc). UsePool: the public listener's clients are served by the data
  // listener's pool (0: by none), their start headers naming service (the gray's index for the
  // port's service; JavaScript calls it again when that index changes). Admit: the held client
  // (admitted by JavaScript) is joined with the pool's newest idle connection now, or waits for
  // the next one verified. SetActiveLimit: how many of the pool's pairs may run before clients
  // stop being joined at accept.
  void UsePool(uint32_t publicListenerId, uint32_t dataListenerId, uint8_t service);
  void Admit(uint32_t clientId);

  // JS thread (verify.cc): makes this thread's part of the data listener's pool (its session,
  // credits and active limit are set in the group's SharedPool).
  void UseShared(uint32_t listenerId);

  // JS thread (pool-pairs.cc). SetIdleTimeout: the data listener's pool resets its pairs silent
  // both ways for timeoutMs (0: never). PoolPairs: the live pairs of clients of a public
  // listener, read under the mutex (for the state API; JavaScript keeps no object per pair).
  void SetIdleTimeout(uint32_t dataListenerId, uint32_t timeoutMs);
  std::vector<PoolPairInfo> PoolPairs(uint32_t publicListenerId);
  // JS thread (allow.cc). A public port's allow-list, for the clients it accepts from now on.
  void SetAllow(uint32_t listenerId, std::vector<AllowNet> allow);
  // JS thread (routes.cc). A service table's routes, position by position, replacing what it
  // had; an empty list forgets the table.
  void SetRoutes(uint32_t table, std::vector<Route> routes);

  bool Bytes(uint32_t id, uint64_t* fromA, uint64_t* fromB);
  size_t PairCount();

  // JS thread (stock.cc). OpenStock takes ownership of this thread's part of a stock (keyed,
  // see Stock). AddToStock adds credits and dials what the stock's counters and hold allow
  // (Group's AddToStock appended them); CloseStock closes every connection dialed from it that
  // is not in a pair.
  void OpenStock(Stock* stock);
  void AddToStock(uint32_t id, uint32_t credits);
  void CloseStock(uint32_t id);

  int64_t PipesOpen() const { return pipesOpen_.load(std::memory_order_relaxed); }
  int64_t ConnsHeld() const { return connsHeld_.load(std::memory_order_relaxed); }

  // Ids are unique in the process: this thread's are index_ modulo count_ (never 0), so the
  // group finds the thread of a pair or connection from its id alone.
  uint32_t NextId() {
    uint32_t n = nextId_.fetch_add(1, std::memory_order_relaxed) % (UINT32_MAX / count_ - 1) + 1;
    return n * count_ + index_;
  }
  uint32_t Index() const { return index_; }
  // TCP_NODELAY, and keepalive after keepAliveSec (0: none). Set on a listening socket, it is
  // inherited by every socket accepted from it (Linux copies these options at accept), so the
  // accept path pays no setsockopt.
  static void TuneSocket(int fd, int keepAliveSec);
  // Closes fd with a reset (SO_LINGER {1, 0}) instead of a FIN: how an abort reaches the peer.
  // Whatever the socket still had to send is discarded; the peer's read says ECONNRESET, so it
  // cannot take a cut transfer for a complete one.
  static void Abort(int fd);

 private:
  Group* group_;
  uint32_t index_;
  uint32_t count_;
  int epollFd_ = -1;
  int wakeFd_ = -1;
  std::thread thread_;
  std::mutex mutex_;
  std::deque<Command> commands_;                 // guarded by mutex_
  std::unordered_map<uint32_t, Pair*> pairs_;    // guarded by mutex_; live pairs only
  // The pairs whose sockets are registered, for the engine thread's dispatch of their events:
  // a second map so that no event takes mutex_ (which JavaScript's Bytes and PairCount take).
  std::unordered_map<uint32_t, Pair*> armed_;    // engine thread only
  std::vector<std::pair<int, int>> freePipes_;   // engine thread only
  std::vector<Pair*> graveyard_;                 // engine thread only
  std::vector<Conn*> connGraveyard_;             // engine thread only
  std::vector<Listener*> listenerGraveyard_;     // engine thread only
  std::unordered_map<uint32_t, Listener*> listeners_;  // engine thread only
  std::unordered_map<uint32_t, int> listenerFds_;      // guarded by mutex_; for CloseListener
  std::unordered_map<uint32_t, Conn*> conns_;          // engine thread only
  std::unordered_set<uint32_t> closeOnAdopt_;          // engine thread only (group.cc)
  std::unordered_map<uint32_t, std::vector<Route>> routes_;  // engine thread only (routes.cc)
  // Prefix deadlines, earliest first; stale entries (connection no longer reading) are skipped.
  std::priority_queue<std::pair<int64_t, uint32_t>, std::vector<std::pair<int64_t, uint32_t>>, std::greater<>> deadlines_;
  std::atomic<int64_t> pipesOpen_{0};
  std::atomic<int64_t> connsHeld_{0};
  std::atomic<uint32_t> nextId_{0};
  bool stopping_ = false;
  // This turn's events (engine thread only), handed to the group's queue at its end; those
  // handed over without waking JavaScript are held (see kEventHoldMs): heldUntilMs_ is when
  // JavaScript must be woken for them (0: none held), held_ how many; postNow_: this turn has
  // an event that must be posted at once.
  std::vector<Event*> turnEvents_;
  int64_t eventHoldMs_ = kEventHoldMs;
  int64_t heldUntilMs_ = 0;
  size_t held_ = 0;
  bool postNow_ = false;
  std::vector<char> copyBuffer_ = std::vector<char>(kCopyBuffer);  // engine thread only

  // ---- The thread and its commands (engine.cc) ----
  static bool Fail(std::string* why, const char* what);
  void Register(Pair* pair);
  void Post(const Command& command);
  // The commands that carry only ids: of a pair, listener or connection, and a connection.
  void PostForId(Command::Kind kind, uint32_t id, uint32_t connA = 0);
  void Emit(Event* event);
  // Hands this turn's events over and wakes JavaScript for them and every one held.
  void FlushEvents();
  // End of a loop turn: hands the turn's events over, and wakes JavaScript unless they may be
  // held (now: NowMs()).
  void EndTurn(int64_t now);
  int WaitTimeout(int64_t now);
  void Run();
  void RunCommands();
  // Socket helpers shared by the pairs, the intake and the dialer.
  static int SocketError(int fd);

  // ---- Pairs (pump.cc) ----
  void OnPairEvent(uint64_t key, uint32_t events);
  void Arm(Pair* pair, bool registeredA, bool registeredB);
  void StartJoin(Pair* pair, uint32_t idA, uint32_t idB);
  void StartForward(Pair* pair, uint32_t connId, const sockaddr_storage& address, socklen_t len, int keepAliveSec);

  static constexpr uint32_t kClosing = EPOLLRDHUP | EPOLLHUP | EPOLLERR;
  static constexpr uint32_t kReadable = EPOLLIN | kClosing;

  void Service(Pair* pair, int sideIndex, uint32_t events);
  void Settle(Pair* pair, int error);
  static int Blocked(Direction& d);
  static bool HeadWaiting(const Direction& d) { return d.headSent < d.head.size(); }
  int SendCopied(Direction& d, const char* data, size_t n, bool last);
  int Pump(Pair* pair, int index, bool read);
  // Framing (pump.cc): the payloads of the frames in buffer (see Pump), up to END.
  static size_t Unframe(Direction& d, char* buffer, size_t n, bool* end, size_t* used);
  void FramePair(Pair* pair, int framedSide);
  void ReuseDataConn(Pair* pair);
  bool AcquirePipe(Direction& d);
  void ReleasePipe(Direction& d);
  void ClosePipe(Direction& d);
  void Finish(Pair* pair, int error);

  // ---- Intake: listeners and held connections (intake.cc) ----
  void StartListener(Listener* listener);
  void StopListener(uint32_t id);
  void ListenerError(Listener* listener, int error);
  void OnAcceptable(Listener* listener);
  void Accepted(Listener* listener, int fd, const sockaddr_storage& remote);
  void Refused(uint32_t listenerId, const sockaddr_storage& remote, int32_t refusal, const std::string& received, int error = 0);
  void ReadPrefix(Conn* conn, uint32_t events = 0);
  enum class Lent { kNo, kJoined, kGone };
  Lent TakeLent(Listener* listener, Conn* client, int* error);
  Pool* PoolOf(uint32_t dataListenerId);
  Pool* PoolServing(uint32_t publicListenerId);
  uint32_t TakeIdle(Pool* pool);
  void Pooled(Listener* dataListener, Conn* conn);
  void AdmitClient(uint32_t clientId);
  enum class Joining { kJoined, kNotNow, kClientGone };
  Joining JoinPooled(Conn* client, uint32_t dataId, bool reserved, int* error = nullptr);
  void PruneIdle(Pool* pool);
  void QueueIdle(Pool* pool, Conn* conn);
  void Unqueue(Conn* conn);
  bool JoinWaiting(Pool* pool, Conn* conn);
  void PoolPairEnded(Pair* pair);

  // ---- A pool's pairs: their end report and the idle timeout (pool-pairs.cc) ----
  Event* PoolPairEndEvent(Pair* pair);
  void ApplyIdleTimeout(uint32_t dataListenerId, int64_t timeoutMs);
  void SweepIdlePairs();
  int64_t nextIdleSweepMs_ = INT64_MAX;  // engine thread only
  // A client's local address: the listener's bound one, or getsockname's when the listener is
  // gone or bound to a wildcard.
  static bool ClientLocalAddress(const Listener* listener, int fd, sockaddr_storage* out);
  static bool Allowed(const Listener* listener, const sockaddr_storage& remote);
  const Route* RouteFor(uint32_t table, uint8_t service) const;
  bool ForwardDialed(Conn* conn, Event* header);
  void ReleasePending(Conn* conn);
  void AnnounceAccepted(Conn* conn);
  void RefuseConn(Conn* conn, int32_t refusal, int error);
  void OnConnEvent(Conn* conn, uint32_t events);
  void Gone(Conn* conn, int32_t reason);
  Conn* HeldConn(uint32_t id);
  void Drop(Conn* conn);
  void Forget(Conn* conn);
  void ExpireAndResume();

  // ---- Pools across threads (group.cc): an idle connection moves once to a client's thread ----
  bool AskForIdle(Pool* pool, uint32_t dataListenerId);
  void OnWant(const Command& command);
  void OnAdopt(Conn* conn, uint32_t dataListenerId);
  bool JoinAcross(const Command& command);
  void FetchForJoin(const Command& command);
  bool PushToWaiting(Pool* pool, Conn* conn);
  void HandOver(Conn* conn, uint32_t to, uint32_t dataListenerId);
  void Publish(Pool* pool);
  static bool TryReserve(SharedPool& shared);
  static bool TakePending(Listener* listener);

  // ---- The preamble check and the counter window (verify.cc) ----
  int32_t Verify(Listener* listener, Conn* conn);
  void CountJoin(Pair* pair, const Conn* conn);

  // ---- Dialing: the gray's pool connections (dial.cc) ----
  void StartDial(Conn* conn);
  void OnDialProgress(Conn* conn, uint32_t events);
  void DialFailed(Conn* conn, int error);

  // ---- The gray's stock (stock.cc) ----
  std::unordered_map<uint32_t, Stock*> stocks_;  // engine thread only
  void RunStockCommand(const Command& command);
  void DialFromStock(Stock* stock);
  // A start header was read on conn: one more credit for its stock.
  void CreditStock(uint32_t stockId);
  // A dial from a stock failed before its preamble was sent: its counter goes back in front.
  void ReturnToStock(Conn* conn);
  // The preamble a connection dialed from a stock writes (kPreambleBytes); false when its stock
  // is gone or cannot sign.
  bool StockPreamble(const Conn* conn, uint8_t* preamble);
};

// An engine per thread, as JavaScript sees one engine (group.cc): engine.threads of them, each
// with its own epoll set, listeners (one copy of every listening port each, SO_REUSEPORT, so
// the kernel spreads accepted connections), pairs and held connections. Commands about a pair
// or connection go to the thread of its id; commands about a listener or a stock go to every
// thread. Every thread's events go into one queue and one thread-safe function, so JavaScript
// hears one stream, in order per thread, and a connection moved between threads is heard of
// on its first thread before its second.
class Group {
 public:
  explicit Group(uint32_t threads);
  ~Group();
  bool Start(std::string* why);
  void Stop();
  uint32_t Threads() const { return static_cast<uint32_t>(engines_.size()); }
  Engine* At(uint32_t index) { return engines_[index].get(); }
  // The thread of a pair or connection id (a data connection moved to another thread's pool
  // is found there).
  Engine* For(uint32_t id);
  // The thread for a new dial: round-robin.
  Engine* Next() { return engines_[nextDial_++ % engines_.size()].get(); }

  // Events (any engine thread; TakeBatch on the JS thread, the caller owning them).
  napi_threadsafe_function onEvent = nullptr;
  // Pairs and listeners JavaScript has not yet heard the end of (JS thread only): while any is
  // open, the thread-safe function keeps the event loop alive.
  int active = 0;
  // Appends events to the queue JavaScript takes; post: and wake JavaScript for it (one call
  // until JavaScript has taken the queue). Events handed over without post are taken with the
  // next call, or by JavaScript itself (TakeBatch, from takeEvents).
  void Deliver(std::vector<Event*>* events, bool post);
  std::vector<Event*> TakeBatch();

  // A data listener's shared pool: made by the first call about it, forgotten when it closes.
  std::shared_ptr<SharedPool> Share(uint32_t dataListenerId);
  void ForgetShare(uint32_t listenerId);
  // JS thread (verify.cc). SetSession: the data listener's pool checks preambles against this
  // session from now on (keys: session id then data key; empty: there is no session, refuse
  // all). SetCredits: the session's explicit credit limit (cumulative, never lowered).
  // SetActiveLimit: how many of the pool's pairs may run before clients stop being joined at
  // accept.
  // reuse: the session's data connections are framed and reused, the pool refilled below refillLevel.
  void SetSession(uint32_t listenerId, uint32_t epoch, const std::string& keys, bool reuse, uint32_t refillLevel);
  void SetCredits(uint32_t listenerId, uint32_t epoch, uint64_t explicitUpTo);
  void SetActiveLimit(uint32_t dataListenerId, uint32_t limit);

  // A held data connection moved to thread to (engine threads).
  void Moved(uint32_t id, uint32_t to);
  void Unmoved(uint32_t id);
  bool IsMoved(uint32_t id);

  // JS thread (stock.cc): a stock with a part on every thread, its counters one queue. keys:
  // the session id then the data key; OpenStock returns 0 when OpenSSL cannot key an HMAC.
  // AddToStock appends count counters from firstCounter, deals credits over the threads and
  // holds (1) or releases (0) the stock (-1: as it is).
  uint32_t OpenStock(const Conn& dial, const std::string& keys);
  void AddToStock(uint32_t id, uint64_t firstCounter, uint64_t count, uint32_t credits, int hold);
  void CloseStock(uint32_t id);

 private:
  std::vector<std::unique_ptr<Engine>> engines_;
  uint32_t nextDial_ = 0;  // JS thread
  std::mutex batchMutex_;
  std::vector<Event*> batch_;
  bool posted_ = false;  // guarded by batchMutex_: a call is on its way to JavaScript
  std::mutex sharesMutex_;
  std::unordered_map<uint32_t, std::shared_ptr<SharedPool>> shares_;
  std::mutex movedMutex_;
  std::unordered_map<uint32_t, uint32_t> moved_;
  std::atomic<size_t> movedCount_{0};
  struct StockParts {
    std::shared_ptr<StockShare> share;
    uint32_t nextCredit = 0;  // the thread the next explicit credit goes to
  };
  std::unordered_map<uint32_t, StockParts> stocks_;  // JS thread
};

}  // namespace relay

#endif  // RELAY_NATIVE_ENGINE_H_
