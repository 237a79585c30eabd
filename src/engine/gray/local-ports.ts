// Why a gray can run out of local ports, and what lifts it. The gray dials two kinds of
// connection, each always to one address: data connections to the white's data port, and
// connections to a service. When the gray passes the first FIN of one (a data connection whose
// service closed first, a service connection whose client closed first), this host's end stays
// in TIME_WAIT for 60 s, and a dial can only use an ephemeral port not in TIME_WAIT toward that
// address, unless the kernel may reuse those (net.ipv4.tcp_tw_reuse=1; its default, 2, does it on
// loopback only). More such clients a second than the range holds per 60 s exhaust it, and
// connect says EADDRNOTAVAIL.
import { readFileSync } from 'node:fs';

const TIME_WAIT_SEC = 60;

const KINDS = {
  data: { connection: 'a data connection', closer: 'service', peer: 'one white' },
  service: { connection: 'a connection to the service', closer: 'client', peer: 'one service address' },
} as const;

function sysctl(name: string): string | null {
  try {
    return readFileSync(`/proc/sys/net/ipv4/${name}`, 'utf8').trim().replace(/\s+/g, '-');
  } catch {
    return null; // not Linux, or not readable
  }
}

/** What to tell the operator when a dial to `where` found no local port. read: the host's
 *  net.ipv4 setting of that name, null when unknown (this host's /proc unless given). */
export function localPortsAdvice(
  kind: keyof typeof KINDS,
  where: string,
  read: (name: string) => string | null = sysctl,
): { detail: string; portRange: string | null; twReuse: string | null } {
  const { connection, closer, peer } = KINDS[kind];
  const portRange = read('ip_local_port_range');
  const twReuse = read('tcp_tw_reuse');
  const [low, high] = (portRange ?? '').split('-').map(Number);
  const ports = low !== undefined && high !== undefined && high >= low ? high - low + 1 : null;
  const range = ports === null ? "this host's ephemeral ports" : `this host's ${ports} ephemeral ports (${portRange})`;
  const cause = `every one of ${range} is in use or in TIME_WAIT toward ${where}`;
  const fix =
    twReuse === '1'
      ? 'net.ipv4.tcp_tw_reuse is 1 already, so the range is too small for the connections open at once: widen net.ipv4.ip_local_port_range'
      : `${connection} whose ${closer} closed first keeps this gray's end in TIME_WAIT for ${TIME_WAIT_SEC} s, so this host sustains ` +
        `${ports === null ? "about its range's worth of such clients a minute" : `about ${Math.floor(ports / TIME_WAIT_SEC)} such clients a second`} toward ${peer}; ` +
        `set net.ipv4.tcp_tw_reuse=1 (it is ${twReuse ?? 'unknown'}; with 1 the kernel reuses such ports, which is safe for outgoing connections) or widen net.ipv4.ip_local_port_range`;
  return { detail: `no local port left for ${connection}: ${cause}; ${fix} (docs/deploy.md, "Local ports on the gray")`, portRange, twReuse };
}
