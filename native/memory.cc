// releaseMemory(): after startup and after a config reload, hand back what that one-off work
// left behind, so a quiet server's resident size is what it needs rather than what its start
// needed.
//
// Why it is needed: the V8 heap keeps the garbage of startup (modules compiled once, the
// config's parse, the TLS setup) and the young generation grown to its startup size until a
// full, memory-reducing collection runs. On a server whose JavaScript allocates almost nothing
// (the engine moves the bytes), that may be never: measured on the white, 17.6 MB of heap before
// and 9.4 MB after. The worker threads that load the config and build the certificate leave
// their malloc arenas behind, free but resident: malloc_trim returns those pages.
//
// Cost: one blocking call of tens of milliseconds on the JavaScript thread (the engine thread
// keeps moving bytes), and functions whose compiled code was flushed are compiled again on
// their next use. Not on any per-connection path.
#include "memory.h"

#include <v8.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace relay {

napi_value ReleaseMemory(napi_env env, napi_callback_info info) {
  (void)info;
  // Node-API has no collection request; the isolate of the calling thread is this environment's.
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  if (isolate != nullptr) isolate->LowMemoryNotification();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  napi_value result;
  napi_get_undefined(env, &result);
  return result;
}

}  // namespace relay
