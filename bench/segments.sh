#!/bin/bash
# TCP segments per client through one target: runs `new-c64-wrk` (wrk -> nginx, Connection: close)
# in a network namespace of its own, so the kernel's counters (/proc/net/snmp) see nothing but
# that run, and divides the segments sent (Tcp OutSegs) by the clients: a third of the
# connections opened (Tcp ActiveOpens), as each client opens three on either target (the load
# generator's, then one per hop: haproxy's two connects; relay's data connection and the gray's
# connection to nginx). The warm-up and the readiness checks count like the rest; relay's
# control channel is one connection more in thousands. Unlike CPU figures this hardly moves
# with the machine's load.
# usage: bench/segments.sh relay|haproxy     (from the repository, after npm run build; needs root
# for unshare -n, and iproute2)
set -u
T=${1:-relay}
case "$T" in relay|haproxy) ;; *) echo "usage: bench/segments.sh relay|haproxy" >&2; exit 2 ;; esac
if [ -z "${RELAY_SEGMENTS_NETNS:-}" ]; then
  exec env RELAY_SEGMENTS_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
OUT=$(mktemp -d /tmp/relay-segments-XXXXXX)
tcp() { awk -v want="$1" '/^Tcp:/ { if (seen) { for (i = 1; i <= NF; i++) if (name[i] == want) print $i } else { for (i = 1; i <= NF; i++) name[i] = $i; seen = 1 } }' /proc/net/snmp; }
SENT=$(tcp OutSegs)
OPENED=$(tcp ActiveOpens)
node dist/bench/run.js --targets "$T" --workloads new-c64-wrk --rounds 1 --out "$OUT" > "$OUT/bench.log" 2>&1 || { echo "bench failed: see $OUT/bench.log" >&2; exit 1; }
SENT=$(( $(tcp OutSegs) - SENT ))
OPENED=$(( $(tcp ActiveOpens) - OPENED ))
[ "$OPENED" -ge 3 ] || { echo "no connections were opened: see $OUT/bench.log" >&2; exit 1; }
awk -v s="$SENT" -v o="$OPENED" -v t="$T" 'BEGIN { printf "%s: %d segments, %d connections opened (%d clients), %.2f segments per client\n", t, s, o, o / 3, s / (o / 3) }'
echo "(files in $OUT)"
