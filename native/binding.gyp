{
  "targets": [
    {
      "target_name": "relay_splice",
      "sources": ["engine.cc", "pump.cc", "intake.cc", "dial.cc", "lend.cc", "verify.cc", "stock.cc", "pool-pairs.cc", "allow.cc", "routes.cc", "group.cc", "napi.cc", "memory.cc"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
