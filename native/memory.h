// Giving malloc's free pages back to the operating system once one-off work is over (see memory.cc).
#ifndef RELAY_NATIVE_MEMORY_H_
#define RELAY_NATIVE_MEMORY_H_

#include <node_api.h>

namespace relay {

napi_value TrimMalloc(napi_env env, napi_callback_info info);

}  // namespace relay

#endif  // RELAY_NATIVE_MEMORY_H_
