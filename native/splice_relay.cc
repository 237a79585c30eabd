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
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
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

// What an epoll registration points at: one socket of one pair.
struct Side {
  Pair* pair;
  int index;
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
};

struct Finished {
  uint32_t id;
  uint64_t bytesFromA;
  uint64_t bytesFromB;
  int error;
};

struct Command {
  enum Kind { kJoin, kDestroy, kStop } kind;
  Pair* pair;
  uint32_t id;
};

class Engine {
 public:
  napi_threadsafe_function onFinished = nullptr;
  int active = 0;  // pairs JavaScript has not yet heard the end of (JS thread only)

  bool Start(std::string* why) {
    epollFd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epollFd_ < 0) return Fail(why, "epoll_create1");
    wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakeFd_ < 0) return Fail(why, "eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the wake descriptor is the only registration without a Side
    if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, wakeFd_, &ev) < 0) return Fail(why, "epoll_ctl");
    thread_ = std::thread([this] { Run(); });
    return true;
  }

  void Stop() {
    if (!thread_.joinable()) return;
    Post({Command::kStop, nullptr, 0});
    thread_.join();
  }

  // JS thread. Takes ownership of pair.
  void Join(Pair* pair) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pairs_[pair->id] = pair;
    }
    Post({Command::kJoin, pair, pair->id});
  }

  void Destroy(uint32_t id) { Post({Command::kDestroy, nullptr, id}); }

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
  std::atomic<int64_t> pipesOpen_{0};
  std::atomic<uint32_t> nextId_{1};
  bool stopping_ = false;
  std::vector<char> copyBuffer_ = std::vector<char>(kCopyBuffer);  // engine thread only

  static bool Fail(std::string* why, const char* what) {
    *why = std::string(what) + ": " + strerror(errno);
    return false;
  }

  void Post(Command command) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      commands_.push_back(command);
    }
    uint64_t one = 1;
    // A full eventfd counter still wakes the engine; nothing is lost if this write fails.
    ssize_t ignored = write(wakeFd_, &one, sizeof one);
    (void)ignored;
  }

  void Run() {
    epoll_event events[kEventsPerWait];
    while (!stopping_) {
      int n = epoll_wait(epollFd_, events, kEventsPerWait, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (int i = 0; i < n; i++) {
        if (events[i].data.ptr == nullptr) {
          RunCommands();
          continue;
        }
        Side* side = static_cast<Side*>(events[i].data.ptr);
        Pair* pair = side->pair;
        if (pair->dead) continue;  // ended earlier in this batch
        if (events[i].events & EPOLLERR) {
          int soError = 0;
          socklen_t len = sizeof soError;
          if (getsockopt(pair->fds[side->index], SOL_SOCKET, SO_ERROR, &soError, &len) == 0 && soError != 0) {
            Finish(pair, soError);
            continue;
          }
        }
        Service(pair, side->index, events[i].events);
      }
      // Pairs ended in this batch may still have had events later in the same batch: free
      // them only now.
      for (Pair* pair : graveyard_) delete pair;
      graveyard_.clear();
    }
    // Stopping (the environment is going away): end what is left without telling JavaScript.
    std::vector<Pair*> left;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& entry : pairs_) left.push_back(entry.second);
      pairs_.clear();
    }
    for (Pair* pair : left) {
      for (int fd : pair->fds) close(fd);
      for (Direction& d : pair->dirs) ClosePipe(d);
      delete pair;
    }
    for (auto& p : freePipes_) {
      close(p.first);
      close(p.second);
    }
    close(wakeFd_);
    close(epollFd_);
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
      if (command.kind == Command::kStop) {
        stopping_ = true;
      } else if (command.kind == Command::kJoin) {
        Activate(command.pair);
      } else {
        Pair* pair = nullptr;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          auto it = pairs_.find(command.id);
          if (it != pairs_.end()) pair = it->second;
        }
        if (pair && !pair->dead) Finish(pair, ECANCELED);
      }
    }
  }

  void Activate(Pair* pair) {
    if (pair->dead) return;
    for (int i = 0; i < 2; i++) {
      epoll_event ev{};
      // Edge-triggered: an event is reported once, so a direction reads until the kernel says
      // EAGAIN, a short read has emptied the queue, or its destination is full (see Service).
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.ptr = &pair->sides[i];
      if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, pair->fds[i], &ev) < 0) {
        Finish(pair, errno);
        return;
      }
    }
    // Heads go out now; readiness at registration arrives as ordinary events.
    int error = Pump(pair->dirs[0]);
    if (error == 0) error = Pump(pair->dirs[1]);
    Settle(pair, error);
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
      // Explicitly: a registration outlives close() while another descriptor (Node's, not yet
      // closed) still refers to the same socket.
      epoll_ctl(epollFd_, EPOLL_CTL_DEL, fd, nullptr);
      close(fd);
    }
    for (Direction& d : pair->dirs) {
      if (d.inPipe > 0) ClosePipe(d);  // undelivered bytes must not reach the next user
      else ReleasePipe(d);
    }
    auto* finished = new Finished{pair->id, pair->dirs[0].bytes.load(), pair->dirs[1].bytes.load(), error};
    if (napi_call_threadsafe_function(onFinished, finished, napi_tsfn_nonblocking) != napi_ok) delete finished;
    graveyard_.push_back(pair);
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

void CallOnFinished(napi_env env, napi_value callback, void* /*context*/, void* data) {
  auto* finished = static_cast<Finished*>(data);
  if (env != nullptr) {
    Engine* engine = EngineOf(env);
    if (engine && --engine->active == 0) napi_unref_threadsafe_function(env, engine->onFinished);
    napi_value args[4];
    napi_create_uint32(env, finished->id, &args[0]);
    napi_create_double(env, static_cast<double>(finished->bytesFromA), &args[1]);
    napi_create_double(env, static_cast<double>(finished->bytesFromB), &args[2]);
    napi_create_int32(env, finished->error, &args[3]);
    napi_value global;
    napi_get_global(env, &global);
    napi_call_function(env, global, callback, 4, args, nullptr);
  }
  delete finished;
}

void Cleanup(void* arg) {
  auto* engine = static_cast<Engine*>(arg);
  engine->Stop();
  if (engine->onFinished) napi_release_threadsafe_function(engine->onFinished, napi_tsfn_abort);
  delete engine;
}

// init(onFinished: (id, bytesFromA, bytesFromB, errno) => void): starts the engine.
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
  if (napi_create_threadsafe_function(env, argv[0], nullptr, name, 0, 1, nullptr, nullptr, nullptr, CallOnFinished, &engine->onFinished) != napi_ok) {
    delete engine;
    return Throw(env, "napi_create_threadsafe_function failed");
  }
  // Referenced only while pairs are open, so an idle engine never keeps the process alive.
  napi_unref_threadsafe_function(env, engine->onFinished);
  std::string why;
  if (!engine->Start(&why)) {
    napi_release_threadsafe_function(engine->onFinished, napi_tsfn_abort);
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

// join(fdA, fdB, headToA?: Buffer, headToB?: Buffer) => id. Duplicates both descriptors; the
// caller closes its own.
napi_value Join(napi_env env, napi_callback_info info) {
  Engine* engine = EngineOf(env);
  if (engine == nullptr) return Throw(env, "the data plane is not started");
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 2) return Throw(env, "join needs two descriptors");
  int32_t fdA, fdB;
  if (napi_get_value_int32(env, argv[0], &fdA) != napi_ok || napi_get_value_int32(env, argv[1], &fdB) != napi_ok || fdA < 0 || fdB < 0) {
    return Throw(env, "join needs two descriptors");
  }
  auto* pair = new Pair();
  if ((argc > 2 && !ReadHead(env, argv[2], &pair->dirs[1].head)) || (argc > 3 && !ReadHead(env, argv[3], &pair->dirs[0].head))) {
    delete pair;
    return Throw(env, "join: heads must be Buffers");
  }
  int dupA = fcntl(fdA, F_DUPFD_CLOEXEC, 0);
  int dupB = dupA < 0 ? -1 : fcntl(fdB, F_DUPFD_CLOEXEC, 0);
  if (dupA < 0 || dupB < 0) {
    std::string why = std::string("dup: ") + strerror(errno);
    if (dupA >= 0) close(dupA);
    delete pair;
    return Throw(env, why);
  }
  for (int fd : {dupA, dupB}) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  pair->id = engine->NextId();
  pair->fds[0] = dupA;
  pair->fds[1] = dupB;
  pair->sides[0] = {pair, 0};
  pair->sides[1] = {pair, 1};
  pair->dirs[0].src = dupA;
  pair->dirs[0].dst = dupB;
  pair->dirs[1].src = dupB;
  pair->dirs[1].dst = dupA;
  if (engine->active++ == 0) napi_ref_threadsafe_function(env, engine->onFinished);
  uint32_t id = pair->id;
  engine->Join(pair);
  napi_value result;
  napi_create_uint32(env, id, &result);
  return result;
}

uint32_t IdArgument(napi_env env, napi_callback_info info, bool* ok) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint32_t id = 0;
  *ok = argc == 1 && napi_get_value_uint32(env, argv[0], &id) == napi_ok;
  return id;
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

// stats() => { pairs, pipes }: live pairs and pipes open (in use or free).
napi_value Stats(napi_env env, napi_callback_info /*info*/) {
  Engine* engine = EngineOf(env);
  napi_value result, pairs, pipes;
  napi_create_object(env, &result);
  napi_create_double(env, engine ? static_cast<double>(engine->PairCount()) : 0, &pairs);
  napi_create_double(env, engine ? static_cast<double>(engine->PipesOpen()) : 0, &pipes);
  napi_set_named_property(env, result, "pairs", pairs);
  napi_set_named_property(env, result, "pipes", pipes);
  return result;
}

}  // namespace

NAPI_MODULE_INIT() {
  napi_property_descriptor properties[] = {
      {"init", nullptr, Init, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"join", nullptr, Join, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"destroy", nullptr, Destroy, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"bytes", nullptr, Bytes, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"stats", nullptr, Stats, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
  return exports;
}
