// trimMalloc(): hands the free pages of every malloc arena back to the operating system.
//
// Why it is needed: the worker threads that load the config and build the certificate leave
// their malloc arenas behind, free but resident, and glibc returns such pages only from the top
// of the main arena on its own. The JavaScript side (src/cli/release-memory.ts) runs a full
// collection of the V8 heap first and then calls this, after startup, a reload and a burst of
// new clients. Only Node-API and libc here, so one prebuilt binary serves every Node version.
//
// Cost: a walk over the arenas, milliseconds; not on any per-connection path.
#include "memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace relay {

napi_value TrimMalloc(napi_env env, napi_callback_info info) {
  (void)info;
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  napi_value result;
  napi_get_undefined(env, &result);
  return result;
}

}  // namespace relay
