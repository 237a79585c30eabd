{
  "targets": [
    {
      "target_name": "relay_v8_memory",
      "sources": ["low-memory.cc"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-cast-function-type"]
    }
  ]
}
