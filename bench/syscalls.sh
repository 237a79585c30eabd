#!/bin/bash
# System calls per process while new connections flow: starts `new-c64-wrk` (wrk -> nginx,
# Connection: close) through one target, attaches `strace -c -f` to each of its proxy processes
# for 4 s, and prints the counts. Divide by the clients of those 4 s: the successful accept4 of
# relay's white count a client and its data connection (2 per client), a haproxy hop's 1.
# usage: bench/syscalls.sh relay|haproxy     (from the repository, after npm run build; needs strace)
set -u
T=${1:-relay}
case "$T" in relay|haproxy) ;; *) echo "usage: bench/syscalls.sh relay|haproxy" >&2; exit 2 ;; esac
OUT=$(mktemp -d /tmp/relay-syscalls-XXXXXX)
node dist/bench/run.js --targets "$T" --workloads new-c64-wrk --seconds 14 --rounds 1 --out "$OUT" > "$OUT/bench.log" 2>&1 &
BENCH=$!
for _ in $(seq 300); do grep -q 'wrk→nginx): ready' "$OUT/bench.log" && break; sleep 0.2; done
sleep 3
if [ "$T" = relay ]; then PATTERN="$PWD/dist/src/cli/relay.js (white|gray) --config .*/relay-nginx/"; else PATTERN='haproxy .*/haproxy-nginx/'; fi
PIDS=$(pgrep -f "$PATTERN" | tr '\n' ' ')
[ -z "$PIDS" ] && { echo "no $T processes found (see $OUT/bench.log)" >&2; wait $BENCH; exit 1; }
for p in $PIDS; do
  tr '\0' ' ' < "/proc/$p/cmdline" > "$OUT/cmdline-$p.txt"
  timeout -s INT 4 strace -c -f -p "$p" -o "$OUT/strace-$p.txt" >/dev/null 2>&1 &
done
wait $BENCH
for p in $PIDS; do echo "== $p: $(cat "$OUT/cmdline-$p.txt")"; head -30 "$OUT/strace-$p.txt"; done
echo "(files in $OUT)"
