// The native data plane: joined socket pairs whose bytes move with splice(2) instead of
// through JavaScript.
//
// Why: in the JS plane every byte is copied kernel -> user -> kernel at each hop, and those
// copies were most of relay's bulk cost (see docs/performance.md). splice moves the pages between
// a socket and a kernel pipe and from the pipe to the other socket without entering user space,
// which is what a C relay such as haproxy does.
//
// Shape: one engine thread per Node environment owns an epoll instance. JavaScript hands over a
// pair of connected sockets (join); the engine takes its own duplicates of the two descriptors,
// so the JS Socket objects can be destroyed at once and an idle pair costs only this file's
// structs and the kernel's sockets. Small messages are copied with recv/send through one shared
// buffer; once a direction streams, it splices, borrowing a pipe from a small free list only
// while bytes are in flight, so thousands of idle pairs hold no pipes. A FIN is passed on as
// a shutdown(SHUT_WR) once everything before it was delivered (half-close); the first error ends
// the pair. When a pair ends, its byte counts and errno reach JavaScript through a thread-safe
// function; JavaScript can end a pair early (destroy) or read its live counts (bytes).
//
// Intake: the engine can also own listening sockets (listen). It accepts on its own thread,
// applies the filter JavaScript set (who may connect at all, how many may be unverified), reads
// a fixed-size prefix (the data port's preamble) under a deadline, and only then tells
// JavaScript, which decides (verifies the preamble, pairs, refuses). Until it is joined an
// accepted connection is held by the engine and watched: JavaScript hears when it goes away.
// A connection therefore never becomes a Node socket: that construction and teardown was most
// of the white's cost per client (docs/performance.md).
//
// Dialing: the gray's side of the same idea. The engine opens a pool connection (dial), writes
// its preamble once connected, and reads the white's fixed-size start header; only then does
// JavaScript hear of it. JavaScript answers with connectJoin: the engine connects to the local
// service and joins the two at once, the service socket still connecting (a send to it waits
// for its EPOLLOUT like any full socket). A connection that fails is reported as the end of that
// pair, flagged as never connected, so the gray can say the service is unreachable.
#include <node_api.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <time.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <cstdint>
#include <deque>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

// A pipe of 256 KiB lets one splice move a loopback burst in a single call; if the per-user
// pipe allowance is used up the kernel refuses and the pipe keeps its default size.
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

struct Pair;

// What an epoll registration points at. Every registered struct starts with its Kind, so an
// event's pointer can be told apart before it is cast. (nullptr is the wake descriptor.)
enum class Kind : uint8_t { kSide, kListener, kConn };

// One socket of one pair.
struct Side {
  Kind kind = Kind::kSide;
  Pair* pair = nullptr;
  int index = 0;
};

// Who a listener lets in, before any byte is read (set by JavaScript, see filter()).
enum Filter : uint8_t { kFilterAll = 0, kFilterNone = 1, kFilterSource = 2 };
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
};
// Why a held connection went away.
enum GoneReason : int32_t { kGoneClosed = 1, kGoneData = 2 };

struct Listener {
  Kind kind = Kind::kListener;
  uint32_t id = 0;
  int fd = -1;
  uint32_t prefix = 0;
  std::string magic;  // what every prefix starts with
  int timeoutMs = 0;
  int keepAliveSec = 0;
  Watch watchAfter = kWatchReset;
  Filter filter = kFilterAll;
  in6_addr allowed{};
  uint32_t maxPending = UINT32_MAX;
  uint32_t pending = 0;  // connections still reading their prefix
  int64_t resumeAt = 0;  // accept paused until then (out of descriptors)
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
  std::string preamble;  // dialed: written once connected
  sockaddr_storage remote{};
  socklen_t remoteLen = 0;
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
  // dst is still connecting (connectJoin): a FIN must not be passed on yet, since shutting down
  // a socket in SYN-SENT aborts the connection.
  bool dstConnecting = false;
  // src reported a FIN, hang-up or error: read it to the end, never stop at a short read.
  bool srcClosing = false;
  std::atomic<uint64_t> bytes{0};
};

struct Pair {
  uint32_t id = 0;
  int fds[2] = {-1, -1};
  Side sides[2];
  Direction dirs[2];  // dirs[0]: fds[0] -> fds[1]; dirs[1]: fds[1] -> fds[0]
  bool dead = false;
  // connectJoin: side B is the service, connecting until its first EPOLLOUT. A pair that ends
  // before that never reached the service.
  bool connectingB = false;
};

// How a pair's end is flagged to JavaScript (the event's `code` stays the errno).
enum PairEndFlags : uint32_t { kEndedBeforeConnect = 1 };

// What the engine tells JavaScript, through one thread-safe function.
struct Event {
  // kDialed: a dialed connection connected (code 0, preamble written) or failed (code errno);
  // kHeader: a dialed connection read its prefix (the white's start header).
  enum Type : int32_t { kPairEnd = 0, kAccepted = 1, kRefused = 2, kGone = 3, kListenerError = 4, kDialed = 5, kHeader = 6 } type;
  explicit Event(Type t) : type(t) {}
  uint32_t id = 0;          // pair (kPairEnd) or connection
  uint32_t listenerId = 0;  // 0 for a dialed connection; kPairEnd: PairEndFlags
  int32_t code = 0;         // errno (kPairEnd, kListenerError), Refusal or GoneReason
  uint64_t a = 0;           // kPairEnd: bytes from A; kRefused: prefix bytes received
  uint64_t b = 0;           // kPairEnd: bytes from B
  std::string prefix;       // kAccepted: the prefix read
  bool hasAddresses = false;
  sockaddr_storage remote{};
  sockaddr_storage local{};
};

struct Command {
  enum Kind { kJoin, kDestroy, kStop, kJoinConns, kAddListener, kCloseListener, kFilter, kCloseConn, kDial, kConnectJoin } kind;
  explicit Command(Kind k) : kind(k) {}
  Pair* pair = nullptr;
  Conn* conn = nullptr;     // kDial
  sockaddr_storage address{};  // kConnectJoin: the service
  socklen_t addressLen = 0;
  int keepAliveSec = 0;
  uint32_t id = 0;  // pair, listener or connection
  uint32_t connA = 0;
  uint32_t connB = 0;
  Listener* listener = nullptr;
  Filter filter = kFilterAll;
  in6_addr ip{};
  uint32_t maxPending = 0;
};

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// An address as a v6 address (IPv4 as ::ffff:a.b.c.d), for comparing sources.
bool AsV6(const sockaddr_storage& ss, in6_addr* out) {
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

class Engine {
 public:
  napi_threadsafe_function onEvent = nullptr;
  // Pairs and listeners JavaScript has not yet heard the end of (JS thread only): while any is
  // open, the thread-safe function keeps the event loop alive.
  int active = 0;

  bool Start(std::string* why) {
    epollFd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epollFd_ < 0) return Fail(why, "epoll_create1");
    wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakeFd_ < 0) return Fail(why, "eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the wake descriptor is the only registration without a Kind
    if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, wakeFd_, &ev) < 0) return Fail(why, "epoll_ctl");
    thread_ = std::thread([this] { Run(); });
    return true;
  }

  void Stop() {
    if (!thread_.joinable()) return;
    Command stop(Command::kStop);
    Post(stop);
    thread_.join();
  }

  // JS thread. Takes ownership of pair.
  void Join(Pair* pair) {
    Register(pair);
    Command c(Command::kJoin);
    c.pair = pair;
    c.id = pair->id;
    Post(c);
  }

  // JS thread. Takes ownership of pair, whose sockets are the two held connections.
  void JoinConns(Pair* pair, uint32_t connA, uint32_t connB) {
    Register(pair);
    Command c(Command::kJoinConns);
    c.pair = pair;
    c.id = pair->id;
    c.connA = connA;
    c.connB = connB;
    Post(c);
  }

  void Destroy(uint32_t id) {
    Command c(Command::kDestroy);
    c.id = id;
    Post(c);
  }

  // JS thread. Takes ownership of listener (already bound and listening).
  void AddListener(Listener* listener) {
    Command c(Command::kAddListener);
    c.listener = listener;
    c.id = listener->id;
    Post(c);
  }

  void CloseListener(uint32_t id) {
    Command c(Command::kCloseListener);
    c.id = id;
    Post(c);
  }

  void SetFilter(uint32_t id, Filter filter, const in6_addr& ip, uint32_t maxPending) {
    Command c(Command::kFilter);
    c.id = id;
    c.filter = filter;
    c.ip = ip;
    c.maxPending = maxPending;
    Post(c);
  }

  void CloseConn(uint32_t id) {
    Command c(Command::kCloseConn);
    c.id = id;
    Post(c);
  }

  // JS thread. Takes ownership of conn (its remote address, prefix size and preamble are set).
  void Dial(Conn* conn) {
    Command c(Command::kDial);
    c.conn = conn;
    c.id = conn->id;
    Post(c);
  }

  // JS thread. Takes ownership of pair: side A becomes the held connection connId, side B a new
  // connection to address.
  void ConnectJoin(Pair* pair, uint32_t connId, const sockaddr_storage& address, socklen_t len, int keepAliveSec) {
    Register(pair);
    Command c(Command::kConnectJoin);
    c.pair = pair;
    c.id = pair->id;
    c.connA = connId;
    c.address = address;
    c.addressLen = len;
    c.keepAliveSec = keepAliveSec;
    Post(c);
  }

  bool Bytes(uint32_t id, uint64_t* fromA, uint64_t* fromB) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = pairs_.find(id);
    if (it == pairs_.end()) return false;
    *fromA = it->second->dirs[0].bytes.load(std::memory_order_relaxed);
    *fromB = it->second->dirs[1].bytes.load(std::memory_order_relaxed);
    return true;
  }

  size_t PairCount() {
    std::lock_guard<std::mutex> lock(mutex_);
    return pairs_.size();
  }

  int64_t PipesOpen() const { return pipesOpen_.load(std::memory_order_relaxed); }
  int64_t ConnsHeld() const { return connsHeld_.load(std::memory_order_relaxed); }

  uint32_t NextId() { return nextId_.fetch_add(1, std::memory_order_relaxed); }

 private:
  int epollFd_ = -1;
  int wakeFd_ = -1;
  std::thread thread_;
  std::mutex mutex_;
  std::deque<Command> commands_;                 // guarded by mutex_
  std::unordered_map<uint32_t, Pair*> pairs_;    // guarded by mutex_; live pairs only
  std::vector<std::pair<int, int>> freePipes_;   // engine thread only
  std::vector<Pair*> graveyard_;                 // engine thread only
  std::vector<Conn*> connGraveyard_;             // engine thread only
  std::vector<Listener*> listenerGraveyard_;     // engine thread only
  std::unordered_map<uint32_t, Listener*> listeners_;  // engine thread only
  std::unordered_map<uint32_t, Conn*> conns_;          // engine thread only
  // Prefix deadlines, earliest first; stale entries (connection no longer reading) are skipped.
  std::priority_queue<std::pair<int64_t, uint32_t>, std::vector<std::pair<int64_t, uint32_t>>, std::greater<>> deadlines_;
  std::atomic<int64_t> pipesOpen_{0};
  std::atomic<int64_t> connsHeld_{0};
  std::atomic<uint32_t> nextId_{1};
  bool stopping_ = false;
  std::vector<char> copyBuffer_ = std::vector<char>(kCopyBuffer);  // engine thread only

  static bool Fail(std::string* why, const char* what) {
    *why = std::string(what) + ": " + strerror(errno);
    return false;
  }

  void Register(Pair* pair) {
    std::lock_guard<std::mutex> lock(mutex_);
    pairs_[pair->id] = pair;
  }

  // Only the first command of a batch wakes the engine: RunCommands reads the eventfd before it
  // takes the batch, so a command queued behind a pending wake is taken with it. (The gray posts
  // a dial and a connectJoin in the same tick; each wake is a system call on both threads.)
  void Post(const Command& command) {
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

  void Emit(Event* event) {
    if (napi_call_threadsafe_function(onEvent, event, napi_tsfn_nonblocking) != napi_ok) delete event;
  }

  // Milliseconds epoll may sleep: until the next prefix deadline or paused listener's resume.
  int WaitTimeout() {
    int64_t next = INT64_MAX;
    if (!deadlines_.empty()) next = deadlines_.top().first;
    for (auto& entry : listeners_) {
      if (entry.second->resumeAt != 0 && entry.second->resumeAt < next) next = entry.second->resumeAt;
    }
    if (next == INT64_MAX) return -1;
    int64_t wait = next - NowMs();
    return wait <= 0 ? 0 : static_cast<int>(wait + 1);
  }

  void Run() {
    epoll_event events[kEventsPerWait];
    while (!stopping_) {
      int n = epoll_wait(epollFd_, events, kEventsPerWait, WaitTimeout());
      if (n < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (int i = 0; i < n; i++) {
        void* ptr = events[i].data.ptr;
        if (ptr == nullptr) {
          RunCommands();
          continue;
        }
        switch (*static_cast<Kind*>(ptr)) {
          case Kind::kSide:
            OnSideEvent(static_cast<Side*>(ptr), events[i].events);
            break;
          case Kind::kListener:
            OnAcceptable(static_cast<Listener*>(ptr));
            break;
          case Kind::kConn:
            OnConnEvent(static_cast<Conn*>(ptr), events[i].events);
            break;
        }
      }
      ExpireAndResume();
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
    for (auto& p : freePipes_) {
      close(p.first);
      close(p.second);
    }
    close(wakeFd_);
    close(epollFd_);
  }

  void OnSideEvent(Side* side, uint32_t events) {
    Pair* pair = side->pair;
    if (pair->dead) return;  // ended earlier in this batch
    if (events & EPOLLERR) {
      int soError = SocketError(pair->fds[side->index]);
      if (soError != 0) return Finish(pair, soError);
    }
    if (side->index == 1 && pair->connectingB && (events & EPOLLOUT)) {
      pair->connectingB = false;
      pair->dirs[0].dstConnecting = false;
      pair->dirs[0].blocked = true;  // whatever waited for the connect (a head, a FIN) goes now
    }
    Service(pair, side->index, events);
  }

  static int SocketError(int fd) {
    int soError = 0;
    socklen_t len = sizeof soError;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len) < 0) return errno;
    return soError;
  }

  void RunCommands() {
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
          Activate(command.pair, false, false);
          break;
        case Command::kJoinConns:
          ActivateConns(command.pair, command.connA, command.connB);
          break;
        case Command::kDestroy: {
          Pair* pair = nullptr;
          {
            std::lock_guard<std::mutex> lock(mutex_);
            auto it = pairs_.find(command.id);
            if (it != pairs_.end()) pair = it->second;
          }
          if (pair && !pair->dead) Finish(pair, ECANCELED);
          break;
        }
        case Command::kAddListener:
          StartListener(command.listener);
          break;
        case Command::kCloseListener:
          StopListener(command.id);
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
          if (it != conns_.end()) Drop(it->second);
          break;
        }
        case Command::kDial:
          StartDial(command.conn);
          break;
        case Command::kConnectJoin:
          ActivateConnecting(command.pair, command.connA, command.address, command.addressLen, command.keepAliveSec);
          break;
      }
    }
  }

  // ---- Pairs ----

  // registeredA/B: that socket is already in the epoll set (a held connection being joined).
  void Activate(Pair* pair, bool registeredA, bool registeredB) {
    if (pair->dead) return;
    const bool registered[2] = {registeredA, registeredB};
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
    // Heads go out now; readiness at registration arrives as ordinary events.
    int error = Pump(pair->dirs[0]);
    if (error == 0) error = Pump(pair->dirs[1]);
    Settle(pair, error);
  }

  // Two held connections become a pair. One of them may have gone in the meantime (JavaScript
  // had not yet heard): the pair then ends at once, as if that socket had been reset.
  void ActivateConns(Pair* pair, uint32_t idA, uint32_t idB) {
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
      pair->fds[i] = conns[i]->fd;
      conns[i]->fd = -1;
      Forget(conns[i]);
    }
    pair->dirs[0].src = pair->fds[0];
    pair->dirs[0].dst = pair->fds[1];
    pair->dirs[1].src = pair->fds[1];
    pair->dirs[1].dst = pair->fds[0];
    Activate(pair, true, true);
  }

  // connectJoin: the held (dialed) connection connId and a new connection to the service become
  // a pair at once; the service side is joined while it connects. A send to a socket in SYN-SENT
  // says EAGAIN, so heads and early bytes wait for its EPOLLOUT like for any full socket, and a
  // failed connect ends the pair with its errno, flagged kEndedBeforeConnect.
  void ActivateConnecting(Pair* pair, uint32_t connId, const sockaddr_storage& address, socklen_t len, int keepAliveSec) {
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
    Activate(pair, true, false);
  }

  static void TuneSocket(int fd, int keepAliveSec) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (keepAliveSec > 0) {
      setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &keepAliveSec, sizeof keepAliveSec);
    }
  }

  static constexpr uint32_t kClosing = EPOLLRDHUP | EPOLLHUP | EPOLLERR;
  static constexpr uint32_t kReadable = EPOLLIN | kClosing;

  // An event on one socket moves only what it can move: readable -> the direction reading it;
  // writable -> the direction writing to it, and only if that one was blocked. (EPOLLOUT is in
  // almost every event mask, so pumping on it unconditionally would cost a useless recv.)
  void Service(Pair* pair, int sideIndex, uint32_t events) {
    Direction& from = pair->dirs[sideIndex];
    Direction& into = pair->dirs[1 - sideIndex];
    int error = 0;
    if (events & kClosing) from.srcClosing = true;
    if (events & kReadable) error = Pump(from);
    if (error == 0 && (events & EPOLLOUT) && into.blocked) error = Pump(into);
    Settle(pair, error);
  }

  void Settle(Pair* pair, int error) {
    if (error != 0) {
      Finish(pair, error);
    } else if (pair->dirs[0].shut && pair->dirs[1].shut) {
      Finish(pair, 0);  // both FINs passed on, everything before them delivered
    }
  }

  static int Blocked(Direction& d) {
    d.blocked = true;
    return 0;
  }

  // Moves what can be moved now. Returns 0 (stopped on EAGAIN or done) or an errno.
  int Pump(Direction& d) {
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

  bool AcquirePipe(Direction& d) {
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
  void ReleasePipe(Direction& d) {
    if (d.pipeRead < 0) return;
    if (d.inPipe == 0 && freePipes_.size() < kFreePipesMax) {
      freePipes_.emplace_back(d.pipeRead, d.pipeWrite);
      d.pipeRead = d.pipeWrite = -1;
      return;
    }
    ClosePipe(d);
  }

  void ClosePipe(Direction& d) {
    if (d.pipeRead < 0) return;
    close(d.pipeRead);
    close(d.pipeWrite);
    d.pipeRead = d.pipeWrite = -1;
    d.inPipe = 0;
    pipesOpen_.fetch_sub(1, std::memory_order_relaxed);
  }


  void Finish(Pair* pair, int error) {
    pair->dead = true;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pairs_.erase(pair->id);
    }
    for (int fd : pair->fds) {
      if (fd < 0) continue;
      // Explicitly: a registration outlives close() while another descriptor (Node's, not yet
      // closed) still refers to the same socket.
      epoll_ctl(epollFd_, EPOLL_CTL_DEL, fd, nullptr);
      close(fd);
    }
    for (Direction& d : pair->dirs) {
      if (d.inPipe > 0) ClosePipe(d);  // undelivered bytes must not reach the next user
      else ReleasePipe(d);
    }
    auto* event = new Event(Event::kPairEnd);
    event->id = pair->id;
    event->a = pair->dirs[0].bytes.load();
    event->b = pair->dirs[1].bytes.load();
    event->code = error;
    event->listenerId = pair->connectingB ? static_cast<uint32_t>(kEndedBeforeConnect) : 0u;
    Emit(event);
    graveyard_.push_back(pair);
  }

  // ---- Intake: listeners and held connections ----

  void StartListener(Listener* listener) {
    listeners_[listener->id] = listener;
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered: a wake-up takes at most kAcceptsPerWake
    ev.data.ptr = listener;
    if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, listener->fd, &ev) < 0) ListenerError(listener, errno);
  }

  void StopListener(uint32_t id) {
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

  void ListenerError(Listener* listener, int error) {
    auto* event = new Event(Event::kListenerError);
    event->listenerId = listener->id;
    event->code = error;
    Emit(event);
  }

  void OnAcceptable(Listener* listener) {
    if (listener->fd < 0 || listener->resumeAt != 0) return;
    for (int i = 0; i < kAcceptsPerWake; i++) {
      sockaddr_storage remote{};
      socklen_t len = sizeof remote;
      int fd = accept4(listener->fd, reinterpret_cast<sockaddr*>(&remote), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
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

  void Accepted(Listener* listener, int fd, const sockaddr_storage& remote) {
    TuneSocket(fd, listener->keepAliveSec);
    // The filter runs before a byte is read: strangers never take an unverified slot.
    in6_addr source{};
    AsV6(remote, &source);
    int32_t refusal = 0;
    if (listener->filter == kFilterNone) refusal = kRefusedNoSession;
    else if (listener->filter == kFilterSource && memcmp(&source, &listener->allowed, sizeof source) != 0) refusal = kRefusedWrongSource;
    else if (listener->prefix > 0 && listener->pending >= listener->maxPending) refusal = kRefusedTooMany;
    if (refusal != 0) {
      close(fd);
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
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = conn;
    if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
      int error = errno;
      close(fd);
      delete conn;
      Refused(listener->id, remote, kRefusedError, std::string(), error);
      return;
    }
    conns_[conn->id] = conn;
    connsHeld_.fetch_add(1, std::memory_order_relaxed);
    if (conn->state == Conn::kHeld) return AnnounceAccepted(conn);
    listener->pending += 1;
    deadlines_.emplace(NowMs() + listener->timeoutMs, conn->id);
    ReadPrefix(conn);
  }

  // received: the prefix bytes read before the refusal (JavaScript words the reason from them).
  void Refused(uint32_t listenerId, const sockaddr_storage& remote, int32_t refusal, const std::string& received, int error = 0) {
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

  // Reads exactly the rest of the prefix: what follows stays in the kernel for the pair.
  void ReadPrefix(Conn* conn) {
    char buffer[256];
    auto it = listeners_.find(conn->listenerId);
    const std::string* magic = it != listeners_.end() ? &it->second->magic : nullptr;
    while (conn->prefix.size() < conn->want) {
      size_t ask = std::min(sizeof buffer, static_cast<size_t>(conn->want) - conn->prefix.size());
      ssize_t n = recv(conn->fd, buffer, ask, 0);
      if (n > 0) {
        size_t before = conn->prefix.size();
        conn->prefix.append(buffer, static_cast<size_t>(n));
        // A stranger speaking another protocol is refused at its first wrong byte, not at the
        // deadline: it would hold an unverified slot until then.
        if (magic) {
          size_t end = std::min(conn->prefix.size(), magic->size());
          for (size_t i = before; i < end; i++) {
            if (conn->prefix[i] != (*magic)[i]) return RefuseConn(conn, kRefusedBadMagic, 0);
          }
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
      // stay in the kernel for the pair.
      conn->state = Conn::kHeld;
      auto* event = new Event(Event::kHeader);
      event->id = conn->id;
      event->prefix.swap(conn->prefix);
      return Emit(event);
    }
    // The edge that brought the prefix is spent: whatever came with it (bytes, a FIN) would
    // never be reported to a watch that wants to hear of anything. Bytes right behind the prefix
    // are a protocol violation, refused before JavaScript verifies (and so spends) anything.
    bool finished = false;
    if (conn->watch == kWatchAny) {
      char probe;
      ssize_t n = recv(conn->fd, &probe, 1, MSG_PEEK);
      if (n > 0) return RefuseConn(conn, kRefusedExtra, 0);
      finished = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
    }
    ReleasePending(conn);
    conn->state = Conn::kHeld;
    AnnounceAccepted(conn);
    if (finished) Gone(conn, kGoneClosed);
  }

  void ReleasePending(Conn* conn) {
    if (conn->state != Conn::kPrefix) return;
    auto it = listeners_.find(conn->listenerId);
    if (it != listeners_.end() && it->second->pending > 0) it->second->pending -= 1;
  }

  void AnnounceAccepted(Conn* conn) {
    auto* event = new Event(Event::kAccepted);
    event->id = conn->id;
    event->listenerId = conn->listenerId;
    event->prefix = conn->prefix;
    event->hasAddresses = true;
    event->remote = conn->remote;
    socklen_t len = sizeof event->local;
    getsockname(conn->fd, reinterpret_cast<sockaddr*>(&event->local), &len);
    Emit(event);
    std::string().swap(conn->prefix);
  }

  void RefuseConn(Conn* conn, int32_t refusal, int error) {
    Refused(conn->listenerId, conn->remote, refusal, conn->prefix, error);
    Drop(conn);
  }

  void OnConnEvent(Conn* conn, uint32_t events) {
    if (conn->state == Conn::kGone) return;
    if (conn->state == Conn::kConnecting) return OnDialProgress(conn, events);
    if (conn->state == Conn::kPrefix) {
      if (conn->listenerId == 0 && (events & EPOLLERR)) return Gone(conn, kGoneClosed);
      if (events & EPOLLERR) return RefuseConn(conn, kRefusedError, SocketError(conn->fd));
      return ReadPrefix(conn);
    }
    if (events & (EPOLLERR | EPOLLHUP)) return Gone(conn, kGoneClosed);
    if (conn->watch != kWatchAny) return;  // a waiting client's bytes and FIN wait for the pair
    if (events & EPOLLRDHUP) return Gone(conn, kGoneClosed);
    if (events & EPOLLIN) return Gone(conn, kGoneData);
  }

  // A held connection went away (or spoke when it must not): JavaScript hears it, and the
  // engine closes it.
  void Gone(Conn* conn, int32_t reason) {
    auto* event = new Event(Event::kGone);
    event->id = conn->id;
    event->listenerId = conn->listenerId;
    event->code = reason;
    Emit(event);
    Drop(conn);
  }

  Conn* HeldConn(uint32_t id) {
    auto it = conns_.find(id);
    return it != conns_.end() && it->second->state == Conn::kHeld ? it->second : nullptr;
  }

  // Closes the connection (if it still has its socket) and forgets it.
  void Drop(Conn* conn) {
    ReleasePending(conn);
    if (conn->fd >= 0) {
      epoll_ctl(epollFd_, EPOLL_CTL_DEL, conn->fd, nullptr);
      close(conn->fd);
      conn->fd = -1;
    }
    Forget(conn);
  }

  void Forget(Conn* conn) {
    conn->state = Conn::kGone;
    conns_.erase(conn->id);
    connsHeld_.fetch_sub(1, std::memory_order_relaxed);
    connGraveyard_.push_back(conn);
  }

  // ---- Dialing: the gray's pool connections ----

  void StartDial(Conn* conn) {
    conns_[conn->id] = conn;
    connsHeld_.fetch_add(1, std::memory_order_relaxed);
    conn->state = Conn::kConnecting;
    int fd = socket(conn->remote.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return DialFailed(conn, errno);
    conn->fd = fd;
    TuneSocket(fd, conn->keepAliveSec);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&conn->remote), conn->remoteLen) < 0 && errno != EINPROGRESS) return DialFailed(conn, errno);
    // EPOLLOUT tells the connect is done; afterwards it only rides along with other events.
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = conn;
    if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, fd, &ev) < 0) return DialFailed(conn, errno);
  }

  void OnDialProgress(Conn* conn, uint32_t events) {
    if (events & (EPOLLERR | EPOLLHUP)) {
      int error = SocketError(conn->fd);
      return DialFailed(conn, error != 0 ? error : ECONNRESET);
    }
    if (!(events & EPOLLOUT)) return;
    // Connected. The preamble is tiny and the send buffer empty, so it goes in one send; a
    // short send would leave a half preamble the white must refuse, so it counts as a failure
    // of the connection (after connecting: not retried with the same counter).
    ssize_t n = send(conn->fd, conn->preamble.data(), conn->preamble.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    bool whole = n >= 0 && static_cast<size_t>(n) == conn->preamble.size();
    std::string().swap(conn->preamble);
    auto* event = new Event(Event::kDialed);
    event->id = conn->id;
    Emit(event);
    conn->state = Conn::kPrefix;
    if (!whole) return Gone(conn, kGoneClosed);
    ReadPrefix(conn);
  }

  void DialFailed(Conn* conn, int error) {
    auto* event = new Event(Event::kDialed);
    event->id = conn->id;
    event->code = error;
    Emit(event);
    Drop(conn);
  }

  void ExpireAndResume() {
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
};

// ---- JavaScript surface ------------------------------------------------------------------

Engine* EngineOf(napi_env env) {
  void* data = nullptr;
  napi_get_instance_data(env, &data);
  return static_cast<Engine*>(data);
}

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

void SetAddress(napi_env env, const sockaddr_storage& ss, napi_value* ip, napi_value* port) {
  char text[INET6_ADDRSTRLEN] = "";
  int number = 0;
  if (ss.ss_family == AF_INET) {
    auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
    number = ntohs(in.sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    number = ntohs(in6.sin6_port);
  }
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, ip);
  napi_create_int32(env, number, port);
}

void Ref(napi_env env, Engine* engine) {
  if (engine->active++ == 0) napi_ref_threadsafe_function(env, engine->onEvent);
}

void Unref(napi_env env, Engine* engine) {
  if (--engine->active == 0) napi_unref_threadsafe_function(env, engine->onEvent);
}

// onEvent(type, id, listenerId, code, a, b, prefix, remoteIp, remotePort, localIp, localPort);
// for kPairEnd, listenerId carries PairEndFlags.
void CallOnEvent(napi_env env, napi_value callback, void* /*context*/, void* data) {
  auto* event = static_cast<Event*>(data);
  if (env != nullptr) {
    Engine* engine = EngineOf(env);
    if (engine && event->type == Event::kPairEnd) Unref(env, engine);
    napi_value args[11];
    napi_create_int32(env, event->type, &args[0]);
    napi_create_uint32(env, event->id, &args[1]);
    napi_create_uint32(env, event->listenerId, &args[2]);
    napi_create_int32(env, event->code, &args[3]);
    napi_create_double(env, static_cast<double>(event->a), &args[4]);
    napi_create_double(env, static_cast<double>(event->b), &args[5]);
    size_t argc = 6;
    if (event->type == Event::kAccepted || event->type == Event::kRefused || event->type == Event::kHeader) {
      void* copy = nullptr;
      napi_create_buffer_copy(env, event->prefix.size(), event->prefix.data(), &copy, &args[6]);
      argc = 7;
    }
    if (event->hasAddresses) {
      SetAddress(env, event->remote, &args[7], &args[8]);
      SetAddress(env, event->local, &args[9], &args[10]);
      argc = 11;
    }
    napi_value global;
    napi_get_global(env, &global);
    napi_call_function(env, global, callback, argc, args, nullptr);
  }
  delete event;
}

void Cleanup(void* arg) {
  auto* engine = static_cast<Engine*>(arg);
  engine->Stop();
  if (engine->onEvent) napi_release_threadsafe_function(engine->onEvent, napi_tsfn_abort);
  delete engine;
}

// init(onEvent): starts the engine.
napi_value Init(napi_env env, napi_callback_info info) {
  if (EngineOf(env) != nullptr) return Throw(env, "the data plane is already started");
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  napi_valuetype type;
  if (argc < 1 || napi_typeof(env, argv[0], &type) != napi_ok || type != napi_function) return Throw(env, "init needs a callback");
  auto* engine = new Engine();
  napi_value name;
  napi_create_string_utf8(env, "relay-splice", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], nullptr, name, 0, 1, nullptr, nullptr, nullptr, CallOnEvent, &engine->onEvent) != napi_ok) {
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
  napi_set_instance_data(env, engine, nullptr, nullptr);
  napi_add_env_cleanup_hook(env, Cleanup, engine);
  return nullptr;
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

Pair* BlankPair() {
  auto* pair = new Pair();
  for (int i = 0; i < 2; i++) {
    pair->sides[i].pair = pair;
    pair->sides[i].index = i;
  }
  return pair;
}

// The arguments of join and joinConns: two numbers, then the optional heads.
Pair* NewPair(napi_env env, napi_callback_info info, int32_t ids[2]) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 2 || napi_get_value_int32(env, argv[0], &ids[0]) != napi_ok || napi_get_value_int32(env, argv[1], &ids[1]) != napi_ok || ids[0] < 0 || ids[1] < 0) {
    Throw(env, "join needs two descriptors or connections");
    return nullptr;
  }
  Pair* pair = BlankPair();
  if ((argc > 2 && !ReadHead(env, argv[2], &pair->dirs[1].head)) || (argc > 3 && !ReadHead(env, argv[3], &pair->dirs[0].head))) {
    delete pair;
    Throw(env, "join: heads must be Buffers");
    return nullptr;
  }
  return pair;
}

napi_value Uint32(napi_env env, uint32_t value) {
  napi_value result;
  napi_create_uint32(env, value, &result);
  return result;
}

// join(fdA, fdB, headToA?: Buffer, headToB?: Buffer) => id. Duplicates both descriptors; the
// caller closes its own.
napi_value Join(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  if (engine == nullptr) return Throw(env, "the data plane is not started");
  int32_t fds[2];
  Pair* pair = NewPair(env, info, fds);
  if (pair == nullptr) return nullptr;
  int dupA = fcntl(fds[0], F_DUPFD_CLOEXEC, 0);
  int dupB = dupA < 0 ? -1 : fcntl(fds[1], F_DUPFD_CLOEXEC, 0);
  if (dupA < 0 || dupB < 0) {
    int error = errno;
    if (dupA >= 0) close(dupA);
    delete pair;
    return ThrowErrno(env, "dup", error);
  }
  for (int fd : {dupA, dupB}) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  pair->id = engine->NextId();
  pair->fds[0] = dupA;
  pair->fds[1] = dupB;
  pair->dirs[0].src = dupA;
  pair->dirs[0].dst = dupB;
  pair->dirs[1].src = dupB;
  pair->dirs[1].dst = dupA;
  Ref(env, engine);
  uint32_t id = pair->id;
  engine->Join(pair);
  return Uint32(env, id);
}

// joinConns(connA, connB, headToA?, headToB?) => id: two held connections become a pair. If
// either has gone meanwhile, the pair ends at once with ECONNRESET.
napi_value JoinConns(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  if (engine == nullptr) return Throw(env, "the data plane is not started");
  int32_t conns[2];
  Pair* pair = NewPair(env, info, conns);
  if (pair == nullptr) return nullptr;
  pair->id = engine->NextId();
  Ref(env, engine);
  uint32_t id = pair->id;
  engine->JoinConns(pair, static_cast<uint32_t>(conns[0]), static_cast<uint32_t>(conns[1]));
  return Uint32(env, id);
}

bool ParseIp(const std::string& text, sockaddr_storage* ss, socklen_t* len) {
  memset(ss, 0, sizeof *ss);
  auto* in = reinterpret_cast<sockaddr_in*>(ss);
  if (inet_pton(AF_INET, text.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    *len = sizeof *in;
    return true;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (inet_pton(AF_INET6, text.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    *len = sizeof *in6;
    return true;
  }
  return false;
}

std::string StringArgument(napi_env env, napi_value value) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, nullptr, 0, &length) != napi_ok) return "";
  std::string text(length, '\0');
  napi_get_value_string_utf8(env, value, &text[0], length + 1, &length);
  return text;
}

// An IP address (a JavaScript string) and a port as a socket address.
bool ParseEndpoint(napi_env env, napi_value ip, int32_t port, sockaddr_storage* ss, socklen_t* len) {
  if (!ParseIp(StringArgument(env, ip), ss, len)) return false;
  reinterpret_cast<sockaddr_in*>(ss)->sin_port = htons(static_cast<uint16_t>(port));  // same offset in sockaddr_in6
  return true;
}

// listen(ip, port, backlog, prefixBytes, prefixTimeoutMs, keepAliveSec, watchAny, magic?) =>
// [listenerId, boundPort]. Binds here, on the JavaScript thread, so a failure is an exception
// the caller can report at once.
napi_value Listen(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  if (engine == nullptr) return Throw(env, "the data plane is not started");
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t port, backlog, prefix, timeoutMs, keepAliveSec;
  std::string magic;
  if (argc > 7 && !ReadHead(env, argv[7], &magic)) return Throw(env, "listen: magic must be a Buffer");
  bool watchAny = false;
  if (argc < 7 || napi_get_value_int32(env, argv[1], &port) != napi_ok || napi_get_value_int32(env, argv[2], &backlog) != napi_ok ||
      napi_get_value_int32(env, argv[3], &prefix) != napi_ok || napi_get_value_int32(env, argv[4], &timeoutMs) != napi_ok ||
      napi_get_value_int32(env, argv[5], &keepAliveSec) != napi_ok || napi_get_value_bool(env, argv[6], &watchAny) != napi_ok ||
      port < 0 || port > 65535 || prefix < 0 || prefix > 4096 || timeoutMs < 0 || backlog < 1) {
    return Throw(env, "listen(ip, port, backlog, prefixBytes, prefixTimeoutMs, keepAliveSec, watchAny): bad arguments");
  }
  sockaddr_storage ss;
  socklen_t len;
  if (!ParseEndpoint(env, argv[0], port, &ss, &len)) return Throw(env, "listen needs an IP address");
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, "socket", errno);
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  // As Node does: "::" also takes IPv4 clients.
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) < 0 || listen(fd, backlog) < 0) {
    int error = errno;
    close(fd);
    return ThrowErrno(env, "listen", error);
  }
  sockaddr_storage bound{};
  socklen_t boundLen = sizeof bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &boundLen);
  auto* listener = new Listener();
  listener->id = engine->NextId();
  listener->fd = fd;
  listener->prefix = static_cast<uint32_t>(prefix);
  listener->magic = magic;
  listener->timeoutMs = timeoutMs;
  listener->keepAliveSec = keepAliveSec;
  listener->watchAfter = watchAny ? kWatchAny : kWatchReset;
  uint32_t id = listener->id;
  Ref(env, engine);
  engine->AddListener(listener);
  napi_value result;
  napi_create_array_with_length(env, 2, &result);
  napi_set_element(env, result, 0, Uint32(env, id));
  napi_set_element(env, result, 1, Uint32(env, ntohs(reinterpret_cast<sockaddr_in&>(bound).sin_port)));
  return result;
}

uint32_t IdArgument(napi_env env, napi_callback_info info, bool* ok) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint32_t id = 0;
  *ok = argc >= 1 && napi_get_value_uint32(env, argv[0], &id) == napi_ok;
  return id;
}

// closeListener(id): stops accepting; connections still reading their prefix are closed.
napi_value CloseListener(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  bool ok;
  uint32_t id = IdArgument(env, info, &ok);
  if (!engine || !ok) return nullptr;
  engine->CloseListener(id);
  Unref(env, engine);
  return nullptr;
}

// filter(listenerId, mode, ip, maxPending): who may connect before a byte is read. mode 0:
// anyone; 1: nobody; 2: only ip. maxPending caps the connections still reading their prefix.
napi_value SetFilter(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint32_t id, mode, maxPending;
  if (!engine || argc < 4 || napi_get_value_uint32(env, argv[0], &id) != napi_ok || napi_get_value_uint32(env, argv[1], &mode) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &maxPending) != napi_ok || mode > kFilterSource) {
    return Throw(env, "filter(listenerId, mode, ip, maxPending): bad arguments");
  }
  in6_addr ip{};
  if (mode == kFilterSource) {
    sockaddr_storage ss;
    socklen_t len;
    if (!ParseIp(StringArgument(env, argv[2]), &ss, &len)) return Throw(env, "filter needs an IP address");
    AsV6(ss, &ip);
  }
  engine->SetFilter(id, static_cast<Filter>(mode), ip, maxPending);
  return nullptr;
}

// dial(ip, port, preamble, prefixBytes, keepAliveSec) => connId. The engine connects, writes
// the preamble, then reads exactly prefixBytes and reports them (kHeader); until then it reports
// the connect (kDialed, errno or 0) and a close (kGone). The connection is held afterwards.
napi_value Dial(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  if (engine == nullptr) return Throw(env, "the data plane is not started");
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t port, prefix, keepAliveSec;
  auto* conn = new Conn();
  if (argc < 5 || napi_get_value_int32(env, argv[1], &port) != napi_ok || !ReadHead(env, argv[2], &conn->preamble) ||
      napi_get_value_int32(env, argv[3], &prefix) != napi_ok || napi_get_value_int32(env, argv[4], &keepAliveSec) != napi_ok ||
      port < 1 || port > 65535 || prefix < 1 || prefix > 4096 || keepAliveSec < 0 || conn->preamble.empty()) {
    delete conn;
    return Throw(env, "dial(ip, port, preamble, prefixBytes, keepAliveSec): bad arguments");
  }
  if (!ParseEndpoint(env, argv[0], port, &conn->remote, &conn->remoteLen)) {
    delete conn;
    return Throw(env, "dial needs an IP address");
  }
  conn->id = engine->NextId();
  conn->want = static_cast<uint32_t>(prefix);
  conn->keepAliveSec = keepAliveSec;
  uint32_t id = conn->id;
  engine->Dial(conn);
  return Uint32(env, id);
}

// connectJoin(connId, ip, port, headToService?, keepAliveSec) => pairId: connects to the service
// and joins it (side B) with the held connection (side A). A pair that ends before the service
// answered is flagged kEndedBeforeConnect; one whose connection had gone ends with ECONNRESET.
napi_value ConnectJoin(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  if (engine == nullptr) return Throw(env, "the data plane is not started");
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint32_t connId;
  int32_t port, keepAliveSec;
  Pair* pair = BlankPair();
  if (argc < 5 || napi_get_value_uint32(env, argv[0], &connId) != napi_ok || napi_get_value_int32(env, argv[2], &port) != napi_ok ||
      !ReadHead(env, argv[3], &pair->dirs[0].head) || napi_get_value_int32(env, argv[4], &keepAliveSec) != napi_ok ||
      port < 1 || port > 65535 || keepAliveSec < 0) {
    delete pair;
    return Throw(env, "connectJoin(connId, ip, port, headToService, keepAliveSec): bad arguments");
  }
  sockaddr_storage address;
  socklen_t len;
  if (!ParseEndpoint(env, argv[1], port, &address, &len)) {
    delete pair;
    return Throw(env, "connectJoin needs an IP address");
  }
  pair->id = engine->NextId();
  Ref(env, engine);
  uint32_t id = pair->id;
  engine->ConnectJoin(pair, connId, address, len, keepAliveSec);
  return Uint32(env, id);
}

// closeConn(id): closes a held connection.
napi_value CloseConn(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  bool ok;
  uint32_t id = IdArgument(env, info, &ok);
  if (engine && ok) engine->CloseConn(id);
  return nullptr;
}

// destroy(id): ends a pair now (its callback still runs, with ECANCELED).
napi_value Destroy(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  bool ok;
  uint32_t id = IdArgument(env, info, &ok);
  if (engine && ok) engine->Destroy(id);
  return nullptr;
}

// bytes(id) => [fromA, fromB] for a live pair, else null.
napi_value Bytes(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  bool ok;
  uint32_t id = IdArgument(env, info, &ok);
  uint64_t fromA, fromB;
  napi_value result;
  if (!engine || !ok || !engine->Bytes(id, &fromA, &fromB)) {
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

// stats() => { pairs, pipes, conns }: live pairs, pipes open (in use or free), connections
// accepted and not yet joined or closed.
napi_value Stats(napi_env env, napi_callback_info /*info*/) {
  Engine* engine = EngineOf(env);
  napi_value result, pairs, pipes, conns;
  napi_create_object(env, &result);
  napi_create_double(env, engine ? static_cast<double>(engine->PairCount()) : 0, &pairs);
  napi_create_double(env, engine ? static_cast<double>(engine->PipesOpen()) : 0, &pipes);
  napi_create_double(env, engine ? static_cast<double>(engine->ConnsHeld()) : 0, &conns);
  napi_set_named_property(env, result, "pairs", pairs);
  napi_set_named_property(env, result, "pipes", pipes);
  napi_set_named_property(env, result, "conns", conns);
  return result;
}

}  // namespace

NAPI_MODULE_INIT() {
  napi_property_descriptor properties[] = {
      {"init", nullptr, Init, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"join", nullptr, Join, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"joinConns", nullptr, JoinConns, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"destroy", nullptr, Destroy, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"bytes", nullptr, Bytes, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"stats", nullptr, Stats, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"listen", nullptr, Listen, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"closeListener", nullptr, CloseListener, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"filter", nullptr, SetFilter, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"closeConn", nullptr, CloseConn, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"dial", nullptr, Dial, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"connectJoin", nullptr, ConnectJoin, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
  return exports;
}
