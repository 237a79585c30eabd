{
  "targets": [
    {
      "target_name": "relay_splice",
      "sources": ["splice_relay.cc"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
