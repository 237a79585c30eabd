// The preamble check on the engine thread: a gray's data connection is verified here, where it
// was accepted, so no JavaScript runs between its preamble and its place in the pool. The checks
// and their order are the protocol's (docs/security.md, src/engine/white/gray-endpoint.ts for the
// JS plane): the counter's range, the session, the source address, the HMAC-SHA256 tag, and
// only then the counter window, so a forged preamble burns no counter. The HMAC is OpenSSL's,
// the one Node itself links (its symbols are the process's; node-gyp provides the headers).
#include "engine.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <string.h>

namespace relay {

namespace {

// Where the fields are (src/engine/protocol/preamble.ts): 'RLYD' | session id | counter u64 BE
// | tag = HMAC-SHA256(data key, the 28 bytes before it).
constexpr size_t kSessionOffset = 4;
constexpr size_t kCounterOffset = kSessionOffset + kSessionIdBytes;
constexpr size_t kTagOffset = kCounterOffset + 8;
constexpr size_t kTagBytes = 32;
// Counters are JavaScript safe integers on both sides.
constexpr uint64_t kCounterMax = (uint64_t{1} << 53) - 1;

// The tag of data under keyed (which stays keyed: a copy of it does the work).
bool Tag(EVP_MAC_CTX* keyed, const uint8_t* data, size_t length, uint8_t* tag) {
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_dup(keyed);
  if (ctx == nullptr) return false;
  uint8_t computed[EVP_MAX_MD_SIZE];
  size_t computedLength = 0;
  bool ok = EVP_MAC_update(ctx, data, length) == 1 && EVP_MAC_final(ctx, computed, &computedLength, sizeof computed) == 1 && computedLength == kTagBytes;
  EVP_MAC_CTX_free(ctx);
  if (ok) memcpy(tag, computed, kTagBytes);
  return ok;
}

// Whether tag is the HMAC of data under keyed. Compared in constant time.
bool TagValid(EVP_MAC_CTX* keyed, const uint8_t* data, size_t length, const uint8_t* tag) {
  uint8_t computed[kTagBytes];
  return Tag(keyed, data, length, computed) && CRYPTO_memcmp(computed, tag, kTagBytes) == 0;
}

}  // namespace

// The MAC algorithm is fetched once.
EVP_MAC_CTX* KeyedMac(const uint8_t* key) {
  static EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (hmac == nullptr) return nullptr;
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(hmac);
  if (ctx == nullptr) return nullptr;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  if (EVP_MAC_init(ctx, key, kDataKeyBytes, params) != 1) {
    EVP_MAC_CTX_free(ctx);
    return nullptr;
  }
  return ctx;
}

bool Sign(EVP_MAC_CTX* keyed, const uint8_t* sessionId, uint64_t counter, uint8_t* preamble) {
  memcpy(preamble, "RLYD", kSessionOffset);
  memcpy(preamble + kSessionOffset, sessionId, kSessionIdBytes);
  for (size_t i = 0; i < 8; i++) preamble[kCounterOffset + i] = static_cast<uint8_t>(counter >> (56 - 8 * i));
  return Tag(keyed, preamble, kTagOffset, preamble + kTagOffset);
}

SharedPool::~SharedPool() { EVP_MAC_CTX_free(mac); }

void Engine::UseShared(uint32_t listenerId) { PostForId(Command::kSession, listenerId); }

// A new session starts a new window; without keys the pool refuses every preamble. Set here, on
// the JavaScript thread, under the pool's mutex: every thread checks against it from now on.
void Group::SetSession(uint32_t listenerId, uint32_t epoch, const std::string& keys, bool reuse, uint32_t refillLevel) {
  std::shared_ptr<SharedPool> pool = Share(listenerId);
  EVP_MAC_CTX* mac = nullptr;
  if (keys.size() == kSessionIdBytes + kDataKeyBytes && epoch != 0) mac = KeyedMac(reinterpret_cast<const uint8_t*>(keys.data()) + kSessionIdBytes);
  {
    std::lock_guard<std::mutex> lock(pool->mutex);
    pool->epoch = 0;
    EVP_MAC_CTX_free(pool->mac);
    pool->mac = mac;
    pool->explicitCredits = 0;
    pool->implicitCredits = 0;
    pool->floor = 0;
    pool->seen.clear();
    // Without a MAC every preamble is refused as a bad tag's.
    if (mac != nullptr) {
      memcpy(pool->sessionId, keys.data(), kSessionIdBytes);
      pool->epoch = epoch;
    }
    pool->reuse.store(reuse && pool->epoch != 0, std::memory_order_relaxed);
    pool->refillLevel.store(refillLevel, std::memory_order_relaxed);
  }
  // Every thread's copy of the data port gets its part of the pool (made on its thread).
  for (uint32_t i = 0; i < Threads(); i++) At(i)->UseShared(listenerId);
}

void Group::SetCredits(uint32_t listenerId, uint32_t epoch, uint64_t explicitUpTo) {
  std::shared_ptr<SharedPool> pool = Share(listenerId);
  std::lock_guard<std::mutex> lock(pool->mutex);
  if (pool->epoch != epoch || explicitUpTo <= pool->explicitCredits) return;
  pool->explicitCredits = explicitUpTo;
}

// 0 when the preamble in conn->prefix is good (its counter is then used), else the Refusal.
int32_t Engine::Verify(Listener* listener, Conn* conn) {
  if (conn->prefix.size() != kPreambleBytes) return kRefusedBadCounter;
  const auto* p = reinterpret_cast<const uint8_t*>(conn->prefix.data());
  uint64_t counter = 0;
  for (size_t i = kCounterOffset; i < kTagOffset; i++) counter = counter << 8 | p[i];
  if (counter < 1 || counter > kCounterMax) return kRefusedBadCounter;
  // Once per data connection: the window is every thread's.
  SharedPool* pool = listener->pool->shared.get();
  std::lock_guard<std::mutex> lock(pool->mutex);
  if (pool->epoch == 0) return kRefusedNoSession;
  if (memcmp(p + kSessionOffset, pool->sessionId, kSessionIdBytes) != 0) return kRefusedOtherSession;
  // The filter let it in at accept; the session (and so the address) may have changed since.
  if (listener->filter == kFilterNobody) return kRefusedNoSession;
  if (listener->filter == kFilterOnly) {
    in6_addr source{};
    AsV6(conn->remote, &source);
    if (memcmp(&source, &listener->allowed, sizeof source) != 0) return kRefusedWrongSource;
  }
  if (pool->mac == nullptr || !TagValid(pool->mac, p, kTagOffset, p + kTagOffset)) return kRefusedBadTag;
  if (counter <= pool->floor || pool->seen.count(counter) != 0) return kRefusedReplay;
  if (counter > pool->explicitCredits + pool->implicitCredits) return kRefusedNoCredit;
  if (counter == pool->floor + 1) {
    uint64_t floor = counter;
    while (pool->seen.erase(floor + 1) != 0) floor += 1;
    pool->floor = floor;
  } else {
    pool->seen.insert(counter);
  }
  conn->epoch = pool->epoch;
  conn->framed = pool->reuse.load(std::memory_order_relaxed);
  conn->counter = counter;
  return 0;
}

// One of a pool's connections is being joined: the pair counts among the pool's active ones,
// and, for a connection of the current session, the start header it will carry is the gray's
// credit for a replacement, counted before the header can reach the gray.
// (A client joined at accept took its place among the active pairs already: the pair's
// poolListenerId was set then.)
void Engine::CountJoin(Pair* pair, const Conn* conn) {
  auto it = listeners_.find(conn->listenerId);
  if (conn->listenerId == 0 || it == listeners_.end() || !it->second->pool) return;
  SharedPool* pool = it->second->pool->shared.get();
  if (pair->poolListenerId == 0) {
    pool->active.fetch_add(1, std::memory_order_relaxed);
    pair->poolListenerId = conn->listenerId;
  }
  if (conn->epoch == 0) return;
  std::lock_guard<std::mutex> lock(pool->mutex);
  if (conn->epoch == pool->epoch && !pair->noCredit) pool->implicitCredits += 1;
}

}  // namespace relay
