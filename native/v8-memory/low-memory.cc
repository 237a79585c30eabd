// lowMemoryNotification(): V8's memory-reducing collection of the calling isolate (several full
// collections, then the young generation shrunk back to its minimum), for release-memory.ts.
//
// Why a separate addon: V8's C++ API ties a binary to one Node ABI, while the engine
// (native/*.cc) is Node-API only so that one prebuilt binary serves every Node version. This one
// is built from source where a compiler is at hand; without it relay runs V8's plain gc(), which
// leaves the young generation at its grown size (measured on the white: 5 MB more at idle, about
// 20 MB more after a burst of 3,000 new clients).
#include <node.h>
#include <v8.h>

namespace {

void LowMemoryNotification(const v8::FunctionCallbackInfo<v8::Value>& info) {
  info.GetIsolate()->LowMemoryNotification();
}

}  // namespace

NODE_MODULE_INIT() {
  (void)module;
  (void)context;
  NODE_SET_METHOD(exports, "lowMemoryNotification", LowMemoryNotification);
}
