// Small address helpers shared by both sides.
import { lookup } from 'node:dns/promises';
import { isIP, type Socket } from 'node:net';

/** `::ffff:1.2.3.4` and `1.2.3.4` are the same peer; compare source addresses in this form. */
export function normalizeIp(address: string | undefined): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** The address a host name stands for, as Node's own listen and connect would pick it (the first
 *  dns.lookup answer); an IP address is returned as it is. An engine takes addresses only. */
export async function resolveHost(host: string): Promise<string> {
  if (isIP(host) !== 0) return host;
  return (await lookup(host)).address;
}

/** Ends a socket with a reset instead of a FIN: how relay passes an abort on, and how it refuses
 *  a connection it cannot serve, so the peer can tell either from a complete, empty answer.
 *  Anything still queued to send is discarded. A socket already destroyed is left alone. */
export function resetSocket(socket: Socket): void {
  if (socket.destroyed) return;
  // Without a handle (never connected, or already closed) there is nothing to reset;
  // resetAndDestroy would destroy it with an ERR_SOCKET_CLOSED error instead.
  if (!(socket as unknown as { _handle?: unknown })._handle) return void socket.destroy();
  socket.resetAndDestroy();
}
